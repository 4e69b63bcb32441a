"""Covariance step: R, S and sandwich matrices of the estimates, with their health reported.

``R`` is the observed information, half the Hessian of the objective ``-2 log L`` in the
estimation parameters ``x``; ``S`` is the cross-product of the per-subject scores
``s_i = -1/2 d OFV_i / dx``. Covariance: ``"r"`` = R^-1, ``"s"`` = S^-1, ``"sandwich"`` = R^-1 S R^-1
(NONMEM's default, nlmixr2's ``r,s``); ``"linearised"`` = the inverse Fisher information of the
model linearised at the conditional modes (Monolix's linearization; robust where the objective has
kinks, see :mod:`kinetics.fit._linearised`); ``"stochastic"`` = the inverse observed information by
Louis' principle, estimated from MH samples of the individual parameters with the exact (M3)
likelihood and no linearisation (Monolix's stochastic approximation; see
:mod:`kinetics.fit._stochastic_information`); ``"stochastic_s"`` and ``"stochastic_sandwich"`` = S^-1 and
R^-1 S R^-1 with both matrices from those samples (S from the subjects' exact marginal scores
``E[d log p(y_i, u_i) / dx | y_i]``, Fisher's identity). A matrix that is not positive definite is reported as
such and no standard errors are computed from it: nothing is "corrected".
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from kinetics.fit._saem import SaemOptions

__all__ = ["CovarianceResult", "covariance_step", "COVARIANCE_KINDS", "STOCHASTIC_KINDS"]

COVARIANCE_KINDS = ("sandwich", "r", "s", "linearised", "stochastic", "stochastic_s", "stochastic_sandwich")
#: the kinds sampled with the SAEM kernels (every estimated parameter needs a random effect)
STOCHASTIC_KINDS = ("stochastic", "stochastic_s", "stochastic_sandwich")


@dataclass(frozen=True)
class CovarianceResult:
    """Outcome of the covariance step, in the estimation parameterisation ``x``."""

    kind: str
    matrix: np.ndarray | None       # covariance of x; None when the matrix it needs is not positive definite
    r: np.ndarray                   # R (observed information), or the linearised / stochastic information
    s: np.ndarray | None            # S (score cross-product); None for "linearised"
    r_eigenvalues: np.ndarray
    s_eigenvalues: np.ndarray       # empty when S was not computed
    message: str

    @property
    def r_positive_definite(self) -> bool:
        return bool(np.all(self.r_eigenvalues > 0))

    @property
    def s_positive_definite(self) -> bool | None:
        return None if self.s is None else bool(np.all(self.s_eigenvalues > 0))

    @property
    def success(self) -> bool:
        return self.matrix is not None

    @property
    def condition_number(self) -> float:
        """Ratio of the largest to the smallest eigenvalue of the covariance used (inf if not PD)."""
        if self.matrix is None:
            return np.inf
        ev = np.linalg.eigvalsh(self.matrix)
        return float(ev[-1] / ev[0]) if ev[0] > 0 else np.inf

    def standard_errors(self) -> np.ndarray:
        if self.matrix is None:
            return np.full(self.r.shape[0], np.nan)
        return np.sqrt(np.diag(self.matrix))


def covariance_step(objective, x: np.ndarray, kind: str = "sandwich", rel_step: float = 1e-3,
                    saem: SaemOptions | None = None) -> CovarianceResult:
    """Covariance of the estimates ``x`` of ``objective.problem``.

    ``"r"``, ``"s"``, ``"sandwich"``: R by central differences of the objective's gradient (relative step
    ``rel_step``), S from the per-subject gradients. ``"linearised"``: linearised Fisher information at the
    conditional modes. ``"stochastic"``: Louis' observed information sampled with the SAEM kernels from the
    modes (options, iteration counts and seed in ``saem``; defaults when None); ``"stochastic_s"``,
    ``"stochastic_sandwich"``: S and sandwich from the same samples.
    """
    if kind not in COVARIANCE_KINDS:
        raise ValueError(f"covariance must be one of {', '.join(COVARIANCE_KINDS)} or None, got {kind!r}")
    if kind == "linearised":
        return _linearised(objective, x)
    if kind in STOCHASTIC_KINDS:
        return _stochastic(objective, x, saem or SaemOptions(), kind)
    saved = objective.etas.copy()
    p = x.size
    h = rel_step * np.maximum(1.0, np.abs(x))
    per_subject = objective.subject_gradients(x)
    hess = np.empty((p, p))
    for k in range(p):
        e = np.zeros(p)
        e[k] = h[k]
        objective.etas = saved.copy()
        objective.per_subject(x + e)
        up = objective.subject_gradients(x + e).sum(axis=0)
        objective.etas = saved.copy()
        objective.per_subject(x - e)
        dn = objective.subject_gradients(x - e).sum(axis=0)
        hess[:, k] = (up - dn) / (2 * h[k])
    objective.etas = saved
    objective.per_subject(x)
    r = 0.25 * (hess + hess.T)                     # half the symmetrised Hessian of -2 log L
    scores = -0.5 * per_subject                    # (n_subjects, p)
    s = scores.T @ scores
    return _assemble(kind, r, s)


def _linearised(objective, x: np.ndarray) -> CovarianceResult:
    from kinetics.fit._linearised import linearised_information

    _, modes = objective.modes_at(x)
    info = linearised_information(objective.problem, x, modes)
    return _from_information("linearised", info, "the linearised Fisher information (censored rows not included)",
                             "a parameter the data do not inform")


def _stochastic(objective, x: np.ndarray, opts: SaemOptions, kind: str) -> CovarianceResult:
    from kinetics.fit._stochastic_information import stochastic_information

    _, modes = objective.modes_at(x)
    res = stochastic_information(objective.problem, x, np.array([m.eta for m in modes]), opts)
    sampled = (f"by stochastic approximation (Louis; M3 likelihood, {res.n_iterations} iterations x "
               f"{res.n_chains} chains after {res.n_burn} burn-in, seed {res.seed})")
    info, s = res.information, res.score_cross
    if not np.all(np.isfinite(s)):
        info = np.full_like(info, np.nan)    # reported as not finite by _from_information, whatever the kind
    if kind != "stochastic" and np.all(np.isfinite(info)):
        return _assemble(kind.removeprefix("stochastic_"), info, s, label=kind, how=f"R and S {sampled}")
    result = _from_information(kind, info, f"the observed information {sampled}",
                               "a parameter the data do not inform, or Monte Carlo error: raise n_information, "
                               "or use covariance='stochastic_s'")
    if not np.all(np.isfinite(info)):
        return result
    return dataclasses.replace(result, s=s, s_eigenvalues=np.linalg.eigvalsh(s))


def _from_information(kind: str, info: np.ndarray, how: str, why_not_pd: str) -> CovarianceResult:
    """Covariance as the inverse of an information matrix for log L; none (never corrected) if it is not PD."""
    if not np.all(np.isfinite(info)):
        return CovarianceResult(kind=kind, matrix=None, r=info, s=None, r_eigenvalues=np.full(info.shape[0], np.nan),
                                s_eigenvalues=np.zeros(0), message=f"covariance step failed ({kind}): the information "
                                "is not finite (a subject without a valid solve); no standard errors")
    ev = np.linalg.eigvalsh(info)
    if np.all(ev > 0):
        matrix = np.linalg.inv(info)
        matrix = 0.5 * (matrix + matrix.T)
        msg = f"covariance from {how}"
    else:
        matrix = None
        msg = (f"covariance step failed ({kind}): the information is not positive definite (smallest eigenvalue "
               f"{ev[0]:.3g}: {why_not_pd}); no standard errors")
    return CovarianceResult(kind=kind, matrix=matrix, r=info, s=None, r_eigenvalues=ev, s_eigenvalues=np.zeros(0),
                            message=msg)


def _assemble(kind: str, r: np.ndarray, s: np.ndarray, label: str | None = None, how: str = "") -> CovarianceResult:
    """Covariance ``kind`` ("r", "s" or "sandwich") from R and S, reported as ``label`` (default ``kind``)."""
    label = label or kind
    r_ev, s_ev = np.linalg.eigvalsh(r), np.linalg.eigvalsh(s)
    r_ok, s_ok = bool(np.all(r_ev > 0)), bool(np.all(s_ev > 0))
    notes = []
    if not r_ok:
        notes.append(f"R matrix is not positive definite (smallest eigenvalue {r_ev[0]:.3g})")
    if not s_ok:
        notes.append(f"S matrix is not positive definite (smallest eigenvalue {s_ev[0]:.3g}; "
                     "fewer subjects than parameters makes it singular)")
    matrix = None
    if kind == "r" and r_ok:
        matrix = np.linalg.inv(r)
    elif kind == "s" and s_ok:
        matrix = np.linalg.inv(s)
    elif kind == "sandwich" and r_ok:
        r_inv = np.linalg.inv(r)
        matrix = r_inv @ s @ r_inv
    if matrix is not None:
        matrix = 0.5 * (matrix + matrix.T)
        msg = f"covariance from {label}" + (f" ({how})" if how else "") + (f"; note: {'; '.join(notes)}" if notes else "")
    else:
        msg = f"covariance step failed ({label}): {'; '.join(notes)}; no standard errors"
    return CovarianceResult(kind=label, matrix=matrix, r=r, s=s, r_eigenvalues=r_ev, s_eigenvalues=s_ev, message=msg)
