"""Forward sensitivities of oral_1cmt (d conc / d ka, CL, V) against derivatives of the Bateman function."""

from __future__ import annotations

import functools

import numpy as np

import kinetics
from validation.cases.oral_bateman import DOSE, PARAMS, TIMES
from validation.framework import Case, check_success

SOURCE = ("Analytic derivatives of the Bateman function C = F*D*ka/(V*ka - CL) * (exp(-CL/V*t) - exp(-ka*t)) "
          "with respect to ka, CL and V, taken symbolically with sympy (sympy.diff) from the closed form; "
          "closed form: Bateman, Proc. Cambridge Philos. Soc. 15:423-427 (1910); Gibaldi & Perrier, "
          "Pharmacokinetics, 2nd ed., Marcel Dekker 1982")

WRT = ("ka", "CL", "V")
RTOL = 1e-10
ATOL = 1e-12
SETUP = (f"rtol={RTOL:g}, atol={ATOL:g} (states and sensitivities); same dose, parameters and grid as "
         "oral_1cmt-bateman; error relative to the peak |dC/dtheta| on the grid, because dC/dka and dC/dV "
         "change sign (pointwise relative error is undefined at their zeros)")


def _reference() -> dict[str, np.ndarray]:
    import sympy as sp

    t, ka, CL, V, F, D = sp.symbols("t ka CL V F D", positive=True)
    conc = F * D * ka / (V * ka - CL) * (sp.exp(-CL / V * t) - sp.exp(-ka * t))
    subs = {ka: PARAMS["ka"], CL: PARAMS["CL"], V: PARAMS["V"], F: PARAMS["F"], D: DOSE}
    out = {}
    for name, sym in zip(WRT, (ka, CL, V)):
        f = sp.lambdify(t, sp.diff(conc, sym).subs(subs), "numpy")
        out[f"dconc/d{name}"] = np.asarray(f(TIMES), dtype=float)
    return out


@functools.cache
def _model() -> kinetics.CompiledModel:
    return kinetics.load_model("oral_1cmt")


def _solve(method: str) -> dict[str, np.ndarray]:
    m = _model()
    sens = m.sensitivities(TIMES, params=PARAMS, doses=[kinetics.Dose(time=0.0, amount=DOSE, target="depot")],
                           wrt=list(WRT), rtol=RTOL, atol=ATOL, method=method)
    check_success(sens, f"oral_1cmt sensitivities {method}")
    k = sens.output_names.index("conc")
    return {f"dconc/d{name}": sens.outputs[:, k, j] for j, name in enumerate(WRT)}


CASES = [
    Case(name=f"oral_1cmt-sensitivities[{method}]", source=SOURCE, compute=functools.partial(_solve, method),
         expected=_reference, kind="relative-to-peak", tolerance=1e-6, grid=tuple(TIMES), setup=SETUP)
    for method in ("auto", "rodas5p", "dopri5")
]
