"""Thin absl command-line tools, all in one style.

Each tool module has `define_flags()` (flags defined with `define_once`, at run time, so
importing a module defines none), `main(argv)` that maps the flags onto one config object and
calls one library function, and `run()`, the console-script entry point, which is
`run_tool(NAME, main, define_flags)`. `run_tool` gives every tool the same behaviour:

- start quiet: TensorFlow's C++ start-up logs (CUDA probing on CPU machines, oneDNN notes,
  XLA notices) are off unless `--tf_logs` (or `--verbosity` >= 1) is given;
- `--help` lists the tool's own flags with their help text and exits 0;
- an ordinary mistake (a bad flag value, a missing or unreadable input, an unknown zoo entry)
  ends in one line `NAME: error: ...` naming the input and the fix, exit status 2, no
  traceback (`--verbosity=1` shows it); a failure of the environment (a full disk, an
  unwritable folder) ends in one such line with exit status 1.

The environment variable is set when this package is imported, which happens before any tool
module imports TensorFlow.
"""

import os
import sys
import textwrap
import traceback

from absl import app, flags, logging

LOG_FLAG = "--tf_logs"
HELP_ARGS = ("--help", "-h", "-?", "--helpshort")
USER_ERROR_STATUS = 2
ENVIRONMENT_ERROR_STATUS = 1


def _wants_logs(argv):
    """True when the command line asks for TensorFlow's logs."""
    for arg in argv[1:]:
        if arg == LOG_FLAG or arg.startswith(LOG_FLAG + "="):
            return arg.split("=", 1)[-1].lower() not in ("false", "0", "no")
        if arg.startswith(("--verbosity=", "-v=")):
            try:
                return int(arg.split("=", 1)[1]) >= 1
            except ValueError:
                return False
    return False


