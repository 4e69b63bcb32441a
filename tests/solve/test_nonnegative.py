"""States declared non-negative (cell counts, amounts) stay at or above 0 in the solver."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import kinetics
from kinetics.model import build_model
from kinetics.solve import compile_model

# A cd19_sle patient (a draw of a Sobol' design) whose CAR-T decay below atol late in year 2 turned negative
# without the constraint: with a high B-cell baseline, antigen-driven growth exceeds CAR-T death, so a negative
# count grew without bound (non-finite at day 851).
PATIENT = {"dM_19": 0.03795425099418176, "kmax_19": 23.852267562256504, "rhoH_19": 0.8700856345402883,
           "B0": 561.4970595034296, "d_n": 0.04386227076823468, "V_car": 202.85870492029113,
           "kEM_19": 0.04669779926067828, "dE_19": 0.19993374168009467, "thalf_IgG": 25.456588740546128,
           "r_N": 0.13907671616825387}
DOSE = [kinetics.Dose(0.0, 6e7, "car19")]


def test_cell_counts_decaying_below_atol_stay_non_negative():
    sle = kinetics.load_model("cd19_sle")
    assert all(s.nonnegative for s in sle.model.states)
    t = np.linspace(0.0, 1095.0, 1096)
    sim = sle.simulate(t, PATIENT, DOSE, rtol=1e-8, atol=1e-10)
    assert sim.success, sim.message
    # step ends are >= 0; outputs interpolated inside a step may dip below 0 by less than atol
    assert sim.states.min() >= -1e-10
    unconstrained = compile_model(dataclasses.replace(
        sle.model, states=tuple(dataclasses.replace(s, nonnegative=False) for s in sle.model.states)))
    # whether a tiny negative count is met, and grows, depends on the step sequence, so the demonstration runs
    # over several (both stiff-capable methods, five tolerances): with the constraint every one succeeds and
    # stays non-negative; without it 6 of the 10 blew up (counts near -1000, then non-finite) when written
    paths = [(method, rtol) for method in ("auto", "rodas5p") for rtol in (1e-8, 3e-8, 1e-7, 3e-7, 1e-6)]
    blown_up = []
    for method, rtol in paths:
        kept = sle.simulate(t, PATIENT, DOSE, rtol=rtol, atol=1e-10, method=method)
        assert kept.success and kept.states.min() >= -1e-10, (method, rtol)
        bad = unconstrained.simulate(t, PATIENT, DOSE, rtol=rtol, atol=1e-10, method=method)
        if not bad.success:
            assert "non-finite" in bad.message
            blown_up.append(bad)
    assert len(blown_up) >= 3, f"only {len(blown_up)} of {len(paths)} unconstrained solves blew up"
    # before the trouble the solves agree (the constraint is inactive while the counts are well above atol)
    early = t <= 400
    np.testing.assert_allclose(sim.outputs["bcells"][early], blown_up[0].outputs["bcells"][early], rtol=1e-5,
                               atol=1e-9)


def test_equations_that_drive_a_non_negative_state_below_zero_fail_loudly():
    # x' = -1 crosses 0 at t = 1: declaring x non-negative is wrong, and the solve must say so rather than
    # return clipped values as a success or spin in ever smaller steps until max_steps
    m = compile_model(build_model("ramp", {}, {"x": 1.0}, {"x": "-1"}, outputs={"x_obs": "x"}, nonnegative=True))
    for method in ("dopri5", "rodas5p"):
        sim = m.simulate([0.5, 2.0], method=method)
        assert sim.status is kinetics.SolveStatus.NEGATIVE_RATE, (method, sim.message)
        assert "'x' is declared non-negative" in sim.message
        assert float(sim.message.split("t=")[1].split(")")[0]) == pytest.approx(1.0, abs=1e-5)  # x reaches 0 at t = 1
        assert sim.outputs["x_obs"][0] == pytest.approx(0.5, rel=1e-12) and np.isnan(sim.outputs["x_obs"][1])
    batch = m.simulate_batch([0.5, 2.0], params=np.zeros((2, 0)))
    assert list(batch.status) == [kinetics.SolveStatus.NEGATIVE_RATE] * 2 and "'x'" in batch.messages[1]


def test_stein_memory_compartment_may_go_negative_when_persistence_outpaces_contraction():
    # Stein 2019's closed form: E + M = Cmax ((1 - FB) exp(-alpha s) + FB exp(-beta s)), s = t - Tmax; with
    # beta > alpha, M = FB Cmax (exp(-beta s) - exp(-alpha s)) < 0, so M must not be declared non-negative
    stein = kinetics.load_model("stein2019")
    p = dict(stein.defaults, alpha=0.02, beta=0.05)
    t = np.array([5.0, 30.0, 200.0])
    sim = stein.simulate(t, p, rtol=1e-10, atol=1e-12)
    assert sim.success, sim.message
    s = np.maximum(t - p["Tmax"], 0.0)
    expected = np.where(t < p["Tmax"], p["Cmax"] / p["foldx"] * p["foldx"] ** (t / p["Tmax"]),
                        p["Cmax"] * ((1 - p["FB"]) * np.exp(-p["alpha"] * s) + p["FB"] * np.exp(-p["beta"] * s)))
    np.testing.assert_allclose(sim.outputs["car_qpcr"], expected, rtol=1e-7)
    assert sim.states[-1, stein.state_names.index("M")] < 0
