"""Library model oral_1cmt against the Bateman function (closed form of first-order absorption + elimination)."""

from __future__ import annotations

import functools

import numpy as np

import kinetics
from validation.framework import Case, check_success

SOURCE = ("Closed form (Bateman function): C(t) = F*D*ka / (V*(ka - ke)) * (exp(-ke*t) - exp(-ka*t)), "
          "ke = CL/V, the solution of the linear two-state chain depot -> central -> out. "
          "Bateman H, The solution of a system of differential equations occurring in the theory of "
          "radioactive transformations, Proc. Cambridge Philos. Soc. 15:423-427 (1910); "
          "Gibaldi M, Perrier D, Pharmacokinetics, 2nd ed., Marcel Dekker 1982 (one-compartment model, first-order absorption)")

# Explicit values (not the library defaults) so the case does not move when the library file does.
# F < 1 also checks that the dose target's scale expression is applied.
PARAMS = {"ka": 1.5, "CL": 3.0, "V": 30.0, "F": 0.8}
DOSE = 320.0  # mg at t = 0 into the depot
TIMES = np.arange(1, 193) * 0.25  # 0.25 .. 48 h
RTOL = 1e-10
# States are in mg; central stays above ~4 mg on the grid, so atol = 1e-12 mg is far below
# rtol*|central| and the control is relative; the depot's atol only matters once it is < 1e-12 mg.
ATOL = 1e-12
SETUP = f"rtol={RTOL:g}, atol={ATOL:g} mg; grid 0.25..48 h step 0.25 h; ka=1.5/h, CL=3 L/h, V=30 L, F=0.8, 320 mg"


def bateman(t: np.ndarray, ka: float, CL: float, V: float, F: float, dose: float) -> np.ndarray:
    """Concentration after an oral dose at t=0. Written as exp(-ke t) * (1 - exp(-(ka-ke) t)) with
    expm1 so the difference of exponentials loses no digits at small t."""
    ke = CL / V
    return F * dose * ka / (V * (ka - ke)) * np.exp(-ke * t) * -np.expm1(-(ka - ke) * t)


@functools.cache
def _model() -> kinetics.CompiledModel:
    return kinetics.load_model("oral_1cmt")


def _solve(method: str) -> dict[str, np.ndarray]:
    sim = _model().simulate(TIMES, params=PARAMS, doses=[kinetics.Dose(time=0.0, amount=DOSE, target="depot")],
                            rtol=RTOL, atol=ATOL, method=method)
    check_success(sim, f"oral_1cmt {method}")
    return {"conc": sim.outputs["conc"]}


CASES = [
    Case(name=f"oral_1cmt-bateman[{method}]", source=SOURCE, compute=functools.partial(_solve, method),
         expected={"conc": bateman(TIMES, dose=DOSE, **PARAMS)}, kind="relative", tolerance=1e-8,
         grid=tuple(TIMES), setup=SETUP)
    for method in ("auto", "rodas5p", "dopri5")
]
