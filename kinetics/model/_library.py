"""Finding model files: the bundled library by name, or any path to a ``.toml`` file."""

from __future__ import annotations

import importlib.metadata
import os
import sys
from pathlib import Path

from kinetics.errors import ModelFileError, did_you_mean

__all__ = ["library_dirs", "library_names", "find_model_file"]

_DATA_SUBDIR = Path("share") / "cart-kinetics" / "models"


def library_dirs() -> list[Path]:
    """Directories searched for library models, in order.

    ``KINETICS_MODEL_PATH`` (os.pathsep-separated) first, then the source tree's
    ``models/`` (editable installs and checkouts), then the ``share/cart-kinetics/models``
    directory a plain ``pip install .`` writes (found from the distribution's file list,
    or under the environment prefix).
    """
    dirs = [Path(d) for d in os.environ.get("KINETICS_MODEL_PATH", "").split(os.pathsep) if d]
    dirs.append(Path(__file__).resolve().parents[2] / "models")
    installed = _installed_data_dir()
    if installed is not None:
        dirs.append(installed)
    for prefix in dict.fromkeys((sys.prefix, sys.base_prefix)):
        dirs.append(Path(prefix) / _DATA_SUBDIR)
    return list(dict.fromkeys(d for d in dirs if d.is_dir()))


def _installed_data_dir() -> Path | None:
    """The models folder recorded in the installed distribution's file list (any install scheme)."""
    try:
        files = importlib.metadata.distribution("cart-kinetics").files or []
    except importlib.metadata.PackageNotFoundError:
        return None
    for f in files:
        if f.name.endswith(".toml") and _DATA_SUBDIR.as_posix() in f.as_posix():
            return Path(str(f.locate())).resolve().parent
    return None


def library_names() -> list[str]:
    """Names of all library models (file stems), sorted, first directory wins."""
    names: dict[str, Path] = {}
    for d in library_dirs():
        for f in sorted(d.glob("*.toml")):
            names.setdefault(f.stem, f)
    return sorted(names)


def find_model_file(name_or_path: str | os.PathLike[str]) -> Path:
    """Resolve a library model name or a path to a model file.

    Raises
    ------
    ModelFileError
        If no such file exists; the message lists close library names.
    """
    text = os.fspath(name_or_path)
    p = Path(text)
    if p.suffix == ".toml" or os.sep in text or (os.altsep and os.altsep in text):
        if not p.is_file():
            raise ModelFileError(f"{p}: model file not found")
        return p
    for d in library_dirs():
        f = d / f"{text}.toml"
        if f.is_file():
            return f
    names = library_names()
    raise ModelFileError(f"no library model named '{text}'{did_you_mean(text, names)} "
                         f"(available: {', '.join(names) or 'none found'}); or pass a path to a .toml file")
