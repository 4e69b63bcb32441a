"""The population fit result: estimates, uncertainty, EBEs, predictions, residuals, shrinkage."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from kinetics.fit._conditional import ConditionalMode, population_prediction
from kinetics.fit._covariance import CovarianceResult
from kinetics.fit._likelihood import n_gaussian_terms
from kinetics.fit._problem import Problem

__all__ = ["PopulationFit", "assemble_fit"]

_LOG_2PI = math.log(2 * math.pi)
METHOD_LABELS = {"fo": "FO", "foce": "FOCE", "focei": "FOCE-I", "laplace": "Laplace", "saem": "SAEM"}


@dataclass(frozen=True)
class PopulationFit:
    """Result of a population fit (or of an objective evaluation at given values).

    ``ofv`` is -2 log L without the ``n log 2 pi`` of observed values (NONMEM's convention);
    ``ofv_with_constant`` adds it. ``estimates`` has one row per estimated quantity: the value on the
    estimation scale (``log`` for positive parameters, omega variances and SDs), its standard error,
    the natural-scale value, RSE % and a 95 % interval (back-transformed). Shrinkage is SD-based:
    ``1 - sd(eta_hat_k) / omega_k`` and, per output, ``1 - sd(IWRES)``.
    """

    method: str
    model_name: str
    ofv: float
    ofv_with_constant: float
    n_subjects: int
    n_observations: int
    n_censored: int
    n_parameters: int
    theta: dict[str, float]
    covariate_coefficients: dict[str, float]
    omega: pd.DataFrame
    sigma: dict[str, float]
    estimates: pd.DataFrame
    etas: pd.DataFrame
    individual_params: pd.DataFrame
    predictions: pd.DataFrame
    eta_shrinkage: dict[str, float]
    epsilon_shrinkage: dict[str, float]
    covariance: CovarianceResult | None
    success: bool
    message: str
    n_iterations: int
    n_evaluations: int
    run_time_s: float
    x: np.ndarray = field(repr=False)
    x_names: tuple[str, ...] = ()
    #: per subject (in ``etas`` order): covariance of the etas given the data, ``(H/2)^-1`` with ``H`` the
    #: first-order Hessian of the conditional objective at the mode (the FOCE-I Laplace approximation)
    eta_conditional_covariances: tuple[np.ndarray, ...] = field(default=(), repr=False)
    #: output -> error model kind ("additive", "proportional", "combined", "log_additive")
    error_models: dict[str, str] = field(default_factory=dict)
    #: every model parameter at the fit's typical values: the estimates ``theta``, the values held fixed
    #: and the model file's values for the rest (what simulating "the typical patient" of this fit needs)
    typical_parameters: dict[str, float] = field(default_factory=dict)

    @property
    def aic(self) -> float:
        return self.ofv_with_constant + 2 * self.n_parameters

    @property
    def bic(self) -> float:
        return self.ofv_with_constant + math.log(max(self.n_observations, 1)) * self.n_parameters

    @property
    def standard_errors(self) -> dict[str, float]:
        """Natural-scale standard errors (delta method) by quantity name; nan without a covariance."""
        return dict(zip(self.estimates["name"], self.estimates["se_natural"]))

    @property
    def omega_cv_percent(self) -> dict[str, float]:
        """Between-subject CV % of each log-normal parameter: 100 sqrt(exp(omega^2) - 1)."""
        return {n: 100.0 * math.sqrt(math.expm1(self.omega.loc[n, n])) for n in self.omega.index}

    def summary(self) -> str:
        """A NONMEM-like report for people."""
        lab = METHOD_LABELS.get(self.method, self.method)
        lines = [f"Population fit of '{self.model_name}' by {lab}: {self.n_subjects} subjects, "
                 f"{self.n_observations} observations ({self.n_censored} censored, M3)",
                 f"Status: {'SUCCESS' if self.success else 'FAILED'}: {self.message}",
                 f"  iterations {self.n_iterations}, objective evaluations {self.n_evaluations}, "
                 f"run time {self.run_time_s:.2f} s",
                 f"OFV (-2LL, no 2pi constant) {self.ofv:.4f}   with constant {self.ofv_with_constant:.4f}   "
                 f"AIC {self.aic:.4f}   BIC {self.bic:.4f}", ""]
        lines.append(f"{'parameter':<24}{'estimate':>12}{'SE':>11}{'RSE%':>8}{'95% CI':>24}{'natural':>12}")
        for r in self.estimates.itertuples(index=False):
            ci = f"[{r.ci_low:.4g}, {r.ci_high:.4g}]" if np.isfinite(r.ci_low) else "-"
            rse = f"{r.rse_percent:.1f}" if np.isfinite(r.rse_percent) else "-"
            se = f"{r.se:.4g}" if np.isfinite(r.se) else "-"
            lines.append(f"{r.name:<24}{r.estimate:>12.5g}{se:>11}{rse:>8}{ci:>24}{r.natural:>12.5g}")
        if len(self.omega):
            lines += ["", f"{'random effect':<16}{'omega^2':>10}{'CV %':>8}{'shrinkage %':>13}"]
            cv = self.omega_cv_percent
            for n in self.omega.index:
                lines.append(f"{n:<16}{self.omega.loc[n, n]:>10.4g}{cv[n]:>8.1f}{100 * self.eta_shrinkage[n]:>13.1f}")
        if self.epsilon_shrinkage:
            lines.append("epsilon shrinkage %: " + ", ".join(f"{k} {100 * v:.1f}" for k, v in self.epsilon_shrinkage.items()))
        lines.append("")
        lines.append(_covariance_line(self.covariance))
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (f"<PopulationFit {self.model_name} {METHOD_LABELS.get(self.method, self.method)}: OFV {self.ofv:.4f}, "
                f"{'success' if self.success else 'FAILED'}>")

    def to_dict(self) -> dict:
        """Plain JSON-serialisable dictionary of the whole result."""
        cov = self.covariance
        return {
            "method": self.method, "model": self.model_name, "ofv": self.ofv, "ofv_with_constant": self.ofv_with_constant,
            "aic": self.aic, "bic": self.bic, "n_subjects": self.n_subjects, "n_observations": self.n_observations,
            "n_censored": self.n_censored, "success": self.success, "message": self.message,
            "n_iterations": self.n_iterations, "n_evaluations": self.n_evaluations, "run_time_s": self.run_time_s,
            "theta": self.theta, "typical_parameters": self.typical_parameters,
            "covariate_coefficients": self.covariate_coefficients,
            "error_models": self.error_models,
            "omega": {"names": list(self.omega.index), "matrix": self.omega.to_numpy().tolist()},
            "omega_cv_percent": self.omega_cv_percent if len(self.omega) else {}, "sigma": self.sigma,
            "estimates": _records(self.estimates), "eta_shrinkage": self.eta_shrinkage,
            "epsilon_shrinkage": self.epsilon_shrinkage,
            "covariance": None if cov is None else {
                "kind": cov.kind, "success": cov.success, "message": cov.message,
                "matrix": None if cov.matrix is None else cov.matrix.tolist(), "parameters": list(self.x_names),
                "r_eigenvalues": cov.r_eigenvalues.tolist(), "s_eigenvalues": cov.s_eigenvalues.tolist() or None,
                "condition_number": cov.condition_number},
            "etas": _records(self.etas.reset_index()), "individual_params": _records(self.individual_params.reset_index()),
            "predictions": _records(self.predictions),
        }

    def to_json(self, path: str | Path | None = None) -> str:
        """JSON text of :meth:`to_dict` (non-finite numbers as null); written to ``path`` if given."""
        text = json.dumps(_finite(self.to_dict()), indent=1)
        if path is not None:
            Path(path).write_text(text)
        return text


def _covariance_line(cov: CovarianceResult | None) -> str:
    if cov is None:
        return "Covariance step: not run"
    r_ev = cov.r_eigenvalues
    label = "information" if cov.s is None else "R"
    text = (f"Covariance step: {cov.message}\n  {label} eigenvalues [{r_ev[0]:.3g} .. {r_ev[-1]:.3g}], "
            f"{label} positive definite: {cov.r_positive_definite}"
            + ("" if cov.s is None else f", S positive definite: {cov.s_positive_definite}"))
    if cov.success:
        text += f", condition number {cov.condition_number:.3g}"
    return text


def _records(df: pd.DataFrame) -> list[dict]:
    return json.loads(df.to_json(orient="records"))


def _finite(obj):
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if isinstance(obj, (np.floating, np.integer)):
        return _finite(obj.item())
    return obj


# -- assembling ------------------------------------------------------------------------------
def assemble_fit(problem: Problem, method: str, x: np.ndarray, vals: np.ndarray, modes: list[ConditionalMode],
                 covariance: CovarianceResult | None, success: bool, message: str, n_iterations: int,
                 n_evaluations: int, run_time_s: float) -> PopulationFit:
    theta, beta, omega, sigmas = problem.split(x)
    warnings = [m.warning for m in modes if m.warning]
    if warnings:
        message += f"; {len(warnings)} subject(s) with a warning: {warnings[0]}"
    n_gauss = sum(n_gaussian_terms(s.data.cens) for s in problem.subjects)
    n_cens = sum(int(np.count_nonzero(s.data.cens)) for s in problem.subjects)
    ofv = float(np.sum(vals))
    etas = pd.DataFrame(np.array([m.eta for m in modes]).reshape(len(modes), problem.n_eta),
                        index=pd.Index([s.data.id for s in problem.subjects], name="ID"),
                        columns=[f"eta_{n}" for n in problem.eta_names])
    indiv = pd.DataFrame([problem.individual_params(i, theta, beta, m.eta) for i, m in enumerate(modes)],
                         index=etas.index, columns=list(problem.model.parameter_names))
    preds = _predictions(problem, theta, beta, omega, sigmas, modes)
    return PopulationFit(
        method=method, model_name=problem.model.name, ofv=ofv, ofv_with_constant=ofv + n_gauss * _LOG_2PI,
        n_subjects=len(problem.subjects), n_observations=problem.data.n_observations, n_censored=n_cens,
        n_parameters=x.size, theta=dict(zip(problem.estimate, map(float, theta))),
        covariate_coefficients={c.name: float(b) for c, b in zip(problem.covariate_effects, beta)},
        omega=pd.DataFrame(omega, index=list(problem.eta_names), columns=list(problem.eta_names)),
        sigma=dict(zip(problem.sigma_names, map(float, np.concatenate(sigmas) if sigmas else []))),
        estimates=_estimates_table(problem, x, covariance), etas=etas, individual_params=indiv, predictions=preds,
        eta_shrinkage=_eta_shrinkage(etas, omega, problem.eta_names),
        epsilon_shrinkage=_eps_shrinkage(preds), covariance=covariance, success=bool(success), message=message,
        n_iterations=n_iterations, n_evaluations=n_evaluations, run_time_s=run_time_s, x=x.copy(),
        x_names=problem.x_names, eta_conditional_covariances=tuple(_conditional_covariance(m) for m in modes),
        error_models={o: e.kind for o, e in zip(problem.error_outputs, problem.error_models)},
        typical_parameters=_typical_parameters(problem, theta))


def _typical_parameters(problem: Problem, theta: np.ndarray) -> dict[str, float]:
    """Model parameter name -> value: fixed and file values with the estimated typical values put in."""
    names = list(problem.model.parameter_names)
    values = np.array(problem.base_params, dtype=float)
    for name, v in zip(problem.estimate, theta):
        values[names.index(name)] = v
    return dict(zip(names, map(float, values)))


def natural_values(problem: Problem, x: np.ndarray) -> np.ndarray:
    """x -> natural-scale quantities: typical values, covariate coefficients, omega elements, SDs."""
    theta, beta, omega, sigmas = problem.split(x)
    if problem.full_omega:
        om = [omega[i, j] for i in range(problem.n_eta) for j in range(i + 1)]
    else:
        om = list(np.diag(omega))
    return np.concatenate([theta, beta, om, np.concatenate(sigmas) if sigmas else []])


def _estimates_table(problem: Problem, x: np.ndarray, cov: CovarianceResult | None) -> pd.DataFrame:
    nat = natural_values(problem, x)
    names = (list(problem.estimate) + [c.name for c in problem.covariate_effects] + list(problem.omega_names)
             + list(problem.sigma_names))
    scale = (["log" if lg else "linear" for lg in problem.log_scale] + ["linear"] * len(problem.covariate_effects)
             + (["log" if i == j else "linear" for i in range(problem.n_eta) for j in range(i + 1)]
                if problem.full_omega else ["log"] * problem.n_eta) + ["log"] * len(problem.sigma_names))
    se_x = cov.standard_errors() if cov is not None else np.full(x.size, np.nan)
    jac = _natural_jacobian(problem, x)
    if cov is not None and cov.matrix is not None:
        se_nat = np.sqrt(np.clip(np.diag(jac @ cov.matrix @ jac.T), 0.0, None))
    else:
        se_nat = np.full(x.size, np.nan)
    is_log = np.array([s == "log" for s in scale])
    lo_x, hi_x = x - 1.959964 * se_x, x + 1.959964 * se_x
    if problem.full_omega:  # Cholesky elements do not back-transform one by one: Wald interval on the natural value
        lo, hi = nat - 1.959964 * se_nat, nat + 1.959964 * se_nat
        k = problem.n_theta + len(problem.covariate_effects)
        sl = slice(k, k + problem.n_omega_params)
        lo_x[sl], hi_x[sl] = lo[sl], hi[sl]
        is_log[sl] = False
    ci_low = np.where(is_log, np.exp(lo_x), lo_x)
    ci_high = np.where(is_log, np.exp(hi_x), hi_x)
    if not problem.full_omega:
        ci_low, ci_high = np.where(np.isfinite(se_x), ci_low, np.nan), np.where(np.isfinite(se_x), ci_high, np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        rse = np.where(np.array(scale) == "log", 100 * se_x, 100 * se_nat / np.abs(nat))
    return pd.DataFrame({"name": names, "scale": scale, "estimate": x, "se": se_x, "natural": nat,
                         "se_natural": se_nat, "rse_percent": rse, "ci_low": ci_low, "ci_high": ci_high})


def _natural_jacobian(problem: Problem, x: np.ndarray, h: float = 1e-7) -> np.ndarray:
    base = natural_values(problem, x)
    jac = np.empty((base.size, x.size))
    for k in range(x.size):
        e = np.zeros_like(x)
        e[k] = h * max(1.0, abs(x[k]))
        jac[:, k] = (natural_values(problem, x + e) - natural_values(problem, x - e)) / (2 * e[k])
    return jac


def _predictions(problem: Problem, theta, beta, omega, sigmas, modes) -> pd.DataFrame:
    frames = []
    for i, (s, mode) in enumerate(zip(problem.subjects, modes)):
        pred, _ = population_prediction(problem, i, theta, beta)
        ipred = mode.f
        t, dm, _, _ = problem.terms(i, ipred, sigmas)
        m_hat, v_hat = problem.mean_and_variance(i, ipred, sigmas)
        obs = s.data.cens == 0
        iwres = np.where(obs, (s.y - m_hat) / np.sqrt(v_hat), np.nan)
        cwres = _cwres(s, mode, dm, m_hat, v_hat, omega, obs)
        frames.append(pd.DataFrame({"ID": s.data.id, "TIME": s.data.times, "OUTPUT": list(s.data.outputs),
                                    "DV": s.data.dv, "CENS": s.data.cens, "PRED": pred, "IPRED": ipred,
                                    "RES": s.data.dv - pred, "IWRES": iwres, "CWRES": cwres, "LINE": s.data.lines}))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _cwres(s, mode: ConditionalMode, dm, m_hat, v_hat, omega, obs) -> np.ndarray:
    """Conditional weighted residuals (Hooker et al. 2007, doi:10.1007/s11095-007-9361-x), observed rows only."""
    out = np.full(m_hat.size, np.nan)
    if not obs.any() or not np.all(np.isfinite(m_hat[obs])):
        return out
    r = s.y[obs] - m_hat[obs]
    cmat = np.diag(v_hat[obs])
    if mode.jac is not None and omega.size:
        g = (dm[:, None] * mode.jac)[obs]
        r = r + g @ mode.eta
        cmat = cmat + g @ omega @ g.T
    try:
        chol = np.linalg.cholesky(cmat)
    except np.linalg.LinAlgError:
        return out
    out[obs] = np.linalg.solve(chol, r)
    return out


def _conditional_covariance(mode: ConditionalMode) -> np.ndarray:
    try:
        return np.linalg.inv(0.5 * mode.hessian)
    except np.linalg.LinAlgError:
        return np.full_like(mode.hessian, np.nan)


def _eta_shrinkage(etas: pd.DataFrame, omega: np.ndarray, names) -> dict[str, float]:
    if len(etas) < 2:
        return {n: float("nan") for n in names}
    sd = etas.to_numpy().std(axis=0, ddof=1)
    return {n: float(1.0 - sd[k] / math.sqrt(omega[k, k])) for k, n in enumerate(names)}


def _eps_shrinkage(preds: pd.DataFrame) -> dict[str, float]:
    out = {}
    for name, grp in preds.groupby("OUTPUT", sort=False):
        w = grp["IWRES"].dropna().to_numpy()
        out[str(name)] = float(1.0 - w.std(ddof=1)) if w.size > 1 else float("nan")
    return out
