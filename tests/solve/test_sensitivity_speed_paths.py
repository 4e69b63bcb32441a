"""Forward sensitivities on their fast paths: the generated sparse second-derivative kernels, the step-size
error test with and without the sensitivities, and the flush of negligible components
(docs/ENGINE.md, "Forward sensitivities: cost and accuracy")."""

from __future__ import annotations

import numba
import numpy as np
import pytest

import kinetics

DOSE = 6e7  # CAR+ cells of each product (1e6/kg x 60 kg, the default scenario of tests/library/test_lib_lupus.py)
DUAL = [kinetics.Dose(0.0, DOSE, "car19"), kinetics.Dose(0.0, DOSE, "carbcma")]
# the nine parameters with random effects in the virtual lupus trial (fits/data/virtual_trial.json)
WRT = ("dM_19", "kmax_19", "rhoH_19", "B0", "d_n", "V_car", "dM_bc", "kmax_bc", "rhoH_bc")
TIMES = np.array([1.0, 4.0, 7.0, 14.0, 28.0, 60.0, 120.0, 200.0, 365.0])


@pytest.fixture(scope="module")
def dual() -> kinetics.CompiledModel:
    return kinetics.load_model("dual_car_sle")


@pytest.fixture(scope="module")
def dual_reference(dual) -> np.ndarray:
    """d outputs / d p (n_times, n_outputs, 9) by the fourth-order central difference
    (f(p - 2h) - 8 f(p - h) + 8 f(p + h) - f(p + 2h)) / 12h with h = 1e-4 p, on solves at rtol 1e-12,
    atol 1e-14 (no sensitivity code involved). The stencils with h = 1e-4 p and 3e-4 p agree to 9e-7 of
    each sensitivity's range (measured), which bounds this reference's own error."""
    base = dict(dual.defaults)
    ref = np.empty((TIMES.size, len(dual.output_names), len(WRT)))
    for j, name in enumerate(WRT):
        h = 1e-4 * abs(base[name])
        f = [dual.simulate(TIMES, params={**base, name: base[name] + c * h}, doses=DUAL, rtol=1e-12, atol=1e-14)
             for c in (-2, -1, 1, 2)]
        for o, out in enumerate(dual.output_names):
            ref[:, o, j] = (f[0].outputs[out] - 8 * f[1].outputs[out] + 8 * f[2].outputs[out]
                            - f[3].outputs[out]) / (12 * h)
    return ref


# (rtol, error control, method, tolerance as a fraction of each sensitivity's range over TIMES).
# Measured errors against the reference (docs/ENGINE.md): at rtol 1e-8 every variant 6.6e-7 (the
# reference's own noise); at rtol 1e-6 auto 4.2e-6 without / 1.0e-6 with error control, rodas5p 2.0e-5
# without / 1.6e-6 with. Tolerances are about 2.5x those, for other CPUs and compilers.
CASES = [
    (1e-8, False, "auto", 2e-6), (1e-8, False, "rodas5p", 2e-6), (1e-8, True, "rodas5p", 2e-6),
    (1e-6, False, "auto", 1e-5), (1e-6, True, "auto", 3e-6),
    (1e-6, False, "rodas5p", 5e-5), (1e-6, True, "rodas5p", 4e-6),
]


@pytest.mark.parametrize(("rtol", "error_control", "method", "tol"), CASES,
                         ids=[f"rtol{c[0]:g}-{'errcon' if c[1] else 'states-only'}-{c[2]}" for c in CASES])
def test_dual_car_sle_sensitivities_match_central_differences(dual, dual_reference, rtol, error_control, method,
                                                              tol):
    """All nine directions at once (M = 9: the sparse kernels, the shared LU and the flush of the B-cell
    clone that CAR-T kill to below 1e-300 all take part) against central differences."""
    sens = dual.sensitivities(TIMES, doses=DUAL, wrt=list(WRT), rtol=rtol, atol=rtol * 1e-2, method=method,
                              sensitivity_error_control=error_control)
    assert sens.success, sens.simulation.message
    scale = np.abs(dual_reference).max(axis=0)
    assert (scale > 0).all()   # every output depends on every one of these parameters somewhere in TIMES
    err = np.abs(sens.outputs - dual_reference) / scale
    assert err.max() <= tol, f"largest error {err.max():.2e} of the sensitivity's range (allowed {tol:.0e})"


