"""An estimation problem: a compiled model bound to a dataset, which parameters are estimated,
which vary between subjects, covariate effects, and the residual error model per output.

The optimiser works on an unconstrained vector ``x``:
``[log theta or theta (estimated typical values), covariate coefficients, omega parameters,
log residual SDs]``. Positive-by-nature parameters (lower bound >= 0) are estimated on the log
scale; parameters with between-subject variability are log-normal:
``phi_i = theta * prod(covariate effects) * exp(eta_i)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from kinetics.data import Dataset, SubjectData
from kinetics.errors import FitSpecError, did_you_mean
from kinetics.fit._likelihood import ErrorModel, ObservationTerms, observation_terms

__all__ = ["Problem", "CovariateEffect", "SubjectArrays", "build_problem"]


@dataclass(frozen=True)
class CovariateEffect:
    """``phi *= (cov / reference) ** coef`` (power) or ``phi *= exp(coef)`` when ``cov == level`` (categorical)."""

    parameter: str
    covariate: str
    kind: str          # "power" | "categorical"
    reference: object  # power: the reference value; categorical: the reference level
    level: object = None

    @property
    def name(self) -> str:
        return f"{self.parameter}~{self.covariate}" + (f"[{self.level}]" if self.kind == "categorical" else "")


@dataclass(frozen=True)
class SubjectArrays:
    """Observation arrays of one subject, ready for the likelihood (aligned per observation)."""

    data: SubjectData
    solve_times: np.ndarray      # unique observation times, sorted
    time_index: np.ndarray       # observation -> row of solve_times
    output_index: np.ndarray     # observation -> model output index
    error_index: np.ndarray      # observation -> position in Problem.error_outputs
    y: np.ndarray                # transformed DV (the limit for censored rows)
    limit: np.ndarray            # transformed other end of the censoring interval
    covariate_shift: np.ndarray  # additive shift of log typical values, per estimated parameter


@dataclass(frozen=True)
class Problem:
    """A model + dataset + estimation specification (see :func:`build_problem`)."""

    model: object
    data: Dataset
    estimate: tuple[str, ...]            # parameters whose typical value is estimated
    log_scale: tuple[bool, ...]          # per estimated parameter
    theta0: np.ndarray                   # initial typical values (natural scale)
    eta_names: tuple[str, ...]           # parameters with between-subject variability
    omega0: np.ndarray                   # initial omega (variance) matrix
    full_omega: bool
    covariate_effects: tuple[CovariateEffect, ...]
    error_outputs: tuple[str, ...]
    error_models: tuple[ErrorModel, ...]
    sigma0: tuple[np.ndarray, ...]       # initial SDs per error model
    base_params: np.ndarray              # model parameter vector with fixed values
    subjects: tuple[SubjectArrays, ...]
    rtol: float = 1e-8
    atol: float = 1e-10
    _solvers: dict = field(default_factory=dict, repr=False, compare=False)

    # -- the x vector ---------------------------------------------------------------
    @property
    def n_theta(self) -> int:
        return len(self.estimate)

    @property
    def n_eta(self) -> int:
        return len(self.eta_names)

    @property
    def n_omega_params(self) -> int:
        q = self.n_eta
        return q * (q + 1) // 2 if self.full_omega else q

    @property
    def sigma_names(self) -> tuple[str, ...]:
        return tuple(f"{o}.{p}" for o, e in zip(self.error_outputs, self.error_models) for p in e.parameter_names)

    @property
    def omega_names(self) -> tuple[str, ...]:
        q = self.eta_names
        if not self.full_omega:
            return tuple(f"omega({n})" for n in q)
        return tuple(f"omega({q[i]},{q[j]})" for i in range(len(q)) for j in range(i + 1))

    @property
    def x_names(self) -> tuple[str, ...]:
        th = tuple(f"log {n}" if lg else n for n, lg in zip(self.estimate, self.log_scale))
        return (th + tuple(c.name for c in self.covariate_effects) + self.omega_names
                + tuple(f"log {s}" for s in self.sigma_names))

    def x0(self) -> np.ndarray:
        th = np.where(self.log_scale, np.log(np.where(self.log_scale, self.theta0, 1.0)), self.theta0)
        return np.concatenate([th, np.zeros(len(self.covariate_effects)), omega_to_params(self.omega0, self.full_omega),
                               np.log(np.concatenate(self.sigma0)) if self.sigma0 else np.zeros(0)])

    def split(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[np.ndarray]]:
        """x -> (theta natural scale, covariate coefficients, omega matrix, SDs per error model)."""
        k = self.n_theta
        th = np.where(self.log_scale, np.exp(x[:k]), x[:k])
        nc = len(self.covariate_effects)
        beta = x[k:k + nc]
        no = self.n_omega_params
        omega = params_to_omega(x[k + nc:k + nc + no], self.n_eta, self.full_omega)
        sd = np.exp(x[k + nc + no:])
        sigmas, pos = [], 0
        for e in self.error_models:
            n = len(e.parameter_names)
            sigmas.append(sd[pos:pos + n])
            pos += n
        return th, beta, omega, sigmas

    # -- per-subject parameters ---------------------------------------------------
    def individual_params(self, i: int, theta: np.ndarray, beta: np.ndarray, eta: np.ndarray) -> np.ndarray:
        """Model parameter vector of subject ``i`` for typical values, covariate coefficients and etas."""
        p = self.base_params.copy()
        shift = self.subjects[i].covariate_shift @ beta if beta.size else np.zeros(self.n_theta)
        idx = self._param_index
        for k, name in enumerate(self.estimate):
            p[idx[name]] = theta[k] * np.exp(shift[k]) if self.log_scale[k] else theta[k]
        with np.errstate(over="ignore"):   # an overflowing eta gives inf: the solve then fails and says so
            for k, name in enumerate(self.eta_names):
                p[idx[name]] *= np.exp(eta[k])
        return p

    @property
    def _param_index(self) -> dict[str, int]:
        idx = self._solvers.get("param_index")
        if idx is None:
            idx = self._solvers["param_index"] = {n: i for i, n in enumerate(self.model.parameter_names)}
        return idx

    # -- predictions and likelihood terms ---------------------------------------------
    def predict(self, i: int, params: np.ndarray, wrt: tuple[str, ...] = ()) -> tuple[np.ndarray, np.ndarray | None, str]:
        """Predictions f per observation of subject ``i`` and, if ``wrt``, d f / d log(param) (n_obs, n_wrt).

        Returns ``(f, jac, message)``; ``message`` is "" on success, else why the solve failed.
        """
        s = self.subjects[i]
        solver = self._solvers.get((i, wrt))
        if solver is None:
            t0 = min(float(s.solve_times[0]), min((d.time for d in s.data.doses), default=0.0), 0.0)
            solver = self.model.repeated_solver(s.solve_times, s.data.doses, wrt=wrt, rtol=self.rtol, atol=self.atol,
                                                t0=t0)
            self._solvers[(i, wrt)] = solver
        out, d_out, msg = solver(params)
        f = out[s.time_index, s.output_index]
        if msg:
            return np.full(s.time_index.size, np.nan), None, f"subject {s.data.id}: {msg}"
        if not wrt:
            return f, None, ""
        pidx = self._param_index
        jac = d_out[s.time_index, s.output_index, :] * params[[pidx[n] for n in wrt]]
        return f, jac, ""

    def mean_and_variance(self, i: int, f: np.ndarray, sigmas: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Transformed prediction ``m`` (log f for log-scale outputs) and residual variance ``V`` per observation."""
        s = self.subjects[i]
        m, v = np.empty_like(f), np.empty_like(f)
        for k, (e, sd) in enumerate(zip(self.error_models, sigmas)):
            sel = s.error_index == k
            m[sel] = e.prediction(f[sel])[0]
            v[sel] = e.variance(f[sel], sd)[0]
        return m, v

    def terms(self, i: int, f: np.ndarray, sigmas: list[np.ndarray], f_variance: np.ndarray | None = None
              ) -> tuple[ObservationTerms, np.ndarray, np.ndarray, np.ndarray]:
        """Likelihood terms of subject ``i`` at predictions ``f``.

        Returns ``(terms, dm/df, dV/df, dV/dlog sd)``. ``f_variance``, when given, is the prediction the
        residual variance is evaluated at (FOCE without interaction: the population prediction).
        """
        s = self.subjects[i]
        fv = f if f_variance is None else f_variance
        if len(self.error_models) == 1:   # the common case: no masks needed
            e, sd = self.error_models[0], sigmas[0]
            m, dm = e.prediction(f)
            v, dv, dvds = e.variance(fv, sd)
            if f_variance is not None:
                dv = np.zeros_like(dv)
            return observation_terms(s.y, m, v, s.data.cens, s.limit), dm, dv, dvds * sd   # d/d log sd
        n = f.size
        m, dm, v, dv = (np.empty(n) for _ in range(4))
        dv_dsd = np.zeros((n, len(self.sigma_names)))
        pos = 0
        for e_i, (e, sd) in enumerate(zip(self.error_models, sigmas)):
            sel = s.error_index == e_i
            k = len(e.parameter_names)
            if sel.any():
                m[sel], dm[sel] = e.prediction(f[sel])
                v_e, dvdf, dvds = e.variance(fv[sel], sd)
                v[sel], dv[sel] = v_e, dvdf if f_variance is None else 0.0
                dv_dsd[sel, pos:pos + k] = dvds * sd   # d/d log sd
            pos += k
        return observation_terms(s.y, m, v, s.data.cens, s.limit), dm, dv, dv_dsd


