"""The observed information by stochastic approximation (Louis' principle, ``covariance="stochastic"``):
against the exact information of a random-intercept model whose marginal likelihood is known (closed form
without censoring, Gauss-Hermite quadrature with M3 censoring), against nlmixr2 on theophylline, and its
option errors."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import special, stats

import kinetics
from kinetics.data import read_dataset
from kinetics.errors import FitSpecError
from kinetics.fit import fit_population
from kinetics.fit._covariance import _from_information
from kinetics.fit._problem import build_problem, params_to_omega
from kinetics.fit._saem import SaemOptions
from kinetics.fit._simulate import simulate_trial
from kinetics.fit._stochastic_information import omega_derivatives, stochastic_information

# log y_ij = log P + eta_i + eps_ij: a linear Gaussian random-intercept model in (log P, omega^2, sd)
RANDOM_INTERCEPT = """name = "random_intercept"
description = "Output equal to a log-normal parameter; with a log-additive error log y = log P + eta + eps"
time_unit = "h"
[parameters]
P = { value = 5.0, unit = "1", lower = 0.0, description = "level" }
[states]
A = { initial = "0", unit = "1" }
[odes]
A = "0"
[outputs]
y = { expression = "P + 0*A", unit = "1" }
"""
OMEGA2, SD, LLOQ = 0.3, 0.4, 3.0   # LLOQ 3 censors about a quarter of the values (median 5, total SD 0.68 on log)
SPEC = dict(estimate={"P": 5.0}, random_effects={"P": OMEGA2}, error={"y": {"kind": "log_additive", "add": SD}})
# cases: (censored, covariate effect on P, omega as a 1x1 Cholesky factor)
CASES = {"closed-form": (False, False, False), "covariate": (False, True, False), "cholesky": (False, False, True),
         "m3-quadrature": (True, False, False)}


@pytest.fixture(scope="module")
def intercept_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("ri") / "random_intercept.toml"
    path.write_text(RANDOM_INTERCEPT)
    return kinetics.load_model(path)


def intercept_data(model, censored: bool):
    """30 subjects x 4 values; WT is a covariate unrelated to the data (its coefficient is estimated near 0)."""
    table, _ = simulate_trial(model, n_subjects=30, times={"y": [1.0, 2.0, 3.0, 4.0]}, omega={"P": OMEGA2},
                              error={"y": {"kind": "log_additive", "add": SD}}, lloq={"y": LLOQ} if censored else None,
                              seed=3)
    table["WT"] = 50.0 + 2.0 * table["ID"]
    return read_dataset(table)


def intercept_spec(covariate: bool, full: bool) -> dict:
    return {**SPEC, "covariates": {"P": {"WT": "power"}} if covariate else None,
            "random_effects": {"omega": [[OMEGA2]], "names": ["P"]} if full else SPEC["random_effects"]}


def subject_logliks(problem, x: np.ndarray) -> np.ndarray:
    """Exact log L_i (up to a constant) of each subject of the random-intercept model at ``x``: multivariate
    normal, or a 120-node Gauss-Hermite integral over eta where values are censored (the integrand is smooth)."""
    theta, beta, omega, sigmas = problem.split(x)
    om2, sd = omega[0, 0], sigmas[0][0]
    t, w = np.polynomial.hermite.hermgauss(120)
    eta = np.sqrt(2.0 * om2) * t
    out = []
    for s in problem.subjects:
        y, cens = s.y, s.data.cens
        mu = np.log(theta[0]) + (s.covariate_shift[0] @ beta if beta.size else 0.0)
        if not cens.any():
            out.append(stats.multivariate_normal(np.full(y.size, mu), sd ** 2 * np.eye(y.size) + om2).logpdf(y))
            continue
        z = (y[:, None] - mu - eta[None, :]) / sd
        terms = np.where(cens[:, None] == 1, special.log_ndtr(z), stats.norm.logpdf(z) - np.log(sd))
        out.append(special.logsumexp(np.log(w) + terms.sum(axis=0)) - 0.5 * np.log(np.pi))
    return np.array(out)


def marginal_loglik(problem, x: np.ndarray) -> float:
    """Exact log L (up to a constant) of the random-intercept model at ``x``."""
    return float(subject_logliks(problem, x).sum())


def observed_information(f, x: np.ndarray, h: float = 1e-4) -> np.ndarray:
    """-Hessian of ``f`` by the four-point central stencil (f is smooth; error ~ h^2)."""
    p = x.size
    hess = np.empty((p, p))
    e = np.eye(p) * h
    for a in range(p):
        for b in range(p):
            hess[a, b] = (f(x + e[a] + e[b]) - f(x + e[a] - e[b]) - f(x - e[a] + e[b])
                          + f(x - e[a] - e[b])) / (4 * h * h)
    return -0.5 * (hess + hess.T)


def test_quadrature_reproduces_the_closed_form(intercept_model):
    # the reference below is only as good as the quadrature: on uncensored data both must agree
    problem = build_problem(intercept_model, intercept_data(intercept_model, False), **SPEC)
    x = problem.x0()
    closed = marginal_loglik(problem, x)
    quad = sum(special.logsumexp(np.log(w) + stats.norm.logpdf(s.y[:, None], np.log(5.0) + eta, SD).sum(axis=0))
               - 0.5 * np.log(np.pi) for s in problem.subjects
               for t, w in [np.polynomial.hermite.hermgauss(120)] for eta in [np.sqrt(2 * OMEGA2) * t])
    assert quad == pytest.approx(closed, abs=1e-9)


@pytest.mark.parametrize("censored,covariate,full", CASES.values(), ids=CASES.keys())
def test_random_intercept_information_matches_the_exact_observed_information(intercept_model, censored, covariate,
                                                                             full):
    data = intercept_data(intercept_model, censored)
    spec = intercept_spec(covariate, full)
    fit = fit_population(intercept_model, data, method="focei", covariance="stochastic", **spec)
    assert fit.success, fit.message
    assert (fit.n_censored > 20) == censored
    cov = fit.covariance
    assert cov.kind == "stochastic" and cov.success and cov.r_positive_definite
    assert "M3 likelihood" in cov.message
    # Louis' identity holds at any x; here at the FOCE-I estimates (the MLE without censoring)
    problem = build_problem(intercept_model, data, **{k: v for k, v in spec.items() if k != "random_effects"},
                            random_effects=np.array([[OMEGA2]]) if full else spec["random_effects"], eta_names=("P",))
    exact = observed_information(lambda x: marginal_loglik(problem, x), fit.x)
    # Monte Carlo error of 300 iterations x 2 chains per subject: SEs within 1 % of the exact ones over seeds 0-2
    # (measured, closed form and M3); 5 % leaves room for other seeds without hiding a wrong term
    np.testing.assert_allclose(cov.standard_errors(), np.sqrt(np.diag(np.linalg.inv(exact))), rtol=0.05)
    np.testing.assert_allclose(np.diag(cov.r), np.diag(exact), rtol=0.05)
    assert np.isfinite(fit.estimates["rse_percent"]).all() and np.isfinite(fit.estimates["ci_low"]).all()
    # S: the cross-product of the subjects' exact scores d log L_i / dx (central differences of the exact log L_i)
    h = 1e-5
    scores = np.stack([(subject_logliks(problem, fit.x + e) - subject_logliks(problem, fit.x - e)) / (2 * h)
                       for e in np.eye(fit.x.size) * h], axis=1)
    np.testing.assert_allclose(cov.s, scores.T @ scores, rtol=0.1, atol=0.02 * np.abs(np.diag(scores.T @ scores)).max())


def test_stochastic_information_is_reproducible_with_a_seed(intercept_model):
    problem = build_problem(intercept_model, intercept_data(intercept_model, True), **SPEC)
    etas = np.zeros((len(problem.subjects), 1))
    opts = SaemOptions(n_information=20, n_information_burn=5, seed=11)
    a, b = (stochastic_information(problem, problem.x0(), etas, opts) for _ in range(2))
    np.testing.assert_array_equal(a.information, b.information)
    assert (a.n_iterations, a.n_burn, a.n_chains, a.seed) == (20, 5, 2, 11)


@pytest.mark.parametrize("full", [False, True], ids=["diagonal", "cholesky"])
def test_omega_derivatives_match_central_differences(oral, theoph, full):
    omega0 = np.array([[0.5, 0.1, 0.0], [0.1, 0.2, 0.05], [0.0, 0.05, 0.1]])
    problem = build_problem(oral, theoph, estimate={"ka": 1.5, "CL": 2.7, "V": 31.0}, error={"conc": "additive"},
                            random_effects=omega0 if full else {"ka": 0.5, "CL": 0.2, "V": 0.1},
                            eta_names=("ka", "CL", "V"))
    x = problem.x0()
    k0, no, q = problem.n_theta, problem.n_omega_params, problem.n_eta
    d1, d2 = omega_derivatives(problem, x)
    h = 1e-5

    def omega(params):
        return params_to_omega(params, q, full)

    p0 = x[k0:k0 + no]
    for r in range(no):
        e = np.eye(no)[r] * h
        np.testing.assert_allclose(d1[r], (omega(p0 + e) - omega(p0 - e)) / (2 * h), atol=1e-8)
        d1_up, d1_dn = (omega_derivatives(problem, np.concatenate([x[:k0], p0 + s * e, x[k0 + no:]]))[0]
                        for s in (1, -1))
        np.testing.assert_allclose(d2[:, r], (d1_up - d1_dn) / (2 * h), atol=1e-7)


@pytest.fixture(scope="module")
def theoph_stochastic(oral, theoph):
    return fit_population(oral, theoph, estimate={"ka": np.exp(0.45), "CL": np.exp(1.0), "V": np.exp(3.45)},
                          random_effects={"ka": 0.6, "CL": 0.3, "V": 0.1},
                          error={"conc": {"kind": "additive", "add": 0.7}}, method="saem", covariance="stochastic")


def test_theophylline_stochastic_standard_errors_match_nlmixr2(theoph_stochastic):
    # nlmixr2 SAEM (README, reference/software.md 4.2): SE tka 0.196, tcl 0.0853, tv 0.0454 (linFim); add.sd SE
    # 0.04951 from nlmixr2 FOCEi's analytic covariance (same section). Different information estimates of the same
    # model: 15 %. Measured (seeds 0-2 of the information step): 0.189, 0.0857, 0.0454-0.0461, add.sd 0.050.
    fit = theoph_stochastic
    assert fit.success, fit.message
    cov = fit.covariance
    assert cov.kind == "stochastic" and cov.success and np.isfinite(cov.condition_number)
    est = fit.estimates.set_index("name")
    np.testing.assert_allclose(est.loc[["ka", "CL", "V"], "se"], [0.196, 0.0853, 0.0454], rtol=0.15)
    assert est.loc["conc.add", "se_natural"] == pytest.approx(0.04951, rel=0.15)
    assert "stochastic approximation" in fit.summary() and "R eigenvalues" in fit.summary()
    assert "S positive definite: True" in fit.summary()   # S from the same samples


@pytest.mark.parametrize("kind", ["stochastic_s", "stochastic_sandwich"])
def test_s_and_sandwich_come_from_the_same_samples_as_the_information(oral, theoph, theoph_stochastic, kind):
    # same SAEM seed and information seed as the fixture: the same R and S, assembled as S^-1 or R^-1 S R^-1
    fit = fit_population(oral, theoph, estimate={"ka": np.exp(0.45), "CL": np.exp(1.0), "V": np.exp(3.45)},
                         random_effects={"ka": 0.6, "CL": 0.3, "V": 0.1},
                         error={"conc": {"kind": "additive", "add": 0.7}}, method="saem", covariance=kind)
    cov, ref = fit.covariance, theoph_stochastic.covariance
    assert cov.kind == kind and cov.success and kind in cov.message and "stochastic approximation" in cov.message
    np.testing.assert_allclose(cov.r, ref.r)
    np.testing.assert_allclose(cov.s, ref.s)
    r_inv = np.linalg.inv(ref.r)
    expected = np.linalg.inv(ref.s) if kind == "stochastic_s" else r_inv @ ref.s @ r_inv
    np.testing.assert_allclose(cov.matrix, expected, rtol=1e-10)
    if kind == "stochastic_sandwich":
        # a correct model: S and R estimate the same information, and the sandwich's SEs stay near R's (measured
        # 0.75-1.9x). S^-1 alone is poorly determined with 12 subjects for 7 parameters: its SEs were 1.5-5x R's
        ratio = cov.standard_errors() / ref.standard_errors()
        assert np.all((ratio > 0.4) & (ratio < 2.5)), ratio


# -- errors ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("field,value", [("n_information", 1), ("n_information", 2.5), ("n_information_burn", -1),
                                         ("n_information", True)], ids=["too-few", "float", "negative-burn", "bool"])
def test_bad_information_options_are_refused(field, value):
    with pytest.raises(ValueError, match=f"SaemOptions.{field} must be an integer"):
        SaemOptions(**{field: value})


@pytest.mark.parametrize("kind", ["stochastic", "stochastic_s", "stochastic_sandwich"])
def test_parameter_without_random_effect_is_refused_before_fitting(oral, theoph, kind):
    with pytest.raises(FitSpecError, match=f"covariance '{kind}'.*'ka' has none.*use covariance='linearised'"):
        fit_population(oral, theoph, estimate={"ka": 1.5, "CL": 2.7, "V": 31.0}, random_effects={"CL": 0.1},
                       error={"conc": "additive"}, method="saem", covariance=kind)


def test_unknown_covariance_kind_is_refused_before_fitting(oral, theoph):
    with pytest.raises(FitSpecError, match="did you mean 'stochastic'"):
        fit_population(oral, theoph, estimate={"ka": 1.5, "CL": 2.7, "V": 31.0}, random_effects={"CL": 0.1},
                       error={"conc": "additive"}, covariance="stochastc")


def test_non_positive_definite_information_gives_no_standard_errors():
    cov = _from_information("stochastic", np.diag([2.0, -0.5]), "a test matrix", "Monte Carlo error")
    assert not cov.success and cov.matrix is None and not cov.r_positive_definite
    assert "not positive definite" in cov.message and "no standard errors" in cov.message
    assert np.isnan(cov.standard_errors()).all() and cov.condition_number == np.inf
    cov = _from_information("stochastic", np.array([[np.nan]]), "a test matrix", "Monte Carlo error")
    assert not cov.success and "not finite" in cov.message and np.isnan(cov.standard_errors()).all()


@pytest.mark.parametrize("kind", ["stochastic", "stochastic_s", "stochastic_sandwich"])
def test_non_finite_samples_give_no_standard_errors_for_every_stochastic_kind(monkeypatch, kind):
    # a subject whose solves all failed makes the sampled R and S non-finite: reported, never inverted
    import kinetics.fit._stochastic_information as sampled
    from kinetics.fit._covariance import covariance_step

    bad = np.array([[np.nan, 0.0], [0.0, 1.0]])
    monkeypatch.setattr(sampled, "stochastic_information", lambda *a, **k: sampled.StochasticInformation(
        bad, bad, 10, 5, 2, 0))

    class Objective:
        problem = None

        def modes_at(self, x):
            return None, []

    cov = covariance_step(Objective(), np.zeros(2), kind)
    assert cov.kind == kind and not cov.success and "not finite" in cov.message
    assert np.isnan(cov.standard_errors()).all()
