"""Population (NLME) estimation: the objective at given values (MAXEVAL=0) and FOCE-I / FOCE / FO /
Laplace estimation with the covariance step."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

import numpy as np
from scipy import optimize

from kinetics.errors import FitSpecError, did_you_mean
from kinetics.fit._conditional import OBJECTIVE_METHODS, ConditionalMode, subject_objective
from kinetics.fit._covariance import COVARIANCE_KINDS, STOCHASTIC_KINDS, covariance_step
from kinetics.fit._gradient import focei_gradient
from kinetics.fit._problem import Problem, build_problem
from kinetics.fit._results import PopulationFit, assemble_fit
from kinetics.fit._saem import SaemOptions, run_saem
from kinetics.fit._stochastic_information import unsupported_reason

__all__ = ["fit_population", "evaluate_objective", "Objective"]


class Objective:
    """``OFV(x)`` summed over subjects, keeping each subject's eta mode as the next warm start."""

    def __init__(self, problem: Problem, method: str, inner_tol: float = 1e-10) -> None:
        if method not in OBJECTIVE_METHODS:
            raise FitSpecError(f"method '{method}' is not one of {', '.join(OBJECTIVE_METHODS)} (or 'saem')"
                               f"{did_you_mean(str(method), OBJECTIVE_METHODS + ('saem',))}")
        self.problem, self.method, self.inner_tol = problem, method, inner_tol
        self.etas = np.zeros((len(problem.subjects), problem.n_eta))
        self.n_evaluations = 0
        self._last: tuple[np.ndarray, np.ndarray, list[ConditionalMode]] | None = None

    def per_subject(self, x: np.ndarray, *, update: bool = True) -> tuple[np.ndarray, list[ConditionalMode]]:
        """Per-subject OFV contributions and modes at ``x`` (modes warm-started from the last accepted ones)."""
        theta, beta, omega, sigmas = self.problem.split(x)
        vals, modes = np.empty(len(self.problem.subjects)), []
        for i in range(len(self.problem.subjects)):
            v, mode = subject_objective(self.problem, i, self.method, theta, beta, omega, sigmas, self.etas[i],
                                        self.inner_tol)
            vals[i] = v
            modes.append(mode)
        self.n_evaluations += 1
        if update and np.all(np.isfinite(vals)):
            self.etas = np.array([m.eta for m in modes]).reshape(self.etas.shape)
            self._last = (x.copy(), vals, modes)
        return vals, modes

    def modes_at(self, x: np.ndarray) -> tuple[np.ndarray, list[ConditionalMode]]:
        """Per-subject OFV and modes at ``x`` (reused when ``x`` was the last accepted evaluation)."""
        if self._last is not None and np.array_equal(self._last[0], x):
            return self._last[1], self._last[2]
        return self.per_subject(x)

    @property
    def has_sensitivity_gradient(self) -> bool:
        return self.method == "focei" and self.problem.n_eta > 0

    def subject_gradients(self, x: np.ndarray) -> np.ndarray:
        """Per-subject d OFV_i / dx (n_subjects, n_x)."""
        if self.has_sensitivity_gradient:
            vals, modes = self.modes_at(x)
            if np.all(np.isfinite(vals)):
                return focei_gradient(self.problem, x, modes)[1]
        return self._fd_subject_gradients(x)

    def __call__(self, x: np.ndarray) -> float:
        vals, _ = self.per_subject(x)
        total = float(np.sum(vals))
        return total if np.isfinite(total) else np.inf

    def gradient(self, x: np.ndarray) -> np.ndarray:
        """d OFV / dx: from sensitivities for FOCE-I, else central differences."""
        g = self.subject_gradients(x).sum(axis=0)
        return np.where(np.isfinite(g), g, 0.0) if np.all(np.isfinite(g)) else np.full_like(x, np.nan)

    def _fd_subject_gradients(self, x: np.ndarray, h: float = 1e-5) -> np.ndarray:
        """Central differences of each OFV_i (each side re-optimises the etas from the current modes)."""
        saved = self.etas.copy()
        g = np.empty((len(self.problem.subjects), x.size))
        for k in range(x.size):
            e = np.zeros_like(x)
            e[k] = h
            up = self.per_subject(x + e, update=False)[0]
            dn = self.per_subject(x - e, update=False)[0]
            g[:, k] = (up - dn) / (2 * h)
            self.etas = saved
        return g


