"""Observed Fisher information by stochastic approximation (Louis' missing-information principle),
Monolix's "Fisher information matrix by stochastic approximation".

The latent variables are the log individual parameters ``u_i = X_i b + eta_i`` of the SAEM state
(:mod:`kinetics.fit._saem`). The complete-data log-likelihood of subject ``i`` is

    L_c,i = log p(y_i | u_i, sigma) + log N(eta_i; 0, Omega)

with ``log p(y_i | u_i, sigma)`` the M3 likelihood every estimator uses (censored rows included).
By Louis (1982, doi:10.1111/j.2517-6161.1982.tb01203.x) the observed information of the marginal
likelihood in the estimation vector ``x`` is, at any ``x``,

    I(x) = sum_i ( -E[d2 L_c,i | y_i] - Cov[d L_c,i | y_i] ).

The expectations are estimated from samples of ``eta_i | y_i`` drawn with the SAEM
Metropolis-Hastings kernels at the final estimates (Kuhn & Lavielle 2005,
doi:10.1016/j.csda.2003.10.005; Delyon, Lavielle & Moulines 1999, doi:10.1214/aos/1018031103).
No model derivative is needed: with ``u`` as the latent variable the typical values, covariate
coefficients and omega enter only the Gaussian term (analytic derivatives), and the residual SDs
only the likelihood kernel at the sampled predictions (analytic first derivative, second derivative
by central differences in log SD; no re-solve). Parameters estimated without a random effect would
need model sensitivities and are refused (:func:`unsupported_reason`).

Each subject is sampled by ``C >= 2`` independent chains (all started at the conditional modes, then a
burn-in; the random-walk scales keep adapting as in SAEM); the squared conditional mean in
``Cov = E[s s'] - E[s] E[s]'`` is estimated by products of means of *different* chains, which is
unbiased however autocorrelated the chains are (the plain ``mean(s) mean(s)'`` is biased by the
variance of the mean, which would inflate the information).

Monte Carlo error: the information of a well-identified parameter is estimated to a few per cent with
the defaults, but where a variance component is barely identified (high shrinkage) its information is a
small difference of two large sampled terms, and the estimate can come out not positive definite; it
is then reported as such (more iterations or chains, ``SaemOptions.n_information`` / ``n_chains``, reduce
the noise; they cannot help when the likelihood itself is flat in that direction).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kinetics.errors import FitSpecError
from kinetics.fit._likelihood import observation_terms
from kinetics.fit._problem import Problem
from kinetics.fit._saem import SaemOptions, _e_step, _State

__all__ = ["StochasticInformation", "stochastic_information", "unsupported_reason", "omega_derivatives"]

_LOG_SD_STEP = 1e-4   # central-difference step in log SD: truncation ~1e-8 relative, rounding ~1e-12


@dataclass(frozen=True)
class StochasticInformation:
    """Observed information for ``log L`` in the estimation vector ``x``, and how it was sampled."""

    information: np.ndarray      # (n_x, n_x)
    score_cross: np.ndarray      # S = sum_i E[s_i | y_i] E[s_i | y_i]': cross-product of the subjects' marginal scores
    n_iterations: int            # sampling iterations per chain after the burn-in
    n_burn: int
    n_chains: int                # independent chains per subject
    seed: int


def unsupported_reason(problem: Problem) -> str:
    """Why the stochastic information cannot be computed for ``problem`` ("" when it can)."""
    linear = [n for n, lg in zip(problem.estimate, problem.log_scale) if not lg]
    if linear:
        return (f"the stochastic information samples log-normal parameters; '{linear[0]}' is not positive by "
                "nature (lower bound < 0)")
    fixed = [n for n in problem.estimate if n not in problem.eta_names]
    if fixed:
        return (f"the stochastic information needs a random effect on every estimated parameter ('{fixed[0]}' has "
                "none: its derivatives would need model sensitivities)")
    return ""


def stochastic_information(problem: Problem, x: np.ndarray, etas: np.ndarray, opts: SaemOptions
                           ) -> StochasticInformation:
    """Louis' observed information at ``x`` from ``opts.n_information`` MH iterations per chain.

    Parameters
    ----------
    problem
        The estimation problem (every estimated parameter log-normal with a random effect).
    x
        Estimates in the estimation parameterisation (log typical values, covariate coefficients,
        omega parameters, log residual SDs).
    etas
        Starting etas per subject, ``(n_subjects, n_eta)`` in ``problem.eta_names`` order (the
        conditional modes); every chain starts there and runs ``opts.n_information_burn`` iterations
        before sampling.
    opts
        SAEM options: the MH kernel settings, ``n_information``, ``n_information_burn``, ``n_chains``
        (at least 2 chains are used) and ``seed`` (a stream distinct from SAEM's).

    Raises
    ------
    FitSpecError
        When a parameter has no random effect or is not log-normal (see :func:`unsupported_reason`).
    """
    reason = unsupported_reason(problem)
    if reason:
        raise FitSpecError(f"covariance 'stochastic': {reason}; use covariance='linearised'")
    n = len(problem.subjects)
    n_chains = max(2, opts.n_chains or int(np.ceil(50 / max(n, 1))))
    st = _state_at(problem, x, etas, n_chains, np.random.default_rng([opts.seed, 1]))
    d_omega, d2_omega = omega_derivatives(problem, x)
    for _ in range(opts.n_information_burn):
        _e_step(st, opts)
    p = x.size
    score_sum = np.zeros((n_chains * n, p))
    score_outer = np.zeros((n_chains * n, p, p))
    hessian_sum = np.zeros((p, p))
    for _ in range(opts.n_information):
        _e_step(st, opts)
        scores, hessian = _complete_data_derivatives(st, d_omega, d2_omega)
        score_sum += scores
        score_outer += scores[:, :, None] * scores[:, None, :]
        hessian_sum += hessian
    k = opts.n_information
    covariance, cross = _score_moments(score_sum / k, score_outer / k, n_chains)
    info = -hessian_sum / (k * n_chains) - covariance
    return StochasticInformation(0.5 * (info + info.T), 0.5 * (cross + cross.T), k, opts.n_information_burn,
                                 n_chains, opts.seed)


def _state_at(problem: Problem, x: np.ndarray, etas: np.ndarray, n_chains: int, rng: np.random.Generator) -> _State:
    """A SAEM state holding the estimates ``x``, every chain at ``etas``."""
    _, _, omega, sigmas = problem.split(x)
    st = _State(problem, rng, n_chains)
    st.b = x[:problem.n_theta + len(problem.covariate_effects)].copy()
    st.omega_iiv = omega
    st.sigmas = [s.copy() for s in sigmas]
    st.pseudo_var = np.zeros(len(st.comps))
    z = np.zeros((len(problem.subjects), len(st.comps)))
    z[:, st.iiv_pos] = np.asarray(etas, dtype=float).reshape(len(problem.subjects), problem.n_eta)
    st.z = np.tile(z, (n_chains, 1))
    return st


def _score_moments(mean: np.ndarray, outer: np.ndarray, n_chains: int) -> tuple[np.ndarray, np.ndarray]:
    """``(sum_i Cov[s_i | y_i], sum_i E[s_i | y_i] E[s_i | y_i]')`` from per-chain means of the complete-data
    score ``s`` and of ``s s'`` (chain-major rows).

    ``E[s] E[s]'`` is estimated by ``sum_{a != b} m_a m_b' / (C (C - 1))`` over chains ``a, b``.
    ``E[s_i | y_i]`` is subject i's score of the marginal likelihood (Fisher's identity), so the second
    matrix is the S matrix (cross-product of the subjects' scores) of the exact M3 likelihood.
    """
    c, p = n_chains, mean.shape[1]
    m = mean.reshape(c, -1, p)                        # (chains, subjects, p)
    total = m.sum(axis=0)
    cross = (np.einsum("ip,iq->pq", total, total) - np.einsum("cip,ciq->pq", m, m)) / (c * (c - 1))
    return outer.sum(axis=0) / c - cross, cross


def _complete_data_derivatives(st: _State, d_omega: np.ndarray, d2_omega: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Scores of ``L_c`` per subject-chain ``(n_sc, n_x)`` and the Hessian summed over subject-chains, at the
    current samples ``st.z`` and predictions ``st.f_all``."""
    problem = st.problem
    n_b = st.b.size
    no = d_omega.shape[0]
    p = n_b + no + len(problem.sigma_names)
    eta = st.z[:, st.iiv_pos]                          # (n_sc, q)
    x_r = st.design_all[:, st.iiv_pos, :]              # (n_sc, q, n_b)
    a = np.linalg.inv(st.omega_iiv)
    a_eta = eta @ a
    b_r = np.einsum("ij,rjk,kl->ril", a, d_omega, a)   # Omega^-1 dOmega_r Omega^-1
    scores = np.zeros((eta.shape[0], p))
    hess = np.zeros((p, p))
    scores[:, :n_b] = np.einsum("sqb,sq->sb", x_r, a_eta)
    scores[:, n_b:n_b + no] = (-0.5 * np.einsum("ij,rji->r", a, d_omega)
                               + 0.5 * np.einsum("sq,rqk,sk->sr", eta, b_r, eta))
    hess[:n_b, :n_b] = -np.einsum("sqb,qk,skc->bc", x_r, a, x_r)
    hb = -np.einsum("sqb,rqk,sk->br", x_r, b_r, eta)
    hess[:n_b, n_b:n_b + no], hess[n_b:n_b + no, :n_b] = hb, hb.T
    hess[n_b:n_b + no, n_b:n_b + no] = _omega_hessian(eta, a, d_omega, d2_omega)
    scores[:, n_b + no:], hess[n_b + no:, n_b + no:] = _residual_derivatives(st)
    return scores, hess


def _omega_hessian(eta: np.ndarray, a: np.ndarray, d1: np.ndarray, d2: np.ndarray) -> np.ndarray:
    """Sum over rows of ``eta`` of d2 log N(eta; 0, Omega) / d omega_r d omega_t (``a`` = Omega^-1)."""
    n = eta.shape[0]
    ad = np.einsum("ij,rjk->rik", a, d1)                      # Omega^-1 dOmega_r
    trace_term = 0.5 * np.einsum("rij,tji->rt", ad, ad) - 0.5 * np.einsum("ij,rtji->rt", a, d2)
    three = np.einsum("rij,tjk,kl->rtil", ad, ad, a)          # Omega^-1 dO_r Omega^-1 dO_t Omega^-1
    three = 0.5 * (three + np.swapaxes(three, 0, 1))
    second = np.einsum("ij,rtjk,kl->rtil", a, d2, a)
    gram = eta.T @ eta
    return n * trace_term - np.einsum("rtil,il->rt", three, gram) + 0.5 * np.einsum("rtil,il->rt", second, gram)


def _residual_derivatives(st: _State) -> tuple[np.ndarray, np.ndarray]:
    """d log p(y | u, sigma) / d log sd per subject-chain and its second derivative summed over subject-chains
    (central differences of the analytic first derivative; the predictions are those of the current samples)."""
    sigmas = st.sigmas
    grad = _residual_scores(st, sigmas)
    k = grad.shape[1]
    hess = np.zeros((k, k))
    for j in range(k):
        up, dn = _shift_log_sd(sigmas, j, _LOG_SD_STEP), _shift_log_sd(sigmas, j, -_LOG_SD_STEP)
        hess[:, j] = (_residual_scores(st, up) - _residual_scores(st, dn)).sum(axis=0) / (2 * _LOG_SD_STEP)
    return grad, 0.5 * (hess + hess.T)


def _shift_log_sd(sigmas: list[np.ndarray], j: int, h: float) -> list[np.ndarray]:
    flat = np.concatenate(sigmas)
    flat[j] *= np.exp(h)
    out, pos = [], 0
    for s in sigmas:
        out.append(flat[pos:pos + s.size])
        pos += s.size
    return out


def _residual_scores(st: _State, sigmas: list[np.ndarray]) -> np.ndarray:
    """``d log p(y_i | u_i, sigma) / d log sd`` per subject-chain ``(n_sc, n_sd)`` at the predictions ``st.f_all``
    (M3 terms for censored rows)."""
    problem = st.problem
    n_sc = st.z.shape[0]
    out = np.zeros((n_sc, len(problem.sigma_names)))
    pos = 0
    for k, (e, sd) in enumerate(zip(problem.error_models, sigmas)):
        sel = st.obs_error == k
        if sel.any():
            f = st.f_all[sel]
            v, _, dv_dsd = e.variance(f, sd)
            t = observation_terms(st.y[sel], e.prediction(f)[0], v, st.cens[sel], st.limit[sel])
            g = -0.5 * t.c_v[:, None] * dv_dsd * sd                     # log p = -c / 2; d/d log sd
            for j in range(sd.size):
                out[:, pos + j] = np.bincount(st.obs_subject[sel], weights=g[:, j], minlength=n_sc)
        pos += sd.size
    return out


def omega_derivatives(problem: Problem, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Analytic first and second derivatives of Omega in its parameters (``problem``'s parameterisation:
    log variances, or a lower Cholesky factor with log diagonal): ``(n_om, q, q)`` and ``(n_om, n_om, q, q)``."""
    k0 = problem.n_theta + len(problem.covariate_effects)
    params = x[k0:k0 + problem.n_omega_params]
    q, no = problem.n_eta, problem.n_omega_params
    d1, d2 = np.zeros((no, q, q)), np.zeros((no, no, q, q))
    if not problem.full_omega:
        for r in range(q):
            d1[r, r, r] = d2[r, r, r, r] = np.exp(params[r])
        return d1, d2
    pairs = [(i, j) for i in range(q) for j in range(i + 1)]
    chol, dl = np.zeros((q, q)), np.zeros((no, q, q))
    for r, (i, j) in enumerate(pairs):
        chol[i, j] = np.exp(params[r]) if i == j else params[r]
        dl[r, i, j] = np.exp(params[r]) if i == j else 1.0
    for r in range(no):
        d1[r] = dl[r] @ chol.T + chol @ dl[r].T
        for t in range(no):
            d2[r, t] = dl[r] @ dl[t].T + dl[t] @ dl[r].T
        if pairs[r][0] == pairs[r][1]:                 # d2 L / d x_r^2 = dL / d x_r on the log diagonal
            d2[r, r] += dl[r] @ chol.T + chol @ dl[r].T
    return d1, d2
