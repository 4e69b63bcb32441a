"""On-disk cache of generated model modules.

Each module is written once to ``<cache dir>/<key>/kernels.py`` (atomically) and
imported under a stable name, so numba's own ``cache=True`` files next to it let
a new process skip compilation. The key hashes the full source, so any change to
the model or to the solver kernels gives a new entry.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numba

__all__ = ["cache_dir", "cache_key", "load_module"]


def cache_dir() -> Path:
    """The cache root: ``$KINETICS_CACHE_DIR``, else ``$XDG_CACHE_HOME/kinetics``, else ``~/.cache/kinetics``."""
    env = os.environ.get("KINETICS_CACHE_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "kinetics"


def cache_key(*texts: str) -> str:
    """A short hash of ``texts`` plus the numba and Python versions."""
    h = hashlib.sha256()
    for text in texts:
        h.update(text.encode())
        h.update(b"\0")
    h.update(f"numba={numba.__version__};python={sys.version_info[:2]}".encode())
    return h.hexdigest()[:24]


def load_module(key: str, make_source: Callable[[], str]) -> ModuleType:
    """Import the cached module ``key``, writing ``make_source()`` there first if it is absent.

    ``key`` must change whenever the source would (see :func:`cache_key`); the
    source is only generated on a cache miss, since generating it is the slow part.
    """
    name = f"kinetics_generated_{key}"
    if name in sys.modules:
        return sys.modules[name]
    folder = cache_dir() / key
    path = folder / "kernels.py"
    if not path.is_file():
        source = make_source()
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
        with os.fdopen(fd, "w") as fh:
            fh.write(source)
        os.replace(tmp, path)
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:  # pragma: no cover - importlib contract
        raise ImportError(f"cannot import generated module {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module
