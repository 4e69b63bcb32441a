"""Compile-time benchmark: cold compile of a 10-state model, and a second process loading it from the disk cache.

Run: ``python -m benchmarks.compile_time`` (prints a Markdown table). Each measurement is a
fresh Python process; the model is ``benchmarks/models/cart10.toml`` (10 states, 25 parameters).
Three processes share one new, empty ``KINETICS_CACHE_DIR``:

1. the first model ever in that cache: the model-independent solver helpers
   (``kinetics/solve/_numerics.py``, compiled once per cache directory) and the model;
2. a new model once the helpers are cached (they were compiled by another model, ``oral_1cmt``,
   in a process of its own that is not timed): the cost of every further model;
3. a second process for the same model: everything from the disk cache.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

MODEL = Path(__file__).resolve().parent / "models" / "cart10.toml"
_CHILD = r"""
import time, sys
t0 = time.perf_counter()
import kinetics
t_import = time.perf_counter() - t0
m = kinetics.load_model(sys.argv[1])
m.kernels
t_load = time.perf_counter() - t0
sim = m.simulate([1.0, 10.0, 100.0])
t_first = time.perf_counter() - t0
assert sim.success, sim.message
print(t_import, t_load, t_first)
"""


def _run(cache: str, model: str | Path = MODEL) -> tuple[float, float, float]:
    env = dict(os.environ, KINETICS_CACHE_DIR=cache)
    out = subprocess.run([sys.executable, "-c", _CHILD, str(model)], capture_output=True, text=True, env=env,
                         check=True, cwd=Path(__file__).resolve().parents[1])
    a, b, c = (float(x) for x in out.stdout.split()[-3:])
    return a, b, c


def measure() -> list[tuple[str, float, float, float]]:
    """Rows (process, import s, load + codegen s, total to first solve s)."""
    with tempfile.TemporaryDirectory() as first, tempfile.TemporaryDirectory() as cache:
        engine_and_model = _run(first)
        _run(cache, "oral_1cmt")   # compiles the solver helpers into `cache` (not timed)
        model = _run(cache)
        warm = _run(cache)
    return [("new model, solver helpers already compiled: codegen + numba compile", *model),
            ("first model in an empty cache: solver helpers + the model", *engine_and_model),
            ("second process (disk cache)", *warm)]


TARGETS = "targets: a new model compiles cold in < 10 s; second process to the end of its first solve < 1 s"


def section() -> str:
    """The RESULTS.md section: heading and table."""
    rows = measure()
    lines = ["## Compile time (10-state model `benchmarks/models/cart10.toml`, fresh processes)", "",
             "| process | import kinetics (s) | load model (s) | to end of first solve (s) |", "|---|---|---|---|"]
    lines += [f"| {name} | {a:.2f} | {b:.2f} | {c:.2f} |" for name, a, b, c in rows]
    cold, first, warm = rows[0][3], rows[1][3], rows[2][3]
    lines += ["", f"{TARGETS}: {'met' if cold < 10 else 'NOT met'} ({cold:.1f} s), "
                  f"{'met' if warm < 1 else 'NOT met'} ({warm:.2f} s). The solver helpers are compiled once per "
                  f"cache directory (per machine and user): the first model there took {first:.1f} s.", ""]
    return "\n".join(lines)


def main() -> int:
    print(section())
    return 0


if __name__ == "__main__":
    sys.exit(main())
