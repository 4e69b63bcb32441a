"""The analysis commands of ``kinetics``: exposure metrics (``nca``), B-cell recovery (``recovery``), dose
sweeps (``dose-sweep``) and local or global sensitivity (``sensitivity``), each writing CSV tables and PNG
figures to a folder (``--out``, default ``out/<command>``) and printing its main table.

Times are in the model's time unit (days for the CAR-T models), doses in the dose target's unit (CAR+
cells for the lupus models). Virtual patients vary log-normally around the typical values with the SDs
the model file suggests (``[metadata] iiv``; omega = SD**2), or with the random effects of a population
fit (``--fit SPEC``: the specification is run first, and its estimates replace the model file's values).
Outcomes are named as in :data:`kinetics.analysis.OUTCOMES`, ``NAME:OUTPUT`` reading another output
(``cmax:car19_qpcr``, ``cmax:conc``).

Bad input raises a :class:`~kinetics.errors.KineticsError` (``kinetics.cli.main`` prints it on one
line and exits with status 2) or is refused by argparse (status 2); a fit that did not converge gives
status 3 after the results are written.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd

from kinetics.analysis import DEFAULT_SWEEP_OUTCOMES, OUTCOMES, POWER_MODEL_COLUMNS, omega_sds, outcome_output
from kinetics.cli import _count, _parse_dose, _parse_set
from kinetics.data import read_dataset
from kinetics.errors import DoseError, FitSpecError, KineticsError, SolverInputError, did_you_mean
from kinetics.fit import read_fit_spec, run_fit_spec
from kinetics.model import read_model_file
from kinetics.solve import Dose, load_model

__all__ = ["add_analysis_commands", "cmd_dose_sweep", "cmd_nca", "cmd_recovery", "cmd_sensitivity"]

#: Sensitivity methods of ``kinetics sensitivity``.
SENSITIVITY_METHODS = ("local", "sobol", "morris")
#: Dose grids of ``kinetics dose-sweep``.
SWEEP_GRIDS = ("factorial", "one-at-a-time")
_NCA_SHOWN = ("id", "output", "cmax", "tmax", "auc_0_28", "auc_0_84", "tlast", "clast", "half_life", "n_samples",
              "n_blq")


# -- argument types (argparse prefixes their messages with the option) ----------------------------
def _number(text: str, *, minimum: float, strict: bool) -> float:
    try:
        x = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (math.isfinite(x) and (x > minimum if strict else x >= minimum)):
        sign = ">" if strict else ">="
        raise argparse.ArgumentTypeError(f"expected a finite number {sign} {minimum:g}, got {text!r}")
    return x


def _positive(text: str) -> float:
    """A finite number > 0 (a threshold, an LLOQ, a time horizon)."""
    return _number(text, minimum=0.0, strict=True)


def _non_negative(text: str) -> float:
    """A finite number >= 0 (days a recovery must last)."""
    return _number(text, minimum=0.0, strict=False)


def _count_at_least(minimum: int) -> Callable[[str], int]:
    """A whole number (as ``kinetics.cli._count``) of at least ``minimum``."""
    def parse(text: str) -> int:
        n = _count(text)
        if n < minimum:
            raise argparse.ArgumentTypeError(f"expected at least {minimum}, got {n}")
        return n
    return parse


def _power_of_two(text: str) -> int:
    """Sobol' base sample size: a power of 2, at least 2 (the sequence is balanced only then)."""
    n = _count(text)
    if n < 2 or n & (n - 1):
        lower = 1 << max(1, n.bit_length() - 1)
        raise argparse.ArgumentTypeError(f"expected a power of 2 (>= 2), got {n}; e.g. {lower} or {lower * 2}")
    return n


def _list(text: str) -> list[str]:
    items = [t.strip() for t in text.split(",")]
    if not text.strip() or any(not t for t in items):
        raise argparse.ArgumentTypeError(f"expected a comma-separated list without empty items, got {text!r}")
    return items


def _days(text: str) -> tuple[float, ...]:
    """Comma-separated positive times, e.g. ``90,180,365``."""
    return tuple(_positive(t) for t in _list(text))


def _names(text: str) -> tuple[str, ...]:
    """Comma-separated names, e.g. ``dM_19,kmax_19``."""
    return tuple(_list(text))


