"""HIRES (IVP Test Set) at t_end = 321.8122 against the published reference solution."""

from __future__ import annotations

import functools

import kinetics
from validation.framework import MODELS_DIR, Case, check_success

SOURCE = ("IVP Test Set (Mazzia F, Magherini C, Test Set for Initial Value Problem Solvers, release 2.4, "
          "Univ. of Bari 2008), problem HIRES, reference solution at t=321.8122 (computed there with RADAU5 "
          "at tight tolerances): https://archimede.uniba.it/~testset/report/hires.pdf ; equations also in "
          "Hairer & Wanner, Solving ODEs II, 2nd ed., Springer 1996, IV.10, doi:10.1007/978-3-642-05221-7")

T_END = 321.8122
REFERENCE = {
    "y1": 7.371312573325668e-4, "y2": 1.442485726316185e-4, "y3": 5.888729740967575e-5,
    "y4": 1.175651343283149e-3, "y5": 2.386356198831331e-3, "y6": 6.238968252742796e-3,
    "y7": 2.849998395185769e-3, "y8": 2.850001604814231e-3,
}
RTOL = 1e-8
# Smallest component at t_end is y3 = 5.9e-5, so rtol*|y3| = 5.9e-13; atol = 1e-14 keeps the error
# control relative for every component (the criterion is relative). At atol = 1e-10 atol would dominate
# y2..y8 and the check would measure atol, not the method.
ATOL = 1e-14
SETUP = f"rtol={RTOL:g}, atol={ATOL:g} (below rtol*|y| of the smallest component, 5.9e-13, so control is relative)"


@functools.cache
def _model() -> kinetics.CompiledModel:
    return kinetics.load_model(MODELS_DIR / "hires.toml")


def _solve(method: str) -> dict[str, float]:
    sim = _model().simulate([T_END], rtol=RTOL, atol=ATOL, method=method, max_steps=200_000)
    check_success(sim, f"HIRES {method}")
    return {f"{n}(t={T_END!r})": float(sim.states[-1, i]) for i, n in enumerate(sim.state_names)}


CASES = [
    Case(name=f"hires[{method}]", source=SOURCE, compute=functools.partial(_solve, method),
         expected={f"{n}(t={T_END!r})": v for n, v in REFERENCE.items()},
         kind="relative", tolerance=1e-5, floor=1e-12, setup=SETUP)
    for method in ("auto", "rodas5p")
]
