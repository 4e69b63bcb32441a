"""Fisher information of the model linearised at the conditional modes (Monolix's "linearization"
FIM).

For subject i the observations (transformed scale, uncensored rows) are approximated as Gaussian
``y_i ~ N(mu_i, C_i)`` with ``mu_i = m(eta_hat) - G eta_hat`` and ``C_i = G Omega G' + diag(V)``,
``G = dm/deta`` at the mode. The expected information is

    I_ab = sum_i [ dmu_a' C^-1 dmu_b + 1/2 tr(C^-1 dC_a C^-1 dC_b) ]

It needs only first-order sensitivities at the modes and no differences of the objective, so it
stays usable when the objective has kinks (switch times that depend on parameters, as in the
Stein CAR-T model) where R cannot be differenced. Censored rows do not contribute (a documented
approximation).
"""

from __future__ import annotations

import numpy as np

from kinetics.fit._conditional import ConditionalMode
from kinetics.fit._problem import Problem

__all__ = ["linearised_information"]


def linearised_information(problem: Problem, x: np.ndarray, modes: list[ConditionalMode]) -> np.ndarray:
    """Expected information (for log L) in the estimation parameters ``x``."""
    theta, beta, omega, sigmas = problem.split(x)
    p = x.size
    d_omega = _omega_derivatives(problem, x)
    info = np.zeros((p, p))
    extra = tuple(n for n in problem.estimate if n not in problem.eta_names)
    wrt = problem.eta_names + extra
    for i, mode in enumerate(modes):
        params = problem.individual_params(i, theta, beta, mode.eta)
        f, jac, msg = problem.predict(i, params, wrt)
        if msg:
            raise ValueError(msg)
        _, dm, dv, dv_dsd = problem.terms(i, f, sigmas)
        obs = problem.subjects[i].data.cens == 0
        if not obs.any():
            continue
        info += _subject_information(problem, i, x, mode.eta, f, jac, dm, dv, dv_dsd, omega, d_omega, obs, wrt, theta)
    return 0.5 * (info + info.T)


def _subject_information(problem, i, x, eta, f, jac, dm, dv, dv_dsd, omega, d_omega, obs, wrt, theta):
    s = problem.subjects[i]
    q, nt, nc = problem.n_eta, problem.n_theta, len(problem.covariate_effects)
    no = problem.n_omega_params
    m_jac = (dm[:, None] * jac)[obs]                 # d m / d log param, observed rows
    v_jac = (dv[:, None] * jac)[obs]                 # d V / d log param
    g = m_jac[:, :q]
    var = problem.mean_and_variance(i, f, problem.split(x)[3])[1][obs]
    cmat = g @ omega @ g.T + np.diag(var)
    c_inv = np.linalg.inv(cmat)
    p = x.size
    d_mu = np.zeros((obs.sum(), p))
    d_c = np.zeros((p, obs.sum(), obs.sum()))
    for k, name in enumerate(problem.estimate):
        col = wrt.index(name)
        scale = 1.0 if problem.log_scale[k] else 1.0 / theta[k]   # identity-scale parameters: d/d theta
        d_mu[:, k] = m_jac[:, col] * scale
        d_c[k] = np.diag(v_jac[:, col] * scale)
    for c in range(nc):
        k = problem.estimate.index(problem.covariate_effects[c].parameter)
        d_mu[:, nt + c] = s.covariate_shift[k, c] * d_mu[:, k]
        d_c[nt + c] = s.covariate_shift[k, c] * d_c[k]
    for r in range(no):
        d_c[nt + nc + r] = g @ d_omega[r] @ g.T
    for j in range(len(problem.sigma_names)):
        d_c[nt + nc + no + j] = np.diag(dv_dsd[obs, j])
    a = c_inv @ d_mu
    info = d_mu.T @ a
    w = np.einsum("ij,ajk->aik", c_inv, d_c)         # C^-1 dC_a
    info += 0.5 * np.einsum("aij,bji->ab", w, w)
    return info


def _omega_derivatives(problem: Problem, x: np.ndarray, h: float = 1e-6) -> list[np.ndarray]:
    k0 = problem.n_theta + len(problem.covariate_effects)
    out = []
    for r in range(problem.n_omega_params):
        up, dn = x.copy(), x.copy()
        up[k0 + r] += h
        dn[k0 + r] -= h
        out.append((problem.split(up)[2] - problem.split(dn)[2]) / (2 * h))
    return out
