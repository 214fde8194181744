"""Finds the project's packaged metadata: the zoo manifest and dataset class lists."""

import pathlib

_PACKAGE_DIR = pathlib.Path(__file__).resolve().parent


def asset_path(folder, name):
    """Returns the path of `folder/name` where folder is 'zoo' or 'data'.

    In a wheel the top-level `zoo/` and `data/` folders are installed as
    `reslstm_tf/_assets/<folder>`; in a source checkout they are read in place.
    """
    if folder not in ("zoo", "data"):
        raise ValueError(f"folder must be one of 'zoo', 'data'. Received: folder={folder!r}")
    for root in (_PACKAGE_DIR / "_assets" / folder, _PACKAGE_DIR.parent / folder):
        candidate = root / name
        if candidate.exists():
            return candidate
    raise FileNotFoundError(
        f"packaged file {folder}/{name} not found (looked in {_PACKAGE_DIR / '_assets' / folder} "
        f"and {_PACKAGE_DIR.parent / folder}); reinstall reslstm-tf"
    )
