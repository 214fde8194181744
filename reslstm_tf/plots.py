"""Figure output shared by the tools: headless matplotlib and atomic PNG writing."""

import pathlib

from reslstm_tf.files import atomic_write


def pyplot():
    """Returns matplotlib.pyplot on the headless Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path, dpi=100, pad=1.08):
    """Lays out `fig`, writes it to `path` as a PNG atomically, closes it; returns the path."""
    fig.tight_layout(pad=pad)
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as handle:
        fig.savefig(handle, format="png", dpi=dpi)
    pyplot().close(fig)
    return path