# -- omega parameterisation ------------------------------------------------------------
def omega_to_params(omega: np.ndarray, full: bool) -> np.ndarray:
    """Diagonal: log variances. Full: lower Cholesky factor, row-major, log on the diagonal."""
    if not full:
        return np.log(np.diag(omega))
    chol = np.linalg.cholesky(omega)
    q = omega.shape[0]
    return np.array([np.log(chol[i, j]) if i == j else chol[i, j] for i in range(q) for j in range(i + 1)])


def params_to_omega(x: np.ndarray, q: int, full: bool) -> np.ndarray:
    if not full:
        return np.diag(np.exp(x))
    chol = np.zeros((q, q))
    pos = 0
    for i in range(q):
        for j in range(i + 1):
            chol[i, j] = np.exp(x[pos]) if i == j else x[pos]
            pos += 1
    return chol @ chol.T


# -- building a problem from user arguments ---------------------------------------------
def build_problem(model, data: Dataset, *, estimate: Mapping[str, float], random_effects: Mapping[str, float]
                  | np.ndarray | None = None, error: Mapping[str, str | Mapping] | None = None,
                  fixed: Mapping[str, float] | None = None, covariates: Mapping[str, Mapping] | None = None,
                  eta_names: tuple[str, ...] | None = None, rtol: float = 1e-6, atol: float = 1e-8) -> Problem:
    """Check the specification against the model and data and assemble a :class:`Problem`.

    Raises :class:`FitSpecError` naming the offending parameter / output, and
    :class:`~kinetics.errors.DatasetError` for data that do not fit the model.
    """
    names = model.parameter_names
    for what, keys in (("estimate", estimate), ("fixed", fixed or {})):
        for k in keys:
            if k not in names:
                raise FitSpecError(f"{what}: '{k}' is not a parameter of model '{model.name}'{did_you_mean(k, names)}")
    est = tuple(estimate)
    if not est and not random_effects:
        raise FitSpecError("estimate: give at least one parameter to estimate")
    overlap = set(est) & set(fixed or {})
    if overlap:
        raise FitSpecError(f"parameters both estimated and fixed: {', '.join(sorted(overlap))}")
    params = {p.name: p for p in model.model.parameters}
    log_scale = tuple(_is_positive(params[n]) for n in est)
    theta0 = np.array([float(estimate[n]) for n in est])
    for n, lg, v in zip(est, log_scale, theta0):
        if lg and not v > 0:
            raise FitSpecError(f"estimate: initial value of '{n}' must be > 0 (it is estimated on the log scale), got {v}")
    etas, omega0, full = _random_effects(random_effects, eta_names, names, params)
    base = model.parameter_vector(dict(fixed or {}))
    for n in etas:
        if n not in est and not base[names.index(n)] > 0:
            raise FitSpecError(f"random_effects: '{n}' has a log-normal random effect, so its fixed value must be > 0")
    err_outs, err_models, sig0 = _error_spec(error, model, data)
    bound = data.for_model(model, log_outputs=[o for o, e in zip(err_outs, err_models) if e.is_log_scale])
    missing = set(bound.output_names()) - set(err_outs)
    if missing:
        raise FitSpecError(f"error: no error model for output(s) {', '.join(sorted(missing))} measured in the data")
    effects = _covariate_effects(covariates or {}, est, log_scale, bound)
    subjects = tuple(_subject_arrays(s, model, err_outs, err_models, effects, est) for s in bound.subjects)
    return Problem(model=model, data=bound, estimate=est, log_scale=log_scale, theta0=theta0, eta_names=etas,
                   omega0=omega0, full_omega=full, covariate_effects=effects, error_outputs=err_outs,
                   error_models=err_models, sigma0=sig0, base_params=base, subjects=subjects, rtol=rtol, atol=atol)


