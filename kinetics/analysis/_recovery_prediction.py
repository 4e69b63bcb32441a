"""B-cell recovery: predicted per fitted patient (with an interval), predicted for a new patient (a
distribution), and observed in data (interval-censored between visits, Turnbull's estimator).

The recovery rule is :func:`~kinetics.analysis.b_cell_recovery_time`'s: the first time after the
nadir that the output reaches ``threshold`` (absolute, or a fraction of baseline), optionally
sustained; predicted times come from event location on the solution.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np
import pandas as pd

from kinetics.analysis._outcomes import evaluate_outcome, recovery_time
from kinetics.analysis._recovery import b_cell_recovery_time
from kinetics.errors import SolverInputError, did_you_mean

__all__ = ["RecoveryDistribution", "observed_recovery_intervals", "predict_patient_recovery",
           "recovery_distribution", "turnbull_survival"]


# -- observed ------------------------------------------------------------------------------
def observed_recovery_intervals(data, *, output: str = "bcells", threshold: float = 1.0) -> pd.DataFrame:
    """Per subject, the interval ``(left, right]`` (days) in which the output came back to ``threshold``.

    Rule: after the first visit below ``threshold`` (a censored row counts as below when its LLOQ is
    at or below the threshold; a censored row with a higher LLOQ says nothing and is skipped), the
    recovery lies between the last visit below and the first visit at or above it. Not recovered by
    the last visit: ``right = inf`` (right-censored). Never below: ``status = "not depleted"``.

    Returns a DataFrame with ``ID, left, right, status`` (``recovered``, ``not recovered``, ``not depleted``).
    """
    rows = []
    for s in data.subjects:
        sel = np.array([o == output for o in s.outputs])
        if not sel.any():
            continue
        t, dv, cens = s.times[sel], s.dv[sel], s.cens[sel]
        below = np.where(cens == 1, dv <= threshold, dv < threshold)
        informative = ~((cens == 1) & (dv > threshold))
        t, below = t[informative], below[informative]
        if not below.any():
            rows.append(dict(ID=s.id, left=0.0, right=0.0, status="not depleted"))
            continue
        first = int(np.argmax(below))
        after = np.flatnonzero(~below[first:]) + first
        if after.size == 0:
            rows.append(dict(ID=s.id, left=float(t[-1]), right=np.inf, status="not recovered"))
            continue
        k = int(after[0])
        rows.append(dict(ID=s.id, left=float(t[k - 1]), right=float(t[k]), status="recovered"))
    return pd.DataFrame(rows, columns=["ID", "left", "right", "status"])


def turnbull_survival(left: Sequence[float], right: Sequence[float], *, tol: float = 1e-10,
                      max_iter: int = 10_000) -> pd.DataFrame:
    """Turnbull's nonparametric MLE of a survival curve from interval-censored times ``(left, right]``
    (Turnbull 1976, J R Stat Soc B 38:290; ``right = inf`` for right-censored, ``left == right`` exact).

    Returns the curve as steps: ``time`` (end of each innermost interval) and ``survival`` just after it,
    starting at ``time = 0, survival = 1``. With exact and right-censored times it equals Kaplan-Meier.
    """
    lo, hi = np.asarray(left, dtype=float), np.asarray(right, dtype=float)
    if lo.shape != hi.shape or lo.size == 0 or np.any(hi < lo) or np.any(lo < 0):
        raise SolverInputError("turnbull_survival: need equal-length left <= right, non-negative")
    exact = lo == hi
    # innermost intervals (Peto/Turnbull): [l, r] with l a left end and r the next right end
    ends = sorted({(v, 0) for v in lo} | {(v, 1) for v in hi})
    cells = [(a[0], b[0]) for a, b in zip(ends, ends[1:]) if a[1] == 0 and b[1] == 1]
    cells += [(v, v) for v in np.unique(lo[exact])]
    cells = sorted(set(cells))
    q = np.array([[(c_lo >= l_ - 1e-12 if e else c_lo >= l_) and c_hi <= r_ for (c_lo, c_hi) in cells]
                  for l_, r_, e in zip(lo, hi, exact)], dtype=float)
    p = np.full(len(cells), 1.0 / len(cells))
    for _ in range(max_iter):
        denom = q @ p
        new = p * (q / denom[:, None]).mean(axis=0)
        if np.max(np.abs(new - p)) < tol:
            p = new
            break
        p = new
    times = np.array([c[1] for c in cells])
    surv = 1.0 - np.cumsum(p)
    keep = np.isfinite(times)
    return pd.DataFrame({"time": np.concatenate([[0.0], times[keep]]),
                         "survival": np.concatenate([[1.0], np.clip(surv[keep], 0.0, 1.0)])})


# -- predicted per fitted patient ----------------------------------------------------------------
def predict_patient_recovery(fit, model, data, *, threshold: float = 1.0, relative_to_baseline: bool = False,
                             sustained_days: float = 0.0, output: str = "bcells", until: float = 1095.0,
                             n_draws: int = 200, level: float = 0.90, seed: int = 0) -> pd.DataFrame:
    """Each fitted patient's recovery time: point estimate at the individual (EBE) parameters, and a
    ``level`` interval from the uncertainty of the etas given the data (normal with the conditional
    covariance of the fit, ``fit.eta_conditional_covariances``), ``n_draws`` draws per patient.

    Returns ``ID, time, low, high, p_recovered`` (fraction of draws recovered by ``until``); a patient
    not recovered by ``until`` at the EBEs has ``time`` nan.
    """
    ids = list(fit.etas.index)
    subjects = {s.id: s for s in data.subjects}
    missing = [i for i in ids if str(i) not in subjects]
    if missing:
        raise SolverInputError(f"predict_patient_recovery: subjects {missing[:5]} of the fit are not in the data")
    rng = np.random.default_rng(seed)
    eta_params = [c.removeprefix("eta_") for c in fit.etas.columns]
    pidx = [model.parameter_names.index(n) for n in eta_params]
    outcome = partial(recovery_time, output=output, threshold=threshold, relative_to_baseline=relative_to_baseline,
                      sustained_days=sustained_days, until=until)
    rows = []
    for k, sid in enumerate(ids):
        p_hat = fit.individual_params.loc[sid, list(model.parameter_names)].to_numpy(dtype=float)
        doses = list(subjects[str(sid)].doses)
        point = b_cell_recovery_time(model, threshold=threshold, relative_to_baseline=relative_to_baseline,
                                     sustained_days=sustained_days, params=p_hat, doses=doses, output=output,
                                     until=until).time
        cov = fit.eta_conditional_covariances[k] if fit.eta_conditional_covariances else None
        draws = np.tile(p_hat, (n_draws, 1))
        if cov is not None and cov.size and np.all(np.isfinite(cov)):
            shifts = rng.multivariate_normal(np.zeros(len(pidx)), cov, size=n_draws)
            draws[:, pidx] *= np.exp(shifts)
        times = evaluate_outcome(outcome, model, draws, doses)
        recovered = times < until
        lo, hi = (np.quantile(times, [(1 - level) / 2, (1 + level) / 2]) if np.isfinite(times).any()
                  else (np.nan, np.nan))
        rows.append(dict(ID=sid, time=np.nan if point is None else point, low=lo, high=hi,
                         p_recovered=float(np.mean(recovered))))
    return pd.DataFrame(rows)


# -- predicted for a new patient -----------------------------------------------------------------
@dataclass(frozen=True)
class RecoveryDistribution:
    """Recovery times of simulated new patients (``until`` = not recovered by then)."""

    times: np.ndarray
    until: float
    rule: str

    def quantiles(self, q: Sequence[float] = (0.05, 0.25, 0.5, 0.75, 0.95)) -> dict[float, float]:
        """Quantiles of the recovery time (``until`` where more than that fraction has not recovered)."""
        return {float(x): float(np.quantile(self.times, x)) for x in q}

    def probability_recovered_by(self, days: Sequence[float]) -> dict[float, float]:
        """P(recovered by day d) for each d."""
        return {float(d): float(np.mean(self.times <= d)) for d in days}

    def survival(self, grid: Sequence[float] | None = None) -> pd.DataFrame:
        """Fraction not yet recovered over time (for a Kaplan-Meier-style plot)."""
        grid = np.linspace(0.0, self.until, 400) if grid is None else np.asarray(grid, dtype=float)
        return pd.DataFrame({"time": grid, "survival": [float(np.mean(self.times > g)) for g in grid]})


def recovery_distribution(model, doses, *, fit=None, params: Mapping[str, float] | None = None,
                          omega: Mapping[str, float] | None = None, parameter_uncertainty: bool = True,
                          n_patients: int = 1000, threshold: float = 1.0, relative_to_baseline: bool = False,
                          sustained_days: float = 0.0, output: str = "bcells", until: float = 1095.0,
                          seed: int = 0) -> RecoveryDistribution:
    """Distribution of the recovery time of a new patient at ``doses``.

    Between-subject variability from ``omega`` (variances) or ``fit.omega``; with a fit whose
    covariance step succeeded and ``parameter_uncertainty``, each simulated patient also gets typical
    values and omegas drawn from the estimates' approximate normal distribution (estimation scale).
    """
    rng = np.random.default_rng(seed)
    names = model.parameter_names
    if fit is not None:
        params = dict(fit.typical_parameters or fit.theta)
        omega = {n: float(fit.omega.loc[n, n]) for n in fit.omega.index}
    params, omega = dict(params or {}), dict(omega or {})
    for k in list(params) + list(omega):
        if k not in names:
            raise SolverInputError(f"recovery_distribution: '{k}' is not a parameter{did_you_mean(k, names)}")
    typical = np.tile(model.parameter_vector(params), (n_patients, 1))
    variances = {k: np.full(n_patients, v) for k, v in omega.items()}
    if fit is not None and parameter_uncertainty and fit.covariance is not None and fit.covariance.success:
        _draw_uncertainty(fit, names, typical, variances, rng)
    for k, v in variances.items():
        typical[:, names.index(k)] *= np.exp(np.sqrt(np.maximum(v, 0.0)) * rng.standard_normal(n_patients))
    outcome = partial(recovery_time, output=output, threshold=threshold, relative_to_baseline=relative_to_baseline,
                      sustained_days=sustained_days, until=until)
    times = evaluate_outcome(outcome, model, typical, list(doses))
    rule = (f"first time after the nadir that {output} reaches "
            f"{threshold:g}{' x baseline' if relative_to_baseline else ''}"
            f"{f' for {sustained_days:g} days' if sustained_days else ''}; {until:g} = not recovered by then")
    return RecoveryDistribution(times=times, until=until, rule=rule)


def _draw_uncertainty(fit, names, typical: np.ndarray, variances: dict, rng: np.random.Generator) -> None:
    """Replace typical values and omegas by draws from N(estimates, covariance) on the estimation scale."""
    est = fit.estimates
    draws = rng.multivariate_normal(est["estimate"].to_numpy(), fit.covariance.matrix, size=typical.shape[0])
    for j, row in enumerate(est.itertuples(index=False)):
        value = np.exp(draws[:, j]) if row.scale == "log" else draws[:, j]
        if row.name in fit.theta:
            typical[:, names.index(row.name)] = value
        elif row.name.startswith("omega(") and "," not in row.name:
            variances[row.name[6:-1]] = value
