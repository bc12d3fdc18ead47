"""Where the files the package reads at run time live: inside an installed wheel, or in the source tree."""

from __future__ import annotations

from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent
# The wheel maps these repository folders into elevation/_data/ (see pyproject.toml, force-include).
_SOURCE_FOLDERS = {"sql": ("sql",), "templates": ("reports", "templates")}


def data_path(kind: str) -> Path:
    """The folder for `kind` ("sql" or "templates"), installed or editable."""
    if kind not in _SOURCE_FOLDERS:
        raise KeyError(f"unknown data folder {kind!r}; known: {sorted(_SOURCE_FOLDERS)}")
    installed = _PACKAGE_DIR / "_data" / kind
    if installed.is_dir():
        return installed
    return _PACKAGE_DIR.parent.parent.joinpath(*_SOURCE_FOLDERS[kind])