def _dose_levels(text: str) -> tuple[str, tuple[float, ...]]:
    """``TARGET=A,B,C``: a dose target and its amounts (>= 0; 0 = that product not given)."""
    target, sep, amounts = text.partition("=")
    if not sep or not target.strip():
        raise argparse.ArgumentTypeError(f"expected TARGET=AMOUNT[,AMOUNT...] (e.g. car19=1e7,3e7,1e8), got {text!r}")
    try:
        values = tuple(_non_negative(a) for a in _list(amounts))
    except argparse.ArgumentTypeError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: amounts must be numbers >= 0 ({exc})") from None
    if len(set(values)) != len(values):
        raise argparse.ArgumentTypeError(f"{text!r}: an amount is given twice")
    return target.strip(), values


def _dose_reference(text: str) -> tuple[str, float]:
    """``TARGET=AMOUNT``: the amount a target is held at."""
    target, values = _dose_levels(text)
    if len(values) != 1:
        raise argparse.ArgumentTypeError(f"expected one amount, TARGET=AMOUNT, got {text!r}")
    return target, values[0]


def _outcome(text: str) -> tuple[str, str | partial]:
    """``NAME`` or ``NAME:OUTPUT``: (label, outcome for kinetics.analysis), the outcome reading OUTPUT if given."""
    name, sep, output = text.strip().partition(":")
    if name not in OUTCOMES:
        raise argparse.ArgumentTypeError(f"unknown outcome {name!r}{did_you_mean(name, OUTCOMES)}; known: "
                                         f"{', '.join(OUTCOMES)}")
    if sep and not output:
        raise argparse.ArgumentTypeError(f"expected NAME:OUTPUT, got {text!r}")
    return text.strip(), (partial(OUTCOMES[name], output=output) if output else name)


def _outcomes(text: str) -> dict[str, str | partial]:
    """Comma-separated outcomes, each ``NAME`` or ``NAME:OUTPUT``."""
    return dict(_outcome(t) for t in _list(text))


# -- shared steps -----------------------------------------------------------------------------------
def _note(text: str) -> None:
    print(f"kinetics: note: {text}", file=sys.stderr)


def _doses(model, doses: Sequence[Dose] | None) -> list[Dose]:
    """The ``--dose`` schedule, checked against the model; required when the model takes doses."""
    doses = list(doses or [])
    targets = model.dose_target_names
    if not doses and targets:
        scenario = model.model.metadata.get("default_scenario")
        raise DoseError(f"model '{model.name}' takes doses into {', '.join(targets)}: give --dose TIME:AMOUNT:TARGET "
                        f"(e.g. --dose 0:AMOUNT:{targets[0]})" + (f"; its default scenario: {scenario}" if scenario
                                                                  else ""))
    _check_targets(model, [d.target for d in doses], "--dose")
    return doses


def _check_targets(model, targets: Sequence[str], option: str) -> None:
    names = model.dose_target_names
    for t in targets:
        if t not in names:
            raise DoseError(f"{option}: '{t}' is not a dose target of model '{model.name}'{did_you_mean(t, names)} "
                            f"(targets: {', '.join(names) or 'none'})")


def _check_output(model, output: str | None) -> None:
    if output is not None and output not in model.output_names:
        raise SolverInputError(f"--output: model '{model.name}' has no output '{output}'"
                               f"{did_you_mean(output, model.output_names)} (outputs: {', '.join(model.output_names)})")


def _run_fit(args: argparse.Namespace, model):
    """``--fit SPEC``: run the population fit specification of ``model``; (fit, its dataset), or (None, None)."""
    if args.fit is None:
        return None, None
    if args.set:
        raise KineticsError("--set cannot be combined with --fit: the fit's estimates are the typical values")
    spec = read_fit_spec(args.fit)
    if spec.method == "individual":
        raise FitSpecError(f"{spec.path}: --fit needs a population fit (method 'individual' estimates no "
                           "between-subject variability)")
    fitted = read_model_file(spec.model_file).name
    if fitted != model.name:
        raise FitSpecError(f"{spec.path}: the specification fits model '{fitted}', not '{model.name}'")
    print(f"fitting '{spec.model}' to {spec.data} by {spec.method} ({spec.path})", file=sys.stderr, flush=True)
    fit = run_fit_spec(spec, progress=False)
    print(fit.summary(), file=sys.stderr)
    if not fit.success:
        _note(f"the fit did not converge ({fit.message}); its estimates are used all the same (exit status 3)")
    return fit, read_dataset(spec.data)


def _status(fit) -> int:
    return 3 if fit is not None and not fit.success else 0


