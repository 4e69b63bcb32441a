"""Solutions against closed forms and an independent solver (ladder rungs 1-3)."""

from __future__ import annotations

from pathlib import Path

import numba
import numpy as np
import pytest
import scipy.integrate
import scipy.linalg

import kinetics
from tests.references import bateman

METHODS = ["auto", "dopri5", "rodas5p"]
DOSE = [kinetics.Dose(time=0.0, amount=320.0, target="depot")]


@pytest.mark.parametrize("method", METHODS)
def test_oral_matches_bateman_closed_form(oral, method):
    t = np.linspace(0.25, 48.0, 60)
    sim = oral.simulate(t, doses=DOSE, rtol=1e-10, atol=1e-12, method=method)
    assert sim.success, sim.message
    ref = bateman(t, 320.0, 1.5, 2.75, 31.9)
    assert np.max(np.abs(sim.outputs["conc"] / ref - 1)) < 1e-8


@pytest.mark.parametrize("method", METHODS)
def test_linear_system_matches_matrix_exponential(linear3, method):
    a, b, c, d = 0.7, 0.2, 1.3, 0.05
    A = np.array([[-a, 0, d], [a, -b - c, 0], [0, c + b, -d]])
    y0 = np.array([1.0, 0.5, 0.0])
    t = np.array([0.0, 0.1, 1.0, 3.0, 10.0, 50.0])
    sim = linear3.simulate(t, rtol=1e-10, atol=1e-13, method=method)
    assert sim.success, sim.message
    ref = np.array([scipy.linalg.expm(A * ti) @ y0 for ti in t])
    scale = np.abs(ref) + 1e-10
    assert np.max(np.abs(sim.states - ref) / scale) < 1e-8


def test_output_at_dose_time_is_after_the_dose(oral):
    sim = oral.simulate([0.0, 2.0, 2.0, 3.0], doses=[kinetics.Dose(2.0, 100.0, "depot")], rtol=1e-10, atol=1e-12)
    assert sim.states[0, 0] == 0.0
    assert sim.states[1, 0] == pytest.approx(100.0)
    assert sim.states[2, 0] == pytest.approx(100.0)


def test_dose_superposition_in_a_linear_model(oral):
    """Linear ODE: the response to two doses is the sum of the responses (superposition)."""
    t = np.linspace(0, 72, 40)
    d1 = kinetics.Dose(0.0, 320.0, "depot")
    d2 = kinetics.Dose(12.0, 160.0, "depot")
    both = oral.simulate(t, doses=[d1, d2], rtol=1e-10, atol=1e-12).outputs["conc"]
    s1 = oral.simulate(t, doses=[d1], rtol=1e-10, atol=1e-12).outputs["conc"]
    s2 = oral.simulate(t, doses=[d2], rtol=1e-10, atol=1e-12).outputs["conc"]
    np.testing.assert_allclose(both, s1 + s2, rtol=1e-8, atol=1e-12)


def test_bioavailability_scales_the_dose(oral):
    t = np.linspace(0.5, 24, 10)
    full = oral.simulate(t, doses=DOSE, rtol=1e-10, atol=1e-12).outputs["conc"]
    half = oral.simulate(t, params={"F": 0.5}, doses=DOSE, rtol=1e-10, atol=1e-12).outputs["conc"]
    np.testing.assert_allclose(half, 0.5 * full, rtol=1e-8)


@pytest.mark.parametrize("method", METHODS)
def test_zero_order_infusion_matches_closed_form(iv, method):
    """C(t) = R/CL (1 - e^{-kt}) during, and C(T) e^{-k(t-T)} after, an infusion of length T."""
    cl, v, amount, dur = 2.75, 31.9, 500.0, 2.0
    k, rate = cl / v, amount / dur
    t = np.array([0.5, 1.0, 2.0, 2.5, 6.0, 24.0])
    sim = iv.simulate(t, doses=[kinetics.Dose(0.0, amount, "central", duration=dur)], rtol=1e-10, atol=1e-12,
                      method=method)
    during = rate / cl * (1 - np.exp(-k * np.minimum(t, dur)))
    ref = np.where(t <= dur, during, rate / cl * (1 - np.exp(-k * dur)) * np.exp(-k * (t - dur)))
    np.testing.assert_allclose(sim.outputs["conc"], ref, rtol=1e-8)


