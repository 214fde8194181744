"""Thin absl command-line tools; each maps its flags onto library functions."""

from absl import flags


def define_once(definer, name, *args, **kwargs):
    """Defines one absl flag unless a flag of that name exists (tools share some names)."""
    if name not in flags.FLAGS:
        definer(name, *args, **kwargs)
