"""Config dataclasses as flat settings: one name per setting, for flags and config files.

A config dataclass may nest others (`FinetuneConfig.clip` is a `ClipSpec`,
`FinetuneConfig.train` and `RunConfig.options` are `TrainOptions`). `settings(cls)` lists
its settings flat, each under one name (the field's, or a rename), with its type, default
and help text (the `Attributes:` entry of the class docstring that defines it). A field of
the outer class shadows a nested field of the same name. `to_flat` and `from_flat` map a
config to such a flat dict and back, so one table serves command-line flags
(`reslstm_tf.cli.define_config_flags`), the config files those tools read (`read_mapping`,
`flatten`) and the record a run folder saves.

A nested field may give defaults of its own in its metadata, e.g. fine-tuning's
``dataclasses.field(default_factory=..., metadata={"defaults": {"batch_size": 8}})``: they
replace the nested class's defaults for that field, and nothing else is restated.

Example:

    table = settings(FinetuneConfig, renames={"resize_short_side": "flow_short_side"})
    flat = to_flat(config, table)  # {"data_dir": ..., "num_segments": 16, "epochs": 10, ...}
    from_flat(FinetuneConfig, flat, table) == config  # True
"""

import dataclasses
import json
import pathlib
import re
import types
import typing

_SCALARS = (bool, int, float, str)


class ConfigFileError(ValueError):
    """A config file that cannot be read, or that holds unknown settings."""


@dataclasses.dataclass(frozen=True)
class Setting:
    """One flat setting of a config dataclass.

    Attributes:
        name: its flat name (a flag's name).
        path: the field names leading to it, e.g. ("clip", "num_segments").
        type: bool, int, float, str, list, dict or object (any value).
        default: its default (None for a required field).
        help: its help text.
    """

    name: str
    path: tuple
    type: type
    default: object
    help: str


def nested_fields(cls):
    """The fields of `cls` that hold a dataclass: {name: that dataclass}."""
    return {
        f.name: f.type
        for f in dataclasses.fields(cls)
        if isinstance(f.type, type) and dataclasses.is_dataclass(f.type)
    }


