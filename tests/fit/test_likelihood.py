"""The M3 censored likelihood shared by every estimator: Tobin's censored regression against R
survival, derivatives against central differences, tails against closed forms."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import optimize, stats

from kinetics.data import CENSORED_LEFT, CENSORED_RIGHT
from kinetics.errors import FitSpecError
from kinetics.fit import ErrorModel, observation_terms
from tests.references import shared_data

LOG_2PI = np.log(2 * np.pi)


def tobin_neg2ll(beta_logs: np.ndarray, x: np.ndarray, y: np.ndarray, cens: np.ndarray) -> float:
    m = x @ beta_logs[:-1]
    v = np.full(y.size, np.exp(2 * beta_logs[-1]))
    t = observation_terms(y, m, v, cens, np.full(y.size, -np.inf))
    return float(t.c.sum() + np.count_nonzero(cens == 0) * LOG_2PI)


def test_tobin_censored_regression_matches_r_survival():
    # R survival::survreg(Surv(durable, durable > 0, type = "left") ~ age + quant, dist = "gaussian"):
    # coefficients 15.1449, -0.12906, -0.045542; log(scale) 1.71785; logLik -28.9401 (../shared/data/README.md)
    df = pd.read_csv(shared_data("tobin.csv"))
    x = np.column_stack([np.ones(len(df)), df["age"], df["quant"]])
    y = df["durable"].to_numpy(float)
    cens = np.where(y <= 0, CENSORED_LEFT, 0)          # durable = 0 means "at or below 0"
    res = optimize.minimize(tobin_neg2ll, np.array([10.0, 0.0, 0.0, 1.0]), args=(x, y, cens), method="BFGS",
                            options={"gtol": 1e-9})
    assert -0.5 * res.fun == pytest.approx(-28.9401, abs=1e-4)
    np.testing.assert_allclose(res.x, [15.1449, -0.12906, -0.045542, 1.71785], rtol=2e-4)


CASES = dict(
    observed=(1.0, 0.3, 0.5, 0, np.inf),
    left=(1.0, 3.0, 0.2, CENSORED_LEFT, -np.inf),
    left_far_above=(1.0, -4.0, 1.3, CENSORED_LEFT, -np.inf),
    right=(0.5, 0.9, 0.7, CENSORED_RIGHT, np.inf),
    interval=(2.0, 0.1, 0.4, CENSORED_LEFT, -1.0),
)


@pytest.mark.parametrize("y,m,v,cens,limit", CASES.values(), ids=CASES.keys())
def test_first_derivatives_match_central_differences(y, m, v, cens, limit):
    def c(mm, vv):
        return observation_terms(np.array([y]), np.array([mm]), np.array([vv]), np.array([cens]),
                                 np.array([limit])).c[0]

    t = observation_terms(np.array([y]), np.array([m]), np.array([v]), np.array([cens]), np.array([limit]))
    h = 1e-6
    assert t.c_m[0] == pytest.approx((c(m + h, v) - c(m - h, v)) / (2 * h), rel=1e-6, abs=1e-9)
    assert t.c_v[0] == pytest.approx((c(m, v + h) - c(m, v - h)) / (2 * h), rel=1e-6, abs=1e-9)
    assert t.h_mm[0] >= 0 and t.h_vv[0] >= 0 and t.h_mm[0] * t.h_vv[0] >= t.h_mv[0] ** 2 - 1e-15


def test_censored_probability_matches_normal_cdf_and_stays_finite_in_tails():
    m = np.array([0.0, 0.0, 40.0, -40.0])
    y = np.array([1.0, -1.0, 1.0, 1.0])
    t = observation_terms(y, m, np.ones(4), np.array([CENSORED_LEFT, CENSORED_RIGHT, CENSORED_LEFT, CENSORED_RIGHT]),
                          np.array([-np.inf, np.inf, -np.inf, np.inf]))
    # P(Y < 1) = Phi(1); P(Y > -1) = Phi(1); far tails P(Y < 1 | m=40) = Phi(-39), P(Y > 1 | m=-40) = Phi(-41)
    # (scipy's logcdf uses the asymptotic series there)
    np.testing.assert_allclose(t.c[:2], -2 * stats.norm.logcdf(1.0), rtol=1e-12)
    np.testing.assert_allclose(t.c[2:], -2 * stats.norm.logcdf([-39.0, -41.0]), rtol=1e-10)
    assert np.all(np.isfinite(t.c_m)) and np.all(np.isfinite(t.h_mm))


def test_h_mm_is_the_exact_second_derivative_for_censored_rows():
    y, v = np.array([1.0]), np.array([0.3])
    c = lambda mm: observation_terms(y, np.array([mm]), v, np.array([1]), np.array([-np.inf])).c_m[0]  # noqa: E731
    t = observation_terms(y, np.array([0.6]), v, np.array([1]), np.array([-np.inf]))
    assert t.h_mm[0] == pytest.approx((c(0.6 + 1e-6) - c(0.6 - 1e-6)) / 2e-6, rel=1e-6)


def test_log_additive_transform_and_invalid_predictions():
    e = ErrorModel("log_additive")
    np.testing.assert_allclose(e.transform(np.array([np.e, 0.0])), [1.0, -np.inf])
    m, dm = e.prediction(np.array([2.0, -1.0]))
    assert m[0] == pytest.approx(np.log(2.0)) and dm[0] == pytest.approx(0.5) and np.isnan(m[1])
    t = observation_terms(np.array([0.0]), m[1:], np.array([1.0]), np.array([0]), np.array([np.inf]))
    assert t.c[0] == np.inf


def test_combined_error_variance():
    v, dv_df, dv_dsd = ErrorModel("combined").variance(np.array([2.0]), np.array([0.5, 0.1]))
    assert v[0] == pytest.approx(0.25 + 0.04) and dv_df[0] == pytest.approx(2 * 0.01 * 2.0)
    np.testing.assert_allclose(dv_dsd[0], [1.0, 2 * 0.1 * 4.0])


def test_unknown_error_model_is_a_clear_error():
    with pytest.raises(FitSpecError, match="did you mean 'proportional'"):
        ErrorModel("proportion")


def test_log_ndtr_kernel_matches_scipy_from_far_left_tail_to_right_tail():
    from scipy.special import log_ndtr as scipy_log_ndtr

    from kinetics.fit._likelihood_kernel import log_ndtr

    xs = np.concatenate([np.linspace(-60, 12, 721), [-30.0, -29.999, 6.0, 6.001]])
    ours = np.array([log_ndtr(x) for x in xs])
    np.testing.assert_allclose(ours, scipy_log_ndtr(xs), rtol=1e-12, atol=1e-300)
