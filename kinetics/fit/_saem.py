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
runs compare on one scale. The covariance step by default is the linearised Fisher information there;
``covariance="stochastic"`` samples the same kernels at the estimates for Louis' observed information
(:mod:`kinetics.fit._stochastic_information`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import optimize, stats

from kinetics.errors import FitSpecError
from kinetics.fit._likelihood import observation_terms
from kinetics.fit._problem import Problem, omega_to_params

__all__ = ["SaemOptions", "run_saem"]


@dataclass(frozen=True)
class SaemOptions:
    """Iteration counts and MCMC settings of SAEM, and of the stochastic information (``covariance="stochastic"``,
    :mod:`kinetics.fit._stochastic_information`), which reuses the same kernels, chains and seed."""

    n_burn: int = 200            # iterations with step size 1 (exploration)
    n_smooth: int = 200          # iterations with step size 1/k (convergence)
    n_prior_moves: int = 2       # independent proposals from the prior per iteration
    n_joint_moves: int = 2       # joint random-walk proposals
    n_single_moves: int = 1      # one-at-a-time random-walk sweeps
    n_chains: int | None = None  # parallel chains per subject; default: enough for 50 subject-chains (Monolix)
    seed: int = 0
    annealing: float = 0.95      # largest relative decrease of a variance per burn-in iteration
    fixed_effect_decay: float = 0.9
    n_information: int = 300       # sampling iterations per chain of covariance="stochastic" (Louis' information)
    n_information_burn: int = 50   # MH iterations from the conditional modes before those samples

    def __post_init__(self) -> None:
        for name, low in (("n_information", 2), ("n_information_burn", 0)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < low:
                raise ValueError(f"SaemOptions.{name} must be an integer >= {low}, got {v!r}")


class _State:
    """Mutable SAEM state: current samples, statistics and parameter values."""

    def __init__(self, problem: Problem, rng: np.random.Generator, n_chains: int) -> None:
        self.problem, self.rng, self.n_chains = problem, rng, n_chains
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
        self.z = np.zeros((n_chains * n, nc))          # current eta per chain and subject (chain-major)
        self.c_sum = np.full(n_chains * n, np.inf)
        self.rw_scale = np.full(nc, 0.3)
        self._flatten()
        self.s1 = np.zeros((n, nc))                    # SA of u_i
        self.s2 = np.zeros((nc, nc))                   # SA of sum_i u_i u_i'
        self.res_stats: list[np.ndarray] | None = None

    # -- model pieces ------------------------------------------------------------
    def omega_full(self) -> np.ndarray:
        nc = len(self.comps)
        om = np.diag(np.where(self.has_iiv, 0.0, np.maximum(self.pseudo_var, 1e-12)))
        om[np.ix_(self.iiv_pos, self.iiv_pos)] = self.omega_iiv
        return om if nc else np.zeros((0, 0))

    def _flatten(self) -> None:
        """All subjects' observations as flat arrays on one time grid, for batch solves."""
        p = self.problem
        subs = list(p.subjects) * self.n_chains
        self.grid = np.unique(np.concatenate([s.solve_times for s in subs]))
        t0 = min(0.0, float(self.grid[0]), min((d.time for s in subs for d in s.data.doses), default=0.0))
        self.solver = p.model.repeated_batch_solver(self.grid, [list(s.data.doses) for s in subs], len(subs),
                                                     rtol=p.rtol, atol=p.atol, t0=t0)
        self.obs_subject = np.concatenate([np.full(s.time_index.size, i) for i, s in enumerate(subs)])
        self.obs_time = np.concatenate([np.searchsorted(self.grid, s.solve_times)[s.time_index] for s in subs])
        self.obs_output = np.concatenate([s.output_index for s in subs])
        self.obs_error = np.concatenate([s.error_index for s in subs])
        self.y = np.concatenate([s.y for s in subs])
        self.limit = np.concatenate([s.limit for s in subs])
        self.cens = np.concatenate([s.data.cens for s in subs])
        self.design_all = np.array(self.design * self.n_chains)     # (chains * n, nc, nb)
        self.offset_all = np.array(self.offset * self.n_chains)     # (chains * n, nc)
        self.f_all = np.zeros(self.y.size)

    def u_all(self, z: np.ndarray) -> np.ndarray:
        return np.einsum("ikb,b->ik", self.design_all, self.b) + self.offset_all + z

    def likelihood_all(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per-subject sum of c_j at etas ``z`` (n, nc) by one batch solve (inf where a solve fails),
        and the flat predictions."""
        pm = np.tile(self.problem.base_params, (z.shape[0], 1))
        pm[:, self.param_pos] = np.exp(self.u_all(z))
        out, ok = self.solver(pm)
        f = out[self.obs_subject, self.obs_time, self.obs_output]
        m, v = np.empty_like(f), np.empty_like(f)
        for k, (e, sd) in enumerate(zip(self.problem.error_models, self.sigmas)):
            sel = self.obs_error == k
            m[sel] = e.prediction(f[sel])[0]
            v[sel] = e.variance(f[sel], sd)[0]
        c = observation_terms(self.y, m, v, self.cens, self.limit).c
        c_sum = np.bincount(self.obs_subject, weights=np.where(np.isfinite(c), c, 0.0), minlength=z.shape[0])
        bad = np.bincount(self.obs_subject, weights=~np.isfinite(c), minlength=z.shape[0]) > 0
        c_sum[bad | ~ok] = np.inf
        return c_sum, f


def _e_step(st: _State, opts: SaemOptions) -> None:
    """Metropolis-Hastings moves for all subjects at once (one batch solve per move)."""
    omega = st.omega_full()
    n, nc = st.z.shape
    if nc == 0:
        return
    chol = np.linalg.cholesky(omega)
    omega_inv = np.linalg.inv(omega)
    sd = np.sqrt(np.diag(omega))
    c, f = st.likelihood_all(st.z)
    z = st.z.copy()
    prior = np.einsum("ik,kl,il->i", z, omega_inv, z)

    def accept(cand, c_new, f_new, new_total, old_total):
        nonlocal z, c, f, prior
        # log acceptance ratio; a current state whose solve failed (inf) gives way to any valid candidate
        with np.errstate(invalid="ignore"):
            log_ratio = np.where(np.isfinite(old_total), -0.5 * (new_total - old_total), np.inf)
        take = (np.log(st.rng.random(n)) < log_ratio) & np.isfinite(c_new)
        z = np.where(take[:, None], cand, z)
        c = np.where(take, c_new, c)
        sel = take[st.obs_subject]
        f = np.where(sel, f_new, f)
        prior = np.einsum("ik,kl,il->i", z, omega_inv, z)
        return take

    for _ in range(opts.n_prior_moves):            # independent proposals from the prior
        cand = st.rng.standard_normal((n, nc)) @ chol.T
        c_new, f_new = st.likelihood_all(cand)
        accept(cand, c_new, f_new, c_new, c)
    for _ in range(opts.n_joint_moves):            # joint random walk
        cand = z + st.rw_scale * sd * st.rng.standard_normal((n, nc))
        c_new, f_new = st.likelihood_all(cand)
        p_new = np.einsum("ik,kl,il->i", cand, omega_inv, cand)
        accept(cand, c_new, f_new, c_new + p_new, c + prior)
    rate = np.zeros(nc)
    for _ in range(opts.n_single_moves):           # one component at a time
        for k in range(nc):
            cand = z.copy()
            cand[:, k] += st.rw_scale[k] * sd[k] * st.rng.standard_normal(n)
            c_new, f_new = st.likelihood_all(cand)
            p_new = np.einsum("ik,kl,il->i", cand, omega_inv, cand)
            rate[k] += np.mean(accept(cand, c_new, f_new, c_new + p_new, c + prior))
    # adapt random-walk scales towards ~40 % acceptance (Monolix's target for these kernels)
    rate /= max(opts.n_single_moves, 1)
    st.rw_scale = np.clip(st.rw_scale * np.where(rate > 0.4, 1.1, 0.9), 0.01, 5.0)
    st.z, st.c_sum, st.f_all = z, c, f


def _augmented_residuals(st: _State) -> list[np.ndarray]:
    """Per error model, per observation (chain averages): (augmented y - m)^2, f^2 and their ratio;
    censored y drawn from their truncated normal given f."""
    groups = []
    for k, (e, sd) in enumerate(zip(st.problem.error_models, st.sigmas)):
        sel = st.obs_error == k
        f = st.f_all[sel]
        m = e.prediction(f)[0]
        v = e.variance(f, sd)[0]
        y = st.y[sel].copy()
        cens = st.cens[sel]
        cen = cens != 0
        if cen.any():
            sdv = np.sqrt(v[cen])
            hi = np.where(cens[cen] == 1, y[cen], st.limit[sel][cen])
            lo = np.where(cens[cen] == 1, st.limit[sel][cen], y[cen])
            a, b = (lo - m[cen]) / sdv, (hi - m[cen]) / sdv
            y[cen] = m[cen] + sdv * stats.truncnorm.rvs(a, b, random_state=st.rng)
        # per observation, averaged over chains (observations are tiled chain-major): (y - m)^2, f^2, (y - m)^2/f^2
        r2, f2 = (y - m) ** 2, f * f
        per_obs = np.stack([r2, f2, r2 / np.maximum(f2, 1e-300)]).reshape(3, st.n_chains, -1).mean(axis=1)
        groups.append(per_obs)
    return groups


def _m_step(st: _State, gamma: float, burn: bool, opts: SaemOptions) -> None:
    n = len(st.problem.subjects)
    u = st.u_all(st.z)
    st.s1 += gamma * (u.reshape(st.n_chains, n, -1).mean(axis=0) - st.s1)
    st.s2 += gamma * (u.T @ u / st.n_chains - st.s2)
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
        st.res_stats = [g.copy() for g in groups]
    for k, (e, new_stats) in enumerate(zip(st.problem.error_models, groups)):
        if new_stats.shape[1] == 0:
            continue
        stat = st.res_stats[k]
        stat += gamma * (new_stats - stat)
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
    n_chains = opts.n_chains or max(1, int(np.ceil(50 / max(len(problem.subjects), 1))))
    st = _State(problem, np.random.default_rng(opts.seed), n_chains)
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