def _typical(args: argparse.Namespace, fit) -> dict[str, float]:
    """Typical parameter values: the fit's estimates with ``--fit``, else ``--set`` over the model file's."""
    return dict(fit.typical_parameters or fit.theta) if fit is not None else dict(args.set or [])


def _variability(model, fit, *, required: bool) -> dict[str, float]:
    """Variances (omega) of the log-normal between-subject variability: the fit's omega, else the squares of
    the model file's iiv SDs."""
    iiv = {}
    for k, s in (model.model.metadata.get("iiv") or {}).items():
        try:
            iiv[k] = float(s) ** 2
        except (TypeError, ValueError):
            raise SolverInputError(f"model '{model.name}': [metadata] iiv['{k}'] must be a number (SD of eta), "
                                   f"got {s!r}") from None
    sds = omega_sds(fit)[0] if fit is not None else omega_sds(iiv)[0]
    omega = {k: s * s for k, s in sds.items() if s > 0}
    if required and not omega:
        where = ("the fit has no random effects" if fit is not None
                 else f"model '{model.name}' suggests none ([metadata] iiv in its file)")
        raise SolverInputError(f"virtual patients need between-subject variability, and {where}; pass --fit SPEC, "
                               "a population fit specification of the model")
    return omega


def _variability_text(omega: Mapping[str, float], fit) -> str:
    source = "the fit's omega" if fit is not None else "the model file's iiv"
    return f"{source} (SD of eta): " + ", ".join(f"{k} {math.sqrt(v):g}" for k, v in omega.items())


def _check_outputs(model, outcomes: Mapping[str, str | partial]) -> None:
    """Every outcome reads an output the model has (else: name one as NAME:OUTPUT)."""
    for label, spec in outcomes.items():
        output = outcome_output(spec)
        if output is not None and output not in model.output_names:
            raise SolverInputError(f"outcome '{label}' reads output '{output}', which model '{model.name}' does not "
                                   f"have; name one as {label.partition(':')[0]}:OUTPUT (outputs: "
                                   f"{', '.join(model.output_names)})")


def _check_parameters(model, names: Sequence[str]) -> None:
    for n in names:
        if n not in model.parameter_names:
            raise SolverInputError(f"--params: unknown parameter '{n}' for model '{model.name}'"
                                   f"{did_you_mean(n, model.parameter_names)}")


def _show(frame: pd.DataFrame, columns: Sequence[str] | None = None) -> None:
    shown = frame if columns is None else frame[[c for c in columns if c in frame.columns]]
    print(shown.to_string(index=False, float_format=lambda x: f"{x:.5g}"))


