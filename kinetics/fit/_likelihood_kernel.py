"""numba kernel of the per-observation likelihood terms (the hot path of every estimator).

Array layout: inputs are 1-D of length n (transformed observation / censoring limit ``y``,
prediction ``m``, variance ``v``, censoring flag ``cens`` (0, 1 left, -1 right), other interval end
``limit``); the output ``out`` is (6, n): rows c, c_m, c_v, h_mm, h_mv, h_vv as documented in
:mod:`kinetics.fit._likelihood`.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)
_SQRT_HALF = math.sqrt(0.5)


@njit(cache=True, nogil=True, error_model="numpy")
def log_ndtr(x: float) -> float:
    """log Phi(x), accurate in both tails (log1p/erfc in the body, the asymptotic series below -30)."""
    if x > 0.0:
        return math.log1p(-0.5 * math.erfc(x * _SQRT_HALF))
    if x > -30.0:
        return math.log(0.5 * math.erfc(-x * _SQRT_HALF))
    # Abramowitz & Stegun 26.2.12: Phi(x) ~ phi(x)/|x| (1 - 1/x^2 + 3/x^4 - 15/x^6 + 105/x^8)
    x2 = x * x
    series = 1.0 - 1.0 / x2 + 3.0 / (x2 * x2) - 15.0 / (x2 * x2 * x2) + 105.0 / (x2 * x2 * x2 * x2)
    return -0.5 * x2 - math.log(-x) - _HALF_LOG_2PI + math.log(series)


@njit(cache=True, nogil=True, error_model="numpy")
def _log_interval(a: float, b: float) -> float:
    """log(Phi(b) - Phi(a)), a < b, evaluated in the tail that avoids cancellation."""
    if a > 0.0:
        a, b = -b, -a
    log_hi, log_lo = log_ndtr(b), log_ndtr(a)
    d = log_lo - log_hi
    if d > 0.0:
        d = 0.0
    return log_hi + math.log1p(-math.exp(d))


@njit(cache=True, nogil=True, error_model="numpy")
def observation_terms_kernel(y, m, v, cens, limit, out):
    n = y.size
    for j in range(n):
        mj, vj = m[j], v[j]
        if not (math.isfinite(mj) and math.isfinite(vj) and vj > 0.0):
            out[0, j] = np.inf
            for r in range(1, 6):
                out[r, j] = 0.0
            continue
        if cens[j] == 0:
            r_ = y[j] - mj
            out[0, j] = math.log(vj) + r_ * r_ / vj
            out[1, j] = -2.0 * r_ / vj
            out[2, j] = 1.0 / vj - r_ * r_ / (vj * vj)
            out[3, j] = 2.0 / vj
            out[4, j] = 0.0
            out[5, j] = 1.0 / (vj * vj)
            continue
        hi = y[j] if cens[j] == 1 else limit[j]
        lo = limit[j] if cens[j] == 1 else y[j]
        s = math.sqrt(vj)
        b, a = (hi - mj) / s, (lo - mj) / s
        log_p = _log_interval(a, b)
        fin_b, fin_a = math.isfinite(b), math.isfinite(a)
        lam_b = math.exp(-0.5 * b * b - _HALF_LOG_2PI - log_p) if fin_b else 0.0
        lam_a = math.exp(-0.5 * a * a - _HALF_LOG_2PI - log_p) if fin_a else 0.0
        b_lam_b = b * lam_b if fin_b else 0.0
        a_lam_a = a * lam_a if fin_a else 0.0
        c_b, c_a = -2.0 * lam_b, 2.0 * lam_a
        h_bb = 2.0 * (b_lam_b + lam_b * lam_b)
        h_aa = 2.0 * (-a_lam_a + lam_a * lam_a)
        h_ab = -2.0 * lam_a * lam_b
        d_m = -1.0 / s                                   # dz/dm for both ends
        db_dv = -b / (2.0 * vj) if fin_b else 0.0
        da_dv = -a / (2.0 * vj) if fin_a else 0.0
        out[0, j] = -2.0 * log_p
        out[1, j] = (c_b + c_a) * d_m
        out[2, j] = c_b * db_dv + c_a * da_dv
        out[3, j] = (h_bb + 2.0 * h_ab + h_aa) * d_m * d_m
        out[4, j] = h_bb * d_m * db_dv + h_ab * (d_m * da_dv + d_m * db_dv) + h_aa * d_m * da_dv
        out[5, j] = h_bb * db_dv * db_dv + 2.0 * h_ab * db_dv * da_dv + h_aa * da_dv * da_dv