@pytest.mark.parametrize("method", METHODS)
def test_switch_at_parameter_time_is_resolved_exactly(phase, method):
    """Piecewise growth/decline: closed form C0 e^{rho min(t,T)} e^{-alpha max(t-T, 0)}."""
    t = np.array([1.0, 4.9, 5.0, 5.1, 8.0, 20.0])
    sim = phase.simulate(t, rtol=1e-10, atol=1e-12, method=method)
    ref = 2.0 * np.exp(0.8 * np.minimum(t, 5.0)) * np.exp(-0.3 * np.maximum(t - 5.0, 0))
    np.testing.assert_allclose(sim.outputs["C_obs"], ref, rtol=1e-8)


def test_robertson_against_scipy_radau():
    """Stiff chemistry (Robertson 1966); reference: scipy Radau at rtol 1e-12 (an independent solver).
    The model file is the IVP Test Set case's (validation/models/robertson.toml: k1 0.04, k2 3e7, k3 1e4,
    y(0) = (1, 0, 0)), so the suite compiles it once."""
    model = kinetics.load_model(Path(__file__).resolve().parents[2] / "validation" / "models" / "robertson.toml")

    def f(t, y):
        return [-0.04 * y[0] + 1e4 * y[1] * y[2], 0.04 * y[0] - 1e4 * y[1] * y[2] - 3e7 * y[1] ** 2,
                3e7 * y[1] ** 2]

    t = np.array([0.4, 4.0, 40.0, 400.0])
    ref = scipy.integrate.solve_ivp(f, (0, 400), [1, 0, 0], method="Radau", t_eval=t, rtol=1e-12,
                                    atol=[1e-14, 1e-18, 1e-14]).y.T
    sim = model.simulate(t, rtol=1e-8, atol=[1e-12, 1e-16, 1e-12])
    assert sim.success, sim.message
    assert np.isfinite(sim.stiff_from), "auto should hand over to the stiff method on Robertson"
    np.testing.assert_allclose(sim.states, ref, rtol=1e-5)
    np.testing.assert_allclose(sim.states.sum(axis=1), 1.0, atol=1e-12)


def test_long_horizon_does_not_shrink_the_first_step_floor():
    """Regression: a fast start (rate 1e3) with t_end = 1e11 must not stop at t = 0 (step floor ~ eps*|t|)."""
    model = kinetics.compile_model(kinetics.build_model("fast", {"k": 1000.0}, {"y": 1.0}, {"y": "-k*y"}))
    sim = model.simulate([1e-3, 1e11], rtol=1e-8, atol=1e-12, method="rodas5p")
    assert sim.success, sim.message
    assert sim.states[0, 0] == pytest.approx(np.exp(-1.0), rel=1e-7)


@pytest.mark.parametrize("method", ["rodas5p", "auto"])
def test_stiff_system_needing_row_exchanges(method):
    """y'' + 1001 y' + 1000 y = 0 as a first-order system: W's first pivot 1/(h gamma) falls below
    0.1 * 1000 once steps grow, so the straight-line LU hands over to partial pivoting.
    Reference: scipy.linalg.expm."""
    model = kinetics.compile_model(kinetics.build_model(
        "stiff2", {"k": 1000.0, "c": 1001.0}, {"x": 1.0, "v": 0.0}, {"x": "v", "v": "-k*x - c*v"}))
    A = np.array([[0.0, 1.0], [-1000.0, -1001.0]])
    t = np.array([0.001, 0.01, 0.1, 1.0, 5.0])
    sim = model.simulate(t, rtol=1e-9, atol=1e-14, method=method, max_steps=1000)
    assert sim.success, sim.message
    ref = np.array([scipy.linalg.expm(A * ti) @ [1.0, 0.0] for ti in t])
    np.testing.assert_allclose(sim.states, ref, rtol=1e-6, atol=1e-12)
    # both factorisations are exercised: small steps pass the pivot test, large ones do not
    gamma = 0.21193756319429014  # Rodas5P
    w_factor = model.kernels.m_w_factor
    factor = numba.njit(lambda a: w_factor(a))  # the kernel has no Python entry point of its own
    for h, passes in ((1e-4, True), (0.1, False)):
        W = np.eye(2) / (h * gamma) - A
        assert factor(W.copy()) is passes