def evaluate_objective(model, data, *, params: Mapping[str, float], random_effects: Mapping[str, float],
                       error: Mapping, method: str = "focei", fixed: Mapping[str, float] | None = None,
                       covariates: Mapping | None = None, rtol: float = 1e-6, atol: float = 1e-8) -> PopulationFit:
    """The population objective at given values without estimating (NONMEM's ``MAXEVAL=0``).

    ``params`` are the typical values, ``random_effects`` the omega variances, ``error`` the error
    models with their SDs (e.g. ``{"conc": {"kind": "additive", "add": 0.69}}``). Returns a
    :class:`PopulationFit` with ``ofv``, the conditional etas (EBEs), predictions and residuals;
    no standard errors.
    """
    t0 = time.perf_counter()
    problem = build_problem(model, data, estimate=params, random_effects=random_effects, error=error, fixed=fixed,
                            covariates=covariates, rtol=rtol, atol=atol)
    obj = Objective(problem, method)
    x = problem.x0()
    vals, modes = obj.per_subject(x)
    failed = [m.message for m in modes if m.message]
    return assemble_fit(problem, method, x, vals, modes, covariance=None, success=not failed and np.isfinite(vals).all(),
                        message="; ".join(failed) or "objective evaluated (no estimation)", n_iterations=0,
                        n_evaluations=obj.n_evaluations, run_time_s=time.perf_counter() - t0)


def fit_population(model, data, *, estimate: Mapping[str, float], random_effects: Mapping[str, float] | None = None,
                   error: Mapping, method: str = "focei", fixed: Mapping[str, float] | None = None,
                   covariates: Mapping | None = None, covariance: str | None = "sandwich", max_iterations: int = 500,
                   rtol: float = 1e-6, atol: float = 1e-8,
                   progress: Callable[[int, float], None] | bool | None = None,
                   saem: SaemOptions | None = None) -> PopulationFit:
    """Population fit by FOCE-I (default), FOCE, FO or Laplace.

    Parameters
    ----------
    model
        A compiled model (``kinetics.load_model``).
    data
        A :class:`~kinetics.data.Dataset` (``kinetics.read_dataset``).
    estimate
        Parameter name -> initial typical value. Positive-by-nature parameters are estimated on the
        log scale.
    random_effects
        Parameter name -> initial omega variance (log-normal between-subject variability; diagonal
        omega). For a full omega pass ``{"omega": matrix, "names": [...]}``.
    error
        Output -> error model (``"additive"``, ``"proportional"``, ``"combined"``, ``"log_additive"``) or
        ``{"kind": ..., "add": sd0, "prop": sd0}``. Censored rows (CENS) use the M3 likelihood.
    fixed
        Parameter values held fixed (others keep the model file's values).
    covariates
        ``{"CL": {"WT": "power"}, "V": {"SEX": "categorical"}}``; power effects use the median as
        reference unless ``{"kind": "power", "reference": 70}``.
    covariance
        ``"sandwich"`` (R^-1 S R^-1), ``"r"``, ``"s"``, ``"linearised"`` (inverse Fisher information of the
        model linearised at the modes, censored rows left out; the default for SAEM), ``"stochastic"``
        (inverse observed information by Louis' principle, sampled with the SAEM kernels from the exact M3
        likelihood without linearisation, as Monolix's "stochastic approximation"; every estimated
        parameter needs a random effect; Monte Carlo settings and seed in ``saem``), ``"stochastic_s"`` /
        ``"stochastic_sandwich"`` (S^-1 / R^-1 S R^-1 from the same samples, S being the cross-product of the
        subjects' exact marginal scores: defined where the sampled R is not positive definite, as happens
        when a variance component is barely identified) or None (skip the
        covariance step). A matrix that is not positive definite gives no standard errors, and the
        result's ``covariance.message`` says so.
    progress
        True prints one line per iteration; a callable receives (iteration, ofv) (for SAEM every 10th
        iteration and the conditional -2 log L of the current samples).
    method
        ``"focei"``, ``"foce"``, ``"fo"``, ``"laplace"`` or ``"saem"`` (options in ``saem``; its objective
        is FOCE-I's at the SAEM estimates, so runs of both methods compare).
    saem
        :class:`~kinetics.fit._saem.SaemOptions`: iterations, MH kernels, chains and seed of SAEM, and
        ``n_information`` / ``n_information_burn`` of ``covariance="stochastic"`` (used by every method).

    Returns
    -------
    PopulationFit
        With ``success`` False and a message when the optimiser or a solve fails.
    """
    t0 = time.perf_counter()
    problem = _problem(model, data, estimate, random_effects, error, fixed, covariates, rtol, atol)
    if covariance is not None and covariance not in COVARIANCE_KINDS:
        raise FitSpecError(f"covariance must be one of {', '.join(COVARIANCE_KINDS)} or None, got {covariance!r}"
                           f"{did_you_mean(str(covariance), COVARIANCE_KINDS)}")
    if covariance in STOCHASTIC_KINDS and unsupported_reason(problem):
        raise FitSpecError(f"covariance '{covariance}': {unsupported_reason(problem)}; use covariance='linearised'")
    report = _progress_callback(progress, "conditional -2LL of the samples" if method == "saem" else "OFV")
    if method == "saem":
        return _fit_saem(problem, saem or SaemOptions(), covariance, report, t0)
    obj = Objective(problem, method)
    x0 = problem.x0()
    f0 = obj(x0)
    if not np.isfinite(f0):
        vals, modes = obj.per_subject(x0)
        msg = "; ".join(m.message for m in modes if m.message) or "objective is not finite at the initial values"
        return assemble_fit(problem, method, x0, vals, modes, None, False, f"initial values: {msg}", 0,
                            obj.n_evaluations, time.perf_counter() - t0)
    iterations = [0]

    def callback(xk):
        iterations[0] += 1
        if report:
            report(iterations[0], obj(xk) if obj._last is None or not np.array_equal(obj._last[0], xk)
                   else float(np.sum(obj._last[1])))

    res = optimize.minimize(obj, x0, jac=obj.gradient, method="BFGS", callback=callback,
                            options={"maxiter": max_iterations, "gtol": 1e-3})
    vals, modes = obj.per_subject(res.x)
    success, message = _outer_status(res, vals, modes)
    cov = covariance_step(obj, res.x, covariance, saem=saem) if (covariance and np.isfinite(vals).all()) else None
    return assemble_fit(problem, method, res.x, vals, modes, cov, success, message, iterations[0], obj.n_evaluations,
                        time.perf_counter() - t0)


