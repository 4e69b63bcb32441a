"""Residual error models and the per-observation likelihood, censored (M3) or not.

One implementation serves every estimator (individual fits, FO/FOCE/FOCE-I/Laplace, SAEM), so
a below-LLOQ sample is "somewhere below the LLOQ" everywhere.

Conventions
-----------
Each observation contributes ``c = -2 log p(y | f)`` *without* the ``log(2 pi)`` of an observed
Gaussian value (NONMEM's objective convention); :func:`n_gaussian_terms` counts those terms so the
constant can be added back. On the transformed scale ``y`` is the observation (``log DV`` for the
``log_additive`` model) and ``m`` the prediction (``log f``), with variance ``V``:

- observed:            ``c = log V + (y - m)^2 / V``
- censored in [lo, hi]: ``c = -2 log(Phi((hi - m)/s) - Phi((lo - m)/s))``, ``s = sqrt(V)``

(left-censored: ``hi`` = LLOQ, ``lo`` = LIMIT or -inf; right-censored: ``lo`` = the limit, ``hi`` =
LIMIT or +inf). This is Beal's M3 method (Ahn et al. 2008, doi:10.1007/s10928-008-9094-4).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.special import log_ndtr

from kinetics.data import CENSORED_LEFT
from kinetics.errors import FitSpecError, did_you_mean

__all__ = ["ErrorModel", "ERROR_MODELS", "ObservationTerms", "observation_terms", "n_gaussian_terms"]

#: kind -> names of its SD parameters (on the scale of the observation, or of log DV for log_additive)
ERROR_MODELS: dict[str, tuple[str, ...]] = {
    "additive": ("add",),
    "proportional": ("prop",),
    "combined": ("add", "prop"),
    "log_additive": ("add",),
}
_LOG_2PI = math.log(2.0 * math.pi)


@dataclass(frozen=True)
class ErrorModel:
    """Residual error of one output.

    ``additive``: ``SD = add``; ``proportional``: ``SD = prop * f``; ``combined``:
    ``SD = sqrt(add^2 + (prop f)^2)``; ``log_additive``: ``log DV ~ N(log f, add^2)``
    (the CAR-T standard, ~ proportional error; DV and f must be positive).
    """

    kind: str

    def __post_init__(self) -> None:
        if self.kind not in ERROR_MODELS:
            raise FitSpecError(f"unknown error model '{self.kind}' (choose from {', '.join(ERROR_MODELS)})"
                               f"{did_you_mean(self.kind, ERROR_MODELS)}")

    @property
    def parameter_names(self) -> tuple[str, ...]:
        return ERROR_MODELS[self.kind]

    @property
    def is_log_scale(self) -> bool:
        return self.kind == "log_additive"

    def transform(self, values: np.ndarray) -> np.ndarray:
        """Observation or limit on the scale the error is Gaussian on (log for log_additive; log 0 = -inf)."""
        if not self.is_log_scale:
            return np.asarray(values, dtype=float)
        with np.errstate(divide="ignore", invalid="ignore"):
            v = np.asarray(values, dtype=float)
            return np.where(v > 0, np.log(np.where(v > 0, v, 1.0)), np.where(np.isposinf(v), np.inf, -np.inf))

    def prediction(self, f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Transformed prediction ``m`` and ``dm/df`` (nan where a log-scale prediction is not positive)."""
        f = np.asarray(f, dtype=float)
        if not self.is_log_scale:
            return f, np.ones_like(f)
        with np.errstate(divide="ignore", invalid="ignore"):
            ok = f > 0
            return np.where(ok, np.log(np.where(ok, f, 1.0)), np.nan), np.where(ok, 1.0 / np.where(ok, f, 1.0), np.nan)

    def variance(self, f: np.ndarray, sd: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Variance ``V``, ``dV/df`` and ``dV/d sd_k`` (shape (n, n_sd)) for SD parameters ``sd``."""
        f = np.asarray(f, dtype=float)
        n = f.size
        if self.kind in ("additive", "log_additive"):
            v = np.full(n, sd[0] ** 2)
            return v, np.zeros(n), np.full((n, 1), 2.0 * sd[0])
        if self.kind == "proportional":
            return (sd[0] * f) ** 2, 2.0 * sd[0] ** 2 * f, (2.0 * sd[0] * f ** 2)[:, None]
        v = sd[0] ** 2 + (sd[1] * f) ** 2
        return v, 2.0 * sd[1] ** 2 * f, np.stack([np.full(n, 2.0 * sd[0]), 2.0 * sd[1] * f ** 2], axis=1)


@dataclass(frozen=True)
class ObservationTerms:
    """Per-observation ``c = -2 log p``, its first partials and a positive semi-definite curvature
    in (m, V): ``c_m``, ``c_v``, and ``h_mm``, ``h_mv``, ``h_vv`` with ``[h] >= 0``.

    The curvature is the FOCE-I one for observed values (``2/V`` for m, ``1/V^2`` for V: the
    expected information) and the exact Hessian in the standardised limits ``z`` for censored ones
    (``-log(Phi(b) - Phi(a))`` is jointly convex in (a, b), Prekopa), with z's own second
    derivatives dropped, the same first-order approximation FOCE-I makes for observed values.
    """

    c: np.ndarray
    c_m: np.ndarray
    c_v: np.ndarray
    h_mm: np.ndarray
    h_mv: np.ndarray
    h_vv: np.ndarray


def observation_terms(y: np.ndarray, m: np.ndarray, v: np.ndarray, cens: np.ndarray,
                      limit: np.ndarray) -> ObservationTerms:
    """Likelihood terms for transformed observations ``y`` (censoring limit where censored), predictions
    ``m``, variances ``V``, censoring flags and the other ends of censoring intervals (transformed).

    Non-finite predictions or non-positive variances give ``c = inf`` (the caller reports it).
    """
    y, m, v = (np.asarray(a, dtype=float) for a in (y, m, v))
    cens = np.asarray(cens)
    c = np.empty_like(m)
    c_m, c_v = np.zeros_like(m), np.zeros_like(m)
    h_mm, h_mv, h_vv = np.zeros_like(m), np.zeros_like(m), np.zeros_like(m)
    bad = ~(np.isfinite(m) & (v > 0) & np.isfinite(v))
    obs = (cens == 0) & ~bad
    if obs.any():
        r, vv = y[obs] - m[obs], v[obs]
        c[obs] = np.log(vv) + r * r / vv
        c_m[obs] = -2.0 * r / vv
        c_v[obs] = 1.0 / vv - r * r / (vv * vv)
        h_mm[obs] = 2.0 / vv
        h_vv[obs] = 1.0 / (vv * vv)
    cen = (cens != 0) & ~bad
    if cen.any():
        _censored_terms(y[cen], m[cen], v[cen], cens[cen], np.asarray(limit, dtype=float)[cen],
                        cen, c, c_m, c_v, h_mm, h_mv, h_vv)
    c[bad] = np.inf
    return ObservationTerms(c, c_m, c_v, h_mm, h_mv, h_vv)


def _censored_terms(y, m, v, cens, limit, where, c, c_m, c_v, h_mm, h_mv, h_vv) -> None:
    hi = np.where(cens == CENSORED_LEFT, y, limit)
    lo = np.where(cens == CENSORED_LEFT, limit, y)
    s = np.sqrt(v)
    b, a = (hi - m) / s, (lo - m) / s
    log_p = _log_interval_probability(a, b)
    # phi(z)/P without overflow; phi(+-inf) = 0 and z*phi(z) -> 0
    with np.errstate(over="ignore", invalid="ignore"):
        lam_b = np.where(np.isfinite(b), np.exp(-0.5 * b * b - 0.5 * _LOG_2PI - log_p), 0.0)
        lam_a = np.where(np.isfinite(a), np.exp(-0.5 * a * a - 0.5 * _LOG_2PI - log_p), 0.0)
        b_lam_b = np.where(np.isfinite(b), b * lam_b, 0.0)
        a_lam_a = np.where(np.isfinite(a), a * lam_a, 0.0)
    # c = -2 log P(a, b); partials in (b, a) and their Hessian (PSD)
    c_b, c_a = -2.0 * lam_b, 2.0 * lam_a
    h_bb = 2.0 * (b_lam_b + lam_b * lam_b)
    h_aa = 2.0 * (-a_lam_a + lam_a * lam_a)
    h_ab = -2.0 * lam_a * lam_b
    # chain rule: dz/dm = -1/s, dz/dV = -z/(2V)
    db_dm, da_dm = -1.0 / s, -1.0 / s
    db_dv = np.where(np.isfinite(b), -b / (2.0 * v), 0.0)
    da_dv = np.where(np.isfinite(a), -a / (2.0 * v), 0.0)
    c[where] = -2.0 * log_p
    c_m[where] = c_b * db_dm + c_a * da_dm
    c_v[where] = c_b * db_dv + c_a * da_dv
    h_mm[where] = h_bb * db_dm ** 2 + 2 * h_ab * db_dm * da_dm + h_aa * da_dm ** 2
    h_mv[where] = h_bb * db_dm * db_dv + h_ab * (db_dm * da_dv + da_dm * db_dv) + h_aa * da_dm * da_dv
    h_vv[where] = h_bb * db_dv ** 2 + 2 * h_ab * db_dv * da_dv + h_aa * da_dv ** 2


def _log_interval_probability(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """log(Phi(b) - Phi(a)) for a < b, accurate in both tails."""
    # work in the tail where the difference is not a cancellation: flip when the interval is right of 0
    flip = a > 0
    lo, hi = np.where(flip, -b, a), np.where(flip, -a, b)
    log_hi, log_lo = log_ndtr(hi), log_ndtr(lo)
    with np.errstate(divide="ignore"):
        return log_hi + np.log1p(-np.exp(np.minimum(log_lo - log_hi, 0.0)))


def n_gaussian_terms(cens: np.ndarray) -> int:
    """Number of observed (uncensored) values: each carries a ``log(2 pi)`` the objective leaves out."""
    return int(np.count_nonzero(np.asarray(cens) == 0))

