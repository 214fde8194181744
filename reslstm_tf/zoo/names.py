"""Zoo names: immutable tagged names and the aliases that point at them.

Every published model has a tagged name, `<dataset>_<arch>.<tag>` as in timm's
`architecture.tag` (`skateboard_lstm3.i3d224_frozen`, `skateboard_lstm3.i3d112_ft`): the
manifest entry under a tagged name is never re-published with other weights, so loading it
always gives the same sha256. A bare name (`skateboard_lstm3`) is an alias to the tag
recommended today. A manifest records its aliases beside its entries, each with the history
of its targets:

    "aliases": {
      "skateboard_lstm3": {
        "target": "skateboard_lstm3.i3d112_ft",
        "history": [
          {"target": "skateboard_lstm3.i3d224_frozen", "date": "2026-11-25",
           "version": "0.1.0", "why": "first publication"},
          {"target": "skateboard_lstm3.i3d112_ft", "date": "2026-11-30",
           "version": "0.1.0", "why": "..."}]}}

`target` is the last entry of `history`. An entry name is looked up first; a name that is
no entry is looked up among the aliases (an alias may point at another alias). Entries
without published weights (architectures with a recipe) keep their bare names.
"""

import json
import pathlib

ALIASES_KEY = "aliases"
_MAX_HOPS = 8


class AliasError(ValueError):
    """An alias table that is malformed or points nowhere."""


def split(name):
    """Returns (architecture, tag) of a name; the tag is None for a bare name."""
    architecture, _, tag = str(name).partition(".")
    return architecture, tag or None


def is_tagged(name):
    """Whether `name` is a tagged name, `<architecture>.<tag>`."""
    return split(name)[1] is not None


def check_aliases(aliases, where="zoo manifest"):
    """Returns `aliases` if every alias has a target equal to its history's last; else raises."""
    if not isinstance(aliases, dict):
        raise AliasError(f"{where}: 'aliases' must be a mapping. Received: {type(aliases)}")
    for alias, record in aliases.items():
        history = record.get("history") if isinstance(record, dict) else None
        if not history or not isinstance(history, list):
            raise AliasError(f"{where}: alias {alias!r} needs a 'target' and a 'history' list")
        if record.get("target") != history[-1].get("target"):
            raise AliasError(
                f"{where}: alias {alias!r} targets {record.get('target')!r} but its history "
                f"ends at {history[-1].get('target')!r}"
            )
        missing = [k for k in ("target", "date", "why") if k not in history[-1]]
        if missing:
            raise AliasError(f"{where}: alias {alias!r}'s last change lacks {missing}")
    return aliases


def read_aliases(path):
    """Returns the checked alias table of the manifest at `path` ({} if it has none)."""
    manifest = json.loads(pathlib.Path(path).read_text(encoding="utf-8"))
    return check_aliases(manifest.get(ALIASES_KEY) or {}, f"zoo manifest {path}")


def resolve(name, entries, aliases):
    """Returns the entry name `name` stands for (itself or an alias's target), or None."""
    seen = []
    while name not in entries:
        if name not in aliases or name in seen or len(seen) > _MAX_HOPS:
            return None
        seen.append(name)
        name = aliases[name]["target"]
    return name


def aliases_of(name, aliases):
    """The sorted aliases whose current target is `name`."""
    return sorted(alias for alias, record in aliases.items() if record["target"] == name)


def former_aliases_of(name, aliases):
    """The sorted aliases that once pointed at `name` and now point elsewhere."""
    return sorted(
        alias
        for alias, record in aliases.items()
        if record["target"] != name and any(h.get("target") == name for h in record["history"])
    )
