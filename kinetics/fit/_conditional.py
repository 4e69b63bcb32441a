"""Per-subject conditional problem: the mode of the etas and the FO / FOCE / FOCE-I / Laplace
objective contribution of one subject.

For subject i with etas ``eta`` the conditional objective is

    l(eta) = sum_j c_j(eta) + eta' Omega^-1 eta

(``c_j`` from :mod:`kinetics.fit._likelihood`). With ``eta_hat`` its minimum, the Laplace
approximation of ``-2 log L_i`` without ``log 2 pi`` terms is

    OFV_i = l(eta_hat) + log det Omega + log det(H / 2)

where ``H`` is the Hessian of ``l``: FOCE-I uses its first-order (expected-information) form
``2 Omega^-1 + sum_j [h_mm a a' + h_mv (a b' + b a') + h_vv b b']`` with ``a = dm/deta``,
``b = dV/deta`` (Almquist et al. 2015, doi:10.1007/s10928-015-9409-1; for an additive error it is
the FOCE matrix); Laplace uses the exact Hessian (central differences of the analytic gradient);
FOCE evaluates the residual variance at the population prediction (eta = 0); FO linearises at
eta = 0: ``OFV_i = log det C + r' C^-1 r``, ``C = G Omega G' + diag(V)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kinetics.errors import FitSpecError
from kinetics.fit._problem import Problem

__all__ = ["ConditionalMode", "find_mode", "subject_objective", "OBJECTIVE_METHODS"]

OBJECTIVE_METHODS = ("fo", "foce", "focei", "laplace")


@dataclass
class ConditionalMode:
    """Mode of one subject's etas and what the objective needs there."""

    eta: np.ndarray
    l: float                  # conditional objective at the mode
    hessian: np.ndarray       # first-order Hessian of l at the mode
    f: np.ndarray             # IPRED (natural scale)
    jac: np.ndarray | None    # d f / d eta at the mode
    iterations: int
    converged: bool
    message: str              # why the objective could not be evaluated ("" if it could)
    warning: str = ""         # e.g. the eta optimisation stopped before its tolerance (the value is still usable)


def _evaluate(problem: Problem, i: int, theta, beta, omega_inv, sigmas, eta, f_var, need_jac: bool = True):
    """l(eta), gradient, first-order Hessian, f, df/deta; l = inf if the solve fails."""
    params = problem.individual_params(i, theta, beta, eta)
    f, jac, msg = problem.predict(i, params, problem.eta_names if need_jac else ())
    if msg:
        return np.inf, None, None, f, None, msg
    l, grad, hess = conditional_pieces(problem, i, f, jac, eta, omega_inv, sigmas, f_var)
    if not np.isfinite(l):
        return np.inf, None, None, f, jac, f"subject {problem.subjects[i].data.id}: non-finite likelihood"
    return l, grad, hess, f, jac, ""


def conditional_pieces(problem: Problem, i: int, f: np.ndarray, jac: np.ndarray | None, eta: np.ndarray,
                       omega_inv: np.ndarray, sigmas, f_var: np.ndarray | None = None):
    """``l(eta)``, its gradient and first-order Hessian from predictions ``f`` and ``jac = df/deta``."""
    t, dm, dv, _ = problem.terms(i, f, sigmas, f_var)
    l = float(np.sum(t.c) + eta @ omega_inv @ eta)
    if jac is None or not np.isfinite(l):
        return l, None, None
    a, b = dm[:, None] * jac, dv[:, None] * jac
    grad = a.T @ t.c_m + b.T @ t.c_v + 2.0 * omega_inv @ eta
    hess = (a.T * t.h_mm) @ a + (a.T * t.h_mv) @ b + (b.T * t.h_mv) @ a + (b.T * t.h_vv) @ b + 2.0 * omega_inv
    return l, grad, hess


def find_mode(problem: Problem, i: int, theta, beta, omega_inv, sigmas, eta0: np.ndarray, *,
              f_var: np.ndarray | None = None, tol: float = 1e-10, max_iter: int = 100) -> ConditionalMode:
    """Minimise the conditional objective over the etas by damped Gauss-Newton (line search on l).

    Converged when the Newton decrement ``g' H^-1 g`` is below ``tol`` (or the Gauss-Newton step is below 1e-9).
    """
    eta = np.array(eta0, dtype=float)
    if eta.size == 0:   # no random effects: the conditional objective is the likelihood itself
        l, _, _, f, _, msg = _evaluate(problem, i, theta, beta, omega_inv, sigmas, eta, f_var, need_jac=False)
        return ConditionalMode(eta, l if not msg else np.inf, np.zeros((0, 0)), f, None, 0, not msg, msg)
    l, g, h, f, jac, msg = _evaluate(problem, i, theta, beta, omega_inv, sigmas, eta, f_var)
    if msg and np.any(eta != 0):   # warm start unusable: restart from the population value
        eta = np.zeros_like(eta)
        l, g, h, f, jac, msg = _evaluate(problem, i, theta, beta, omega_inv, sigmas, eta, f_var)
    if msg:
        return ConditionalMode(eta, np.inf, np.eye(eta.size), f, None, 0, False, msg)
    for it in range(1, max_iter + 1):
        step = -np.linalg.solve(h, g)
        decrement = -float(g @ step)
        if decrement < tol or np.max(np.abs(step)) < 1e-9:   # or the etas no longer move
            return ConditionalMode(eta, l, h, f, jac, it - 1, True, "")
        if decrement < 1e-4:
            # inside the quadratic region: the function value cannot resolve the decrease any more (solver
            # noise at rtol 1e-6 is ~1e-5 in l), the gradient still can; take the Gauss-Newton step
            cand = eta + step
        else:
            cand = _descent(problem, i, theta, beta, omega_inv, sigmas, f_var, eta, l, g, h, step, decrement)
        if cand is None:
            # no decrease along Gauss-Newton or damped directions: a kink (e.g. a switch time) or the
            # rounding floor; the point is kept and the caller told
            done = decrement < 1e-3
            return ConditionalMode(eta, l, h, f, jac, it, done, "",
                                   "" if done else f"subject {problem.subjects[i].data.id}: eta optimisation "
                                   f"stopped without decrease (Newton decrement {decrement:.2g})")
        eta = cand
        l, g, h, f, jac, msg = _evaluate(problem, i, theta, beta, omega_inv, sigmas, eta, f_var)
        if msg:
            return ConditionalMode(eta, np.inf, np.eye(eta.size), f, None, it, False, msg)
    return ConditionalMode(eta, l, h, f, jac, max_iter, False, "",
                           f"subject {problem.subjects[i].data.id}: eta optimisation did not converge in "
                           f"{max_iter} iterations")


