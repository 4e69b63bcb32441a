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

from dataclasses import dataclass

import numpy as np

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
    Computed by a numba kernel (:mod:`kinetics.fit._likelihood_kernel`).
    """
    from kinetics.fit._likelihood_kernel import observation_terms_kernel  # numba: loaded on first use

    y, m, v, limit = (np.ascontiguousarray(a, dtype=float) for a in (y, m, v, limit))
    out = np.empty((6, m.size))
    observation_terms_kernel(y, m, v, np.ascontiguousarray(cens, dtype=np.int8), limit, out)
    return ObservationTerms(*out)


def n_gaussian_terms(cens: np.ndarray) -> int:
    """Number of observed (uncensored) values: each carries a ``log(2 pi)`` the objective leaves out."""
    return int(np.count_nonzero(np.asarray(cens) == 0))

