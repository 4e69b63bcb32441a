"""SAEM (stochastic approximation EM, Monolix-style) for log-normal NLME models, with censored
observations handled in both the E and the M step.

Each estimated parameter is a log-scale component ``u_ik = X_i b + eta_ik`` (typical value, covariate
effects, random effect). Per iteration:

- E step: a few Metropolis-Hastings moves per subject on ``eta`` (independent proposals from the
  prior, joint and one-at-a-time random walks with adaptive scales) targeting
  ``p(y_i | eta) p(eta)``; ``p(y_i | eta)`` is the same M3 likelihood as every other estimator.
- Data augmentation for censored rows (Samson, Lavielle & Mentre 2006,
  doi:10.1016/j.csda.2006.05.007): each censored value is drawn from its truncated normal given the
  current prediction, so the residual M step sees plausible values instead of the LLOQ.
- Stochastic approximation of the sufficient statistics with step 1 during the first ``n_burn``
  iterations and ``1/k`` afterwards (Delyon, Lavielle & Moulines 1999); M step in closed form
  (generalised least squares for typical values and covariate coefficients, moment estimates for
  omega and residual SDs; numerical for the combined error model). During burn-in variances may
  shrink by at most 5 % per iteration (simulated annealing, as Monolix). Parameters estimated
  without a random effect carry a variance that decays geometrically to 0, Monolix's device for
  fixed effects without variability.

The reported objective is FOCE-I at the SAEM estimates (with conditional modes), so SAEM and FOCE-I
runs compare on one scale; the covariance step is the FOCE-I sandwich there.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import optimize, stats

from kinetics.errors import FitSpecError
from kinetics.fit._problem import Problem, omega_to_params

__all__ = ["SaemOptions", "run_saem"]


@dataclass(frozen=True)
class SaemOptions:
    """Iteration counts and MCMC settings of SAEM."""

    n_burn: int = 200            # iterations with step size 1 (exploration)
    n_smooth: int = 200          # iterations with step size 1/k (convergence)
    n_prior_moves: int = 2       # independent proposals from the prior per iteration
    n_joint_moves: int = 2       # joint random-walk proposals
    n_single_moves: int = 1      # one-at-a-time random-walk sweeps
    seed: int = 0
    annealing: float = 0.95      # largest relative decrease of a variance per burn-in iteration
    fixed_effect_decay: float = 0.9


class _State:
    """Mutable SAEM state: current samples, statistics and parameter values."""

    def __init__(self, problem: Problem, rng: np.random.Generator) -> None:
        self.problem, self.rng = problem, rng
        est, etas = problem.estimate, problem.eta_names
        self.comps = tuple(est) + tuple(n for n in etas if n not in est)
        self.has_iiv = np.array([c in etas for c in self.comps])
        self.iiv_pos = np.array([self.comps.index(n) for n in etas], dtype=int)
        nc = len(self.comps)
        pidx = {n: i for i, n in enumerate(problem.model.parameter_names)}
        self.param_pos = np.array([pidx[c] for c in self.comps], dtype=int)
        n_b = len(est) + len(problem.covariate_effects)
        self.design, self.offset = [], []
        for s in problem.subjects:
            x = np.zeros((nc, n_b))
            off = np.zeros(nc)
            for k, c in enumerate(self.comps):
                if c in est:
                    j = est.index(c)
                    x[k, j] = 1.0
                    x[k, len(est):] = s.covariate_shift[j]
                else:
                    off[k] = np.log(problem.base_params[pidx[c]])
            self.design.append(x)
            self.offset.append(off)
        theta0 = np.log(problem.theta0)
        self.b = np.concatenate([theta0, np.zeros(len(problem.covariate_effects))])
        self.omega_iiv = problem.omega0.copy()
        self.pseudo_var = np.where(self.has_iiv, 0.0, 0.1)
        self.sigmas = [s.copy() for s in problem.sigma0]
        n = len(problem.subjects)
        self.z = np.zeros((n, nc))                     # current eta (incl. pseudo components)
        self.c_sum = np.full(n, np.inf)
        self.f = [np.zeros(s.time_index.size) for s in problem.subjects]
        self.rw_scale = np.full(nc, 0.3)
        self.s1 = np.zeros((n, nc))                    # SA of u_i
        self.s2 = np.zeros((nc, nc))                   # SA of sum_i u_i u_i'
        self.res_stats: list[np.ndarray] | None = None

    # -- model pieces ------------------------------------------------------------
    def omega_full(self) -> np.ndarray:
        nc = len(self.comps)
        om = np.diag(np.where(self.has_iiv, 0.0, np.maximum(self.pseudo_var, 1e-12)))
        om[np.ix_(self.iiv_pos, self.iiv_pos)] = self.omega_iiv
        return om if nc else np.zeros((0, 0))

    def u(self, i: int, z: np.ndarray) -> np.ndarray:
        return self.design[i] @ self.b + self.offset[i] + z

    def likelihood(self, i: int, z: np.ndarray) -> tuple[float, np.ndarray | None]:
        """sum of c_j at eta = z (inf when the solve fails) and the predictions."""
        p = self.problem.base_params.copy()
        p[self.param_pos] = np.exp(self.u(i, z))
        f, _, msg = self.problem.predict(i, p)
        if msg:
            return np.inf, None
        t = self.problem.terms(i, f, self.sigmas)[0]
        return float(np.sum(t.c)), f


def _e_step(st: _State, opts: SaemOptions) -> None:
    omega = st.omega_full()
    nc = len(st.comps)
    if nc == 0:
        return
    chol = np.linalg.cholesky(omega)
    omega_inv = np.linalg.inv(omega)
    acc_joint, acc_single, tries_joint, tries_single = 0, np.zeros(nc), 0, np.zeros(nc)
    for i in range(len(st.problem.subjects)):
        z = st.z[i]
        c, f = st.likelihood(i, z)
        if f is not None:
            st.f[i] = f
        prior = z @ omega_inv @ z
        for _ in range(opts.n_prior_moves):
            cand = chol @ st.rng.standard_normal(nc)
            c_new, f_new = st.likelihood(i, cand)
            if np.log(st.rng.random()) < -0.5 * (c_new - c):
                z, c, f = cand, c_new, f_new
                st.f[i] = f
        prior = z @ omega_inv @ z
        for _ in range(opts.n_joint_moves):
            cand = z + st.rw_scale * np.sqrt(np.diag(omega)) * st.rng.standard_normal(nc)
            c_new, f_new = st.likelihood(i, cand)
            p_new = cand @ omega_inv @ cand
            tries_joint += 1
            if np.log(st.rng.random()) < -0.5 * (c_new + p_new - c - prior):
                z, c, prior = cand, c_new, p_new
                st.f[i] = f_new
                acc_joint += 1
        for _ in range(opts.n_single_moves):
            for k in range(nc):
                cand = z.copy()
                cand[k] += st.rw_scale[k] * np.sqrt(omega[k, k]) * st.rng.standard_normal()
                c_new, f_new = st.likelihood(i, cand)
                p_new = cand @ omega_inv @ cand
                tries_single[k] += 1
                if np.log(st.rng.random()) < -0.5 * (c_new + p_new - c - prior):
                    z, c, prior = cand, c_new, p_new
                    st.f[i] = f_new
                    acc_single[k] += 1
        st.z[i], st.c_sum[i] = z, c
    # adapt random-walk scales towards ~40 % acceptance (Monolix's target for these kernels)
    rate = acc_single / np.maximum(tries_single, 1)
    st.rw_scale *= np.where(rate > 0.4, 1.1, 0.9)
    st.rw_scale = np.clip(st.rw_scale, 0.01, 5.0)


def _augmented_residuals(st: _State) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per error model: (augmented y - m)^2, f, and counts; censored y drawn from their truncated normal."""
    groups: list[list] = [[[], []] for _ in st.problem.error_models]
    for i, s in enumerate(st.problem.subjects):
        f = st.f[i]
        for k, (e, sd) in enumerate(zip(st.problem.error_models, st.sigmas)):
            sel = s.error_index == k
            if not sel.any():
                continue
            m = e.prediction(f[sel])[0]
            v = e.variance(f[sel], sd)[0]
            y = s.y[sel].copy()
            cens = s.data.cens[sel]
            cen = cens != 0
            if cen.any():
                sdv = np.sqrt(v[cen])
                hi = np.where(cens[cen] == 1, y[cen], s.limit[sel][cen])
                lo = np.where(cens[cen] == 1, s.limit[sel][cen], y[cen])
                a, b = (lo - m[cen]) / sdv, (hi - m[cen]) / sdv
                y[cen] = m[cen] + sdv * stats.truncnorm.rvs(a, b, random_state=st.rng)
            groups[k][0].append((y - m) ** 2)
            groups[k][1].append(f[sel])
    return [(np.concatenate(g[0]) if g[0] else np.zeros(0), np.concatenate(g[1]) if g[1] else np.zeros(0))
            for g in groups]