def _descent(problem, i, theta, beta, omega_inv, sigmas, f_var, eta, l, g, h, step, decrement):
    """A point with sufficient decrease: backtracking on the Gauss-Newton step, then Levenberg-Marquardt
    damped steps; trial points are solved without sensitivities. None if nothing decreases l."""
    def value(cand):
        return _evaluate(problem, i, theta, beta, omega_inv, sigmas, cand, f_var, need_jac=False)[0]

    alpha = 1.0
    for _ in range(12):
        if value(eta + alpha * step) <= l - 1e-4 * alpha * decrement:
            return eta + alpha * step
        alpha *= 0.5
    diag = np.diag(np.diag(h))
    for lam in (1.0, 10.0, 100.0, 1e3):
        damped = -np.linalg.solve(h + lam * diag, g)
        if value(eta + damped) < l + 1e-4 * float(g @ damped):
            return eta + damped
    return None


def population_prediction(problem: Problem, i: int, theta, beta) -> tuple[np.ndarray, str]:
    """PRED: predictions at eta = 0."""
    params = problem.individual_params(i, theta, beta, np.zeros(problem.n_eta))
    f, _, msg = problem.predict(i, params)
    return f, msg


def subject_objective(problem: Problem, i: int, method: str, theta, beta, omega, sigmas,
                      eta0: np.ndarray, inner_tol: float = 1e-10) -> tuple[float, ConditionalMode]:
    """``-2 log L_i`` (no ``log 2 pi``) by ``method``, and the conditional mode (eta = 0 for FO)."""
    q = problem.n_eta
    omega_inv = np.linalg.inv(omega) if q else np.zeros((0, 0))
    if method == "fo":
        return _fo_objective(problem, i, theta, beta, omega, sigmas)
    f_var = None
    if method == "foce":
        f_var, msg = population_prediction(problem, i, theta, beta)
        if msg:
            return np.inf, ConditionalMode(np.zeros(q), np.inf, np.eye(q), f_var, None, 0, False, msg)
    mode = find_mode(problem, i, theta, beta, omega_inv, sigmas, eta0, f_var=f_var, tol=inner_tol)
    if not np.isfinite(mode.l):
        return np.inf, mode
    if q == 0:
        return mode.l, mode
    hess = mode.hessian if method != "laplace" else _exact_hessian(problem, i, theta, beta, omega_inv, sigmas, mode)
    if hess is None:
        mode.message = mode.message or f"subject {problem.subjects[i].data.id}: Laplace Hessian is not positive definite"
        return np.inf, mode
    try:
        chol = np.linalg.cholesky(0.5 * hess)
    except np.linalg.LinAlgError:
        return np.inf, mode
    logdet_omega = np.linalg.slogdet(omega)[1]
    return mode.l + logdet_omega + 2.0 * np.sum(np.log(np.diag(chol))), mode


def _exact_hessian(problem, i, theta, beta, omega_inv, sigmas, mode: ConditionalMode, h: float = 1e-4):
    q = mode.eta.size
    cols = []
    for k in range(q):
        e = np.zeros(q)
        e[k] = h
        gp = _evaluate(problem, i, theta, beta, omega_inv, sigmas, mode.eta + e, None)[1]
        gm = _evaluate(problem, i, theta, beta, omega_inv, sigmas, mode.eta - e, None)[1]
        if gp is None or gm is None:
            return None
        cols.append((gp - gm) / (2 * h))
    hess = np.array(cols)
    hess = 0.5 * (hess + hess.T)
    return hess if np.all(np.linalg.eigvalsh(hess) > 0) else None


def _fo_objective(problem, i, theta, beta, omega, sigmas) -> tuple[float, ConditionalMode]:
    q = problem.n_eta
    eta = np.zeros(q)
    s = problem.subjects[i]
    if np.any(s.data.cens != 0):
        raise FitSpecError("method fo does not support censored observations (CENS rows): use focei, laplace or saem, "
                           "which apply the M3 likelihood")
    params = problem.individual_params(i, theta, beta, eta)
    f, jac, msg = problem.predict(i, params, problem.eta_names)
    if msg:
        return np.inf, ConditionalMode(eta, np.inf, np.eye(q), f, None, 0, False, msg)
    t, dm, _, _ = problem.terms(i, f, sigmas)
    m, v = problem.mean_and_variance(i, f, sigmas)
    g = dm[:, None] * jac
    cmat = g @ omega @ g.T + np.diag(v)
    r = s.y - m
    sign, logdet = np.linalg.slogdet(cmat)
    if sign <= 0:
        return np.inf, ConditionalMode(eta, np.inf, np.eye(q), f, jac, 0, False, "FO covariance not positive definite")
    val = logdet + float(r @ np.linalg.solve(cmat, r))
    return val, ConditionalMode(eta, val, np.eye(q), f, jac, 0, True, "")