def _value_type(annotation, default):
    """The setting type of a field annotation (`int | None` is int; `object`: the default's)."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        kinds = [a for a in typing.get_args(annotation) if a is not type(None)]
        annotation = kinds[0] if len(kinds) == 1 else object
    if annotation in (*_SCALARS, list, dict):
        return annotation
    if typing.get_origin(annotation) in (list, dict):
        return typing.get_origin(annotation)
    return type(default) if isinstance(default, _SCALARS) else object


def docstring_attributes(cls):
    """The `Attributes:` entries of a class docstring: {field name: one-line text}.

    An entry may name several fields ("split_dir, split: ..."); continuation lines are
    indented deeper than the entry.
    """
    lines = (cls.__doc__ or "").splitlines()
    entries, names, indent, inside = {}, [], None, False
    for line in lines:
        text = line.strip()
        if text == "Attributes:":
            inside, indent = True, None
            continue
        if not inside or not text:
            continue
        depth = len(line) - len(line.lstrip())
        indent = depth if indent is None else indent
        if depth < indent:
            break
        match = re.match(r"([\w, ]+):\s*(.*)", text) if depth == indent else None
        if match:
            names = [n.strip() for n in match.group(1).split(",")]
            for name in names:
                entries[name] = match.group(2)
        else:
            for name in names:
                entries[name] += " " + text
    return entries


def _field_default(field):
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return None


def settings(cls, renames=None, exclude=(), defaults=None, helps=None):
    """The flat settings of a config dataclass: {flat name: `Setting`}, in field order.

    Args:
        cls: the config dataclass.
        renames: {field name: flat name} for settings named otherwise (e.g. a flag's
            historical name).
        exclude: field names left out (their values stay the defaults).
        defaults: {flat name: default} replacing the dataclasses' defaults.
        helps: {flat name: help text} for fields the docstrings do not describe.

    Raises:
        TypeError: two settings would have the same flat name.
    """
    renames, defaults, helps = renames or {}, defaults or {}, helps or {}
    own = {f.name for f in dataclasses.fields(cls)}
    table = {}

    def add(field, path, owner, default, shadowed=()):
        if field.name in exclude or field.name in shadowed:
            return
        name = renames.get(field.name, field.name)
        if name in table:
            raise TypeError(f"{cls.__name__}: two settings are named {name!r}")
        text = helps.get(name) or docstring_attributes(owner).get(field.name, "")
        default = defaults.get(name, default)
        table[name] = Setting(name, path, _value_type(field.type, default), default, text)

    for field in dataclasses.fields(cls):
        inner = nested_fields(cls).get(field.name)
        if inner is None:
            add(field, (field.name,), cls, _field_default(field))
            continue
        overrides = field.metadata.get("defaults", {})
        for sub in dataclasses.fields(inner):
            default = overrides.get(sub.name, _field_default(sub))
            add(sub, (field.name, sub.name), inner, default, shadowed=own)
    return table


def to_flat(config, table):
    """The flat {name: value} of a config, one entry per setting of `table`."""
    flat = {}
    for name, setting in table.items():
        value = config
        for part in setting.path:
            value = getattr(value, part)
        flat[name] = value
    return flat


def from_flat(cls, values, table):
    """Builds `cls` from flat values (missing settings take the table's defaults).

    Raises:
        ConfigFileError: a name that is no setting of `table`.
    """
    check_names(values, table, cls.__name__)
    own, nested = {}, {}
    for name, setting in table.items():
        value = values.get(name, setting.default)
        if len(setting.path) == 1:
            own[setting.path[0]] = value
        else:
            nested.setdefault(setting.path[0], {})[setting.path[1]] = value
    for field_name, inner in nested_fields(cls).items():
        own[field_name] = inner(**nested.get(field_name, {}))
    return cls(**own)


def check_names(values, table, what):
    """Raises `ConfigFileError` naming every key of `values` that is no setting of `table`."""
    unknown = sorted(set(values) - set(table))
    if unknown:
        raise ConfigFileError(f"unknown {what} settings {unknown}; allowed: {sorted(table)}")


def read_mapping(path):
    """The mapping a JSON or YAML file holds (YAML for .yaml/.yml, else JSON, else YAML).

    Raises:
        FileNotFoundError: no such file.
        ConfigFileError: the file is neither, or holds no mapping.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {str(path)!r} does not exist")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            value = _yaml(text)
        else:
            try:
                value = json.loads(text)
            except json.JSONDecodeError:
                value = _yaml(text)
    except ValueError as error:
        raise ConfigFileError(f"config file {str(path)!r} is not JSON or YAML: {error}") from None
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigFileError(
            f"config file {str(path)!r} holds a {type(value).__name__}; expected a mapping of "
            "settings, e.g. 'epochs: 3'"
        )
    return value


def _yaml(text):
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ValueError(" ".join(str(error).split())) from None


def flatten(mapping, cls, table, sections=(), ignore=()):
    """The flat settings a config file's mapping gives (sections merged).

    A key naming a nested field of `cls` (e.g. "clip", "train") may hold that field's
    settings as a mapping (its fields that are no settings, e.g. shadowed or excluded
    ones, are skipped); so may the keys of `sections`, whose mappings are merged as they
    are (e.g. "finetune" or "model" in a run folder's `train_config.json`). A field's own
    name is read as its setting's (renamed) name. Keys in `ignore` (what a run record
    holds beside its settings, e.g. "class_names") are skipped.

    Raises:
        ConfigFileError: keys that are no settings, all named in one message.
    """
    nested = nested_fields(cls)
    by_path = {setting.path: name for name, setting in table.items()}
    flat, unknown = {}, []

    def take(key, value, prefix=""):
        if key in ignore:
            return
        if isinstance(value, dict) and key not in table and (key in nested or key in sections):
            inner = {f.name for f in dataclasses.fields(nested[key])} if key in nested else ()
            for sub, sub_value in value.items():
                if (key, sub) in by_path:
                    flat[by_path[key, sub]] = sub_value
                elif sub not in inner:
                    take(sub, sub_value, f"{prefix}{key}.")
            return
        named = [n for n, s in table.items() if s.path[-1] == key]
        if key not in table and len(named) == 1:
            key = named[0]
        if key in table:
            flat[key] = value
        else:
            unknown.append(prefix + key)

    for key, value in mapping.items():
        take(str(key), value)
    if unknown:
        raise ConfigFileError(
            f"unknown {cls.__name__} settings {sorted(unknown)}; allowed: {sorted(table)}"
        )
    return flat
