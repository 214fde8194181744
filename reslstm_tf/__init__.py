"""Residual stacked LSTMs for video action recognition, in Keras 3 / TensorFlow.

TensorFlow starts quietly under the package, as under the command-line tools: when it is
first imported, its C++ start-up lines (oneDNN notes, CUDA probing, `failed call to cuInit`
on machines without a GPU) are not shown, and `TF_CPP_MIN_LOG_LEVEL` defaults to 3 (only
fatal C++ messages). Importing the package itself does not import TensorFlow. Your own
settings win: a `TF_CPP_MIN_LOG_LEVEL` already in the environment is kept, and with
`TF_CPP_MIN_LOG_LEVEL=0` (or TensorFlow imported before this package) the start-up lines are
shown as TensorFlow writes them. Python's `logging` and absl's verbosity are never touched.
"""

import contextlib
import importlib.abc
import os
import sys

_LOG_LEVEL = "TF_CPP_MIN_LOG_LEVEL"


def _asks_for_logs(argv):
    """True when a command line asks for TensorFlow's logs (`--tf_logs`, `--verbosity>=1`)."""
    for arg in argv[1:]:
        if arg == "--tf_logs" or arg.startswith("--tf_logs="):
            return arg.split("=", 1)[-1].lower() not in ("false", "0", "no")
        if arg.startswith(("--verbosity=", "-v=")):
            value = arg.split("=", 1)[1]
            return value.isdigit() and int(value) >= 1
    return False


@contextlib.contextmanager
def _stderr_captured():
    """Discards what is written to file descriptor 2 in the block; shows it if the block fails.

    TensorFlow logs through absl's C++ logging before `absl::InitializeLog()` runs, and those
    lines ignore `TF_CPP_MIN_LOG_LEVEL`.
    """
    import tempfile

    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            captured.seek(0)
            sys.stderr.write(captured.read().decode("utf-8", "replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


class _QuietLoader(importlib.abc.Loader):
    """Runs TensorFlow's own loader, and finds the devices, with stderr captured."""

    def __init__(self, loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        module.__loader__ = module.__spec__.loader = self.loader  # its own loader from now on
        with _stderr_captured():
            self.loader.exec_module(module)
            module.config.list_physical_devices()  # CUDA probing logs here


class _QuietTensorFlow(importlib.abc.MetaPathFinder):
    """Finds `tensorflow` once, the first time it is imported, for `_QuietLoader`."""

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        with contextlib.suppress(ValueError):
            sys.meta_path.remove(self)
        for finder in sys.meta_path:
            spec = getattr(finder, "find_spec", lambda *args: None)(name, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _QuietLoader(spec.loader)
                return spec
        return None


def _start_tensorflow_quietly():
    """Makes TensorFlow's first import quiet, unless the user asked for its logs."""
    if "tensorflow" in sys.modules or _asks_for_logs(sys.argv):
        return
    if os.environ.setdefault(_LOG_LEVEL, "3").strip() == "0":  # the user asks for every log
        return
    if not any(isinstance(finder, _QuietTensorFlow) for finder in sys.meta_path):
        sys.meta_path.insert(0, _QuietTensorFlow())


_start_tensorflow_quietly()
