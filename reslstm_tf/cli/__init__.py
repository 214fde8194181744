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
import re
import sys
import textwrap
import traceback

from absl import app, flags, logging

LOG_FLAG = "--tf_logs"
HELP_ARGS = ("--help", "-h", "-?", "--helpshort")
USER_ERROR_STATUS = 2
ENVIRONMENT_ERROR_STATUS = 1


def quiet_tensorflow(argv=None):
    """Imports TensorFlow quietly now, unless the command line asks for its logs.

    The package makes TensorFlow's first import quiet (`reslstm_tf` docstring); a tool
    imports it at once, so no start-up line reaches the terminal before the tool's own
    output, and `--tf_logs` (or `--verbosity` >= 1) shows them.
    """
    import reslstm_tf

    argv = sys.argv if argv is None else argv
    if not reslstm_tf._asks_for_logs(argv):
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        import tensorflow  # noqa: F401


quiet_tensorflow()


class UserError(ValueError):
    """A mistake in what the user gave a tool: reported in one line, exit status 2."""


def require_model_dir(config, name):
    """Returns `config` if it names a model_dir (by flag or config file), else a UsageError."""
    if not config.model_dir:
        raise app.UsageError(f"{name} needs --model_dir (or model_dir in --config)")
    return config


def refuse_arguments(argv):
    """Raises a UsageError if a tool that takes only flags was given other arguments."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")


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


CONFIG_FLAG = "config"
_DEFINERS = {
    bool: flags.DEFINE_boolean,
    int: flags.DEFINE_integer,
    float: flags.DEFINE_float,
    list: flags.DEFINE_list,
}


def define_config_flags(table, config_help=""):
    """Defines one absl flag per flat setting of a config dataclass, and `--config`.

    Args:
        table: the config's settings, `reslstm_tf.configs.settings(cls, renames=...,
            exclude=..., defaults=...)`: each flag is named, typed, defaulted and described
            as its setting (mapping settings, e.g. a dict of overrides, get no flag).
        config_help: what else `--config`'s help says (e.g. which record it reads).
    """
    for name, setting in table.items():
        if setting.type is dict:
            continue
        definer = _DEFINERS.get(setting.type, flags.DEFINE_string)
        default = setting.default
        if definer is flags.DEFINE_string and default is not None:
            default = str(default)
        define_once(definer, name, default, _sentence(setting.help) or name)
    define_once(
        flags.DEFINE_string,
        CONFIG_FLAG,
        None,
        "A JSON or YAML file of settings (flag names as keys); the flags given on the "
        f"command line override it.{' ' + config_help if config_help else ''}",
    )


def build_config(build, table, values):
    """Returns `build(values)` (the config, built and checked by its own validation).

    The config's validation is the only one: flags carry no bounds or choices of their own.
    An error naming a setting given on the command line is reported as that flag's,
    ``flag --batch_size=-1: -1 is not a valid value: batch_size must be ...``.

    Raises:
        UserError: the config's error, naming the flag it came from.
    """
    try:
        return build(values)
    except ValueError as error:
        message = " ".join(str(error).split())
        named = re.findall(r"Received: (\w+)=", message) or re.findall(r"^(\w+) ", message)
        flag = _flag_of(named[0], table) if named else None
        if flag is None or flag not in flags.FLAGS or not flags.FLAGS[flag].present:
            raise
        value = flags.FLAGS[flag].value
        raise UserError(f"flag --{flag}={value}: {value} is not a valid value: {message}") from None


def _flag_of(name, table):
    """The flag of a setting named by its flag or its field name, or None."""
    if name in table:
        return name
    named = [flag for flag, setting in table.items() if setting.path[-1] == name]
    return named[0] if len(named) == 1 else None


def _sentence(text):
    """A docstring entry as a help text: its first word capitalised unless it is a name."""
    first = text.split(maxsplit=1)[0] if text else ""
    if not first or "_" in first or "`" in first or not first[0].islower():
        return text
    return text[0].upper() + text[1:]