def _fit_saem(problem: Problem, opts: SaemOptions, covariance: str | None, report, t0: float) -> PopulationFit:
    x, notes = run_saem(problem, opts, report)
    obj = Objective(problem, "focei")
    vals, modes = obj.per_subject(x)
    failed = [m.message for m in modes if m.message]
    ok = np.isfinite(vals).all() and not failed
    # the FOCE-I gradient is not zero at the SAEM estimates, so scores are not centred there and S (hence the
    # sandwich) is inflated: by default SAEM reports the linearised Fisher information (as Monolix does)
    kind = "linearised" if covariance == "sandwich" else covariance
    cov = covariance_step(obj, x, kind, saem=opts) if (kind and ok) else None
    msg = (f"SAEM {opts.n_burn} + {opts.n_smooth} iterations (seed {opts.seed}); objective by FOCE-I at the SAEM "
           f"estimates" + ("; " + "; ".join(notes[:3]) if notes else "")
           + ("; " + "; ".join(failed[:3]) if failed else ""))
    return assemble_fit(problem, "saem", x, vals, modes, cov, bool(ok), msg, opts.n_burn + opts.n_smooth,
                        obj.n_evaluations, time.perf_counter() - t0)


def _problem(model, data, estimate, random_effects, error, fixed, covariates, rtol, atol) -> Problem:
    if isinstance(random_effects, Mapping) and "omega" in random_effects:
        return build_problem(model, data, estimate=estimate, random_effects=np.asarray(random_effects["omega"]),
                             eta_names=tuple(random_effects.get("names", ())), error=error, fixed=fixed,
                             covariates=covariates, rtol=rtol, atol=atol)
    return build_problem(model, data, estimate=estimate, random_effects=random_effects, error=error, fixed=fixed,
                         covariates=covariates, rtol=rtol, atol=atol)


def _outer_status(res, vals, modes) -> tuple[bool, str]:
    failed = [m.message for m in modes if m.message]
    if failed:
        return False, "; ".join(failed[:5])
    if not np.isfinite(vals).all():
        return False, "objective not finite at the final estimates"
    if res.success:
        return True, f"converged ({res.message})"
    # BFGS stops with "precision loss" when the line search cannot improve further; that is convergence
    # only if the relative gradient is small: max_k |g_k| max(|x_k|, 1) / max(|OFV|, 1) (NONMEM-like
    # significant-digits scale)
    rel = _relative_gradient(res.x, res.jac, res.fun)
    if "precision" in str(res.message) and rel < RELATIVE_GRADIENT_TOLERANCE:
        return True, f"converged (relative gradient {rel:.2g} < {RELATIVE_GRADIENT_TOLERANCE:g})"
    return False, f"not converged: {res.message} (relative gradient {rel:.3g})"


RELATIVE_GRADIENT_TOLERANCE = 1e-3


def _relative_gradient(x: np.ndarray, g: np.ndarray | None, f: float) -> float:
    if g is None or not np.all(np.isfinite(g)):
        return np.inf
    return float(np.max(np.abs(g) * np.maximum(np.abs(x), 1.0)) / max(abs(f), 1.0))


def _progress_callback(progress, label: str = "OFV") -> Callable[[int, float], None] | None:
    if progress is True:
        return lambda it, ofv: print(f"  iteration {it:4d}  {label} {ofv:.6f}", flush=True)
    return progress or None
