"""Library model iv_1cmt with a zero-order infusion against its closed form, during and after the infusion."""

from __future__ import annotations

import functools

import numpy as np

import kinetics
from validation.framework import Case, check_success

SOURCE = ("Closed form of a constant-rate infusion into one compartment with first-order elimination: "
          "C = R/CL * (1 - exp(-ke*(t-t0))) for t0 <= t <= t0+T and C = R/CL * (1 - exp(-ke*T)) * "
          "exp(-ke*(t-t0-T)) after, R = D/T, ke = CL/V (Gibaldi M, Perrier D, Pharmacokinetics, 2nd ed., "
          "Marcel Dekker 1982, one-compartment model, constant-rate intravenous infusion)")

PARAMS = {"CL": 3.0, "V": 30.0}
DOSE, START, DURATION = 500.0, 1.0, 2.5  # mg, h, h: infusion from t=1 h to t=3.5 h
TIMES = np.arange(5, 193) * 0.25  # 1.25 .. 48 h; includes the end of the infusion, 3.5 h
RTOL = 1e-10
ATOL = 1e-12  # mg; the amount stays above ~30 mg on the grid, so control is relative
SETUP = (f"rtol={RTOL:g}, atol={ATOL:g} mg; {DOSE:g} mg over {DURATION:g} h from t={START:g} h; CL=3 L/h, "
         "V=30 L; grid 1.25..48 h step 0.25 h (t=3.5 h, the end of the infusion, counts as 'during'); "
         "tolerance 1e-8 relative at rtol 1e-10, as for the Bateman case")

_END = START + DURATION
_DURING = (TIMES > START) & (TIMES <= _END)
_AFTER = TIMES > _END


def infusion_conc(t: np.ndarray) -> np.ndarray:
    """Closed-form concentration (mg/L) for t > START."""
    ke = PARAMS["CL"] / PARAMS["V"]
    css = DOSE / DURATION / PARAMS["CL"]
    during = -css * np.expm1(-ke * (np.minimum(t, _END) - START))
    return during * np.exp(-ke * np.maximum(t - _END, 0.0))


@functools.cache
def _model() -> kinetics.CompiledModel:
    return kinetics.load_model("iv_1cmt")


def _solve(method: str) -> dict[str, np.ndarray]:
    sim = _model().simulate(TIMES, params=PARAMS, rtol=RTOL, atol=ATOL, method=method,
                            doses=[kinetics.Dose(time=START, amount=DOSE, target="central", duration=DURATION)])
    check_success(sim, f"iv_1cmt infusion {method}")
    c = sim.outputs["conc"]
    return {"conc during infusion": c[_DURING], "conc after infusion": c[_AFTER]}


def _reference() -> dict[str, np.ndarray]:
    c = infusion_conc(TIMES)
    return {"conc during infusion": c[_DURING], "conc after infusion": c[_AFTER]}


CASES = [
    Case(name=f"iv_1cmt-infusion[{method}]", source=SOURCE, compute=functools.partial(_solve, method),
         expected=_reference, kind="relative", tolerance=1e-8,
         grid={"conc during infusion": tuple(TIMES[_DURING]), "conc after infusion": tuple(TIMES[_AFTER])},
         setup=SETUP)
    for method in ("auto", "rodas5p", "dopri5")
]