@pytest.mark.parametrize("method", ["auto", "rodas5p"])
def test_leaving_sensitivities_out_of_the_error_test_saves_steps(dual, method):
    """The point of the option: the states alone choose the steps (the same steps as a plain solve for
    rodas5p, which has no stiffness detection to be swayed), with error control the solve takes more."""
    kw = dict(doses=DUAL, wrt=list(WRT), rtol=1e-6, atol=1e-8, method=method)
    without = dual.sensitivities(TIMES, sensitivity_error_control=False, **kw).simulation
    with_ = dual.sensitivities(TIMES, sensitivity_error_control=True, **kw).simulation
    plain = dual.simulate(TIMES, doses=DUAL, rtol=1e-6, atol=1e-8, method=method)
    assert without.n_steps < with_.n_steps
    if method == "rodas5p":
        assert without.n_steps == plain.n_steps


def _kernel_calls(kernels):
    """njit wrappers around the solver's augmented right-hand side and augmented-Jacobian blocks."""
    rhs_call, sens_jac = kernels.sys_rhs_call, kernels.sens_jac

    @numba.njit
    def augmented_rhs(Y, p, sens, out):
        rhs_call(0.0, 0.0, Y, p, np.zeros(0), out, sens)

    @numba.njit
    def jacobian_blocks(Y, p, sens):
        sens_jac(0.0, 0.0, Y, p, sens)

    return augmented_rhs, jacobian_blocks


@pytest.fixture(scope="module")
def augmented(dual):
    """The augmented system of dual_car_sle at its day-7 state (CAR-T expanding, B cells falling) with
    random sensitivity vectors, so that every second-derivative term is exercised."""
    wrt = list(WRT) + ["init:N"]   # a parameter and an initial-value direction
    n, k = len(dual.state_names), dual.kernels
    sim = dual.simulate([7.0], doses=DUAL, rtol=1e-10, atol=1e-12)
    rng = np.random.default_rng(7)
    Y = np.concatenate([sim.states[0], rng.normal(size=n * len(wrt)) * np.tile(sim.states[0] + 1.0, len(wrt))])
    p = dual.parameter_vector(None)
    sdir = dual._wrt(wrt)[1]
    return dual, k, Y, p, sdir, _kernel_calls(k)


def test_sensitivity_rhs_is_jacobian_times_s_plus_df_dp(augmented):
    """m_sens_rhs and the df/dp columns against J and df/dp from central differences of the model's
    right-hand side (the symbolic derivatives are not involved in the reference)."""
    model, k, Y, p, sdir, (rhs, _) = augmented
    n, M = k.N_STATES, len(sdir)
    sens = model._sensitivity_work(sdir, False)
    out = np.zeros((1, Y.size))
    rhs(Y, p, sens, out)

    def f(y, q):
        o = np.zeros((1, Y.size))
        rhs(np.concatenate([y, Y[n:]]), q, sens, o)
        return o[0, :n]

    y = Y[:n]
    hy = 1e-6 * np.maximum(np.abs(y), 1.0)
    jac = np.column_stack([(f(y + hy[j] * e, p) - f(y - hy[j] * e, p)) / (2 * hy[j]) for j, e in enumerate(np.eye(n))])
    for kdir in range(M):
        s = Y[n * (1 + kdir): n * (2 + kdir)]
        expected = jac @ s
        if sdir[kdir] < k.N_PARAMS:
            q = sdir[kdir]
            hq = 1e-6 * abs(p[q])
            dp = np.zeros_like(p)
            dp[q] = hq
            expected = expected + (f(y, p + dp) - f(y, p - dp)) / (2 * hq)
        got = out[0, n * (1 + kdir): n * (2 + kdir)]
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7 * np.abs(expected).max(),
                                   err_msg=f"direction {kdir}")