def _from_file(table, value, name):
    """A config file's value of a setting, as the setting's flag would parse it."""
    kind = table[name].type
    if isinstance(value, str) and kind in (bool, int, float, list):
        try:
            return flags.FLAGS[name].parser.parse(value)
        except (ValueError, TypeError) as error:
            raise UserError(f"--{CONFIG_FLAG}: {name}: {error}") from None
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return value


def config_values(cls, table, sections=(), ignore=()):
    """The flat settings of a run: `--config`'s, then the flags given on the command line.

    Settings neither gives are left out (they take the table's defaults). Flags given on
    the command line override the file, as TF Model Garden's ``--params_override`` does.

    Args:
        cls: the config dataclass `table` lists.
        table: its settings (as `define_config_flags` got them).
        sections, ignore: how to read a run folder's record (`reslstm_tf.configs.flatten`).

    Raises:
        FileNotFoundError, ValueError: the file is missing, unreadable or holds unknown
            settings (named in one line).
    """
    from reslstm_tf import configs

    values = {}
    path = flags.FLAGS[CONFIG_FLAG].value if CONFIG_FLAG in flags.FLAGS else None
    if path:
        try:
            mapping = configs.read_mapping(path)
            found = configs.flatten(mapping, cls, table, sections=sections, ignore=ignore)
        except configs.ConfigFileError as error:
            raise UserError(f"--{CONFIG_FLAG}={path}: {error}") from None
        values = {name: _from_file(table, value, name) for name, value in found.items()}
    for name in table:
        if name in flags.FLAGS and flags.FLAGS[name].present:
            values[name] = flags.FLAGS[name].value
    return values


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
    generic_config = CONFIG_FLAG not in own  # a tool without a config dataclass of its own
    if generic_config:
        define_once(
            flags.DEFINE_string,
            CONFIG_FLAG,
            None,
            "A JSON or YAML file of settings (flag names as keys); the flags given on the "
            "command line override it.",
        )
        own.add(CONFIG_FLAG)
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
            if generic_config:
                apply_config_file(own - {CONFIG_FLAG})
            return main(argv)
        except mistakes as error:
            if _environment_error(error):
                _fail(name, error, ENVIRONMENT_ERROR_STATUS)
            _fail(name, error, USER_ERROR_STATUS)
        except OSError as error:
            _fail(name, error, ENVIRONMENT_ERROR_STATUS)

    app.run(guarded, flags_parser=_parser(name))


def apply_config_file(names):
    """Sets the flags `names` from `--config`'s file where the command line did not give them.

    For tools whose flags map onto no config dataclass: the file's keys are flag names.

    Raises:
        UserError: the file names a flag the tool does not have, or a bad value.
        FileNotFoundError: no such file.
    """
    from reslstm_tf import configs

    path = flags.FLAGS[CONFIG_FLAG].value
    if not path:
        return
    try:
        mapping = configs.read_mapping(path)
    except configs.ConfigFileError as error:
        raise UserError(f"--{CONFIG_FLAG}={path}: {error}") from None
    unknown = sorted(set(mapping) - set(names))
    if unknown:
        raise UserError(
            f"--{CONFIG_FLAG}={path}: unknown settings {unknown}; allowed: {sorted(names)}"
        )
    for name, value in mapping.items():
        flag = flags.FLAGS[name]
        if flag.present or value is None:
            continue
        text = ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)
        try:
            flag.parse(text)
        except (flags.Error, ValueError) as error:
            raise UserError(f"--{CONFIG_FLAG}={path}: {name}: {error}") from None


def _parser(name):
    """An absl flags parser that reports a bad flag in one line with exit status 2."""

    def parse(argv):
        try:
            return flags.FLAGS(argv)
        except flags.Error as error:
            print(f"{name}: error: {error}", file=sys.stderr)
            sys.exit(USER_ERROR_STATUS)

    return parse