def _m_step(st: _State, gamma: float, burn: bool, opts: SaemOptions) -> None:
    n = len(st.problem.subjects)
    u = np.array([st.u(i, st.z[i]) for i in range(n)])
    st.s1 += gamma * (u - st.s1)
    st.s2 += gamma * (u.T @ u - st.s2)
    omega = st.omega_full()
    omega_inv = np.linalg.inv(omega)
    # typical values and covariate coefficients: generalised least squares on the averaged u_i
    lhs = sum(x.T @ omega_inv @ x for x in st.design)
    rhs = sum(x.T @ omega_inv @ (s1 - off) for x, s1, off in zip(st.design, st.s1, st.offset))
    if lhs.size:
        st.b = np.linalg.solve(lhs, rhs)
    means = np.array([st.design[i] @ st.b + st.offset[i] for i in range(n)])
    cross = st.s1.T @ means
    new = (st.s2 - cross - cross.T + means.T @ means) / n
    new_iiv = new[np.ix_(st.iiv_pos, st.iiv_pos)]
    if not st.problem.full_omega:
        new_iiv = np.diag(np.diag(new_iiv))
    if burn:
        floor = opts.annealing * np.diag(st.omega_iiv)
        d = np.sqrt(np.maximum(np.diag(new_iiv), floor) / np.maximum(np.diag(new_iiv), 1e-300))
        new_iiv = new_iiv * np.outer(d, d)
    st.omega_iiv = 0.5 * (new_iiv + new_iiv.T)
    st.pseudo_var = np.where(st.has_iiv, 0.0, st.pseudo_var * opts.fixed_effect_decay)
    _residual_m_step(st, gamma, burn, opts)