def test_augmented_jacobian_blocks_match_central_differences(augmented):
    """The Rosenbrock iteration matrix of the augmented system needs A_k = d(J s_k + df/dp_k)/dy exactly
    (Rodas5P's order conditions assume the exact Jacobian): the generated sparse blocks against central
    differences of the augmented right-hand side with respect to the states."""
    model, k, Y, p, sdir, (rhs, blocks) = augmented
    n, M = k.N_STATES, len(sdir)
    sens = model._sensitivity_work(sdir, False)
    blocks(Y, p, sens)
    sv = sens[1]
    dense = np.zeros((M, n, n))
    for kdir in range(M):
        vals = sv[k.SV_ABLK + k.A_NNZ * kdir: k.SV_ABLK + k.A_NNZ * (kdir + 1)]
        dense[kdir, k.A_ROW, k.A_COL] = vals

    def g(Yv):
        o = np.zeros((1, Y.size))
        rhs(Yv, p, sens, o)
        return o[0, n:].reshape(M, n)

    for j in range(n):
        h = 1e-6 * max(abs(Y[j]), 1.0)
        e = np.zeros(Y.size)
        e[j] = h
        column = (g(Y + e) - g(Y - e)) / (2 * h)   # (M, n): d(sensitivity rhs of every direction)/dy_j
        np.testing.assert_allclose(dense[:, :, j], column, rtol=1e-5, atol=1e-7 * np.abs(column).max() + 1e-300,
                                   err_msg=f"column {j} ({model.state_names[j]})")


def test_negligible_components_are_flushed_to_exact_zero(oral):
    """flush_negligible: a component below FLUSH_BELOW * atol of its state (sensitivities use their state's
    atol) becomes 0; one at or above the threshold is left bit for bit, whatever its sign."""
    k = oral.kernels
    flush = k.flush_negligible

    @numba.njit
    def run(Y, atol):
        flush(Y, atol)

    atol = np.array([1e-8, 1e-2])
    thr = k.FLUSH_BELOW * atol
    Y = np.array([thr[0] * 0.5, -thr[1] * 0.99, thr[0], -thr[1] * 1.01, 5e-324, 3e-300, 0.0, -1.0])
    expected = np.array([0.0, 0.0, thr[0], -thr[1] * 1.01, 0.0, 0.0, 0.0, -1.0])   # blocks: (y0, y1), (s0, s1), ...
    run(Y, atol)
    assert np.array_equal(Y, expected)


@pytest.mark.parametrize("method", ["dopri5", "rodas5p"])
def test_sensitivity_to_a_dose_scale_during_an_infusion(oral, method):
    """A zero-order infusion into the depot scaled by F (the d(rate)/dp path): conc is linear in F, so
    dC/dF = C / F at F = 1; d/dka against central differences."""
    doses = [kinetics.Dose(0.0, 320.0, "depot", duration=2.0)]
    t = np.array([0.5, 1.5, 3.0, 8.0])
    sens = oral.sensitivities(t, doses=doses, wrt=["F", "ka"], rtol=1e-10, atol=1e-12, method=method)
    assert sens.success
    np.testing.assert_allclose(sens.outputs[:, 0, 0], sens.simulation.outputs["conc"], rtol=1e-8)
    h = 1e-5 * 1.5
    up = oral.simulate(t, params={"ka": 1.5 + h}, doses=doses, rtol=1e-12, atol=1e-14).outputs["conc"]
    dn = oral.simulate(t, params={"ka": 1.5 - h}, doses=doses, rtol=1e-12, atol=1e-14).outputs["conc"]
    np.testing.assert_allclose(sens.outputs[:, 0, 1], (up - dn) / (2 * h), rtol=1e-6)


def test_repeated_solver_takes_the_error_control_choice(oral):
    times = np.array([1.0, 4.0, 12.0])
    doses = [kinetics.Dose(0.0, 320.0, "depot")]
    p = oral.parameter_vector(None)
    for choice in (False, True):
        _, d, msg = oral.repeated_solver(times, doses, wrt=("CL",), sensitivity_error_control=choice)(p)
        ref = oral.sensitivities(times, doses=doses, wrt=["CL"], sensitivity_error_control=choice)
        assert msg == ""
        assert np.array_equal(d, ref.outputs)


def test_error_control_choice_must_be_a_bool(oral):
    with pytest.raises(kinetics.SolverInputError, match="sensitivity_error_control must be True or False"):
        oral.sensitivities([1.0], wrt=["CL"], sensitivity_error_control="yes")
    with pytest.raises(kinetics.SolverInputError, match="sensitivity_error_control"):
        oral.repeated_solver([1.0], wrt=("CL",), sensitivity_error_control=1)
