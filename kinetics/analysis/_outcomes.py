"""Scalar outcomes of one simulated patient, the quantities dose sweeps and sensitivity analyses rank on.

Every outcome is a plain function ``outcome(model, params=None, doses=None, **options) -> float``:
``params`` as for ``model.simulate`` (overrides by name, or a full array), ``doses`` a list of
:class:`~kinetics.Dose`. Options name the outputs examined, with the lupus-model defaults
(``car19_flow``, ``bcells``, ``anti_dsdna``, ``igg``; ``models/dual_car_sle.toml``), so other models
pass e.g. ``output="conc"``. :data:`OUTCOMES` registers them by name, and :func:`evaluate_outcome`
evaluates one outcome for many parameter sets, through the batch solver where the outcome allows.

Conventions shared by the outcomes (stated here once):

- time is the model's time unit (days for the CAR-T models) from infusion at 0;
- the *baseline* of an output is its value at time 0 solved without doses (as
  :func:`~kinetics.analysis.b_cell_recovery_time` defines it);
- a crossing time not reached by ``until`` is reported as ``until`` (a lower bound, administratively
  censored) so that every outcome is a finite number a variance decomposition can use; an output that
  never falls below the threshold has recovery time and aplasia duration 0;
- a failed solve raises :class:`~kinetics.errors.SolverInputError` with the solver's message (in
  :func:`evaluate_outcome` the set gets nan instead).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from functools import partial

import numpy as np

from kinetics.analysis._nca import WINDOWS, nca, nca_from_model
from kinetics.analysis._outcome_batch import BatchContext, Plan, run_plans
from kinetics.analysis._recovery import _nadir, b_cell_recovery_time, bracket_grid, lowest_point
from kinetics.errors import DoseError, SolverInputError, did_you_mean
from kinetics.solve import CompiledModel, Dose

__all__ = ["OUTCOMES", "aplasia_duration", "auc_0_28", "autoantibody_reduction", "autoantibody_reduction_d90",
           "autoantibody_reduction_d180", "b_cell_nadir", "cmax", "evaluate_outcome", "evaluate_outcomes",
           "fraction_of_baseline", "igg_fraction_1y", "outcome_output", "outcome_unit", "recovery_time"]

# Solver tolerances of every outcome (those of b_cell_recovery_time). The NCA outcomes pass them to
# nca_from_model too: a grid sum has the relative error of its terms, so tighter gains nothing.
RTOL, ATOL = 1e-8, 1e-10

Params = Mapping[str, float] | np.ndarray | None


# -- the outcomes ------------------------------------------------------------------------------
def cmax(model: CompiledModel, params: Params = None, doses: Sequence[Dose] | None = None, *,
         output: str = "car19_flow", until: float = 84.0, step: float = 0.01) -> float:
    """Peak level of a CAR-T output (Cmax), from :func:`~kinetics.analysis.nca_from_model`.

    Parameters
    ----------
    model, params, doses
        As for ``model.simulate``.
    output
        The CAR-T output (``car19_flow``, CAR+ cells/uL, by default; ``car19_qpcr`` for copies/ug).
    until, step
        The prediction grid 0..``until`` every ``step`` (model time unit) whose maximum is Cmax.

    Returns
    -------
    float
        Cmax in the output's unit.
    """
    return float(nca_from_model(model, params=params, doses=doses, output=output, until=until, step=step,
                                rtol=RTOL, atol=ATOL).cmax)


def auc_0_28(model: CompiledModel, params: Params = None, doses: Sequence[Dose] | None = None, *,
             output: str = "car19_flow", step: float = 0.01) -> float:
    """Area under a CAR-T output from 0 to 28 days, from :func:`~kinetics.analysis.nca_from_model`.

    Linear-up/log-down trapezoid on the grid 0..28 every ``step``; output unit x day.
    """
    return float(nca_from_model(model, params=params, doses=doses, output=output, until=WINDOWS[0],
                                step=step, rtol=RTOL, atol=ATOL).auc_0_28)


def b_cell_nadir(model: CompiledModel, params: Params = None, doses: Sequence[Dose] | None = None, *,
                 output: str = "bcells", until: float = 365.0, n_grid: int = 2001) -> float:
    """Lowest level of the B cells (cells/uL) on [0, ``until``].

    Located as :func:`~kinetics.analysis.b_cell_recovery_time` locates the nadir: bracketed on an
    ``n_grid``-point grid, refined on 201 solution values across the bracket (parabolic vertex where smooth).
    """
    _check_output(model, output)
    _check_until(until)
    if isinstance(n_grid, bool) or not isinstance(n_grid, (int, np.integer)) or n_grid < 3:
        raise SolverInputError(f"n_grid must be an integer >= 3, got {n_grid!r}")
    return float(_nadir(model, output, until, n_grid, params, doses, {"rtol": RTOL, "atol": ATOL})[1])


def recovery_time(model: CompiledModel, params: Params = None, doses: Sequence[Dose] | None = None, *,
                  output: str = "bcells", threshold: float = 1.0, relative_to_baseline: bool = False,
                  sustained_days: float = 0.0, until: float = 1095.0) -> float:
    """B-cell recovery time by :func:`~kinetics.analysis.b_cell_recovery_time` (its rule and options).

    Default rule: first time after the nadir that ``bcells`` reaches 1 cell/uL going up
    (reappearance, the lupus model files' ``recovery_rule``). Returns 0 when the B cells never fall
    below the level and ``until`` when they have not recovered by then (a lower bound).
    """
    r = b_cell_recovery_time(model, threshold=threshold, relative_to_baseline=relative_to_baseline,
                             sustained_days=sustained_days, params=params, doses=doses, output=output, until=until,
                             rtol=RTOL, atol=ATOL)
    if not r.depleted:
        return 0.0
    return float(r.time) if r.time is not None else float(until)


def aplasia_duration(model: CompiledModel, params: Params = None, doses: Sequence[Dose] | None = None, *,
                     output: str = "bcells", threshold: float = 1.0, until: float = 1095.0) -> float:
    """Days the B cells spend below ``threshold`` (cells/uL): from the first downward crossing to the
    next upward one, both located by ``model.crossing_time`` (event location).

    An output already below the threshold at time 0 (after the doses there) starts the aplasia at 0.
    Returns 0 when the output never falls below the threshold, and ``until`` minus the start when it
    has not come back by ``until`` (a lower bound).
    """
    down, up = _aplasia_window(model, params, doses, output, threshold, until)
    if down is None:
        return 0.0
    return float((up if up is not None else until) - down)


def fraction_of_baseline(model: CompiledModel, params: Params = None, doses: Sequence[Dose] | None = None, *,
                         output: str, day: float) -> float:
    """Level of ``output`` at ``day`` as a fraction of its baseline (time 0, solved without doses)."""
    _check_output(model, output)
    if not (math.isfinite(day) and day > 0):
        raise SolverInputError(f"day must be a positive finite time, got {day!r}")
    base = _solve(model, [0.0], params, None).outputs[output][0]
    level = _solve(model, [day], params, doses).outputs[output][0]
    if base == 0:
        raise SolverInputError(f"output '{output}' has baseline 0 at these parameters; a fraction of it is undefined")
    return float(level / base)


def autoantibody_reduction(model: CompiledModel, params: Params = None, doses: Sequence[Dose] | None = None, *,
                           day: float, output: str = "anti_dsdna") -> float:
    """Fall of an autoantibody at ``day`` as a fraction of baseline: 1 - level(day)/baseline.

    1 means gone, 0 unchanged (negative if it rose); the remaining fraction is 1 minus this.
    """
    return 1.0 - fraction_of_baseline(model, params, doses, output=output, day=day)


def autoantibody_reduction_d90(model: CompiledModel, params: Params = None, doses: Sequence[Dose] | None = None, *,
                               output: str = "anti_dsdna") -> float:
    """Autoantibody reduction at day 90 (:func:`autoantibody_reduction`)."""
    return autoantibody_reduction(model, params, doses, day=90.0, output=output)


def autoantibody_reduction_d180(model: CompiledModel, params: Params = None, doses: Sequence[Dose] | None = None, *,
                                output: str = "anti_dsdna") -> float:
    """Autoantibody reduction at day 180 (:func:`autoantibody_reduction`)."""
    return autoantibody_reduction(model, params, doses, day=180.0, output=output)


def igg_fraction_1y(model: CompiledModel, params: Params = None, doses: Sequence[Dose] | None = None, *,
                    output: str = "igg") -> float:
    """Total IgG at day 365 as a fraction of baseline (:func:`fraction_of_baseline`)."""
    return fraction_of_baseline(model, params, doses, output=output, day=365.0)


#: Outcomes by name: each ``f(model, params=None, doses=None, **options) -> float``.
OUTCOMES: dict[str, Callable[..., float]] = {
    "cmax": cmax,
    "auc_0_28": auc_0_28,
    "b_cell_nadir": b_cell_nadir,
    "aplasia_duration": aplasia_duration,
    "recovery_time": recovery_time,
    "autoantibody_reduction_d90": autoantibody_reduction_d90,
    "autoantibody_reduction_d180": autoantibody_reduction_d180,
    "igg_fraction_1y": igg_fraction_1y,
}


# -- many parameter sets -------------------------------------------------------------------------
def evaluate_outcome(outcome: str | Callable[..., float], model: CompiledModel,
                     params: np.ndarray | Mapping[str, np.ndarray | float] | None = None,
                     doses: Sequence[Dose] | Sequence[Sequence[Dose]] | None = None, *, n_sets: int | None = None,
                     chunk_size: int | None = None, progress: bool = False) -> np.ndarray:
    """One outcome for many parameter sets (and dose schedules): :func:`evaluate_outcomes` with one outcome.

    Parameters
    ----------
    outcome
        A name in :data:`OUTCOMES`, one of those functions, a ``functools.partial`` of one with
        options (``partial(recovery_time, threshold=0.5)``), or any ``f(model, params, doses) -> float``
        (called once per set with ``params`` as a dict).
    model, params, doses, n_sets, chunk_size, progress
        As for :func:`evaluate_outcomes`.

    Returns
    -------
    numpy.ndarray
        ``(n_sets,)`` outcome values; nan where a solve failed.
    """
    return evaluate_outcomes({"outcome": outcome}, model, params, doses, n_sets=n_sets, chunk_size=chunk_size,
                             progress=progress)["outcome"]


def evaluate_outcomes(outcomes: Sequence[str | Callable[..., float]] | Mapping[str, str | Callable[..., float]],
                      model: CompiledModel, params: np.ndarray | Mapping[str, np.ndarray | float] | None = None,
                      doses: Sequence[Dose] | Sequence[Sequence[Dose]] | None = None, *, n_sets: int | None = None,
                      chunk_size: int | None = None, progress: bool = False) -> dict[str, np.ndarray]:
    """Several outcomes for many parameter sets (and dose schedules), sharing solves, in chunks.

    Parameters
    ----------
    outcomes
        Outcome names (labels = names), or label -> outcome; an outcome is as for
        :func:`evaluate_outcome`.
    model
        A compiled model.
    params
        ``(n_sets, n_params)`` array in ``model.parameter_names`` order, or a dict name -> array of
        length n_sets (or scalar); unnamed parameters keep the model's values.
    doses
        One schedule for every set, or a list of ``n_sets`` schedules.
    n_sets
        Number of sets when ``params`` does not say (None or all scalars).
    chunk_size
        Sets per batch solve (default: as many as fit in about 64 MB of solver output).
    progress
        Show a tqdm progress bar over sets.

    Returns
    -------
    dict
        label -> ``(n_sets,)`` values; nan where a solve failed.

    Notes
    -----
    The library outcomes (Cmax, AUC(0-28), B-cell nadir, aplasia duration, recovery time without
    ``sustained_days``, the fractions of baseline and autoantibody reductions) are computed together
    from batch solves (numba threads): one solve per chunk on the union of their output grids, the
    no-dose baseline when needed, and event location (``model.crossing_times``) for the crossings,
    each with the grids, tolerances and rules of the single-set function, whose values they equal.
    Other outcomes are evaluated set by set.
    """
    named = _named_outcomes(outcomes)
    resolved = {label: _resolve_outcome(spec) for label, spec in named.items()}
    P = parameter_matrix(model, params, n_sets)
    n = P.shape[0]
    schedules = _schedules(model, doses, n)
    plans = {}
    for label, (func, options) in resolved.items():
        builder = _PLANS.get(func)   # type: ignore[arg-type]
        if builder is None:
            continue
        try:
            inspect.signature(builder).bind(model, **options)
        except TypeError as exc:
            raise SolverInputError(f"outcome '{label}': {exc} (options given: {sorted(options)})") from None
        plan = builder(model, **options)
        if plan is not None:
            plans[label] = plan
    single = [label for label in resolved if label not in plans]
    if chunk_size is None:
        n_times = np.unique(np.concatenate([np.asarray(p.times(schedules[0]), dtype=float) for p in plans.values()])
                            ).size if plans else 1
        chunk_size = _default_chunk(model, n_times)
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1:
        raise SolverInputError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    out = {label: np.full(n, np.nan) for label in resolved}
    bar = _progress_bar(n, progress, f"{len(resolved)} outcomes" if len(resolved) > 1 else
                        outcome_name(next(iter(named.values()))))
    try:
        for start in range(0, n, chunk_size):
            sl = slice(start, min(start + chunk_size, n))
            if plans:
                for label, values in run_plans(model, plans, P[sl], schedules[sl], rtol=RTOL, atol=ATOL).items():
                    out[label][sl] = values
            for label in single:
                func, options = resolved[label]
                for i in range(sl.start, sl.stop):
                    out[label][i] = _one(func, options, model, P[i], schedules[i])
            if bar is not None:
                bar.update(sl.stop - sl.start)
    finally:
        if bar is not None:
            bar.close()
    return out


def _named_outcomes(outcomes) -> dict[str, str | Callable[..., float]]:
    if isinstance(outcomes, str) or callable(outcomes):
        outcomes = [outcomes]
    named = dict(outcomes) if isinstance(outcomes, Mapping) else {outcome_name(o): o for o in outcomes}
    if not named:
        raise SolverInputError("give at least one outcome")
    return named


def parameter_matrix(model: CompiledModel, params: np.ndarray | Mapping[str, np.ndarray | float] | None,
                     n_sets: int | None = None) -> np.ndarray:
    """``(n_sets, n_params)`` parameter array from a full array or a dict of columns (others at defaults)."""
    names = model.parameter_names
    base = model.parameter_vector(None)
    if params is None or isinstance(params, Mapping):
        cols = dict(params or {})
        sizes = {int(np.size(v)) for v in cols.values() if np.ndim(v) > 0}
        if len(sizes) > 1:
            raise SolverInputError(f"parameter arrays in params have different lengths {sorted(sizes)}")
        n = sizes.pop() if sizes else (1 if n_sets is None else n_sets)
        if n_sets is not None and n != n_sets:
            raise SolverInputError(f"params has {n} sets but n_sets={n_sets}")
        P = np.tile(base, (n, 1))
        for k, v in cols.items():
            if k not in names:
                raise SolverInputError(f"unknown parameter '{k}' for model '{model.name}'{did_you_mean(k, names)}")
            try:
                P[:, names.index(k)] = np.asarray(v, dtype=float)
            except (TypeError, ValueError):
                raise SolverInputError(f"parameter '{k}' must be numbers, got {v!r}") from None
    else:
        try:
            P = np.array(params, dtype=float)
        except (TypeError, ValueError):
            raise SolverInputError(f"params must be a numeric array or a dict, got {type(params).__name__}") from None
        if P.ndim != 2 or P.shape[1] != base.size:
            raise SolverInputError(f"params array has shape {P.shape}; expected (n_sets, {base.size}) with columns "
                                   f"{list(names)}")
    if isinstance(n_sets, bool) or (n_sets is not None and (not isinstance(n_sets, (int, np.integer)) or n_sets < 1)):
        raise SolverInputError(f"n_sets must be a positive integer, got {n_sets!r}")
    bad = ~np.isfinite(P)
    if bad.any():
        s, k = np.argwhere(bad)[0]
        raise SolverInputError(f"parameter '{names[k]}' of set {s} is not finite ({P[s, k]!r})")
    return P


def scaled_doses(doses: Sequence[Dose] | None, target: str, factor: float) -> list[Dose]:
    """The schedule with every dose to ``target`` multiplied by ``factor`` (others unchanged)."""
    return [Dose(d.time, d.amount * factor, d.target, d.duration) if d.target == target else d
            for d in (doses or ())]


def dose_total(doses: Sequence[Dose] | None, target: str) -> float:
    """Total amount given to ``target``."""
    return float(sum(d.amount for d in (doses or ()) if d.target == target))


# -- helpers ---------------------------------------------------------------------------------------
def _resolve_outcome(outcome: str | Callable[..., float]) -> tuple[Callable[..., float], dict]:
    if isinstance(outcome, str):
        if outcome not in OUTCOMES:
            raise SolverInputError(f"unknown outcome '{outcome}'{did_you_mean(outcome, OUTCOMES)}; "
                                   f"known: {', '.join(OUTCOMES)}")
        return OUTCOMES[outcome], {}
    if isinstance(outcome, partial) and not outcome.args:
        return outcome.func, dict(outcome.keywords)
    if not callable(outcome):
        raise SolverInputError(f"outcome must be a name in OUTCOMES or a function, got {outcome!r}")
    return outcome, {}


def outcome_output(outcome: str | Callable[..., float]) -> str | None:
    """The model output an outcome reads: its ``output=`` option, else the function's default (None when the
    outcome takes no output)."""
    func, options = _resolve_outcome(outcome)
    if "output" in options:
        return options["output"]
    p = inspect.signature(func).parameters.get("output")
    return None if p is None or p.default is inspect.Parameter.empty else p.default


#: Library outcomes measured in the model's time unit, and those that are fractions of a baseline.
_TIME_OUTCOMES = (recovery_time, aplasia_duration)
_FRACTION_OUTCOMES = (fraction_of_baseline, autoantibody_reduction, autoantibody_reduction_d90,
                      autoantibody_reduction_d180, igg_fraction_1y)


def outcome_unit(outcome: str | Callable[..., float], model: CompiledModel) -> str:
    """The unit of an outcome's value for ``model`` ("" when not known, e.g. a user's own function): levels in
    their output's unit, AUCs in output unit x time unit, times in the model's time unit, fractions "fraction"."""
    func, _ = _resolve_outcome(outcome)
    time_unit = model.model.time_unit
    if func in _TIME_OUTCOMES:
        return time_unit
    if func in _FRACTION_OUTCOMES:
        return "fraction"
    if func not in (cmax, b_cell_nadir, auc_0_28):
        return ""
    output = outcome_output(outcome)
    level = next((o.unit for o in model.model.outputs if o.name == output), "")
    if func is auc_0_28:
        return f"{level} x {time_unit}" if level and time_unit else ""
    return level


def outcome_name(outcome: str | Callable[..., float]) -> str:
    """A readable name of an outcome (its registry name, function name and options)."""
    if isinstance(outcome, str):
        return outcome
    func, options = _resolve_outcome(outcome)
    name = next((k for k, v in OUTCOMES.items() if v is func), getattr(func, "__name__", repr(func)))
    return name + (f"({', '.join(f'{k}={v!r}' for k, v in options.items())})" if options else "")


def _one(func: Callable[..., float], options: dict, model: CompiledModel, p: np.ndarray,
         doses: Sequence[Dose]) -> float:
    params = dict(zip(model.parameter_names, map(float, p)))
    try:
        return float(func(model, params, list(doses), **options))
    except SolverInputError:   # a failed solve (or an outcome undefined at this set): nan for this set
        return math.nan


def _schedules(model: CompiledModel, doses, n: int) -> list[list[Dose]]:
    """One schedule per set; sets given the same schedule object share one list (batch solves check it once)."""
    if not doses:
        return [[]] * n
    if all(isinstance(d, Dose) for d in doses):
        return [list(doses)] * n
    if len(doses) != n:
        raise DoseError(f"doses has {len(doses)} schedules; expected one schedule for all sets or one per set ({n})")
    out, seen = [], {}
    for i, s in enumerate(doses):
        if isinstance(s, Dose) or not all(isinstance(d, Dose) for d in s):
            raise DoseError(f"doses[{i}] must be a list of kinetics.Dose (one schedule per parameter set)")
        out.append(seen.setdefault(id(s), list(s)))
    return out


def _check_output(model: CompiledModel, output: str) -> None:
    if output not in model.output_names:
        raise SolverInputError(f"unknown output '{output}' for model '{model.name}'"
                               f"{did_you_mean(str(output), model.output_names)}; outputs: {list(model.output_names)}")


def _check_until(until: float) -> None:
    if not (isinstance(until, (int, float)) and math.isfinite(until) and until > 0):
        raise SolverInputError(f"until must be a positive finite time, got {until!r}")


def _check_threshold(threshold: float) -> None:
    if not (isinstance(threshold, (int, float)) and math.isfinite(threshold) and threshold > 0):
        raise SolverInputError(f"threshold must be a positive finite number, got {threshold!r}")


def _solve(model: CompiledModel, times, params, doses):
    sim = model.simulate(times, params=params, doses=doses, rtol=RTOL, atol=ATOL)
    if not sim.success:
        raise SolverInputError(f"model '{model.name}' could not be solved: {sim.message}")
    return sim


def _aplasia_window(model, params, doses, output, threshold, until) -> tuple[float | None, float | None]:
    """(start, end) of the first stretch below ``threshold``; (None, None) if never below, end None if open."""
    _check_output(model, output)
    _check_threshold(threshold)
    _check_until(until)
    tol = {"rtol": RTOL, "atol": ATOL}
    y0 = _solve(model, [0.0], params, doses).outputs[output][0]
    if y0 < threshold:
        down = 0.0
    else:
        c = model.crossing_time(output, threshold, after=0.0, until=until, direction="down", params=params,
                                doses=doses, **tol)
        if not c.success:
            raise SolverInputError(f"solve failed while locating the start of the aplasia: {c.message}")
        if not c.found:
            return None, None
        down = c.time
    if down >= until:
        return down, None
    c = model.crossing_time(output, threshold, after=down, until=until, direction="up", params=params, doses=doses,
                            **tol)
    if not c.success:
        raise SolverInputError(f"solve failed while locating the end of the aplasia: {c.message}")
    return down, (c.time if c.found else None)


# -- plans: the library outcomes from shared batch solves (kinetics.analysis._outcome_batch) ------
def _nca_grid(until: float, step: float, doses: Sequence[Dose]) -> np.ndarray:
    # the default grid of nca_from_model (kept identical so batch and single values agree)
    grid = np.round(np.arange(round(until / step) + 1) * step, 12)
    extra = [w for w in WINDOWS if w <= until] + [d.time for d in doses if 0 <= d.time <= until]
    return np.union1d(grid[grid <= until], np.asarray(extra, dtype=float))


def _check_grid(until: float, step: float) -> None:
    if not (math.isfinite(until) and until > 0 and math.isfinite(step) and 0 < step <= until):
        raise SolverInputError(f"the NCA grid needs 0 < step <= until, got step={step!r}, until={until!r}")


def _cmax_plan(model, *, output: str = "car19_flow", until: float = 84.0, step: float = 0.01) -> Plan:
    _check_output(model, output)
    _check_grid(until, step)

    def finish(ctx: BatchContext) -> np.ndarray:
        y = np.maximum(ctx.on(output, _nca_grid(until, step, ctx.schedules[0])), 0.0)
        peak = y.max(axis=1)
        return np.where(peak > 0, peak, np.nan)   # nca: no quantifiable level, no Cmax

    return Plan(times=lambda s: _nca_grid(until, step, s), finish=finish)


def _auc_plan(model, *, output: str = "car19_flow", step: float = 0.01) -> Plan:
    _check_output(model, output)
    _check_grid(WINDOWS[0], step)

    def finish(ctx: BatchContext) -> np.ndarray:
        grid = _nca_grid(WINDOWS[0], step, ctx.schedules[0])
        y = np.maximum(ctx.on(output, grid), 0.0)
        return np.array([nca(grid, row).auc_0_28 if ok else np.nan for row, ok in zip(y, ctx.ok)])

    return Plan(times=lambda s: _nca_grid(WINDOWS[0], step, s), finish=finish)


def _nadir_plan(model, *, output: str = "bcells", until: float = 365.0, n_grid: int = 2001) -> Plan:
    _check_output(model, output)
    _check_until(until)
    if isinstance(n_grid, bool) or not isinstance(n_grid, (int, np.integer)) or n_grid < 3:
        raise SolverInputError(f"n_grid must be an integer >= 3, got {n_grid!r}")
    grid = np.linspace(0.0, until, n_grid)

    def finish(ctx: BatchContext) -> np.ndarray:
        y = ctx.on(output, grid)
        rows = np.flatnonzero(ctx.ok)
        k = np.argmin(y[rows], axis=1)
        local = bracket_grid(grid[np.maximum(k - 1, 0)], grid[np.minimum(k + 1, n_grid - 1)])
        z, solved = ctx.on_grids(output, local, rows)
        out = np.full(len(ctx.ok), np.nan)
        out[rows[solved]] = lowest_point(local[solved], z[solved])[1]
        return out

    return Plan(times=lambda s: grid, finish=finish)


def _recovery_plan(model, *, output: str = "bcells", threshold: float = 1.0, relative_to_baseline: bool = False,
                   sustained_days: float = 0.0, until: float = 1095.0) -> Plan | None:
    if sustained_days:
        return None   # a sustained rule re-checks each candidate: set by set
    _check_output(model, output)
    _check_threshold(threshold)
    _check_until(until)
    grid = np.linspace(0.0, until, 2001)   # the nadir bracket grid of b_cell_recovery_time
    rule = dict(output=output, threshold=threshold, relative_to_baseline=relative_to_baseline, until=until)

    def finish(ctx: BatchContext) -> np.ndarray:
        y = ctx.on(output, grid)
        n = len(ctx.ok)
        levels = threshold * ctx.baseline(output) if relative_to_baseline else np.full(n, float(threshold))
        out = np.full(n, np.nan)
        usable = ctx.ok & np.isfinite(levels)
        k = np.zeros(n, dtype=int)
        k[usable] = np.argmin(y[usable], axis=1)
        low = y[np.arange(n), k]
        for i in np.flatnonzero(usable & (low >= levels)):
            # not depleted on the grid; near the level the refined nadir could still dip below: ask the rule
            out[i] = 0.0 if low[i] > 1.5 * levels[i] else _one(recovery_time, rule, ctx.model, ctx.params[i],
                                                                ctx.schedules[i])
        depleted = usable & (low < levels)
        out[depleted & (k == grid.size - 1)] = until
        # the first upward crossing after the grid nadir is the one after the refined nadir: the output is
        # below the level at the grid nadir (the aplasia's end, when located first, often answers it)
        rows = np.flatnonzero(depleted & (k < grid.size - 1))
        t, found, solved = ctx.crossings(output, levels[rows], grid[k[rows]], until, "up", rows)
        out[rows] = np.where(solved, np.where(found, t, until), np.nan)
        return out

    return Plan(times=lambda s: grid, finish=finish, baseline=relative_to_baseline)


def _aplasia_plan(model, *, output: str = "bcells", threshold: float = 1.0, until: float = 1095.0) -> Plan:
    _check_output(model, output)
    _check_threshold(threshold)
    _check_until(until)

    def finish(ctx: BatchContext) -> np.ndarray:
        n = len(ctx.ok)
        y0 = ctx.on(output, np.array([0.0]))[:, 0]
        down = np.where(ctx.ok & (y0 < threshold), 0.0, np.nan)
        rows = np.flatnonzero(ctx.ok & (y0 >= threshold))
        t, found, solved = ctx.crossings(output, np.full(rows.size, float(threshold)), np.zeros(rows.size), until,
                                         "down", rows)
        down[rows] = np.where(solved & found, t, np.nan)
        out = np.full(n, np.nan)
        out[rows[solved & ~found]] = 0.0   # never below the threshold
        open_end = np.isfinite(down) & (down >= until)
        out[open_end] = 0.0
        rows = np.flatnonzero(np.isfinite(down) & (down < until))
        t, found, solved = ctx.crossings(output, np.full(rows.size, float(threshold)), down[rows], until, "up", rows)
        out[rows] = np.where(solved, np.where(found, t, until) - down[rows], np.nan)
        return out

    return Plan(times=lambda s: np.array([0.0]), finish=finish)


def _fraction_plan(model, *, output: str, day: float) -> Plan:
    _check_output(model, output)
    if not (math.isfinite(day) and day > 0):
        raise SolverInputError(f"day must be a positive finite time, got {day!r}")

    def finish(ctx: BatchContext) -> np.ndarray:
        base = ctx.baseline(output)
        level = ctx.on(output, np.array([float(day)]))[:, 0]
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(base != 0, level / base, np.nan)

    return Plan(times=lambda s: np.array([float(day)]), finish=finish, baseline=True)


def _reduction_plan(model, *, day: float, output: str = "anti_dsdna") -> Plan:
    fraction = _fraction_plan(model, output=output, day=day)
    return Plan(times=fraction.times, finish=lambda ctx: 1.0 - fraction.finish(ctx), baseline=True)


_PLANS: dict[Callable[..., float], Callable[..., Plan | None]] = {
    cmax: _cmax_plan,
    auc_0_28: _auc_plan,
    b_cell_nadir: _nadir_plan,
    recovery_time: _recovery_plan,
    aplasia_duration: _aplasia_plan,
    fraction_of_baseline: _fraction_plan,
    autoantibody_reduction: _reduction_plan,
    autoantibody_reduction_d90: lambda model, output="anti_dsdna": _reduction_plan(model, day=90.0, output=output),
    autoantibody_reduction_d180: lambda model, output="anti_dsdna": _reduction_plan(model, day=180.0, output=output),
    igg_fraction_1y: lambda model, output="igg": _fraction_plan(model, output=output, day=365.0),
}


def _default_chunk(model: CompiledModel, n_times: int) -> int:
    per_set = 8 * max(n_times, 1) * (len(model.state_names) + len(model.output_names))
    return int(max(1, min(1024, 64e6 // per_set)))


def _progress_bar(n: int, progress: bool, label: str):
    if not progress:
        return None
    from tqdm.auto import tqdm
    return tqdm(total=n, desc=label, unit="set")

