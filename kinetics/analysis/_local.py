"""Local sensitivity: elasticities (normalised sensitivities d log y / d log theta) of model outputs over
time and of scalar outcomes, to every parameter and to dose, and tornado data.

Elasticities come from forward sensitivities (``model.sensitivities``) wherever they are exact, and
from central differences otherwise; each row says which (column ``method``). ``theta`` is a parameter
or ``"dose:<target>"``, the total amount given to a dose target (all its doses scaled together).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
from scipy.special import ndtri   # standard normal quantile (scipy.stats is slow to import)

from kinetics.analysis._nca import WINDOWS, nca_from_model
from kinetics.analysis._outcomes import (
    ATOL,
    RTOL,
    _aplasia_window,
    _nca_grid,
    _resolve_outcome,
    aplasia_duration,
    auc_0_28,
    autoantibody_reduction,
    autoantibody_reduction_d90,
    autoantibody_reduction_d180,
    b_cell_nadir,
    cmax,
    dose_total,
    evaluate_outcome,
    fraction_of_baseline,
    igg_fraction_1y,
    outcome_name,
    outcome_unit,
    recovery_time,
    scaled_doses,
)
from kinetics.analysis._recovery import _nadir, b_cell_recovery_time
from kinetics.errors import SolverInputError, did_you_mean
from kinetics.solve import CompiledModel, Dose

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = ["ELASTICITY_METHODS", "elasticities", "omega_sds", "outcome_elasticities", "tornado"]

#: ``method`` of :func:`outcome_elasticities`: "auto" (forward sensitivities where the outcome has an
#: exact chain rule, else central differences), "sensitivities" or "central".
ELASTICITY_METHODS = ("auto", "sensitivities", "central")

DOSE_PREFIX = "dose:"


# -- over time ------------------------------------------------------------------------------------
def elasticities(model: CompiledModel, times: Sequence[float] | np.ndarray,
                 params: Mapping[str, float] | np.ndarray | None = None, doses: Sequence[Dose] | None = None, *,
                 outputs: Sequence[str] | None = None, wrt: Sequence[str] | None = None, dose: bool = True,
                 rel_step: float = 1e-3, rtol: float = RTOL, atol: float = ATOL) -> pd.DataFrame:
    """Elasticities d log y / d log theta of model outputs at ``times``.

    Parameters
    ----------
    model
        A compiled model.
    times
        Output times (model time unit), sorted.
    params, doses
        As for ``model.simulate``.
    outputs
        Outputs to report (default: all).
    wrt
        Parameters (default: all); ``"dose:<target>"`` entries may be listed too.
    dose
        Add ``"dose:<target>"`` for every target that ``doses`` gives to (when ``wrt`` is None).
    rel_step
        Relative step of the central difference used for doses that are not boluses at time 0.
    rtol, atol
        Solver tolerances.

    Returns
    -------
    pandas.DataFrame
        One row per (time, output, wrt): ``time``, ``output``, ``wrt``, ``kind`` ("parameter" or
        "dose"), ``value`` (parameter value or total dose), ``level`` (the output), ``sensitivity``
        (d y / d theta), ``elasticity`` (theta / y * d y / d theta; nan where y = 0) and ``method``.

    Notes
    -----
    Parameters: ``theta * dy/dtheta`` from the forward sensitivities (exact to solver tolerance).
    Doses that are all boluses at time 0: a bolus adds ``amount * scale`` to its state, so
    d y / d log(amount) = (d y / d y0_state) * (jump of the state), with the initial-value
    sensitivity ``"init:<state>"`` (exact as well). Other doses (later or infused): central
    difference with the doses to that target scaled by ``1 +- rel_step`` (error O(rel_step^2)).
    A parameter of value 0 has elasticity 0.

    Examples
    --------
    >>> import kinetics
    >>> from kinetics.analysis import elasticities
    >>> m = kinetics.load_model("oral_1cmt")
    >>> df = elasticities(m, [2.0], doses=[kinetics.Dose(0.0, 320.0, "depot")])
    >>> e = df.set_index("wrt")["elasticity"]
    >>> round(float(e["dose:depot"]), 6), round(float(e["F"]), 6)   # linear in dose and in F
    (1.0, 1.0)
    """
    import pandas as pd

    names, targets = _wrt(model, wrt, doses, dose)
    outs = _outputs(model, outputs)
    t = np.atleast_1d(np.asarray(times, dtype=float))
    y, D, methods = _log_derivatives(model, t, params, doses, names, targets, rel_step, rtol, atol)
    idx = [model.output_names.index(o) for o in outs]
    y, D = y[:, idx], D[:, idx, :]
    values = _values(model, params, doses, names, targets)
    labels = list(names) + [DOSE_PREFIX + g for g in targets]
    nt, no, nw = D.shape
    with np.errstate(divide="ignore", invalid="ignore"):
        el = np.where(y[:, :, None] != 0, D / y[:, :, None], np.nan)
        sens = np.where(values != 0, D / values, np.nan)
    return pd.DataFrame({
        "time": np.repeat(t, no * nw),
        "output": np.tile(np.repeat(np.array(outs, dtype=object), nw), nt),
        "wrt": np.tile(np.array(labels, dtype=object), nt * no),
        "kind": np.tile(np.array(["parameter"] * len(names) + ["dose"] * len(targets), dtype=object), nt * no),
        "value": np.tile(values, nt * no),
        "level": np.repeat(y.reshape(-1), nw),
        "sensitivity": sens.reshape(-1),
        "elasticity": el.reshape(-1),
        "method": np.tile(np.array(methods, dtype=object), nt * no),
    })


# -- of scalar outcomes ----------------------------------------------------------------------------------
def outcome_elasticities(model: CompiledModel, outcome: str | Callable[..., float],
                         params: Mapping[str, float] | np.ndarray | None = None,
                         doses: Sequence[Dose] | None = None, *, wrt: Sequence[str] | None = None, dose: bool = True,
                         method: str = "auto", rel_step: float = 1e-3) -> pd.DataFrame:
    """Elasticities d log g / d log theta of a scalar outcome ``g`` to parameters and doses.

    Parameters
    ----------
    model
        A compiled model.
    outcome
        A name in :data:`~kinetics.analysis.OUTCOMES`, one of those functions (or a
        ``functools.partial`` with options), or any ``f(model, params, doses) -> float``.
    params, doses
        The point of the derivative (as for ``model.simulate``).
    wrt, dose
        As for :func:`elasticities`.
    method
        ``"auto"`` (default): forward sensitivities where the outcome has an exact chain rule (see
        Notes), central differences otherwise; ``"sensitivities"``: the chain rule (an error for
        outcomes without one); ``"central"``: central differences for everything. Where a chain rule
        does not hold at the point (an AUC profile with zero levels inside it) central differences are
        used; the ``method`` column always says which.
    rel_step
        Relative step h of the central differences: theta * (1 +- h), error O(h^2). With the
        outcomes' solver tolerance (rtol 1e-8) h = 1e-3 leaves a round-off of order 1e-5.

    Returns
    -------
    pandas.DataFrame
        One row per ``wrt``: ``wrt``, ``kind``, ``value``, ``outcome`` (g at the point),
        ``derivative`` (dg / d theta), ``elasticity`` (nan where g = 0) and ``method``; sorted by
        absolute elasticity, largest first. ``attrs["outcome"]`` names the outcome.

    Notes
    -----
    Chain rules (``D`` = d / d log theta; y and its sensitivities from ``model.sensitivities``):

    - Cmax and the B-cell nadir are extrema: D g = D y at the extremum time (envelope theorem);
      the time is that of the outcome (grid maximum for Cmax, refined grid minimum for the nadir).
    - AUC(0-28): the derivative of the linear-up/log-down trapezoid sum over the NCA grid, segment
      by segment (linear: (Dy1 + Dy2) dt / 2; log-down: the derivative of dt (y1 - y2)/ln(y1/y2)).
    - Fractions of baseline (autoantibody reduction, IgG at 1 y): D(y(d)/y0) = (y(d)/y0)(Dy(d)/y(d) - Dy0/y0).
    - Crossing times (recovery time, the ends of the aplasia): y(T) = L, so D T = -(D y(T) - D L)/y'(T)
      (implicit function theorem); y'(T) is a central difference of the solution in time with step
      1e-3 (its error, O(1e-6) relative, is far below the derivative's).

    A crossing not reached by ``until`` (value ``until``) or never needed (value 0) has derivative 0
    in the chain rule. Doses that are not boluses at time 0 always use central differences.

    Examples
    --------
    >>> import kinetics
    >>> from kinetics.analysis import outcome_elasticities
    >>> m = kinetics.load_model("cd19_sle")
    >>> df = outcome_elasticities(m, "recovery_time", doses=[kinetics.Dose(0.0, 6e7, "car19")],
    ...                           wrt=["dM_19", "thalf_IgG"])
    >>> df[["wrt", "elasticity"]].round(2).values.tolist()   # faster CAR-T loss, earlier B cells
    [['dM_19', -0.86], ['thalf_IgG', -0.0]]
    """
    import pandas as pd

    if method not in ELASTICITY_METHODS:
        raise SolverInputError(f"method must be one of {', '.join(ELASTICITY_METHODS)}, got {method!r}")
    _check_step(rel_step)
    func, options = _resolve_outcome(outcome)
    names, targets = _wrt(model, wrt, doses, dose)
    p = model.parameter_vector(params)
    g0 = float(func(model, dict(zip(model.parameter_names, map(float, p))), list(doses or ()), **options))
    chain = _CHAIN.get(func)  # type: ignore[arg-type]
    if method == "sensitivities" and chain is None:
        raise SolverInputError(f"outcome {outcome_name(outcome)} has no chain rule from sensitivities; use "
                               "method='central' (or 'auto')")
    values = _values(model, p, doses, names, targets)
    nw = len(names) + len(targets)
    D = np.full(nw, np.nan)          # d g / d log theta
    deriv = np.full(nw, np.nan)      # d g / d theta
    methods = [""] * nw
    done = np.zeros(nw, dtype=bool)
    if chain is not None and method != "central":
        exact = [g for g in targets if _t0_bolus(doses, g)]
        res = chain(model, p, list(doses or ()), names, exact, **options)
        if res is not None:
            cols = list(range(len(names))) + [len(names) + targets.index(g) for g in exact]
            D[cols] = res[1]
            with np.errstate(divide="ignore", invalid="ignore"):
                deriv[cols] = np.where(values[cols] != 0, res[1] / values[cols], np.nan)
            done[cols] = True
            for c in cols:
                methods[c] = res[2]
    rest = np.flatnonzero(~done)
    if rest.size:
        sets, schedules = [], []
        for c in rest:
            for sign in (1.0, -1.0):
                q, s = p.copy(), list(doses or ())
                if c < len(names):
                    i = model.parameter_names.index(names[c])
                    q[i] = p[i] * (1.0 + sign * rel_step) if p[i] != 0 else sign * rel_step
                else:
                    s = scaled_doses(doses, targets[c - len(names)], 1.0 + sign * rel_step)
                sets.append(q)
                schedules.append(s)
        vals = evaluate_outcome(_partial_of(func, options), model, np.array(sets), schedules)
        for k, c in enumerate(rest):
            diff = (vals[2 * k] - vals[2 * k + 1]) / (2.0 * rel_step)
            if values[c] == 0:   # parameter at 0: absolute step for the derivative, elasticity 0
                D[c], deriv[c] = 0.0, diff
            else:
                D[c], deriv[c] = diff, diff / values[c]
            methods[c] = f"central difference (relative step {rel_step:g})"
    with np.errstate(divide="ignore", invalid="ignore"):
        el = D / g0 if g0 != 0 else np.full(nw, np.nan)
    df = pd.DataFrame({"wrt": list(names) + [DOSE_PREFIX + g for g in targets],
                       "kind": ["parameter"] * len(names) + ["dose"] * len(targets), "value": values,
                       "outcome": g0, "derivative": deriv, "elasticity": el, "method": methods})
    df = df.iloc[np.argsort(-np.nan_to_num(np.abs(el), nan=-1.0), kind="stable")].reset_index(drop=True)
    df.attrs["outcome"] = outcome_name(outcome)
    return df


def _partial_of(func: Callable[..., float], options: dict) -> Callable[..., float]:
    """``func`` with ``options`` bound (``functools.partial``), or ``func`` itself."""
    from functools import partial
    return partial(func, **options) if options else func


# -- tornado ------------------------------------------------------------------------------------
def omega_sds(omega) -> tuple[dict[str, float], dict[str, float]]:
    """SDs of log-normal between-subject variability and the typical values they go with.

    Parameters
    ----------
    omega
        A :class:`~kinetics.fit.PopulationFit` (SDs = square roots of the diagonal of ``fit.omega``,
        a variance matrix; typical values ``fit.theta``), or a mapping parameter -> variance of eta
        (omega, as everywhere in kinetics: ``fit_population(random_effects=)``, ``dose_sweep``,
        ``simulate_population``; the model files' ``iiv`` are SDs, so square them); typical values
        then come from ``params`` or the model.

    Returns
    -------
    (sds, typical)
        Dicts by parameter name; ``typical`` is empty for a mapping.
    """
    from kinetics.fit import PopulationFit

    if isinstance(omega, PopulationFit):
        om = omega.omega
        sds = {str(n): float(math.sqrt(max(om.loc[n, n], 0.0))) for n in om.index}
        return sds, {k: float(v) for k, v in (omega.typical_parameters or omega.theta).items()}
    if not isinstance(omega, Mapping):
        raise SolverInputError(f"omega must be a PopulationFit or a mapping parameter -> variance, got "
                               f"{type(omega).__name__}")
    sds = {}
    for k, v in omega.items():
        try:
            var = float(v)
        except (TypeError, ValueError):
            raise SolverInputError(f"omega['{k}'] must be a number (variance of eta), got {v!r}") from None
        if not (math.isfinite(var) and var >= 0):
            raise SolverInputError(f"omega['{k}'] must be a finite variance >= 0, got {v!r}")
        sds[str(k)] = math.sqrt(var)
    return sds, {}


def tornado(model: CompiledModel, outcome: str | Callable[..., float],
            ranges: Mapping[str, tuple[float, float]] | None = None, *, omega=None,
            params: Mapping[str, float] | None = None, doses: Sequence[Dose] | None = None,
            coverage: float = 0.90) -> pd.DataFrame:
    """Tornado data: the outcome with each parameter (or dose) at the low and high end of its range.

    Parameters
    ----------
    model, outcome
        As for :func:`outcome_elasticities`.
    ranges
        Mapping name -> (low, high) in the parameter's unit; ``"dose:<target>"`` for a total dose
        amount. The range must contain the value the others are held at.
    omega
        A fitted population (:class:`~kinetics.fit.PopulationFit`) or a mapping parameter -> variance
        of its log-normal eta (omega; see :func:`omega_sds`): the range is ``value * exp(-+ z SD)``,
        the central ``coverage`` interval of the log-normal (z = 1.645, 5th-95th percentile, for 0.90). With a fit, the
        other parameters are held at the fit's typical values ``fit.theta`` (then ``params``).
    params, doses
        Values everything else is held at (model defaults by default).
    coverage
        Central probability of the omega ranges.

    Returns
    -------
    pandas.DataFrame
        One row per parameter, largest swing first: ``parameter``, ``value``, ``low``, ``high``,
        ``outcome_low``, ``outcome_high``, ``outcome_base``, ``swing`` = |outcome_high - outcome_low|,
        ``range_source`` ("bounds" or "omega"). ``attrs`` hold the outcome name and the rule.
    """
    import pandas as pd

    if ranges is None and omega is None:
        raise SolverInputError("tornado needs ranges= (name -> (low, high)) or omega= (a fit or name -> variance)")
    if not (isinstance(coverage, (int, float)) and 0 < coverage < 1):
        raise SolverInputError(f"coverage must be in (0, 1), got {coverage!r}")
    base = dict(params or {})
    rows: list[tuple[str, float, float, float, str]] = []
    if omega is not None:
        sds, typical = omega_sds(omega)
        base = {**typical, **base}
        p = model.parameter_vector(base)
        z = float(ndtri(0.5 + coverage / 2.0))
        for k, s in sds.items():
            i = _param_index(model, k, "omega")
            rows.append((k, p[i], p[i] * math.exp(-z * s), p[i] * math.exp(z * s), "omega"))
    p = model.parameter_vector(base)
    for k, (lo, hi) in _bounds_items(ranges or {}, "ranges"):
        if any(r[0] == k for r in rows):
            raise SolverInputError(f"'{k}' is in both ranges and omega; give it once")
        if k.startswith(DOSE_PREFIX):
            _check_target(model, doses, k[len(DOSE_PREFIX):], "ranges")
            v = dose_total(doses, k[len(DOSE_PREFIX):])
        else:
            v = p[_param_index(model, k, "ranges")]
        if not lo <= v <= hi:
            raise SolverInputError(f"ranges['{k}'] = ({lo:g}, {hi:g}) excludes the value {v:g} the other runs hold it "
                                   f"at; widen the range or set params={{'{k}': ...}}")
        rows.append((k, v, lo, hi, "bounds"))
    sets, schedules = [p], [list(doses or ())]
    for k, v, lo, hi, _ in rows:
        for x in (lo, hi):
            q, s = p.copy(), list(doses or ())
            if k.startswith(DOSE_PREFIX):
                s = scaled_doses(doses, k[len(DOSE_PREFIX):], x / v)
            else:
                q[model.parameter_names.index(k)] = x
            sets.append(q)
            schedules.append(s)
    vals = evaluate_outcome(outcome, model, np.array(sets), schedules)
    if np.isnan(vals).any():
        bad = int(np.flatnonzero(np.isnan(vals))[0])
        what = "the base values" if bad == 0 else f"{rows[(bad - 1) // 2][0]} at its {'low' if bad % 2 else 'high'} end"
        raise SolverInputError(f"the outcome could not be evaluated with {what} (failed solve); narrow the range")
    df = pd.DataFrame({"parameter": [r[0] for r in rows], "value": [r[1] for r in rows],
                       "low": [r[2] for r in rows], "high": [r[3] for r in rows],
                       "outcome_low": vals[1::2], "outcome_high": vals[2::2], "outcome_base": vals[0],
                       "range_source": [r[4] for r in rows]})
    df["swing"] = (df["outcome_high"] - df["outcome_low"]).abs()
    df = df.sort_values("swing", ascending=False, kind="stable").reset_index(drop=True)
    df.attrs["outcome"] = outcome_name(outcome)
    df.attrs["unit"] = outcome_unit(outcome, model)
    df.attrs["rule"] = (f"omega ranges: value * exp(-+{ndtri(0.5 + coverage / 2):.4g} omega) (central "
                        f"{100 * coverage:g} % of the log-normal); bounds ranges as given")
    return df


# -- helpers ---------------------------------------------------------------------------------------
def _check_step(rel_step: float) -> None:
    if not (isinstance(rel_step, (int, float)) and math.isfinite(rel_step) and 0 < rel_step < 0.5):
        raise SolverInputError(f"rel_step must be in (0, 0.5), got {rel_step!r}")


def _param_index(model: CompiledModel, name: str, where: str) -> int:
    if name not in model.parameter_names:
        raise SolverInputError(f"{where}: unknown parameter '{name}' for model '{model.name}'"
                               f"{did_you_mean(name, model.parameter_names)}")
    return model.parameter_names.index(name)


def _check_target(model: CompiledModel, doses, target: str, where: str) -> None:
    if target not in model.dose_target_names:
        raise SolverInputError(f"{where}: unknown dose target '{target}'{did_you_mean(target, model.dose_target_names)}"
                               f" (model '{model.name}' doses: {', '.join(model.dose_target_names) or 'none'})")
    if dose_total(doses, target) <= 0:
        raise SolverInputError(f"{where}: no dose (or a zero dose) is given to '{target}', so it cannot be scaled; "
                               "pass doses=[Dose(0, amount, target)]")


def _bounds_items(bounds: Mapping[str, tuple[float, float]], where: str):
    if not isinstance(bounds, Mapping):
        raise SolverInputError(f"{where} must be a mapping name -> (low, high), got {type(bounds).__name__}")
    for k, b in bounds.items():
        try:
            lo, hi = (float(x) for x in b)
        except (TypeError, ValueError):
            raise SolverInputError(f"{where}['{k}'] must be a pair (low, high), got {b!r}") from None
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise SolverInputError(f"{where}['{k}'] = {b!r}: need finite low < high")
        yield str(k), (lo, hi)


def _wrt(model: CompiledModel, wrt, doses, dose: bool) -> tuple[list[str], list[str]]:
    if wrt is None:
        names = list(model.parameter_names)
        targets = sorted({d.target for d in (doses or ()) if d.amount > 0}) if dose else []
    else:
        if isinstance(wrt, str):
            raise SolverInputError(f"wrt must be a list of names, got the string {wrt!r}")
        names, targets = [], []
        for w in wrt:
            if isinstance(w, str) and w.startswith(DOSE_PREFIX):
                targets.append(w[len(DOSE_PREFIX):])
            else:
                _param_index(model, w, "wrt")
                names.append(w)
    for g in targets:
        _check_target(model, doses, g, "wrt")
    return names, targets


def _outputs(model: CompiledModel, outputs) -> list[str]:
    if outputs is None:
        return list(model.output_names)
    if isinstance(outputs, str):
        outputs = [outputs]
    for o in outputs:
        if o not in model.output_names:
            raise SolverInputError(f"unknown output '{o}'{did_you_mean(str(o), model.output_names)}")
    return list(outputs)


def _values(model, params, doses, names, targets) -> np.ndarray:
    p = model.parameter_vector(params)
    return np.array([p[model.parameter_names.index(n)] for n in names] + [dose_total(doses, g) for g in targets])


def _t0_bolus(doses, target: str) -> bool:
    return all(d.time == 0.0 and d.duration == 0.0 for d in (doses or ()) if d.target == target)


def _log_derivatives(model: CompiledModel, times: np.ndarray, params, doses, names: list[str], targets: list[str],
                     rel_step: float, rtol: float, atol: float) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Outputs y (n_times, n_outputs) and d y / d log theta (n_times, n_outputs, n_wrt), with the method of
    each column: forward sensitivities for parameters and time-0 boluses, central differences for other doses."""
    _check_step(rel_step)
    p = model.parameter_vector(params)
    exact = [g for g in targets if _t0_bolus(doses, g)]
    state_of = {d.name: d.state for d in model.model.dose_targets}
    init = [f"init:{state_of[g]}" for g in exact]
    wrt = list(names) + sorted(set(init))
    s = model.sensitivities(times, p, doses, wrt=wrt, rtol=rtol, atol=atol)
    if not s.success:
        raise SolverInputError(f"model '{model.name}' could not be solved: {s.simulation.message}")
    y = np.column_stack([s.simulation.outputs[o] for o in model.output_names]) if model.output_names else \
        np.zeros((times.size, 0))
    nw = len(names) + len(targets)
    D = np.zeros((times.size, len(model.output_names), nw))
    pv = np.array([p[model.parameter_names.index(n)] for n in names])
    D[:, :, :len(names)] = s.outputs[:, :, :len(names)] * pv
    methods = ["forward sensitivities"] * len(names)
    for k, g in enumerate(targets):
        col = len(names) + k
        if g in exact:
            si = model.state_names.index(state_of[g])
            own = [d for d in doses if d.target == g]
            with_dose = model.simulate([0.0], p, own, rtol=rtol, atol=atol).states[0, si]
            without = model.simulate([0.0], p, None, rtol=rtol, atol=atol).states[0, si]
            D[:, :, col] = s.outputs[:, :, wrt.index(f"init:{state_of[g]}")] * (with_dose - without)
            methods.append("forward sensitivities (initial value)")
        else:
            ys = []
            for f in (1.0 + rel_step, 1.0 - rel_step):
                sim = model.simulate(times, p, scaled_doses(doses, g, f), rtol=rtol, atol=atol)
                if not sim.success:
                    raise SolverInputError(f"model '{model.name}' could not be solved with dose '{g}' x {f:g}: "
                                           f"{sim.message}")
                ys.append(np.column_stack([sim.outputs[o] for o in model.output_names]))
            D[:, :, col] = (ys[0] - ys[1]) / (2.0 * rel_step)
            methods.append(f"central difference (relative step {rel_step:g})")
    return y, D, methods


# Chain rules: outcome -> f(model, p, doses, names, exact_targets, **options) -> (value, D (n_wrt,), label) or None
# (None: not applicable at this point; central differences are used instead).
_SENS = "forward sensitivities (chain rule)"


def _at(model, times, p, doses, names, targets, output, rtol=RTOL, atol=ATOL):
    y, D, _ = _log_derivatives(model, np.atleast_1d(np.asarray(times, dtype=float)), p, doses, names, targets,
                               1e-3, rtol, atol)
    j = model.output_names.index(output)
    return y[:, j], D[:, j, :]


def _chain_cmax(model, p, doses, names, targets, *, output="car19_flow", until=84.0, step=0.01):
    r = nca_from_model(model, params=p, doses=doses, output=output, until=until, step=step)
    _, D = _at(model, [r.tmax], p, doses, names, targets, output, 1e-10, 1e-12)
    return r.cmax, D[0], _SENS + ": envelope at Tmax"


def _chain_nadir(model, p, doses, names, targets, *, output="bcells", until=365.0, n_grid=2001):
    t, v = _nadir(model, output, until, n_grid, p, doses, {"rtol": RTOL, "atol": ATOL})
    _, D = _at(model, [t], p, doses, names, targets, output)
    return v, D[0], _SENS + ": envelope at the nadir"


def _g_and_gprime(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """g(x) = x / log1p(x) and g'(x), with series where x is small (the log-down segment area is dt c2 g(x))."""
    small = np.abs(x) < 1e-3
    xs = np.where(small, 1.0, x)
    L = np.log1p(xs)
    g = np.where(small, 1 + x / 2 - x * x / 12, xs / L)
    gp = np.where(small, 0.5 - x / 6 + x * x / 8, (L - xs / (1 + xs)) / (L * L))
    return g, gp


def _chain_auc(model, p, doses, names, targets, *, output="car19_flow", step=0.01):
    grid = _nca_grid(WINDOWS[0], step, doses)
    y, D = _at(model, grid, p, doses, names, targets, output, 1e-10, 1e-12)
    c = np.maximum(y, 0.0)
    D = np.where((y > 0)[:, None], D, 0.0)
    pos = np.flatnonzero(c > 0)
    if pos.size == 0 or (c[pos[0]:] == 0).any():
        return None   # BLQ samples inside the profile: the NCA rule drops them; use central differences
    dt = np.diff(grid)
    c1, c2, D1, D2 = c[:-1], c[1:], D[:-1], D[1:]
    fall = (c2 < c1) & (c2 > 0)
    dA = 0.5 * dt[:, None] * (D1 + D2)
    if fall.any():
        x = (c1[fall] - c2[fall]) / c2[fall]
        g, gp = _g_and_gprime(x)
        dA[fall] = dt[fall, None] * (gp[:, None] * D1[fall] + (g - (1 + x) * gp)[:, None] * D2[fall])
    value = auc_0_28(model, p, doses, output=output, step=step)
    return value, dA.sum(axis=0), _SENS + ": derivative of the log-down trapezoid"


def _chain_fraction(model, p, doses, names, targets, *, output, day, sign=1.0):
    y0, D0 = _at(model, [0.0], p, None, names, [], output)
    y, D = _at(model, [day], p, doses, names, targets, output)
    f = y[0] / y0[0]
    Dy0 = np.concatenate([D0[0], np.zeros(len(targets))])   # the baseline does not depend on the dose
    Df = f * (D[0] / y[0] - Dy0 / y0[0]) if y[0] != 0 else (D[0] - f * Dy0) / y0[0]
    value = f if sign > 0 else 1.0 - f
    return value, sign * Df, _SENS + ": ratio to baseline"


def _y_dot(model, output, T, p, doses) -> float:
    h = min(1e-3, T / 2.0)
    sim = model.simulate([T - h, T + h], p, doses, rtol=1e-10, atol=1e-12)
    if not sim.success:
        raise SolverInputError(f"model '{model.name}' could not be solved near t={T:g}: {sim.message}")
    y = sim.outputs[output]
    return float((y[1] - y[0]) / (2 * h))


def _crossing_D(model, output, T, p, doses, names, targets, level_D=None) -> np.ndarray:
    _, D = _at(model, [T], p, doses, names, targets, output)
    num = D[0] - (level_D if level_D is not None else 0.0)
    return -num / _y_dot(model, output, T, p, doses)


def _chain_recovery(model, p, doses, names, targets, *, output="bcells", threshold=1.0, relative_to_baseline=False,
                    sustained_days=0.0, until=1095.0):
    r = b_cell_recovery_time(model, threshold=threshold, relative_to_baseline=relative_to_baseline,
                             sustained_days=sustained_days, params=p, doses=doses, output=output, until=until,
                             rtol=RTOL, atol=ATOL)
    nw = len(names) + len(targets)
    if not r.depleted:
        return 0.0, np.zeros(nw), _SENS + ": not depleted, constant 0"
    if r.time is None:
        return float(until), np.zeros(nw), _SENS + ": not recovered by until, constant"
    level_D = None
    if relative_to_baseline:
        _, D0 = _at(model, [0.0], p, None, names, [], output)
        level_D = threshold * np.concatenate([D0[0], np.zeros(len(targets))])
    return r.time, _crossing_D(model, output, r.time, p, doses, names, targets, level_D), \
        _SENS + ": implicit function at the crossing"


def _chain_aplasia(model, p, doses, names, targets, *, output="bcells", threshold=1.0, until=1095.0):
    down, up = _aplasia_window(model, p, doses, output, threshold, until)
    nw = len(names) + len(targets)
    if down is None:
        return 0.0, np.zeros(nw), _SENS + ": never below the threshold, constant 0"
    D_down = np.zeros(nw) if down == 0.0 else _crossing_D(model, output, down, p, doses, names, targets)
    D_up = np.zeros(nw) if up is None else _crossing_D(model, output, up, p, doses, names, targets)
    return (up if up is not None else until) - down, D_up - D_down, _SENS + ": implicit function at both crossings"


_CHAIN: dict[Callable[..., float], Callable[..., tuple[float, np.ndarray, str] | None]] = {
    cmax: _chain_cmax,
    auc_0_28: _chain_auc,
    b_cell_nadir: _chain_nadir,
    recovery_time: _chain_recovery,
    aplasia_duration: _chain_aplasia,
    fraction_of_baseline: _chain_fraction,
    autoantibody_reduction: lambda m, p, d, n, t, *, day, output="anti_dsdna": _chain_fraction(
        m, p, d, n, t, output=output, day=day, sign=-1.0),
    autoantibody_reduction_d90: lambda m, p, d, n, t, *, output="anti_dsdna": _chain_fraction(
        m, p, d, n, t, output=output, day=90.0, sign=-1.0),
    autoantibody_reduction_d180: lambda m, p, d, n, t, *, output="anti_dsdna": _chain_fraction(
        m, p, d, n, t, output=output, day=180.0, sign=-1.0),
    igg_fraction_1y: lambda m, p, d, n, t, *, output="igg": _chain_fraction(m, p, d, n, t, output=output, day=365.0),
}