def _is_positive(p) -> bool:
    return p.lower is not None and p.lower >= 0


def _random_effects(spec, eta_names, names, params) -> tuple[tuple[str, ...], np.ndarray, bool]:
    if spec is None:
        return (), np.zeros((0, 0)), False
    if isinstance(spec, Mapping):
        etas = tuple(spec)
        values = [spec[n] for n in etas]
        omega0, full = np.diag(np.array(values, dtype=float)), False
    else:
        omega0, full = np.array(spec, dtype=float), True
        etas = tuple(eta_names or ())
        if omega0.shape != (len(etas), len(etas)):
            raise FitSpecError(f"random_effects: a full omega must be {len(etas)}x{len(etas)} for eta_names {etas}")
        if not np.allclose(omega0, omega0.T) or np.any(np.linalg.eigvalsh(omega0) <= 0):
            raise FitSpecError("random_effects: the initial omega matrix must be symmetric positive definite")
    for n in etas:
        if n not in names:
            raise FitSpecError(f"random_effects: '{n}' is not a parameter{did_you_mean(n, names)}")
        if not _is_positive(params[n]):
            raise FitSpecError(f"random_effects: '{n}' must be positive by nature (lower bound >= 0) for a "
                               "log-normal random effect")
    if np.any(np.diag(omega0) <= 0):
        raise FitSpecError("random_effects: initial variances must be > 0")
    return etas, omega0, full


