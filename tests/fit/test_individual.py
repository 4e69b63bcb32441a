"""Individual maximum-likelihood fits against closed forms and independent optimisers.

References: the Bateman function (tests/references.py) fitted by scipy.optimize.least_squares
(for additive Gaussian error the ML estimates are the least-squares ones and the ML SD is
sqrt(RSS/n)); the Gauss-Newton covariance sigma^2 (J'J)^-1; ordinary least squares (numpy.linalg)
for a straight line, where Wald and profile intervals have closed forms; a censored (M3)
likelihood written out with scipy.stats.norm and minimised by Nelder-Mead.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import optimize, stats

import kinetics
from kinetics.data import read_dataset
from kinetics.errors import FitSpecError
from kinetics.fit import IndividualFits, fit_individual
from kinetics.fit._individual import CHI2_1_95, _SubjectObjective, covariance_from_hessian
from kinetics.fit._problem import build_problem
from tests.references import bateman, shared_data

ADD = {"conc": {"kind": "additive", "add": 0.7}}
INIT = {"ka": 1.5, "CL": 2.7, "V": 31.0}


@pytest.fixture(scope="module")
def theoph_frame():
    return pd.read_csv(shared_data("theoph_nonmem.csv"))


def _subject(frame: pd.DataFrame, sid: int) -> pd.DataFrame:
    return frame[frame["ID"] == sid].reset_index(drop=True)


def _obs(frame: pd.DataFrame, sid: int) -> tuple[float, np.ndarray, np.ndarray]:
    """Dose, observation times and concentrations of one theophylline subject."""
    s = _subject(frame, sid)
    dose = float(s.loc[s["EVID"] == 1, "AMT"].iloc[0])
    obs = s[s["EVID"] == 0]
    return dose, obs["TIME"].to_numpy(float), obs["DV"].to_numpy(float)


def _least_squares(dose, t, y, x0=(math.log(1.5), math.log(2.7), math.log(31.0))):
    """Independent reference: Bateman least squares over log parameters (scipy, tight tolerances)."""
    res = optimize.least_squares(lambda x: bateman(t, dose, *np.exp(x)) - y, x0, method="lm", xtol=1e-15,
                                 ftol=1e-15, gtol=1e-15, jac="3-point")
    return res.x, float(res.fun @ res.fun), res.jac


# -- (a) noise-free simulated subject ------------------------------------------------------------
def test_noise_free_subject_recovers_true_parameters(oral):
    # data from the closed form (Bateman) at known parameters, no noise; the SD is held at a known value
    # (with no noise its ML estimate is 0 and -2LL is unbounded)
    truth = {"ka": 1.2, "CL": 2.5, "V": 30.0}
    t = np.array([0.25, 0.5, 1.0, 2.0, 3.5, 5.0, 7.0, 9.0, 12.0, 24.0])
    conc = bateman(t, 320.0, truth["ka"], truth["CL"], truth["V"])
    frame = pd.DataFrame({"ID": 1, "TIME": np.r_[0.0, t], "DV": [".", *(repr(float(c)) for c in conc)], "EVID": [1] + [0] * t.size,
                          "AMT": ["320", *["."] * t.size], "CMT": ["depot", *["."] * t.size]})
    fits = fit_individual(oral, frame, estimate={"ka": 2.0, "CL": 3.5, "V": 22.0}, error={"conc": "additive"},
                          fixed={"conc.add": 0.1}, n_starts=4, rtol=1e-10, atol=1e-12)
    fit = fits.fits[0]
    assert fit.success, fit.message
    for name, value in truth.items():   # limited by the solver tolerance (rtol 1e-10), not the optimiser
        assert fit.estimates[name] == pytest.approx(value, rel=1e-6)
    assert fit.estimates["conc.add"] == pytest.approx(0.1, rel=1e-15) and math.isnan(fit.standard_errors["conc.add"])
    # -2LL at a perfect fit: n log(sd^2) (residuals 0)
    assert fit.ofv == pytest.approx(t.size * math.log(0.01), abs=1e-6)
    assert np.allclose(fit.predictions["IPRED"].to_numpy(), conc, rtol=1e-7)


# -- (b, c) theophylline vs least squares and Gauss-Newton ----------------------------------------
@pytest.fixture(scope="module")
def theoph_fits(oral, theoph):
    return fit_individual(oral, theoph, estimate=INIT, error=ADD, n_starts=4, seed=1)


def test_theophylline_ml_equals_least_squares(theoph_fits, theoph_frame):
    assert theoph_fits.success and len(theoph_fits) == 12
    for fit in theoph_fits:
        dose, t, y = _obs(theoph_frame, int(fit.id))
        x, rss, _ = _least_squares(dose, t, y)
        n = t.size
        est = np.log([fit.estimates[k] for k in ("ka", "CL", "V")])
        np.testing.assert_allclose(est, x, atol=2e-5, err_msg=f"subject {fit.id}")   # optimiser tolerances
        assert fit.estimates["conc.add"] == pytest.approx(math.sqrt(rss / n), rel=1e-7)
        # -2LL of the ML fit, no 2pi: n log(RSS/n) + n
        assert fit.ofv == pytest.approx(n * math.log(rss / n) + n, abs=1e-7)
        assert fit.ofv_with_constant == pytest.approx(fit.ofv + n * math.log(2 * math.pi))


def _closed_form_hessian(dose, t, y, z, h=1e-4):
    """Hessian of the closed-form -2LL (Bateman, additive error, no 2pi) in z = (log ka, log CL, log V, log sd)
    by central second differences."""
    def m2ll(z):
        r = (y - bateman(t, dose, *np.exp(z[:3]))) / math.exp(z[3])
        return float(np.sum(2 * z[3] + r * r))
    eye = np.eye(z.size) * h
    return np.array([[(m2ll(z + a + b) - m2ll(z + a - b) - m2ll(z - a + b) + m2ll(z - a - b)) / (4 * h * h)
                      for b in eye] for a in eye])


def test_theophylline_standard_errors_match_the_closed_form_observed_information(theoph_fits, theoph_frame):
    # SEs from (H/2)^-1, H = Hessian of -2LL at the optimum; reference: H of the closed-form -2LL by second
    # differences (independent of the solver, the sensitivities and our finite differences of the gradient)
    for fit in theoph_fits:
        dose, t, y = _obs(theoph_frame, int(fit.id))
        z = np.log([fit.estimates[k] for k in ("ka", "CL", "V", "conc.add")])
        cov = np.linalg.inv(_closed_form_hessian(dose, t, y, z) / 2)
        se_log = np.array([fit.standard_errors[k] / fit.estimates[k] for k in ("ka", "CL", "V", "conc.add")])
        np.testing.assert_allclose(se_log, np.sqrt(np.diag(cov)), rtol=1e-5, err_msg=f"subject {fit.id}")
        # ML sd of an additive model: Var(log sd) = 1 / (2n)
        assert se_log[3] == pytest.approx(1 / math.sqrt(2 * t.size), rel=1e-4)


def _simulated_subject(sd: float) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    t = np.array([0.25, 0.5, 1.0, 2.0, 3.5, 5.0, 7.0, 9.0, 12.0, 24.0])
    y = bateman(t, 320.0, 1.2, 2.5, 30.0) + sd * np.random.default_rng(3).standard_normal(t.size)
    frame = pd.DataFrame({"ID": 1, "TIME": np.r_[0.0, t], "DV": [".", *(repr(float(c)) for c in y)],
                          "EVID": [1] + [0] * t.size, "AMT": ["320", *["."] * t.size], "CMT": ["depot", *["."] * t.size]})
    return frame, t, y


def test_standard_errors_approach_gauss_newton_as_residuals_shrink(oral):
    # Gauss-Newton covariance sigma_ML^2 (J'J)^-1 (J from the closed form) leaves out the residual-curvature
    # term sum r_j d2f_j of the exact Hessian, which is O(sigma): the SEs agree within a few % at sd 0.1 and the
    # gap shrinks in proportion to sd. (On the real theophylline data that term moves ka's SE by up to 14 %,
    # subject 1: the exact-Hessian test above is the reference there.)
    gaps = []
    for sd in (0.1, 0.02):
        frame, t, y = _simulated_subject(sd)
        fit = fit_individual(oral, frame, estimate=INIT, error={"conc": {"kind": "additive", "add": sd}},
                             n_starts=0).fits[0]
        _, rss, jac = _least_squares(320.0, t, y)
        gn = np.sqrt(np.diag(rss / t.size * np.linalg.inv(jac.T @ jac)))
        se_log = np.array([fit.standard_errors[k] / fit.estimates[k] for k in ("ka", "CL", "V")])
        gaps.append(np.abs(se_log / gn - 1))
    assert gaps[0].max() < 0.02 and gaps[1].max() < 0.005
    np.testing.assert_allclose(gaps[1] / gaps[0], 0.2, atol=0.03)   # first order in sd: 0.02 / 0.1


def test_results_table_json_and_predictions(theoph_fits, theoph_frame):
    tab = theoph_fits.table()
    assert list(tab["ID"]) == [str(i) for i in range(1, 13)]
    for col in ("ka", "ka_se", "ka_ci_low", "ka_ci_high", "conc.add", "ofv", "n_starts_at_best", "success"):
        assert col in tab.columns
    doc = json.loads(theoph_fits.to_json())
    assert doc["method"] == "individual" and len(doc["fits"]) == 12
    assert doc["fits"][0]["estimates"]["CL"] == pytest.approx(theoph_fits["1"].estimates["CL"])
    fit = theoph_fits["1"]
    pred = fit.predictions
    dose, t, y = _obs(theoph_frame, 1)
    ipred = bateman(t, dose, fit.estimates["ka"], fit.estimates["CL"], fit.estimates["V"])
    np.testing.assert_allclose(pred["IPRED"], ipred, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(pred["IWRES"], (y - pred["IPRED"]) / fit.estimates["conc.add"], rtol=1e-12)
    assert "Individual maximum-likelihood fits" in theoph_fits.summary()
    with pytest.raises(KeyError, match="did you mean '12'"):
        theoph_fits["120"]


# -- (d) profile likelihood vs Wald ----------------------------------------------------------------
LINE_MODEL = """
name = "line"
description = "y = a + b t written as an ODE (test model; 'c' does not enter)"
time_unit = "h"
[parameters]
a = { value = 1.0, unit = "1" }
b = { value = 0.5, unit = "1/h" }
c = { value = 1.0, unit = "1", lower = 0.0 }
[states]
x = { initial = "a", unit = "1" }
[odes]
x = "b + 0*c"
[outputs]
y = { expression = "x", unit = "1" }
"""


@pytest.fixture(scope="module")
def line(tmp_path_factory):
    path = tmp_path_factory.mktemp("line") / "line.toml"
    path.write_text(LINE_MODEL)
    t = np.arange(1.0, 12.0)
    noise = np.array([0.3, -0.2, 0.1, 0.4, -0.5, 0.2, -0.1, 0.0, 0.3, -0.3, 0.1])
    y = 2.0 - 0.3 * t + noise
    frame = pd.DataFrame({"ID": 1, "TIME": t, "DV": y})
    design = np.c_[np.ones_like(t), t]
    beta, rss = np.linalg.lstsq(design, y, rcond=None)[:2]
    return kinetics.load_model(path), frame, design, beta, float(rss[0])


def test_profile_interval_of_a_linear_parameter_with_known_sd_equals_wald(line):
    # y = a + b t, sd known: -2LL is exactly quadratic in (a, b), so the profile interval is the Wald one,
    # b_hat +- 1.96 sd sqrt((X'X)^-1_bb) (OLS)
    model, frame, design, beta, _ = line
    fits = fit_individual(model, frame, estimate={"a": 0.0, "b": 0.0}, error={"y": "additive"},
                          fixed={"y.add": 0.3}, profile=["a", "b"], n_starts=2)
    fit = fits.fits[0]
    se = 0.3 * np.sqrt(np.diag(np.linalg.inv(design.T @ design)))
    for k, name in enumerate("ab"):
        assert fit.estimates[name] == pytest.approx(beta[k], abs=1e-7)
        assert fit.standard_errors[name] == pytest.approx(se[k], rel=1e-5)
        z = math.sqrt(CHI2_1_95)
        prof = fit.profile[name]
        assert not prof.low_open and not prof.high_open
        assert (prof.low, prof.high) == pytest.approx((beta[k] - z * se[k], beta[k] + z * se[k]), abs=1e-5)
        assert fit.wald_ci[name] == pytest.approx((prof.low, prof.high), abs=1e-5)


def test_profile_interval_with_estimated_sd_follows_the_exact_relation(line):
    # sd estimated too: profile -2LL(b) = n log(RSS(b)/n) + n with RSS(b) = RSS + (b - b_hat)^2 / (X'X)^-1_bb,
    # so the rise is n log(1 + z^2/n) (z = Wald statistic with the ML sd) and the profile interval is
    # b_hat +- se_ML sqrt(n (exp(3.84/n) - 1)): wider than Wald by that factor / 1.96.
    model, frame, design, beta, rss = line
    n = len(frame)
    fit = fit_individual(model, frame, estimate={"a": 0.0, "b": 0.0}, error={"y": "additive"}, profile=["b"],
                         n_starts=2).fits[0]
    se_b = math.sqrt(rss / n * np.linalg.inv(design.T @ design)[1, 1])
    assert fit.standard_errors["b"] == pytest.approx(se_b, rel=1e-5)
    half = se_b * math.sqrt(n * math.expm1(CHI2_1_95 / n))
    prof = fit.profile["b"]
    assert (prof.low, prof.high) == pytest.approx((beta[1] - half, beta[1] + half), abs=1e-5)
    lo, hi = fit.wald_ci["b"]
    assert (hi - lo) / (prof.high - prof.low) == pytest.approx(1.959964 / math.sqrt(n * math.expm1(CHI2_1_95 / n)),
                                                               rel=1e-4)


def test_profile_of_a_log_parameter_is_close_to_wald(theoph_fits, oral, theoph):
    # CL of subject 3 (RSE 3 %) is nearly linear on the log scale: profile close to Wald, slightly wider
    # (the SD is re-estimated: the linear-model factor sqrt(n (e^{3.84/n} - 1))/1.96 = 1.094 for n = 11)
    data = read_dataset(theoph.table[theoph.table["ID"] == "3"].drop(columns="LINE"))
    fit = fit_individual(oral, data, estimate=INIT, error=ADD, profile=["CL"], n_starts=0).fits[0]
    prof, (lo, hi) = fit.profile["CL"], fit.wald_ci["CL"]
    ratio = math.log(prof.high / prof.low) / math.log(hi / lo)
    assert ratio == pytest.approx(math.sqrt(11 * math.expm1(CHI2_1_95 / 11)) / 1.959964, rel=0.02)
    assert prof.low < fit.estimates["CL"] < prof.high and "unreliable" not in prof.message


def test_profile_reports_an_open_end_at_a_bound(oral, theoph_frame):
    # F is bounded above by 1 in oral_1cmt; with V fixed, F is identifiable and its optimum for subject 1 is
    # near F = 29.4/31.9 = 0.92: the upper 95 % end lies beyond 1, so the interval is open there
    data = _subject(theoph_frame, 1)
    fit = fit_individual(oral, data, estimate={"ka": 1.5, "CL": 2.7, "F": 0.9}, fixed={"V": 31.9}, error=ADD,
                         profile=["F"], n_starts=0).fits[0]
    prof = fit.profile["F"]
    assert prof.high_open and prof.high == pytest.approx(1.0) and not prof.low_open
    assert "upper end: -2LL rose by only" in prof.message and str(prof).endswith(">=1]")


# -- (e) multi-start -------------------------------------------------------------------------------
def test_multistart_escapes_the_local_optimum_of_the_given_start(oral, theoph_frame):
    # From ka = 0.02, V = 0.01 (k = CL/V = 100 >> ka) the fit settles on the degenerate branch where
    # absorption alone shapes a monoexponential decline (-2LL 26.55); the global optimum (0.632) is the
    # least-squares one. Starts over the bounds find it.
    data = _subject(theoph_frame, 1)
    start = {"ka": 0.02, "CL": 1.0, "V": 0.01}
    local = fit_individual(oral, data, estimate=start, error=ADD, n_starts=0).fits[0]
    best = fit_individual(oral, data, estimate=start, error=ADD, n_starts=8, seed=0).fits[0]
    dose, t, y = _obs(theoph_frame, 1)
    _, rss, _ = _least_squares(dose, t, y)
    global_ofv = t.size * math.log(rss / t.size) + t.size
    assert local.ofv > global_ofv + 20
    assert best.ofv == pytest.approx(global_ofv, abs=1e-6)
    assert 1 <= best.n_starts_at_best < best.n_starts == 9
    assert sum(o > best.ofv + 20 for o in best.start_ofvs) >= 1   # the given start is still among the local ones


def test_flip_flop_mirror_optimum_is_reported(theoph_fits):
    # The Bateman function is symmetric in ka and k = CL/V: (ka, CL, V) and (CL/V, CL, CL/ka) give the same
    # curve, so both are global optima; the fit keeps the branch of the given start (ka > k) and names the other
    fit = theoph_fits["1"]
    ka, cl, v = (fit.estimates[k] for k in ("ka", "CL", "V"))
    assert ka > cl / v
    mirror = [o for o in fit.other_optima if o["ka"] < o["CL"] / o["V"]]
    assert mirror, fit.message
    assert mirror[0]["ka"] == pytest.approx(cl / v, rel=1e-4)
    assert mirror[0]["V"] == pytest.approx(cl / ka, rel=1e-4)
    assert "not unique" in fit.message


# -- (f) censored observations (M3) ----------------------------------------------------------------
def test_censored_subject_matches_hand_written_m3_likelihood(oral, theoph_frame):
    lloq = 5.0
    frame = _subject(theoph_frame, 1).copy()
    obs = frame["EVID"] == 0
    below = obs & (pd.to_numeric(frame["DV"], errors="coerce") < lloq)
    frame["CENS"] = below.astype(int)
    frame.loc[below, "DV"] = repr(lloq)
    fit = fit_individual(oral, frame, estimate=INIT, error=ADD, n_starts=4).fits[0]
    assert fit.success and fit.n_censored == 3

    dose, t, y = _obs(frame, 1)
    cens = frame.loc[obs, "CENS"].to_numpy() == 1

    def minus2ll(x):   # Beal's M3 written out: observed Gaussian terms without log 2pi, -2 log Phi for BLQ
        f = bateman(t, dose, *np.exp(x[:3]))
        sd = math.exp(x[3])
        r = (y[~cens] - f[~cens]) / sd
        return float(np.sum(2 * math.log(sd) + r * r) - 2 * np.sum(stats.norm.logcdf((lloq - f[cens]) / sd)))

    x_fit = np.log([fit.estimates[k] for k in ("ka", "CL", "V", "conc.add")])
    assert fit.ofv == pytest.approx(minus2ll(x_fit), abs=1e-7)
    ref = optimize.minimize(minus2ll, np.log([1.5, 2.7, 31.0, 0.7]), method="Nelder-Mead",
                            options={"xatol": 1e-10, "fatol": 1e-13, "maxiter": 20000, "maxfev": 40000})
    assert ref.success
    assert fit.ofv == pytest.approx(ref.fun, abs=1e-6)
    np.testing.assert_allclose(x_fit, ref.x, atol=1e-4)
    assert fit.predictions["IWRES"][cens].isna().all() and fit.predictions["IWRES"][~cens].notna().all()


@pytest.mark.parametrize("kind,init", [("additive", {"add": 0.7}), ("proportional", {"prop": 0.2}),
                                        ("combined", {"add": 0.3, "prop": 0.1}), ("log_additive", {"add": 0.2})],
                         ids=["additive", "proportional", "combined", "log_additive"])
def test_gradient_equals_central_differences(oral, theoph_frame, kind, init):
    # property: the sensitivity-based gradient of -2LL (censored rows included) equals central differences
    frame = _subject(theoph_frame, 2).copy()
    obs = frame["EVID"] == 0
    frame = frame[~obs | (frame["TIME"] > 0)]   # f(0) = 0: keep the log-scale and proportional models finite
    below = (frame["EVID"] == 0) & (pd.to_numeric(frame["DV"], errors="coerce") < 4.0)
    frame["CENS"] = below.astype(int)
    frame.loc[below, "DV"] = "4.0"
    problem = build_problem(oral, read_dataset(frame), estimate=INIT, error={"conc": {"kind": kind, **init}})
    obj = _SubjectObjective(problem, 0)
    x = problem.x0() + 0.05
    f0, grad, msg = obj(x)
    assert np.isfinite(f0) and not msg
    h = 1e-5
    numeric = [(obj(x + h * e)[0] - obj(x - h * e)[0]) / (2 * h) for e in np.eye(x.size)]
    np.testing.assert_allclose(grad, numeric, rtol=1e-5, atol=1e-5)


# -- (g) failures and bad input --------------------------------------------------------------------
def test_fit_that_cannot_start_is_reported_as_failed(oral, theoph_frame):
    # proportional error and an observation at t = 0, where f = 0: zero variance, -2LL infinite everywhere
    data = _subject(theoph_frame, 1)
    fits = fit_individual(oral, data, estimate=INIT, error={"conc": "proportional"}, n_starts=2)
    fit = fits.fits[0]
    assert not fit.success and not fits.success
    assert "not finite at any of 3 starts" in fit.message and "line 3" in fit.message
    assert all(math.isnan(v) for v in fit.estimates.values())
    assert "FAILED" in fits.summary() and not fits.table()["success"].iloc[0]


def test_unidentifiable_parameter_gives_nan_standard_errors(line):
    # c does not enter the model: the Hessian has a zero row, so it is not positive definite
    model, frame, *_ = line
    fit = fit_individual(model, frame, estimate={"a": 0.0, "b": 0.0, "c": 1.0}, error={"y": "additive"},
                         n_starts=0).fits[0]
    assert fit.success   # the optimum is found; only its uncertainty is undefined
    assert "not positive definite" in fit.covariance_message and fit.covariance is None
    assert all(math.isnan(v) for v in fit.standard_errors.values())
    assert fit.hessian_eigenvalues[0] == pytest.approx(0.0, abs=1e-6)


def test_covariance_from_an_indefinite_hessian_is_not_corrected():
    hess = np.array([[2.0, 3.0], [3.0, 2.0]])   # eigenvalues -1 and 5
    cov, ev, msg = covariance_from_hessian(hess)
    assert cov is None and ev == pytest.approx([-1.0, 5.0]) and "not positive definite" in msg
    cov, ev, msg = covariance_from_hessian(np.diag([4.0, 8.0]))
    np.testing.assert_allclose(cov, np.diag([0.5, 0.25]))   # (H/2)^-1


def test_single_observation_drives_the_sd_to_zero_and_is_not_success(oral):
    frame = pd.DataFrame({"ID": [1, 1, 2], "TIME": [0, 1, 0], "DV": [".", 3, "."], "EVID": [1, 0, 1],
                          "AMT": [100, ".", 100], "CMT": ["depot", ".", "depot"]})
    fits = fit_individual(oral, frame, estimate=INIT, error={"conc": "additive"}, n_starts=0)
    one, none = fits.fits
    assert not one.success and "collapsed towards 0" in one.message
    assert not none.success and none.message == "no observations"


@pytest.mark.parametrize("kwargs,match", [
    ({"profile": ["Cl"]}, "profile: 'Cl' is not an estimated quantity.*did you mean 'CL'"),
    ({"estimate": {"ka": 80.0, "CL": 2.7, "V": 31.0}}, "initial value 80 of 'ka' is outside its bounds"),
    ({"n_starts": -1}, "n_starts must be an integer >= 0"),
    ({"fixed": {"conc.ad": 0.5}}, "'conc.ad' is not a residual SD.*did you mean 'conc.add'"),
    ({"fixed": {"conc.add": 0.0}}, "must be a finite number > 0"),
    ({"estimate": {"Ka": 1.0}}, "did you mean 'ka'"),
], ids=["profile-name", "outside-bounds", "negative-starts", "fixed-sd-name", "fixed-sd-zero", "parameter-name"])
def test_bad_arguments_raise_fit_spec_error(oral, theoph_frame, kwargs, match):
    args = {"estimate": INIT, "error": ADD, **kwargs}
    with pytest.raises(FitSpecError, match=match):
        fit_individual(oral, _subject(theoph_frame, 1), **args)


def test_progress_callback_is_called_per_subject(oral, theoph_frame):
    seen = []
    data = theoph_frame[theoph_frame["ID"].isin([1, 2])]
    fits = fit_individual(oral, data, estimate=INIT, error=ADD, n_starts=0, progress=lambda k, f: seen.append((k, f.id)))
    assert seen == [(1, "1"), (2, "2")] and isinstance(fits, IndividualFits)
