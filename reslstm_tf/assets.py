"""Finds the project's packaged files: the zoo manifest, dataset class lists and sample clips."""

import pathlib

_PACKAGE_DIR = pathlib.Path(__file__).resolve().parent


def asset_path(folder, name):
    """Returns the path of `folder/name` where folder is 'zoo', 'data' or 'samples'.

    In a wheel the top-level `zoo/` and `data/` folders are installed as
    `reslstm_tf/_assets/<folder>`; in a source checkout they are read in place.
    `samples/` (the sample clips with their licence notices) is package data of
    `reslstm_tf` itself.
    """
    if folder == "samples":
        roots = (_PACKAGE_DIR / "samples",)
    elif folder in ("zoo", "data"):
        roots = (_PACKAGE_DIR / "_assets" / folder, _PACKAGE_DIR.parent / folder)
    else:
        raise ValueError(
            f"folder must be one of 'zoo', 'data', 'samples'. Received: folder={folder!r}"
        )
    for root in roots:
        candidate = root / name
        if candidate.exists():
            return candidate
    raise FileNotFoundError(
        f"packaged file {folder}/{name} not found (looked in "
        f"{' and '.join(str(root) for root in roots)}); reinstall reslstm-tf"
    )