def _error_spec(spec, model, data) -> tuple[tuple[str, ...], tuple[ErrorModel, ...], tuple[np.ndarray, ...]]:
    if not spec:
        raise FitSpecError(f"error: give an error model per fitted output, e.g. {{'{model.output_names[0]}': "
                           "'additive'}")
    outs, models, sig = [], [], []
    for out, e in spec.items():
        if out not in model.output_names:
            raise FitSpecError(f"error: '{out}' is not an output of model '{model.name}'"
                               f"{did_you_mean(out, model.output_names)}")
        kind, init = (e, {}) if isinstance(e, str) else (e.get("kind", ""), {k: v for k, v in e.items() if k != "kind"})
        em = ErrorModel(str(kind))
        for k in init:
            if k not in em.parameter_names:
                raise FitSpecError(f"error.{out}: '{k}' is not a parameter of the {em.kind} error model "
                                   f"({', '.join(em.parameter_names)})")
        s0 = np.array([float(init[k]) if k in init else _default_sd(em, k) for k in em.parameter_names])
        if np.any(~(s0 > 0)):
            raise FitSpecError(f"error.{out}: initial SDs must be > 0")
        outs.append(out)
        models.append(em)
        sig.append(s0)
    return tuple(outs), tuple(models), tuple(sig)