def _write(out: Path, tables: Mapping[str, pd.DataFrame], figures: Mapping[str, Callable[[], object]] | None = None
           ) -> None:
    """Write CSV tables and PNG figures (drawn by the callables) to ``out`` (created if missing), printing each
    path to stderr. A figure that cannot be drawn is a note, not a failure."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        for name, frame in tables.items():
            frame.to_csv(out / name, index=False)
            print(f"wrote {out / name}", file=sys.stderr)
        for name, draw in (figures or {}).items():
            try:
                fig = draw()
            except ValueError as exc:
                _note(f"figure {name} not drawn: {exc}")
                continue
            fig.savefig(out / name, dpi=120)
            print(f"wrote {out / name}", file=sys.stderr)
    except OSError as exc:
        raise KineticsError(f"cannot write results to {out}: {exc}") from None


# -- kinetics nca -------------------------------------------------------------------------------------
def cmd_nca(args: argparse.Namespace) -> int:
    """``kinetics nca SOURCE``: exposure metrics (Cmax, Tmax, AUC(0-28), AUC(0-84), Tlast, half-life, ...) per
    subject of a dataset (CSV), or of a model's predicted profile (library name or .toml). Writes ``nca.csv``
    (and for a dataset the figure ``nca.png``)."""
    from kinetics.analysis import nca_from_model, nca_table

    if Path(args.source).suffix.lower() == ".csv":
        given = [o for o, v in (("--dose", args.dose), ("--set", args.set), ("--until", args.until),
                                ("--step", args.step)) if v is not None]
        if given:
            raise KineticsError(f"{', '.join(given)}: for a model, not for a dataset ({args.source})")
        data = read_dataset(args.source)
        table = nca_table(data, args.output, lloq=args.lloq)
        output = args.output or data.output_names()[0]
        figures = {"nca.png": lambda: _exposure_figure(table, output)}
    else:
        model = load_model(args.source)
        _check_output(model, args.output)
        r = nca_from_model(model, params=dict(args.set or []), doses=_doses(model, args.dose), output=args.output,
                           until=84.0 if args.until is None else args.until,
                           step=0.01 if args.step is None else args.step, lloq=args.lloq)
        output = args.output or model.output_names[0]
        table = pd.DataFrame([{"id": model.name, **r.to_dict()}])
        table.attrs["rules"] = r.rules
        figures = {}
    table.insert(1, "output", output)
    _show(table, _NCA_SHOWN)
    print(f"rules: {table.attrs.get('rules', '')}")
    noted = [n for n in table["notes"] if n]
    if len(noted) == 1 and len(table) == 1:
        _note(noted[0])
    elif noted:
        _note(f"{len(noted)} of {len(table)} subjects have notes (the notes column of nca.csv), e.g. {noted[0]}")
    _write(Path(args.out), {"nca.csv": table}, figures)
    return 0


def _exposure_figure(table: pd.DataFrame, output: str):
    from kinetics.plot import plot_exposure_table

    return plot_exposure_table({output: table})


# -- kinetics recovery ----------------------------------------------------------------------------------
def cmd_recovery(args: argparse.Namespace) -> int:
    """``kinetics recovery MODEL --dose ...``: when the B cells come back, for the typical patient and as the
    distribution over new patients (and, with ``--fit``, for each fitted patient with an interval)."""
    from kinetics.analysis import b_cell_recovery_time, recovery_distribution

    model = load_model(args.model)
    doses = _doses(model, args.dose)
    _check_output(model, args.output)
    fit, data = _run_fit(args, model)
    params = _typical(args, fit)
    omega = _variability(model, fit, required=True)
    rule = dict(threshold=args.threshold, relative_to_baseline=args.relative, sustained_days=args.sustained_days,
                output=args.output, until=args.until)
    typical = b_cell_recovery_time(model, params=params, doses=doses, **rule)
    dist = recovery_distribution(model, doses, fit=fit, params=params, omega=omega,
                                 n_patients=args.n_patients, seed=args.seed, **rule)
    unit = model.model.time_unit
    quantiles = pd.DataFrame(list(dist.quantiles().items()), columns=["quantile", "time"])
    probability = pd.DataFrame(list(dist.probability_recovered_by(args.days).items()), columns=["day", "probability"])
    times = pd.DataFrame({"patient": np.arange(dist.times.size), "time": dist.times,
                          "recovered": dist.times < dist.until})
    print(_typical_text(typical, args.until, unit))
    print(f"new patients ({args.n_patients}, seed {args.seed}; variability from {_variability_text(omega, fit)}):")
    _show(quantiles)
    for day, p in zip(probability["day"], probability["probability"]):
        print(f"  P(recovered by {unit} {day:g}) = {p:.3f}")
    print(f"rule: {dist.rule}")
    failed = int(np.isnan(dist.times).sum())
    if failed:
        _note(f"{failed} of {dist.times.size} simulated patients could not be solved (nan; the quantiles are nan)")
    tables = {"recovery_typical.csv": _typical_frame(typical), "recovery_quantiles.csv": quantiles,
              "recovery_probability.csv": probability, "recovery_times.csv": times}
    figures = {"recovery.png": partial(_recovery_figure, dist, args.days, unit)}
    if fit is not None:
        tables["recovery_patients.csv"], draw = _patient_recovery(fit, model, data, dist, args, unit)
        if draw is not None:
            figures["recovery_patients.png"] = draw
    _write(Path(args.out), tables, figures)
    return _status(fit)


def _typical_text(r, until: float, unit: str) -> str:
    if not r.depleted:
        return f"typical patient: {r.output} never falls below {r.level:g} (nothing to recover from)"
    if r.time is None:
        return f"typical patient: {r.output} has not recovered to {r.level:g} by {unit} {until:g}"
    return (f"typical patient: {r.output} back to {r.level:g} at {unit} {r.time:.4g} (nadir {r.nadir_value:.3g} at "
            f"{unit} {r.nadir_time:.4g})")


def _typical_frame(r) -> pd.DataFrame:
    return pd.DataFrame([{"time": math.nan if r.time is None else r.time, "recovered": r.recovered,
                          "depleted": r.depleted, "nadir_time": r.nadir_time, "nadir_value": r.nadir_value,
                          "level": r.level, "baseline": r.baseline, "output": r.output, "rule": r.rule}])


def _recovery_figure(dist, days: Sequence[float], unit: str):
    from kinetics.plot import plot_recovery_distribution

    return plot_recovery_distribution(dist, days=days, time_unit=unit)


def _patient_recovery(fit, model, data, dist, args: argparse.Namespace, unit: str):
    """Each fitted patient's predicted recovery with its interval, beside the observed visit interval (the
    table), and the figure of both (None with ``--relative``: the observed intervals need an absolute level)."""
    from kinetics.analysis import observed_recovery_intervals, predict_patient_recovery

    predicted = predict_patient_recovery(fit, model, data, threshold=args.threshold,
                                         relative_to_baseline=args.relative, sustained_days=args.sustained_days,
                                         output=args.output, until=args.until, seed=args.seed)
    if args.relative:
        _note("--relative: the observed recovery intervals are not computed (they need an absolute threshold)")
        return predicted, None
    observed = observed_recovery_intervals(data, output=args.output, threshold=args.threshold)
    obs = observed.rename(columns={"left": "observed_left", "right": "observed_right", "status": "observed_status"})
    merged = predicted.assign(ID=predicted["ID"].astype(str)).merge(obs.assign(ID=obs["ID"].astype(str)), on="ID",
                                                                      how="left")

    def draw():
        from kinetics.plot import plot_recovery_comparison

        return plot_recovery_comparison(predicted, observed, distribution=dist, time_unit=unit)
    return merged, draw


# -- kinetics dose-sweep ---------------------------------------------------------------------------------
def cmd_dose_sweep(args: argparse.Namespace) -> int:
    """``kinetics dose-sweep MODEL --doses TARGET=A,B,C``: outcomes of one virtual population (common random
    numbers) at each dose level: percentiles per level and the dose-proportionality power model."""
    from kinetics.analysis import default_sweep_outcomes, dose_sweep

    model = load_model(args.model)
    _check_targets(model, [t for t, _ in args.doses], "--doses")
    _check_targets(model, [t for t, _ in args.reference or []], "--reference")
    levels, reference = _sweep_levels(args.doses, args.reference or [], args.grid)
    outcomes = args.outcomes or default_sweep_outcomes(model)
    if not outcomes:
        raise SolverInputError(f"model '{model.name}' has no outputs to sweep; give --outcomes")
    _check_outputs(model, outcomes)
    fit, _ = _run_fit(args, model)
    params = _typical(args, fit)
    omega = _variability(model, fit, required=True)
    n_levels = len(levels) if isinstance(levels, list) else math.prod(len(v) for v in levels.values())
    print(f"dose sweep of '{model.name}': {n_levels} dose level{'s' if n_levels != 1 else ''} x {args.n_patients} "
          f"virtual patients, {len(outcomes)} outcomes; variability from {_variability_text(omega, fit)}",
          file=sys.stderr, flush=True)
    sweep = dose_sweep(model, levels, outcomes=outcomes, n_patients=args.n_patients, params=params,
                       omega=omega, fit=fit, seed=args.seed, progress=True)
    varied = tuple(t for t in sweep.targets if sweep.values[t].nunique() > 1)
    power, notes = sweep.power_models(varied) if varied else (pd.DataFrame(columns=list(POWER_MODEL_COLUMNS)), [])
    medians = sweep.summary.pivot_table(index=["level", *sweep.targets], columns="outcome", values="median",
                                        sort=False).reset_index()
    print("median outcome per dose level (5th and 95th percentiles in dose_sweep_summary.csv):")
    _show(medians)
    if len(power):
        print("power model log(outcome) = a + b log(dose), within patients (b = 1: dose-proportional):")
        _show(power)
    for n in notes:
        _note(n)
    _write(Path(args.out), {"dose_sweep_values.csv": sweep.values, "dose_sweep_summary.csv": sweep.summary,
                            "power_model.csv": power},
           _sweep_figures(sweep, varied or sweep.targets[:1], reference, args.grid))
    return _status(fit)


def _sweep_levels(doses: Sequence[tuple[str, tuple[float, ...]]], reference: Sequence[tuple[str, float]], grid: str
                  ) -> tuple[dict[str, list[float]] | list[dict[str, float]], dict[str, float]]:
    """The levels for :func:`kinetics.analysis.dose_sweep` (factorial: target -> amounts; one-at-a-time: a
    list of levels, each varying one target with the others at their reference), and the reference amounts."""
    swept = dict(doses)
    fixed = dict(reference)
    for what, pairs in (("--doses", doses), ("--reference", reference)):
        names = [t for t, _ in pairs]
        twice = sorted({t for t in names if names.count(t) > 1})
        if twice:
            raise SolverInputError(f"{what}: target {', '.join(twice)} is given twice")
    if grid == "factorial":
        both = sorted(set(swept) & set(fixed))
        if both:
            raise SolverInputError(f"--reference {', '.join(both)}: also in --doses; with --grid factorial a target "
                                   "is either swept (--doses) or held (--reference)")
        return {**{t: list(v) for t, v in swept.items()}, **{t: [a] for t, a in fixed.items()}}, fixed
    held = {t: fixed.get(t, sorted(v)[(len(v) - 1) // 2]) for t, v in swept.items()}
    held.update(fixed)
    levels: list[dict[str, float]] = []
    for t, amounts in swept.items():
        for a in amounts:
            level = {**held, t: a}
            if level not in levels:
                levels.append(level)
    return levels, held


def _sweep_figures(sweep, varied: Sequence[str], reference: Mapping[str, float], grid: str
                   ) -> dict[str, Callable[[], object]]:
    """One figure per varied target (``dose_sweep.png`` when only one varies): factorial, the other targets'
    levels as separate lines; one-at-a-time, the other targets at their reference."""
    from kinetics.plot import plot_dose_sweep

    figures = {}
    for t in varied:
        shown = sweep if grid == "factorial" else _along(sweep, t, reference)
        figures["dose_sweep.png" if len(varied) == 1 else f"dose_sweep_{t}.png"] = partial(plot_dose_sweep, shown,
                                                                                           target=t)
    return figures


def _along(sweep, target: str, reference: Mapping[str, float]):
    """The part of a sweep where only ``target`` moves (every other target at its reference amount)."""
    others = [o for o in sweep.targets if o != target]
    if not others:
        return sweep

    def keep(frame: pd.DataFrame) -> pd.DataFrame:
        return frame[np.all([frame[o].to_numpy() == reference[o] for o in others], axis=0)]
    return dataclasses.replace(sweep, values=keep(sweep.values), summary=keep(sweep.summary))


# -- kinetics sensitivity ----------------------------------------------------------------------------------
def cmd_sensitivity(args: argparse.Namespace) -> int:
    """``kinetics sensitivity MODEL --outcome NAME``: which parameters drive an outcome. ``local``: elasticities
    at the typical values and a tornado over the between-subject ranges; ``sobol``: Sobol' first-order and
    total indices; ``morris``: Morris screening (the global methods vary the parameters log-normally with
    the between-subject SDs)."""
    model = load_model(args.model)
    doses = _doses(model, args.dose)
    label, outcome = args.outcome
    _check_outputs(model, {label: outcome})
    if args.params:
        _check_parameters(model, args.params)
    fit, _ = _run_fit(args, model)
    params = _typical(args, fit)
    omega = _variability(model, fit, required=args.method != "local")
    if args.params:
        missing = [p for p in args.params if p not in omega]
        if missing and args.method == "local" and omega:
            _note(f"tornado: {', '.join(missing)} left out (no between-subject variability to set a range)")
        elif missing and args.method != "local":
            raise SolverInputError(f"--params {', '.join(missing)}: no between-subject variability to vary "
                                   f"{'it' if len(missing) == 1 else 'them'} by (omega is given for: "
                                   f"{', '.join(omega) or 'none'})")
        omega = {p: omega[p] for p in args.params if p in omega}
    run = {"local": _local, "sobol": _sobol, "morris": _morris}[args.method]
    tables, figures = run(model, outcome, label, params, doses, omega, args)
    _write(Path(args.out), tables, figures)
    return _status(fit)


def _local(model, outcome, label: str, params, doses, omega, args):
    from kinetics.analysis import outcome_elasticities, tornado

    el = outcome_elasticities(model, outcome, params=params, doses=doses, wrt=args.params)
    print(f"elasticities d log({label}) / d log(parameter) at the typical values ({label} = "
          f"{el['outcome'].iloc[0]:.5g}):")
    _show(el, ["wrt", "kind", "value", "elasticity"])
    tables, figures = {"elasticities.csv": el}, {}
    if not omega:
        _note("tornado skipped: no between-subject variability to set the ranges (pass --fit SPEC, or a model with "
              "[metadata] iiv)")
        return tables, figures
    tor = tornado(model, outcome, omega=omega, params=params, doses=doses)
    print(f"tornado of {label}: each parameter at the 5th and 95th percentile of its between-subject range:")
    _show(tor, ["parameter", "low", "high", "outcome_low", "outcome_high", "swing"])
    tables["tornado.csv"] = tor

    def draw():
        from kinetics.plot import plot_tornado

        return plot_tornado(tor, outcome=label)
    figures["tornado.png"] = draw
    return tables, figures


def _sobol(model, outcome, label: str, params, doses, omega, args):
    from kinetics.analysis import sobol_indices

    print(f"Sobol' indices of {label}: N = {args.n_base}, {len(omega)} inputs, {args.n_base * (len(omega) + 2)} model "
          "runs", file=sys.stderr, flush=True)
    r = sobol_indices(model, outcome=outcome, doses=doses, params=params, omega=omega, n_base=args.n_base,
                      rng=args.seed)
    print(r.summary())

    def draw():
        from kinetics.plot import plot_sobol

        return plot_sobol(r)
    return {"sobol.csv": r.to_frame()}, {"sobol.png": draw}


def _morris(model, outcome, label: str, params, doses, omega, args):
    from kinetics.analysis import morris_screening

    print(f"Morris screening of {label}: {args.trajectories} trajectories, {len(omega)} inputs, "
          f"{args.trajectories * (len(omega) + 1)} model runs", file=sys.stderr, flush=True)
    r = morris_screening(model, outcome=outcome, doses=doses, params=params, omega=omega,
                         n_trajectories=args.trajectories, rng=args.seed)
    print(r.summary())
    return {"morris.csv": r.to_frame()}, {}


# -- argument parsers ---------------------------------------------------------------------------------------
def add_analysis_commands(subparsers) -> None:
    """Register ``nca``, ``recovery``, ``dose-sweep`` and ``sensitivity`` on the ``kinetics`` subparsers."""
    _add_nca(subparsers)
    _add_recovery(subparsers)
    _add_dose_sweep(subparsers)
    _add_sensitivity(subparsers)


def _add_model_options(p: argparse.ArgumentParser, *, dose: bool = True, fit: bool = True) -> None:
    if dose:
        p.add_argument("--dose", action="append", type=_parse_dose, metavar="TIME:AMOUNT:TARGET[:DURATION]",
                       help="a dose (repeat for several); needed when the model takes doses")
    p.add_argument("--set", action="append", type=_parse_set, metavar="NAME=VALUE",
                   help="override a typical parameter value")
    if fit:
        p.add_argument("--fit", metavar="SPEC", help="population fit specification (TOML): run it and use its "
                                                     "estimates and omega instead of the model file's values and iiv")


def _add_population_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--n-patients", type=_count_at_least(1), default=1000, metavar="N",
                   help="virtual patients (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the virtual patients (default 0)")


def _add_out(p: argparse.ArgumentParser, command: str) -> None:
    p.add_argument("--out", default=f"out/{command}", metavar="DIR",
                   help=f"output folder, created if missing (default out/{command})")


def _add_nca(sub) -> None:
    p = sub.add_parser("nca", help="exposure metrics (Cmax, Tmax, AUC0-28, ...) of a dataset or a model profile",
                       description="Non-compartmental exposure metrics: per subject of a dataset (NONMEM-style CSV) "
                                   "or of a model's predicted profile. Writes nca.csv (and nca.png for a dataset).")
    p.add_argument("source", metavar="SOURCE", help="dataset (.csv) or model (library name or .toml file)")
    p.add_argument("--output", metavar="NAME", help="the output measured/predicted (needed when there are several)")
    p.add_argument("--lloq", type=_positive, help="lower limit of quantification (level unit); samples below are BLQ")
    _add_model_options(p, fit=False)
    p.add_argument("--until", type=_positive, help="model only: last time of the prediction grid (default 84)")
    p.add_argument("--step", type=_positive, help="model only: step of the prediction grid (default 0.01)")
    _add_out(p, "nca")
    p.set_defaults(func=cmd_nca)


def _add_recovery(sub) -> None:
    p = sub.add_parser("recovery", help="B-cell recovery time: typical patient, new-patient distribution",
                       description="When an output (B cells) comes back after its nadir: the typical patient, the "
                                   "distribution over simulated new patients and, with --fit, each fitted patient. "
                                   "Writes recovery_typical.csv, recovery_quantiles.csv, recovery_probability.csv, "
                                   "recovery_times.csv, recovery.png (and recovery_patients.csv/.png with --fit).")
    p.add_argument("model", metavar="MODEL", help="library name or .toml file")
    _add_model_options(p)
    p.add_argument("--output", default="bcells", metavar="NAME", help="output that recovers (default bcells)")
    p.add_argument("--threshold", type=_positive, default=1.0,
                   help="recovery level in the output's unit (default 1 cell/uL), or a fraction of baseline with "
                        "--relative")
    p.add_argument("--relative", action="store_true", help="--threshold is a fraction of the pre-treatment level")
    p.add_argument("--sustained-days", type=_non_negative, default=0.0, metavar="N",
                   help="the level must hold this long (default 0: the first crossing counts)")
    p.add_argument("--until", type=_positive, default=1095.0, help="search horizon (default 1095 days)")
    p.add_argument("--days", type=_days, default=(90.0, 180.0, 365.0), metavar="D1,D2,...",
                   help="times for P(recovered by then) (default 90,180,365)")
    _add_population_options(p)
    _add_out(p, "recovery")
    p.set_defaults(func=cmd_recovery)


def _add_dose_sweep(sub) -> None:
    p = sub.add_parser("dose-sweep", help="outcomes of a virtual population over a grid of doses",
                       description="One virtual population given every dose level (common random numbers): "
                                   "percentiles of each outcome per level and the power-model slope per outcome and "
                                   "product. Writes dose_sweep_values.csv, dose_sweep_summary.csv, power_model.csv "
                                   "and dose_sweep.png (one dose_sweep_TARGET.png per product when several vary).")
    p.add_argument("model", metavar="MODEL", help="library name or .toml file")
    p.add_argument("--doses", action="append", type=_dose_levels, required=True, metavar="TARGET=A,B,C",
                   help="amounts of one product, each a bolus at time 0 (repeat for each product)")
    p.add_argument("--grid", choices=SWEEP_GRIDS, default="factorial",
                   help="factorial: every combination of the products' amounts (default); one-at-a-time: one "
                        "product varies while the others stay at their reference")
    p.add_argument("--reference", action="append", type=_dose_reference, metavar="TARGET=AMOUNT",
                   help="amount a product is held at (one-at-a-time default: the middle of its --doses list); a "
                        "product given only here is held at it in every level")
    p.add_argument("--outcomes", type=_outcomes, metavar="NAME[:OUTPUT],...",
                   help=f"outcomes, each a name in kinetics.analysis.OUTCOMES, :OUTPUT reading another output "
                        f"(default: those of {', '.join(DEFAULT_SWEEP_OUTCOMES)} whose outputs the model has, else "
                        "cmax and auc_0_28 of its first output)")
    _add_model_options(p, dose=False)
    _add_population_options(p)
    _add_out(p, "dose-sweep")
    p.set_defaults(func=cmd_dose_sweep)


def _add_sensitivity(sub) -> None:
    p = sub.add_parser("sensitivity", help="which parameters drive an outcome: local, Sobol' or Morris",
                       description="local: elasticities and a tornado over the between-subject ranges "
                                   "(elasticities.csv, tornado.csv, tornado.png); sobol: first-order and total "
                                   "Sobol' indices (sobol.csv, sobol.png); morris: Morris screening (morris.csv).")
    p.add_argument("model", metavar="MODEL", help="library name or .toml file")
    p.add_argument("--method", choices=SENSITIVITY_METHODS, default="local",
                   help="local (default): elasticities and tornado; sobol: Sobol' indices; morris: Morris screening")
    p.add_argument("--outcome", type=_outcome, required=True, metavar="NAME[:OUTPUT]",
                   help=f"one of {', '.join(OUTCOMES)}; :OUTPUT reads another output")
    _add_model_options(p)
    p.add_argument("--params", type=_names, metavar="A,B,...",
                   help="parameters to analyse (default: local, all for the elasticities; global, all with a "
                        "between-subject SD)")
    p.add_argument("--n-base", type=_power_of_two, default=1024, metavar="N",
                   help="sobol: base samples N, a power of 2 (N (d + 2) model runs; default 1024)")
    p.add_argument("--trajectories", type=_count_at_least(2), default=20, metavar="R",
                   help="morris: trajectories r (r (d + 1) model runs; default 20)")
    p.add_argument("--seed", type=int, default=0, help="seed of the global designs (default 0)")
    _add_out(p, "sensitivity")
    p.set_defaults(func=cmd_sensitivity)
