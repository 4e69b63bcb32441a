"""Dose sweeps: a virtual population simulated at a grid of doses, outcome percentiles per dose, and
the dose-proportionality power model.

The same virtual patients (one seeded draw of between-subject variability) are given every dose
(common random numbers), so differences between doses are not sampling noise.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial

import numpy as np
import pandas as pd
from scipy import stats

from kinetics.analysis._outcomes import auc_0_28, cmax, evaluate_outcomes, outcome_output, outcome_unit
from kinetics.errors import KineticsError, SolverInputError, did_you_mean
from kinetics.solve import Dose

__all__ = ["DoseSweep", "PowerModel", "dose_sweep", "DEFAULT_SWEEP_OUTCOMES", "POWER_MODEL_COLUMNS",
           "default_sweep_outcomes"]

#: The outcomes of issue 5's dose sweep, by their names in kinetics.analysis.OUTCOMES.
DEFAULT_SWEEP_OUTCOMES = ("cmax", "auc_0_28", "b_cell_nadir", "aplasia_duration", "recovery_time",
                          "autoantibody_reduction_d90", "autoantibody_reduction_d180")


@dataclass(frozen=True)
class PowerModel:
    """``log y = a + b log dose`` fitted within patients (patient fixed effects); ``b = 1`` is dose
    proportionality. ``ci`` is the two-sided ``level`` interval of ``b`` (t distribution)."""

    outcome: str
    target: str
    slope: float
    ci: tuple[float, float]
    level: float
    n_patients: int
    n_doses: int

    def summary(self) -> str:
        lo, hi = self.ci
        return (f"{self.outcome} vs dose of {self.target}: slope {self.slope:.3f} ({100 * self.level:.0f} % CI "
                f"{lo:.3f} to {hi:.3f}; {self.n_patients} patients x {self.n_doses} doses)")


@dataclass(frozen=True)
class DoseSweep:
    """Outcomes of a virtual population over a dose grid.

    ``values``: one row per (dose level, patient) with the dose per target and one column per outcome.
    ``summary``: per dose level and outcome, median, 5th and 95th percentiles and the number of
    failed solves (nan).
    """

    values: pd.DataFrame
    summary: pd.DataFrame
    targets: tuple[str, ...]
    outcomes: tuple[str, ...]
    n_patients: int
    seed: int
    units: Mapping[str, str] = field(default_factory=dict)   # outcome -> unit of its values ("" unknown)

    def power_model(self, outcome: str, target: str | None = None, level: float = 0.90) -> PowerModel:
        """Dose-proportionality slope of ``outcome`` against the dose of ``target`` (the other targets'
        doses held at each of their levels: fitted on every level with a patient x other-dose fixed effect)."""
        if outcome not in self.outcomes:
            raise SolverInputError(f"unknown outcome '{outcome}'{did_you_mean(outcome, self.outcomes)}")
        target = target or self.targets[0]
        if target not in self.targets:
            raise SolverInputError(f"unknown dose target '{target}'{did_you_mean(target, self.targets)}")
        v = self.values
        ok = (v[outcome] > 0) & (v[target] > 0) & np.isfinite(v[outcome])
        d = v[ok]
        others = [t for t in self.targets if t != target]
        group = d["patient"].astype(str) + "|" + d[others].astype(str).agg("|".join, axis=1) if others \
            else d["patient"].astype(str)
        x, y = np.log(d[target].to_numpy()), np.log(d[outcome].to_numpy())
        xc = x - pd.Series(x).groupby(group.to_numpy()).transform("mean").to_numpy()
        yc = y - pd.Series(y).groupby(group.to_numpy()).transform("mean").to_numpy()
        sxx = float(xc @ xc)
        if sxx <= 0:
            raise SolverInputError(f"the dose of '{target}' does not vary in this sweep")
        slope = float(xc @ yc) / sxx
        dof = len(x) - group.nunique() - 1
        resid = yc - slope * xc
        se = np.sqrt(float(resid @ resid) / max(dof, 1) / sxx)
        q = stats.t.ppf(0.5 + level / 2, max(dof, 1))
        return PowerModel(outcome, target, slope, (slope - q * se, slope + q * se), level,
                          int(d["patient"].nunique()), int(d[target].nunique()))

    def power_models(self, targets: Sequence[str] | None = None, level: float = 0.90
                     ) -> tuple[pd.DataFrame, list[str]]:
        """:meth:`power_model` of every outcome against each of ``targets`` (default: all) as a table (outcome,
        target, slope, ci_low, ci_high, level, n_patients, n_doses), and a note for each pair that is not
        estimable (e.g. an outcome that is 0 at every dose)."""
        rows, notes = [], []
        for o in self.outcomes:
            for t in (self.targets if targets is None else targets):
                try:
                    pm = self.power_model(o, t, level)
                except (KineticsError, ValueError) as exc:
                    notes.append(f"power model of {o} vs {t}: not estimable ({exc})")
                    continue
                rows.append({"outcome": o, "target": t, "slope": pm.slope, "ci_low": pm.ci[0], "ci_high": pm.ci[1],
                             "level": pm.level, "n_patients": pm.n_patients, "n_doses": pm.n_doses})
        return pd.DataFrame(rows, columns=list(POWER_MODEL_COLUMNS)), notes


#: Columns of :meth:`DoseSweep.power_models`.
POWER_MODEL_COLUMNS = ("outcome", "target", "slope", "ci_low", "ci_high", "level", "n_patients", "n_doses")


def default_sweep_outcomes(model) -> dict[str, str | Callable]:
    """The outcomes a dose sweep of ``model`` reports by default: those of :data:`DEFAULT_SWEEP_OUTCOMES` whose
    output the model has, else Cmax and AUC(0-28) of its first output (empty for a model without outputs)."""
    chosen: dict[str, str | Callable] = {n: n for n in DEFAULT_SWEEP_OUTCOMES
                                         if outcome_output(n) in model.output_names}
    if not chosen and model.output_names:
        o = model.output_names[0]
        chosen = {"cmax": partial(cmax, output=o), "auc_0_28": partial(auc_0_28, output=o)}
    return chosen


def dose_sweep(model, doses: Mapping[str, Sequence[float]] | Sequence[Mapping[str, float]], *,
               outcomes: Sequence[str] | Mapping[str, str | Callable] = DEFAULT_SWEEP_OUTCOMES, n_patients: int = 200,
               omega: Mapping[str, float] | None = None, params: Mapping[str, float] | None = None,
               fit=None, dose_time: float = 0.0, seed: int = 0, progress: bool = False) -> DoseSweep:
    """Simulate a virtual population at each dose level and summarise the outcomes.

    Parameters
    ----------
    model
        A compiled model.
    doses
        Dose target -> amounts (every combination is a level, e.g. ``{"car19": [3e7, 6e7],
        "carbcma": [3e7, 6e7]}``), or an explicit list of levels ``[{"car19": 6e7, "carbcma": 6e7}, ...]``.
        Each level gives each target one bolus at ``dose_time`` (amount in the target's unit, e.g. CAR+ cells).
    outcomes
        Names in :data:`kinetics.analysis.OUTCOMES` (default: Cmax, AUC(0-28 d), B-cell nadir, aplasia
        duration, recovery time, autoantibody reduction at day 90 and 180; their default outputs are
        the lupus models'), or label -> outcome (a name, or e.g. ``partial(cmax, output="conc")``).
    n_patients, omega, params, seed
        Virtual population: typical values ``params`` (others the model's), log-normal between-subject
        variability with variances ``omega`` (name -> variance), drawn once with ``seed``.
    fit
        A :class:`~kinetics.fit.PopulationFit`: typical values and omega taken from it (overrides
        ``params`` / ``omega``).

    Returns
    -------
    DoseSweep
    """
    levels = _levels(doses, model)
    named = dict(outcomes) if isinstance(outcomes, Mapping) else {str(o): o for o in outcomes}
    if fit is not None:
        params = dict(fit.typical_parameters or fit.theta)
        omega = {n: float(fit.omega.loc[n, n]) for n in fit.omega.index}
    pmat = _population(model, n_patients, params or {}, omega or {}, seed)
    targets = tuple(sorted({t for lv in levels for t in lv}))
    schedules = [[Dose(dose_time, float(a), t) for t, a in level.items() if a > 0] for level in levels]
    # every level's patients in one call: one progress bar, chunks that share solves across outcomes
    values = evaluate_outcomes(named, model, np.tile(pmat, (len(levels), 1)),
                               [s for s in schedules for _ in range(n_patients)], progress=progress)
    rows = []
    for k, level in enumerate(levels):
        block = {"level": k, "patient": np.arange(n_patients)}
        block.update({t: np.full(n_patients, float(level.get(t, 0.0))) for t in targets})
        block.update({label: v[k * n_patients:(k + 1) * n_patients] for label, v in values.items()})
        rows.append(pd.DataFrame(block))
    values = pd.concat(rows, ignore_index=True)
    return DoseSweep(values=values, summary=_summarise(values, targets, tuple(named)), targets=targets,
                     outcomes=tuple(named), n_patients=n_patients, seed=seed,
                     units={label: outcome_unit(o, model) for label, o in named.items()})


def _levels(doses, model) -> list[dict[str, float]]:
    if isinstance(doses, Mapping):
        names = list(doses)
        levels = [dict(zip(names, combo)) for combo in itertools.product(*(list(doses[n]) for n in names))]
    else:
        levels = [dict(lv) for lv in doses]
    if not levels:
        raise SolverInputError("dose_sweep: give at least one dose level")
    for lv in levels:
        for t, a in lv.items():
            if t not in model.dose_target_names:
                raise SolverInputError(f"dose_sweep: '{t}' is not a dose target of '{model.name}'"
                                       f"{did_you_mean(t, model.dose_target_names)}")
            if not (np.isfinite(a) and a >= 0):
                raise SolverInputError(f"dose_sweep: dose of '{t}' must be a finite amount >= 0, got {a!r}")
    return levels


def _population(model, n: int, params: Mapping[str, float], omega: Mapping[str, float], seed: int) -> np.ndarray:
    names = model.parameter_names
    for k in list(params) + list(omega):
        if k not in names:
            raise SolverInputError(f"dose_sweep: '{k}' is not a parameter of '{model.name}'{did_you_mean(k, names)}")
    if n < 1:
        raise SolverInputError(f"dose_sweep: n_patients must be >= 1, got {n}")
    base = model.parameter_vector(dict(params))
    rng = np.random.default_rng(seed)
    pmat = np.tile(base, (n, 1))
    for k, var in omega.items():
        if not var >= 0:
            raise SolverInputError(f"dose_sweep: omega of '{k}' must be a variance >= 0, got {var!r}")
        pmat[:, names.index(k)] *= np.exp(np.sqrt(var) * rng.standard_normal(n))
    return pmat


def _summarise(values: pd.DataFrame, targets: tuple[str, ...], outcomes: tuple[str, ...]) -> pd.DataFrame:
    rows = []
    for (level, *dose), grp in values.groupby(["level", *targets], sort=True):
        for name in outcomes:
            x = grp[name].to_numpy()
            ok = x[np.isfinite(x)]
            q = np.percentile(ok, [5, 50, 95]) if ok.size else [np.nan] * 3
            rows.append({"level": level, **dict(zip(targets, dose)), "outcome": name, "median": q[1],
                         "p05": q[0], "p95": q[2], "n_failed": int(x.size - ok.size)})
    return pd.DataFrame(rows)
