"""Compile-time benchmark: cold compile of a 10-state model, and a second process loading it from the disk cache.

Run: ``python -m benchmarks.compile_time`` (prints a Markdown table). Each measurement is a
fresh Python process with its own empty ``KINETICS_CACHE_DIR``, so nothing is shared with
earlier runs; the model is ``benchmarks/models/cart10.toml`` (10 states, 25 parameters).
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


def _run(cache: str) -> tuple[float, float, float]:
    env = dict(os.environ, KINETICS_CACHE_DIR=cache)
    out = subprocess.run([sys.executable, "-c", _CHILD, str(MODEL)], capture_output=True, text=True, env=env,
                         check=True, cwd=Path(__file__).resolve().parents[1])
    a, b, c = (float(x) for x in out.stdout.split()[-3:])
    return a, b, c


def measure() -> list[tuple[str, float, float, float]]:
    """Rows (process, import s, load + codegen s, total to first solve s)."""
    with tempfile.TemporaryDirectory() as cache:
        cold = _run(cache)
        warm = _run(cache)
    return [("cold (empty cache): codegen + numba compile", *cold), ("second process (disk cache)", *warm)]


TARGETS = "targets: cold compile < 10 s; second process to the end of its first solve < 1 s"


def section() -> str:
    """The RESULTS.md section: heading and table."""
    rows = measure()
    lines = ["## Compile time (10-state model `benchmarks/models/cart10.toml`, fresh processes)", "",
             "| process | import kinetics (s) | load model (s) | to end of first solve (s) |", "|---|---|---|---|"]
    lines += [f"| {name} | {a:.2f} | {b:.2f} | {c:.2f} |" for name, a, b, c in rows]
    cold, warm = rows[0][3], rows[1][3]
    lines += ["", f"{TARGETS}: {'met' if cold < 10 else 'NOT met'} ({cold:.1f} s), "
                  f"{'met' if warm < 1 else 'NOT met'} ({warm:.2f} s).", ""]
    return "\n".join(lines)


def main() -> int:
    print(section())
    return 0


if __name__ == "__main__":
    sys.exit(main())
