"""Gradient of the FOCE-I objective with respect to the estimation parameters ``x``.

Per subject, ``OFV_i(x) = F(eta_hat, x) + log det Omega + L(eta_hat, x)`` with ``F`` the conditional
objective and ``L = log det(H/2)`` (first-order Hessian). Because ``dF/deta = 0`` at the mode,

    dOFV_i/dx = dF/dx + d log det Omega/dx + dL/dx + (dL/deta)' d eta_hat/dx,
    d eta_hat/dx = -(d2F/deta2)^-1 d(dF/deta)/dx          (implicit function theorem).

Everything is built from first-order sensitivities: the second derivatives in eta come from central
differences of the analytic eta-gradient (2 q extra solves per subject). Typical values of
log-normal parameters enter only through ``log theta + eta`` (mu-referencing), so their partials are
the eta ones; covariate coefficients follow by the chain rule; omega and residual-SD partials need
no solve. Only parameters estimated without a random effect cost extra solves.
"""

from __future__ import annotations

import numpy as np

from kinetics.fit._conditional import ConditionalMode, conditional_pieces
from kinetics.fit._problem import Problem

__all__ = ["focei_gradient"]


def _logdet_half(hess: np.ndarray) -> float:
    sign, val = np.linalg.slogdet(0.5 * hess)
    return val if sign > 0 else np.nan


def _pieces_at(problem: Problem, i: int, theta, beta, omega_inv, sigmas, eta):
    params = problem.individual_params(i, theta, beta, eta)
    f, jac, msg = problem.predict(i, params, problem.eta_names)
    if msg:
        return None
    l, g, hh = conditional_pieces(problem, i, f, jac, eta, omega_inv, sigmas)
    return l, g, _logdet_half(hh)


def subject_gradient(problem: Problem, i: int, x: np.ndarray, mode: ConditionalMode, h: float = 1e-3) -> np.ndarray:
    """d OFV_i / dx for one subject at its mode (nan if a solve fails)."""
    theta, beta, omega, sigmas = problem.split(x)
    q, nt, nc, no = problem.n_eta, problem.n_theta, len(problem.covariate_effects), problem.n_omega_params
    omega_inv = np.linalg.inv(omega)
    eta = mode.eta
    l0, g0, h0 = conditional_pieces(problem, i, mode.f, mode.jac, eta, omega_inv, sigmas)
    p = x.size
    d_f, d_l, d_g, d_ldo = np.zeros(p), np.zeros(p), np.zeros((q, p)), np.zeros(p)
    # second derivatives in eta
    hx, dl_eta = np.empty((q, q)), np.empty(q)
    for j in range(q):
        e = np.zeros(q)
        e[j] = h
        up, dn = _pieces_at(problem, i, theta, beta, omega_inv, sigmas, eta + e), \
            _pieces_at(problem, i, theta, beta, omega_inv, sigmas, eta - e)
        if up is None or dn is None:
            return np.full(p, np.nan)
        hx[:, j] = (up[1] - dn[1]) / (2 * h)
        dl_eta[j] = (up[2] - dn[2]) / (2 * h)
    hx = 0.5 * (hx + hx.T)
    prior_grad = 2.0 * omega_inv @ eta
    # typical values
    for k, name in enumerate(problem.estimate):
        if problem.log_scale[k] and name in problem.eta_names:
            j = problem.eta_names.index(name)
            d_f[k] = g0[j] - prior_grad[j]
            d_l[k] = dl_eta[j]
            d_g[:, k] = hx[:, j] - 2.0 * omega_inv[:, j]
        else:
            res = _theta_partials(problem, i, x, k, omega_inv, sigmas, eta, h)
            if res is None:
                return np.full(p, np.nan)
            d_f[k], d_g[:, k], d_l[k] = res
    # covariate coefficients: u_k = log theta_k + shift_kc * beta_c
    shift = problem.subjects[i].covariate_shift
    for c in range(nc):
        k = problem.estimate.index(problem.covariate_effects[c].parameter)
        d_f[nt + c], d_l[nt + c], d_g[:, nt + c] = shift[k, c] * d_f[k], shift[k, c] * d_l[k], shift[k, c] * d_g[:, k]
    # omega parameters and residual SDs: same predictions, cheap central differences
    base = nt + nc
    for r in range(no + len(problem.sigma_names)):
        k = base + r
        vals = []
        for sgn in (1.0, -1.0):
            xs = x.copy()
            xs[k] += sgn * h
            _, _, om, sg = problem.split(xs)
            oi = np.linalg.inv(om)
            lf, gf, hf = conditional_pieces(problem, i, mode.f, mode.jac, eta, oi, sg)
            vals.append((lf, gf, _logdet_half(hf), np.linalg.slogdet(om)[1]))
        (fu, gu, lu, ou), (fd, gd, ld, od) = vals
        d_f[k], d_g[:, k], d_l[k], d_ldo[k] = (fu - fd) / (2 * h), (gu - gd) / (2 * h), (lu - ld) / (2 * h), (ou - od) / (2 * h)
    deta_dx = -np.linalg.solve(hx, d_g)
    return d_f + d_ldo + d_l + dl_eta @ deta_dx


def _theta_partials(problem, i, x, k, omega_inv, sigmas, eta, h):
    out = []
    for sgn in (1.0, -1.0):
        xs = x.copy()
        xs[k] += sgn * h
        th, be, _, _ = problem.split(xs)
        res = _pieces_at(problem, i, th, be, omega_inv, sigmas, eta)
        if res is None:
            return None
        out.append(res)
    (fu, gu, lu), (fd, gd, ld) = out
    return (fu - fd) / (2 * h), (gu - gd) / (2 * h), (lu - ld) / (2 * h)


def focei_gradient(problem: Problem, x: np.ndarray, modes: list[ConditionalMode]) -> tuple[np.ndarray, np.ndarray]:
    """Total gradient and per-subject gradients (n_subjects, n_x) of the FOCE-I objective at ``x``."""
    per = np.array([subject_gradient(problem, i, x, m) for i, m in enumerate(modes)])
    return per.sum(axis=0), per