def _import_silently():
    """Imports TensorFlow and Keras and finds the devices with file descriptor 2 captured.

    TensorFlow 2.21 logs through absl's C++ logging before `absl::InitializeLog()` runs, and
    those lines (oneDNN notes, CUDA probing, `cuInit` failures on CPU machines) ignore
    TF_CPP_MIN_LOG_LEVEL. What they write while the libraries load is discarded; if loading
    fails, it is shown with the error.
    """
    import tempfile

    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import keras  # noqa: F401
            import tensorflow as tf

            tf.config.list_physical_devices()
        except BaseException:
            os.dup2(saved, 2)
            captured.seek(0)
            sys.stderr.write(captured.read().decode("utf-8", "replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def quiet_tensorflow(argv=None):
    """Silences TensorFlow's start-up logs unless the command line asks for them."""
    argv = sys.argv if argv is None else argv
    if not _wants_logs(argv):
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        if "tensorflow" not in sys.modules:
            _import_silently()


quiet_tensorflow()


class UserError(ValueError):
    """A mistake in what the user gave a tool: reported in one line, exit status 2."""


def define_once(definer, name, *args, **kwargs):
    """Defines one absl flag unless a flag of that name exists (tools share some names)."""
    if name not in flags.FLAGS:
        definer(name, *args, **kwargs)


def flag_values(*names, **renamed):
    """The parsed values of the named flags, as keyword arguments of a library call.

    Args:
        *names: flags whose keyword has the flag's name.
        **renamed: keyword=flag name, for keywords named otherwise.
    """
    values = {name: flags.FLAGS[name].value for name in names}
    values.update({keyword: flags.FLAGS[name].value for keyword, name in renamed.items()})
    return values


def define_feature_input_flags(split, purpose, npz_shapes="(N, T, d_f)"):
    """Defines the feature-input flags `reslstm-train` and `reslstm-eval` share.

    Args:
        split: the default of --split.
        purpose: what the split is for, e.g. "train on".
        npz_shapes: the feature shapes --features_npz accepts, for its help text.
    """
    define_once(
        flags.DEFINE_string, "features_dir", None, "Feature cache folder (sharded TFRecords)."
    )
    define_once(
        flags.DEFINE_string,
        "flow_features_dir",
        None,
        "two_stream: folder of the flow caches (default: inside --features_dir).",
    )
    define_once(flags.DEFINE_string, "split", split, f"Split of the feature cache to {purpose}.")
    define_once(
        flags.DEFINE_string,
        "features_npz",
        None,
        f"Alternative input: a .npz with 'features' {npz_shapes} (or 'rgb' and 'flow'), "
        "'labels' (N,) and optionally 'class_names'.",
    )


def _flag_help(flag):
    """One flag's help entry: name, help text, allowed values and default."""
    text = flag.help or ""
    if flag.default is not None and flag.default != "":
        text += f" (default: {flag.default_as_str or repr(flag.default)})"
    prefix = f"  --{flag.name}" if not flag.boolean else f"  --[no]{flag.name}"
    body = textwrap.fill(text, width=96, initial_indent="      ", subsequent_indent="      ")
    return f"{prefix}\n{body}"


def tool_help(name, doc, flag_names):
    """The text of `NAME --help`: the tool's docstring, then each of its flags."""
    lines = [(doc or name).strip(), "", "flags:"]
    for flag_name in sorted(flag_names):
        lines.append(_flag_help(flags.FLAGS[flag_name]))
    lines += [
        "",
        f"  {LOG_FLAG}: show TensorFlow's start-up logs.",
        "",
        "Try --helpfull for absl's flags.",
    ]
    return "\n".join(lines)


def _fail(name, error, status):
    """Prints the one-line error (and the traceback at --verbosity >= 1) and exits."""
    verbose = "verbosity" in flags.FLAGS and flags.FLAGS.is_parsed() and flags.FLAGS.verbosity >= 1
    if verbose:
        traceback.print_exception(error)
    message = " ".join(str(error).split()) or type(error).__name__
    print(f"{name}: error: {message}", file=sys.stderr)
    sys.exit(status)


def _environment_error(error):
    """True for OS errors that are the machine's (full disk, I/O), not the user's input."""
    return isinstance(error, OSError) and not isinstance(
        error, (FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError)
    )


def run_tool(name, main, define_flags, doc=None, user_errors=()):
    """Runs a tool's `main(argv)` under absl with quiet logs, `--help` and one-line errors.

    Args:
        name: the console-script name, e.g. "reslstm-train".
        main: the tool's `main(argv)`.
        define_flags: defines the tool's flags.
        doc: the help text's first part (usually the tool module's docstring).
        user_errors: further exception classes that are the user's mistakes (exit 2), besides
            `ValueError`, missing or existing files and the zoo's unpublished or unavailable
            weights.
    """
    before = set(flags.FLAGS)
    define_flags()
    own = set(flags.FLAGS) - before
    if LOG_FLAG.lstrip("-") not in flags.FLAGS:
        flags.DEFINE_boolean(LOG_FLAG.lstrip("-"), False, "Show TensorFlow's start-up logs.")
    if any(arg in HELP_ARGS for arg in sys.argv[1:]):
        print(tool_help(name, doc, own))
        sys.exit(0)
    from reslstm_tf.zoo import WeightsNotPublishedError, WeightsUnavailableError

    mistakes = (
        app.UsageError,
        ValueError,
        FileNotFoundError,
        FileExistsError,
        WeightsNotPublishedError,
        WeightsUnavailableError,
        *user_errors,
    )

    def guarded(argv):
        if not flags.FLAGS["verbosity"].present:
            logging.set_verbosity(logging.WARNING)
        try:
            return main(argv)
        except mistakes as error:
            if _environment_error(error):
                _fail(name, error, ENVIRONMENT_ERROR_STATUS)
            _fail(name, error, USER_ERROR_STATUS)
        except OSError as error:
            _fail(name, error, ENVIRONMENT_ERROR_STATUS)

    app.run(guarded, flags_parser=_parser(name))


def _parser(name):
    """An absl flags parser that reports a bad flag in one line with exit status 2."""

    def parse(argv):
        try:
            return flags.FLAGS(argv)
        except flags.Error as error:
            print(f"{name}: error: {error}", file=sys.stderr)
            sys.exit(USER_ERROR_STATUS)

    return parse
