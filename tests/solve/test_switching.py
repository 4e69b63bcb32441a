"""Method "auto": the hand-over between the explicit pair (Tsit5) and Rodas5P, both ways, decided by cost.

Reference solutions are exact: y' = -lambda(t) (y - cos t) - sin t with y(0) = 1 has y = cos t for every
lambda(t) (Hairer & Wanner, Solving ODEs II, section IV.1: the Prothero-Robinson problem), so the stiffness
can be set, and made to fade, without changing the answer.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import kinetics

TIMES = np.linspace(0.0, 30.0, 61)


@pytest.fixture(scope="module")
def prothero_robinson() -> kinetics.CompiledModel:
    """Stiffness lam0 exp(-t/tau) + lam1 (1/time): set lam0 = 0 for a constant one."""
    return kinetics.compile_model(kinetics.build_model(
        "prothero_robinson", {"lam0": 0.0, "lam1": 1.0, "tau": 1.0}, {"y": 1.0},
        {"y": "-(lam0*exp(-t/tau) + lam1)*(y - cos(t)) - sin(t)"}, outputs={"y_obs": "y"}))


def max_error(sim: kinetics.Simulation) -> float:
    return float(np.max(np.abs(sim.states[:, 0] - np.cos(sim.times))))


def test_auto_hands_over_where_stiffness_limits_the_explicit_step(prothero_robinson):
    # lambda = 200: Tsit5 is held at h |lambda| ~ 2 by the error test (2,900 steps); Rodas5P needs ~150
    params = {"lam1": 200.0}
    auto = prothero_robinson.simulate(TIMES, params=params, rtol=1e-6, atol=1e-10)
    explicit = prothero_robinson.simulate(TIMES, params=params, rtol=1e-6, atol=1e-10, method="tsit5")
    assert auto.success and explicit.success
    assert auto.stiff_from < 1.0 and auto.method_at_end == "rodas5p"
    assert auto.n_steps < explicit.n_steps / 5
    assert max_error(auto) < 2e-6


def test_auto_hands_back_to_the_explicit_pair_when_the_stiffness_fades(prothero_robinson):
    # lambda(t) = 1e4 exp(-t) + 1: stiff at the start, not stiff after t ~ 10
    params = {"lam0": 1e4, "lam1": 1.0, "tau": 1.0}
    auto = prothero_robinson.simulate(TIMES, params=params, rtol=1e-7, atol=1e-10)
    explicit = prothero_robinson.simulate(TIMES, params=params, rtol=1e-7, atol=1e-10, method="tsit5")
    stiff = prothero_robinson.simulate(TIMES, params=params, rtol=1e-7, atol=1e-10, method="rodas5p")
    assert auto.success and explicit.success and stiff.success
    assert auto.stiff_from < 0.1                      # handed over almost at once ...
    assert auto.method_at_end == "tsit5"              # ... and back
    assert auto.n_jacobians < stiff.n_jacobians       # Rodas5P did not run to the end
    assert auto.n_steps < explicit.n_steps / 4
    assert max_error(auto) < 1e-6
    assert "tsit5 at the end" in auto.summary()


def test_auto_hands_over_where_the_stiff_mode_holds_the_error_test_below_the_trigger(prothero_robinson):
    # lambda = 400 at rtol 1e-8: the error test holds Tsit5 at h |lambda| ~ 1.2, below STIFF_TRIGGER (10,209 steps
    # before the alignment test); the step's error estimate lies along the stiff mode, so Rodas5P gets its trial
    params = {"lam1": 400.0}
    auto = prothero_robinson.simulate(TIMES, params=params, rtol=1e-8, atol=1e-10)
    explicit = prothero_robinson.simulate(TIMES, params=params, rtol=1e-8, atol=1e-10, method="tsit5")
    stiff = prothero_robinson.simulate(TIMES, params=params, rtol=1e-8, atol=1e-10, method="rodas5p")
    assert auto.success and explicit.success and stiff.success
    assert auto.stiff_from < 1.0 and auto.method_at_end == "rodas5p"
    assert auto.n_steps < 1.2 * stiff.n_steps and auto.n_steps < explicit.n_steps / 10
    assert max_error(auto) < 1e-8


def test_a_trial_of_the_stiff_method_that_does_not_pay_leaves_the_explicit_solution_intact(prothero_robinson):
    # lambda = 20 at rtol 1e-6: h |lambda| reaches the trial thresholds, Rodas5P takes a few steps but cannot take
    # 3x the explicit step, and Tsit5 resumes. Its first stage must then be f at the new state: a stale one from
    # before the trial gave a dense-output error of 4.9e-5 (Tsit5 alone: 7.2e-7), hence the fine output grid.
    params = {"lam1": 20.0}
    fine = np.linspace(0.0, 30.0, 3001)
    auto = prothero_robinson.simulate(fine, params=params, rtol=1e-6, atol=1e-10)
    explicit = prothero_robinson.simulate(fine, params=params, rtol=1e-6, atol=1e-10, method="tsit5")
    assert auto.success
    assert auto.n_jacobians > 0 and math.isnan(auto.stiff_from), "precondition: a trial that was not kept"
    assert auto.method_at_end == "tsit5"
    assert max_error(auto) < 2.0 * max_error(explicit) + 1e-7


def test_fixed_methods_report_themselves_at_the_end(prothero_robinson):
    for method in ("tsit5", "dopri5", "rodas5p"):
        sim = prothero_robinson.simulate(TIMES, params={"lam1": 200.0}, method=method)
        assert sim.method_at_end == method and math.isnan(sim.stiff_from)
