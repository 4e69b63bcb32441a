"""Forward sensitivities against analytic derivatives and central differences."""

from __future__ import annotations

import numpy as np
import pytest
import sympy as sp

import kinetics

DOSE = [kinetics.Dose(time=0.0, amount=320.0, target="depot")]


def bateman_gradient(t: np.ndarray) -> np.ndarray:
    """d C / d (ka, CL, V, F) of F*D*ka/(V(ka-k)) (e^{-kt} - e^{-ka t}), k = CL/V, by sympy on the closed form."""
    ka, cl, v, f, tt = sp.symbols("ka CL V F t", positive=True)
    k = cl / v
    c = f * 320 * ka / (v * (ka - k)) * (sp.exp(-k * tt) - sp.exp(-ka * tt))
    grads = [sp.lambdify(tt, sp.diff(c, s).subs({ka: 1.5, cl: 2.75, v: 31.9, f: 1.0})) for s in (ka, cl, v, f)]
    return np.stack([g(t) for g in grads], axis=-1)


@pytest.mark.parametrize("method", ["dopri5", "rodas5p"])
def test_oral_sensitivities_match_analytic_derivatives(oral, method):
    t = np.linspace(0.5, 48, 25)
    sens = oral.sensitivities(t, doses=DOSE, rtol=1e-10, atol=1e-12, method=method)
    assert sens.success and sens.wrt == ("ka", "CL", "V", "F")
    np.testing.assert_allclose(sens.outputs[:, 0, :], bateman_gradient(t), rtol=1e-6, atol=1e-10)


def central_difference(model, t, name, params, doses, h_rel=1e-5, **kw):
    p = dict(model.defaults, **params)
    h = h_rel * abs(p[name])
    up = model.simulate(t, params={**p, name: p[name] + h}, doses=doses, rtol=1e-12, atol=1e-14, **kw)
    dn = model.simulate(t, params={**p, name: p[name] - h}, doses=doses, rtol=1e-12, atol=1e-14, **kw)
    return {o: (up.outputs[o] - dn.outputs[o]) / (2 * h) for o in model.output_names}


@pytest.mark.parametrize("name", ["rho", "alpha", "Tmax", "C0"])
def test_sensitivity_across_a_parameter_dependent_switch(phase, name):
    """d/dTmax needs the jump (f- - f+) dTmax/dp at the switch; checked against central differences."""
    t = np.array([1.0, 4.0, 6.0, 10.0, 30.0])
    sens = phase.sensitivities(t, rtol=1e-10, atol=1e-12, wrt=[name])
    fd = central_difference(phase, t, name, {}, None)
    np.testing.assert_allclose(sens.outputs[:, 0, 0], fd["C_obs"], rtol=1e-5)


def test_tmax_sensitivity_matches_closed_form(phase):
    """For t > Tmax, C = C0 e^{rho T} e^{-alpha (t - T)} so dC/dT = (rho + alpha) C."""
    t = np.array([6.0, 10.0])
    sens = phase.sensitivities(t, rtol=1e-10, atol=1e-12, wrt=["Tmax"])
    c = sens.simulation.outputs["C_obs"]
    np.testing.assert_allclose(sens.outputs[:, 0, 0], (0.8 + 0.3) * c, rtol=1e-7)


def test_sensitivity_to_initial_state_and_with_doses(linear3):
    t = np.array([0.5, 2.0, 8.0])
    doses = [kinetics.Dose(1.0, 2.0, "x1"), kinetics.Dose(3.0, 1.0, "x1", duration=2.0)]
    sens = linear3.sensitivities(t, doses=doses, wrt=["a", "c", "init:x2"], rtol=1e-10, atol=1e-13)
    for j, name in enumerate(["a", "c"]):
        fd = central_difference(linear3, t, name, {}, doses)
        for o, out in enumerate(linear3.output_names):
            np.testing.assert_allclose(sens.outputs[:, o, j], fd[out], rtol=1e-5, atol=1e-9)
    # d y(t)/d y2(0) of a linear system is column 2 of the state-transition matrix: compare to a perturbed solve
    h = 1e-4
    up = linear3.simulate(t, doses=doses, initial_states={"x2": 0.5 + h}, rtol=1e-12, atol=1e-14).states
    dn = linear3.simulate(t, doses=doses, initial_states={"x2": 0.5 - h}, rtol=1e-12, atol=1e-14).states
    np.testing.assert_allclose(sens.states[:, :, 2], (up - dn) / (2 * h), rtol=1e-6, atol=1e-10)


def test_sensitivity_to_dose_scale_parameter(oral):
    t = np.array([1.0, 5.0])
    sens = oral.sensitivities(t, doses=DOSE, wrt=["F"], rtol=1e-10, atol=1e-12)
    # conc is linear in F, so dC/dF = C / F at F = 1
    np.testing.assert_allclose(sens.outputs[:, 0, 0], sens.simulation.outputs["conc"], rtol=1e-8)


def test_unknown_sensitivity_name_is_a_clear_error(oral):
    with pytest.raises(kinetics.SolverInputError, match="did you mean 'CL'"):
        oral.sensitivities([1.0], wrt=["Cl"])


@pytest.mark.parametrize("method", ["rodas5p", "dopri5"])
def test_non_autonomous_model_and_its_sensitivities(method):
    """x' = -k x + a sin(w t): closed form by variation of constants; sensitivities vs central differences.
    Exercises the Rosenbrock df/dt terms (and their sensitivity blocks)."""
    model = kinetics.compile_model(kinetics.build_model(
        "forced", {"k": 0.7, "a": 2.0, "w": 1.3}, {"x": 1.0}, {"x": "-k*x + a*sin(w*t)"}, outputs={"x_obs": "x"}))
    t = np.array([0.5, 2.0, 7.0])
    k, a, w = 0.7, 2.0, 1.3
    exact = (np.exp(-k * t) + a / (k**2 + w**2) * (k * np.sin(w * t) - w * np.cos(w * t) + w * np.exp(-k * t)))
    sens = model.sensitivities(t, rtol=1e-10, atol=1e-12, method=method)
    np.testing.assert_allclose(sens.simulation.outputs["x_obs"], exact, rtol=1e-8)
    for j, name in enumerate(model.parameter_names):
        fd = central_difference(model, t, name, {}, None, method=method)
        np.testing.assert_allclose(sens.outputs[:, 0, j], fd["x_obs"], rtol=1e-5, atol=1e-9)
