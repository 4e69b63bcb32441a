"""Architecture rules (CONVENTIONS.md): layers import only downwards, matplotlib only in kinetics/plot,
every public name documented, and `import kinetics` does no JIT work."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import kinetics

PACKAGE = Path(kinetics.__file__).resolve().parent
# lowest first; a module may import its own layer and any layer before it
LAYERS = ["errors", "model", "codegen", "solve", "data", "fit", "analysis", "plot", "report", "demo", "cli"]


def _layer(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "kinetics" or len(parts) < 2:
        return None
    return parts[1]


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append(node.module)
    return found


MODULES = sorted(p for p in PACKAGE.rglob("*.py") if p.name != "__init__.py" or p.parent != PACKAGE)


@pytest.mark.parametrize("path", MODULES, ids=[str(p.relative_to(PACKAGE)) for p in MODULES])
def test_layers_import_only_downwards(path):
    own = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
    if own not in LAYERS:
        pytest.fail(f"{path.relative_to(PACKAGE)} is in no layer of {LAYERS}")
    for mod in _imports(path):
        if mod.split(".")[0] == "matplotlib":
            assert own == "plot", f"{path.name} imports matplotlib outside kinetics/plot"
        other = _layer(mod)
        if other is not None and other in LAYERS:
            assert LAYERS.index(other) <= LAYERS.index(own), f"{own} imports higher layer {mod}"


def test_every_public_name_has_a_docstring():
    missing = [n for n in kinetics.__all__ if n != "__version__" and not (getattr(kinetics, n).__doc__ or "").strip()]
    assert not missing


def test_import_is_fast_and_compiles_nothing():
    code = ("import time; t = time.perf_counter(); import kinetics; import sys; "
            "print(time.perf_counter() - t, 'numba.core.registry' in sys.modules and "
            "any(k.startswith('kinetics_generated_') for k in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=PACKAGE.parent).stdout.split()
    assert out[1] == "False"  # no generated model module imported at import time
