"""Figure output shared by the tools: headless matplotlib, atomic PNG writing, shared figures."""

import pathlib

import numpy as np

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


def plot_confusion_matrix(matrix, class_names, path, normalize=True):
    """Saves a confusion-matrix figure (rows: true class; row-normalised by default) as PNG.

    Each non-zero cell is labelled with its count of videos (up to 30 classes), so a
    small evaluation (10 videos of 2 classes) reads as counts, not only as shades.
    """
    plt = pyplot()
    matrix = np.asarray(matrix, dtype="float64")
    counts = matrix.copy()
    if normalize:
        matrix = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    num_classes = len(class_names)
    size = min(24.0, max(5.0, 0.25 * num_classes + 3))
    fig, ax = plt.subplots(figsize=(size, size))
    image = ax.imshow(matrix, cmap="Blues", vmin=0.0, vmax=1.0 if normalize else None)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    if num_classes <= 60:
        ax.set_xticks(range(num_classes))
        ax.set_yticks(range(num_classes))
        fontsize = 8 if num_classes <= 20 else 5
        ax.set_xticklabels(class_names, rotation=90, fontsize=fontsize)
        ax.set_yticklabels(class_names, fontsize=fontsize)
    if num_classes <= 30:
        for (row, col), count in np.ndenumerate(counts):
            if count:
                dark = matrix[row, col] > 0.5 * max(matrix.max(), 1e-12)
                color = "white" if dark else "black"
                ax.text(col, row, f"{count:g}", ha="center", va="center", color=color, fontsize=8)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title("confusion matrix" + (" (row-normalised)" if normalize else ""))
    save_figure(fig, path)