def _residual_m_step(st: _State, gamma: float, burn: bool, opts: SaemOptions) -> None:
    groups = _augmented_residuals(st)
    if st.res_stats is None:   # per observation: SA of (y - m)^2, f^2 and (y - m)^2 / f^2
        st.res_stats = [np.stack([r2, f ** 2, r2 / np.maximum(f * f, 1e-300)]) for r2, f in groups]
    for k, (e, (r2, f)) in enumerate(zip(st.problem.error_models, groups)):
        if r2.size == 0:
            continue
        stat = st.res_stats[k]
        stat += gamma * (np.stack([r2, f ** 2, r2 / np.maximum(f * f, 1e-300)]) - stat)
        old = st.sigmas[k]
        if e.kind in ("additive", "log_additive"):
            new = np.array([np.sqrt(np.mean(stat[0]))])
        elif e.kind == "proportional":
            new = np.array([np.sqrt(np.mean(stat[2]))])
        else:
            new = _combined_sds(stat[0], stat[1], old)
        if burn:
            new = np.maximum(new, np.sqrt(opts.annealing) * old)
        st.sigmas[k] = new


def _combined_sds(r2: np.ndarray, f2: np.ndarray, start: np.ndarray) -> np.ndarray:
    def objective(logsd):
        a2, b2 = np.exp(2 * logsd)
        v = a2 + b2 * f2
        return float(np.sum(np.log(v) + r2 / v))

    res = optimize.minimize(objective, np.log(np.maximum(start, 1e-8)), method="Nelder-Mead",
                            options={"xatol": 1e-6, "fatol": 1e-9})
    return np.exp(res.x)


def run_saem(problem: Problem, opts: SaemOptions, progress=None) -> tuple[np.ndarray, list[str]]:
    """Run SAEM; returns the estimates as the optimiser vector ``x`` of ``problem`` and notes."""
    for n, lg in zip(problem.estimate, problem.log_scale):
        if not lg:
            raise FitSpecError(f"SAEM estimates log-normal parameters; '{n}' is not positive by nature "
                               "(lower bound < 0): fix it or use FOCE-I")
    st = _State(problem, np.random.default_rng(opts.seed))
    notes: list[str] = []
    total = opts.n_burn + opts.n_smooth
    for it in range(1, total + 1):
        burn = it <= opts.n_burn
        gamma = 1.0 if burn else 1.0 / (it - opts.n_burn)
        _e_step(st, opts)
        if not np.all(np.isfinite(st.c_sum)):
            bad = [st.problem.subjects[i].data.id for i in np.flatnonzero(~np.isfinite(st.c_sum))]
            notes.append(f"iteration {it}: no valid sample for subjects {bad[:5]}")
        _m_step(st, gamma, burn, opts)
        if progress and (it % 10 == 0 or it == total):
            progress(it, float(np.sum(st.c_sum)))
    return _as_x(st), notes


def _as_x(st: _State) -> np.ndarray:
    p = st.problem
    nt = p.n_theta
    theta_log = st.b[:nt]
    beta = st.b[nt:]
    return np.concatenate([theta_log, beta, omega_to_params(st.omega_iiv, p.full_omega) if p.n_eta else np.zeros(0),
                           np.log(np.concatenate(st.sigmas)) if st.sigmas else np.zeros(0)])