def _default_sd(em: ErrorModel, name: str) -> float:
    return {"add": 1.0 if em.kind != "log_additive" else 0.5, "prop": 0.2}[name]


def _covariate_effects(spec, est, log_scale, data: Dataset) -> tuple[CovariateEffect, ...]:
    effects = []
    for par, covs in spec.items():
        if par not in est:
            raise FitSpecError(f"covariates: '{par}' must be an estimated parameter{did_you_mean(par, est)}")
        if not log_scale[est.index(par)]:
            raise FitSpecError(f"covariates: '{par}' is not positive by nature; covariate effects act on log "
                               "typical values")
        for cov, how in covs.items():
            if cov not in data.covariate_names:
                raise FitSpecError(f"covariates: '{cov}' is not a column of the dataset "
                                   f"(covariates: {', '.join(data.covariate_names) or 'none'})"
                                   f"{did_you_mean(cov, data.covariate_names)}")
            for s in data.subjects:
                if cov in s.time_varying:
                    raise FitSpecError(f"covariates: '{cov}' changes within subject {s.id}; "
                                       "covariate effects on typical values use one value per subject")
            kind, ref = (how, None) if isinstance(how, str) else (how.get("kind", ""), how.get("reference"))
            values = [s.covariates[cov] for s in data.subjects]
            effects.extend(_effects_for(par, cov, kind, ref, values))
    return tuple(effects)


def _effects_for(par, cov, kind, ref, values) -> list[CovariateEffect]:
    if kind == "power":
        if not all(isinstance(v, (int, float)) and v > 0 for v in values):
            raise FitSpecError(f"covariates: power effect of '{cov}' on '{par}' needs positive numeric values")
        ref = float(np.median(values)) if ref is None else float(ref)
        return [CovariateEffect(par, cov, "power", ref)]
    if kind == "categorical":
        levels = sorted({v for v in values}, key=lambda v: (-values.count(v), str(v)))
        ref = levels[0] if ref is None else ref
        if ref not in levels:
            raise FitSpecError(f"covariates: reference level {ref!r} of '{cov}' not found (levels: {levels})")
        return [CovariateEffect(par, cov, "categorical", ref, lv) for lv in levels if lv != ref]
    raise FitSpecError(f"covariates: effect of '{cov}' on '{par}' must be 'power' or 'categorical', got {kind!r}")


def _subject_arrays(s: SubjectData, model, err_outs, err_models, effects, est) -> SubjectArrays:
    times, t_idx = np.unique(s.times, return_inverse=True)
    o_idx = np.array([model.output_names.index(o) for o in s.outputs], dtype=int)
    e_idx = np.array([err_outs.index(o) for o in s.outputs], dtype=int)
    y, limit = np.empty(s.dv.size), np.empty(s.dv.size)
    for k, e in enumerate(err_models):
        sel = e_idx == k
        y[sel], limit[sel] = e.transform(s.dv[sel]), e.transform(s.limit[sel])
    shift = np.zeros((len(est), len(effects)))
    for j, c in enumerate(effects):
        v = s.covariates[c.covariate]
        shift[est.index(c.parameter), j] = (np.log(v / c.reference) if c.kind == "power" else float(v == c.level))
    return SubjectArrays(data=s, solve_times=times, time_index=t_idx.astype(int), output_index=o_idx,
                         error_index=e_idx, y=y, limit=limit, covariate_shift=shift)
