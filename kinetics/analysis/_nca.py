"""Non-compartmental exposure metrics for CAR-T (Cmax, Tmax, AUC(0-28 d), Tlast, Tbql, half-life, ...).

Computed from observations (one profile, or one row per subject of a :class:`~kinetics.data.Dataset`)
or from model predictions on a dense grid. Every rule (BLQ handling, AUC method, half-life point
selection, fold expansion) is explicit, configurable where the field differs, and written into the
result's ``rules`` text.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace
from typing import TYPE_CHECKING

import numpy as np

from kinetics.data import CENSORED_LEFT, CENSORED_RIGHT, Dataset
from kinetics.errors import DatasetError, SolverInputError
from kinetics.solve import CompiledModel, Dose

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = ["AUC_METHODS", "BLQRule", "NCAResult", "nca", "nca_from_model", "nca_table"]

#: AUC integration rules: "linear" trapezoid everywhere, or linear where the level rises or stays and
#: logarithmic where it falls between two positive levels (PKNCA "lin up/log down", Phoenix
#: "Linear Up Log Down").
AUC_METHODS = ("linear-up/log-down", "linear")

#: Exposure windows (time unit of the data: days by the package convention).
WINDOWS = (28.0, 84.0)

# Half-life point selection (PKNCA ``adj.r.squared.factor``, Phoenix WinNonlin "best fit"): among the
# regressions within this distance of the best adjusted R^2, the one with the most points wins.
_ADJ_R2_TOLERANCE = 1e-4

_FIRST = ("zero", "exclude")
_MIDDLE = ("exclude", "half_lloq")
_LAST = ("exclude", "zero")


@dataclass(frozen=True)
class BLQRule:
    """How below-LLOQ (BLQ) samples enter the AUC, by where they lie.

    Attributes
    ----------
    first
        BLQ samples before the first quantifiable one: ``"zero"`` (default; counted as 0) or
        ``"exclude"``.
    middle
        BLQ samples between quantifiable ones: ``"exclude"`` (default; the AUC joins the
        neighbouring quantifiable samples) or ``"half_lloq"`` (counted as LLOQ/2).
    last
        BLQ samples after the last quantifiable one: ``"exclude"`` (default; the profile ends at
        Tlast, no area beyond it) or ``"zero"`` (counted as 0, so the AUC falls linearly to 0 at
        the first such sample and windows ending later are covered).

    Notes
    -----
    PKNCA's defaults (``conc.blq = list(first="keep", middle="drop", last="keep")``, PKNCA 0.10-0.12)
    agree for ``first`` and ``middle``; for ``last`` PKNCA keeps trailing BLQ as 0. That changes
    only areas past Tlast (PKNCA's AUCall, and here AUC windows ending after Tlast): here such a
    window is nan by default rather than closed with an assumed zero.
    """

    first: str = "zero"
    middle: str = "exclude"
    last: str = "exclude"

    def __post_init__(self) -> None:
        for name, allowed in (("first", _FIRST), ("middle", _MIDDLE), ("last", _LAST)):
            value = getattr(self, name)
            if value not in allowed:
                raise SolverInputError(f"blq_rule {name}={value!r} is not allowed; choose one of "
                                       f"{', '.join(repr(a) for a in allowed)}")

    def describe(self) -> str:
        """The rule in words."""
        words = {"zero": "0", "exclude": "excluded", "half_lloq": "LLOQ/2"}
        return (f"BLQ before the first quantifiable sample -> {words[self.first]}; between quantifiable samples -> "
                f"{words[self.middle]}; after the last quantifiable sample -> {words[self.last]}")


@dataclass(frozen=True)
class NCAResult:
    """Exposure metrics of one profile (levels in the data unit, times in the time unit, days for CAR-T).

    Attributes
    ----------
    cmax, tmax
        Highest quantifiable level at or after time 0, and its (first) time. Observed, not interpolated.
    auc_0_28, auc_0_84
        Area under the curve from 0 to 28 and to 84 (level x time). nan when the profile (after the
        BLQ rule) ends before the window does; ``notes`` says why. No extrapolation.
    auc_0_last
        Area from 0 to ``tlast``.
    clast, tlast
        Last quantifiable level and its time.
    tbql
        First time after ``tmax`` of a sample below the LLOQ (nan if none).
    fold_expansion
        ``cmax`` / first quantifiable level at or after time 0, or ``cmax`` / ``baseline`` when a
        baseline is given (see ``rules``).
    half_life, lambda_z, r2_adj, n_points_half_life, half_life_start, half_life_end
        Terminal half-life ln 2 / lambda_z from the log-linear regression of the points chosen by the
        rule in ``rules``, its adjusted R^2, number of points and time range (nan / 0 when not estimable).
    dose, cmax_per_dose, auc_0_28_per_dose
        The dose given to :func:`nca` and the dose-normalised metrics (nan without a dose).
    n_samples, n_blq
        Samples at or after time 0, and how many of them are below the LLOQ.
    rules
        The BLQ, AUC, half-life and fold-expansion rules applied, in words.
    notes
        Why a metric is nan, and anything else a reader of the numbers should know.
    """

    cmax: float
    tmax: float
    auc_0_28: float
    auc_0_84: float
    auc_0_last: float
    clast: float
    tlast: float
    tbql: float
    fold_expansion: float
    half_life: float
    lambda_z: float
    r2_adj: float
    n_points_half_life: int
    half_life_start: float
    half_life_end: float
    dose: float
    cmax_per_dose: float
    auc_0_28_per_dose: float
    n_samples: int
    n_blq: int
    rules: str
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, object]:
        """All fields as a flat dict (``notes`` joined by '; '), one row of :func:`nca_table`."""
        d = asdict(self)
        d["notes"] = "; ".join(self.notes)
        return d

    def summary(self) -> str:
        """A few lines for people."""
        def g(x: float) -> str:
            return f"{x:.6g}"
        lines = [f"NCA: Cmax {g(self.cmax)} at Tmax {g(self.tmax)}; AUC(0-28) {g(self.auc_0_28)}, "
                 f"AUC(0-84) {g(self.auc_0_84)}, AUC(0-last) {g(self.auc_0_last)}",
                 f"  Clast {g(self.clast)} at Tlast {g(self.tlast)}; Tbql {g(self.tbql)}; "
                 f"fold expansion {g(self.fold_expansion)}",
                 f"  half-life {g(self.half_life)} (lambda_z {g(self.lambda_z)}, adj. R^2 {g(self.r2_adj)}, "
                 f"{self.n_points_half_life} points from t={g(self.half_life_start)} to {g(self.half_life_end)})",
                 f"  {self.n_samples} samples, {self.n_blq} below LLOQ",
                 f"  rules: {self.rules}"]
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (f"<NCAResult cmax={self.cmax:.6g} tmax={self.tmax:.6g} auc_0_28={self.auc_0_28:.6g} "
                f"tlast={self.tlast:.6g} half_life={self.half_life:.6g}>")


def nca(times: Sequence[float] | np.ndarray, values: Sequence[float] | np.ndarray, *,
        lloq: float | Sequence[float] | np.ndarray | None = None,
        censored: Sequence[bool] | np.ndarray | None = None, dose: float | None = None,
        blq_rule: BLQRule | Mapping[str, str] | None = None, auc_method: str = "linear-up/log-down",
        half_life_points: int = 3, half_life_window: tuple[float, float] | None = None,
        baseline: float | None = None) -> NCAResult:
    """Non-compartmental exposure metrics of one profile.

    Parameters
    ----------
    times
        Sample times, strictly increasing (days after infusion for CAR-T; the AUC windows 28 and
        84 are in this unit). Samples before time 0 (pre-infusion) are ignored by every metric.
    values
        Levels (e.g. transgene copies/ug gDNA, cells/uL), >= 0. For a censored sample the value
        is its LLOQ (the dataset convention) unless ``lloq`` is given.
    lloq
        Lower limit of quantification: one number or one per sample. A sample is below the LLOQ
        (BLQ) when it is flagged ``censored``, when its value is below ``lloq``, or when it is 0.
    censored
        True where the sample is below the LLOQ (CENS=1 rows).
    dose
        Dose (e.g. CAR+ cells) for the dose-normalised Cmax and AUC(0-28).
    blq_rule
        :class:`BLQRule`, or a mapping with some of its fields (``{"last": "zero"}``).
    auc_method
        ``"linear-up/log-down"`` (default, as PKNCA and Phoenix) or ``"linear"``.
    half_life_points
        Minimum number of points of the automatic terminal-phase regression (>= 3).
    half_life_window
        ``(start, end)``: regress exactly the quantifiable samples with start <= t <= end instead of
        choosing points automatically (e.g. the persistence phase after contraction).
    baseline
        Level that fold expansion is relative to (e.g. the modelled R0); by default the first
        quantifiable level at or after time 0.

    Returns
    -------
    NCAResult

    Raises
    ------
    SolverInputError
        For unsorted or duplicate times, negative, nan or infinite values, mismatched lengths,
        an invalid rule, method, LLOQ, dose or window; and when ``middle="half_lloq"`` meets a
        BLQ sample whose LLOQ is unknown.

    Notes
    -----
    - Time 0 is the infusion. If there is no sample at time 0, the level there is taken as 0
      (no CAR-T cells before infusion; Phoenix does the same for extravascular doses).
    - AUC by trapezoids over the samples kept by the BLQ rule; with linear-up/log-down a falling
      segment between positive levels c1 > c2 contributes (c1 - c2) dt / ln(c1 / c2). A window
      ending between two samples is closed by interpolating the level at its end (log-linear on
      a falling segment under linear-up/log-down, linear otherwise). A window ending after the
      last kept sample is nan: nothing is extrapolated.
    - Half-life (automatic): regressions of ln(level) on time over the last n quantifiable
      samples after Tmax (Tmax itself excluded), n = ``half_life_points`` ... all; among those with
      lambda_z > 0, the ones whose adjusted R^2 is within 1e-4 of the best, and of these the one
      with the most points (PKNCA ``pk.calc.half.life``; Phoenix WinNonlin "best fit").
      adj. R^2 = 1 - (1 - R^2)(n - 1)/(n - 2).
    - Tbql is the first BLQ sample after Tmax, whatever comes later.

    References
    ----------
    Gabrielsson J, Weiner D. Pharmacokinetic and Pharmacodynamic Data Analysis, 5th ed., 2016.
    Denney W et al. PKNCA (R package), https://github.com/humanpred/pknca.

    Examples
    --------
    >>> import numpy as np
    >>> from kinetics.analysis import nca
    >>> t = np.array([0.0, 7, 14, 28, 56, 84])
    >>> r = nca(t, 100 * np.exp(-0.1 * t))
    >>> round(r.half_life, 4)
    6.9315
    """
    t, c = _vector(times, "times"), _vector(values, "values")
    if t.size != c.size:
        raise SolverInputError(f"times and values differ in length ({t.size} vs {c.size})")
    if t.size == 0:
        raise SolverInputError("no samples: times and values are empty")
    bad = np.flatnonzero(np.diff(t) <= 0)
    if bad.size:
        i = int(bad[0]) + 1
        raise SolverInputError(f"times must be strictly increasing: times[{i}] = {t[i]:g} follows "
                               f"times[{i - 1}] = {t[i - 1]:g}; sort the samples and merge replicates")
    neg = np.flatnonzero(c < 0)
    if neg.size:
        raise SolverInputError(f"values must be >= 0: values[{neg[0]}] = {c[neg[0]]:g}")
    cens = _censored(censored, t.size)
    lloq_i = _lloq(lloq, t.size)
    rule = _blq_rule(blq_rule)
    if auc_method not in AUC_METHODS:
        raise SolverInputError(f"auc_method {auc_method!r} is not known; choose one of "
                               f"{', '.join(repr(m) for m in AUC_METHODS)}")
    if isinstance(half_life_points, bool) or not isinstance(half_life_points, (int, np.integer)) \
            or half_life_points < 3:
        raise SolverInputError(f"half_life_points must be an integer >= 3, got {half_life_points!r}")
    window = _window(half_life_window)
    dose_v = _positive_or_nan(dose, "dose")
    base_v = _positive_or_nan(baseline, "baseline")
    log_down = auc_method == "linear-up/log-down"

    notes: list[str] = []
    post = t >= 0
    if not post.all():
        notes.append(f"{int((~post).sum())} sample(s) before time 0 ignored")
    t, c, cens, lloq_i = t[post], c[post], cens[post], lloq_i[post]
    if lloq is not None:   # an explicit LLOQ also holds for censored rows
        lloq_row = lloq_i
    else:                  # dataset convention: a censored row's value is its LLOQ
        lloq_row = np.where(cens, c, np.nan)
    blq = cens | (c == 0) | (c < lloq_i)   # comparisons with nan are False
    quant = ~blq
    rules = _rules_text(rule, auc_method, half_life_points, window, baseline is not None)
    empty = dict(dose=dose_v, n_samples=int(t.size), n_blq=int(blq.sum()), rules=rules)
    if not quant.any():
        notes.append("no quantifiable sample at or after time 0: no metric can be computed")
        return _nan_result(notes=tuple(notes), **empty)

    iq = np.flatnonzero(quant)
    i_first, i_last = int(iq[0]), int(iq[-1])
    i_max = int(iq[np.argmax(c[iq])])
    cmax, tmax, clast, tlast = float(c[i_max]), float(t[i_max]), float(c[i_last]), float(t[i_last])

    # Levels entering the AUC, after the BLQ rule.
    idx = np.arange(t.size)
    keep = quant.copy()
    level = np.where(quant, c, np.nan)
    before, after = blq & (idx < i_first), blq & (idx > i_last)
    middle = blq & (idx > i_first) & (idx < i_last)
    if rule.first == "zero":
        keep |= before
        level[before] = 0.0
    if rule.last == "zero":
        keep |= after
        level[after] = 0.0
    if rule.middle == "half_lloq" and middle.any():
        missing = middle & ~(lloq_row > 0)
        if missing.any():
            j = int(np.flatnonzero(missing)[0])
            raise SolverInputError(f"blq_rule middle='half_lloq' needs the LLOQ of the BLQ sample at t={t[j]:g}: "
                                   "pass lloq=, or flag it censored with its value = LLOQ")
        keep |= middle
        level[middle] = 0.5 * lloq_row[middle]
    tk, ck = t[keep], level[keep]
    if tk[0] > 0:
        tk, ck = np.concatenate(([0.0], tk)), np.concatenate(([0.0], ck))
    areas = _segment_areas(tk, ck, log_down)
    cum = np.concatenate(([0.0], np.cumsum(areas)))
    auc_last = float(cum[int(np.searchsorted(tk, tlast))])
    aucs = []
    for end in WINDOWS:
        if tk[-1] < end:
            what = "last quantifiable sample" if rule.last == "exclude" else "last sample kept by the BLQ rule"
            hint = (" (BLQ samples after Tlast are excluded by the BLQ rule; blq_rule={'last': 'zero'} counts them "
                    "as 0)" if rule.last == "exclude" and after.any() else "")
            notes.append(f"AUC(0-{end:g}) is nan: the {what} is at t={tk[-1]:g} < {end:g} and nothing is "
                         f"extrapolated{hint}")
            aucs.append(math.nan)
        else:
            aucs.append(_auc_to(tk, ck, cum, end, log_down))

    after_peak = np.flatnonzero(blq & (t > tmax))
    tbql = float(t[after_peak[0]]) if after_peak.size else math.nan
    fold = cmax / base_v if baseline is not None else cmax / float(c[i_first])

    hl = _half_life(t, c, quant, tmax, half_life_points, window, notes)
    return NCAResult(
        cmax=cmax, tmax=tmax, auc_0_28=aucs[0], auc_0_84=aucs[1], auc_0_last=auc_last, clast=clast, tlast=tlast,
        tbql=tbql, fold_expansion=fold, half_life=hl[0], lambda_z=hl[1], r2_adj=hl[2], n_points_half_life=hl[3],
        half_life_start=hl[4], half_life_end=hl[5], cmax_per_dose=cmax / dose_v, auc_0_28_per_dose=aucs[0] / dose_v,
        notes=tuple(notes), **empty)


def nca_table(dataset: Dataset, output: str | None = None, *, lloq: float | None = None,
              blq_rule: BLQRule | Mapping[str, str] | None = None, auc_method: str = "linear-up/log-down",
              half_life_points: int = 3, half_life_window: tuple[float, float] | None = None) -> pd.DataFrame:
    """Exposure metrics per subject of a dataset, one row each.

    Censored rows (CENS=1) are below the LLOQ and their DV is the LLOQ (the dataset convention);
    an explicit ``lloq`` also flags uncensored values below it. Times are the dataset's TIME
    (days from infusion by the package convention). The ``dose`` column is the subject's total
    dose amount when all its doses go to one target (nan otherwise, with a note).

    Parameters
    ----------
    dataset
        From :func:`kinetics.read_dataset`.
    output
        The OUTPUT measured (e.g. ``"car_qpcr"``); may be left out when the data has one output.
    lloq, blq_rule, auc_method, half_life_points, half_life_window
        As for :func:`nca`.

    Returns
    -------
    pandas.DataFrame
        Column ``id``, then the fields of :class:`NCAResult` (``notes`` joined by '; ').
        ``attrs["rules"]`` holds the rules text.

    Raises
    ------
    DatasetError
        Unknown output, a subject with two samples of the output at one time, a right-censored
        (CENS=-1) sample (its level is unknown above the limit), or an invalid option.
    """
    import pandas as pd  # keeps ``import kinetics`` light

    names = dataset.output_names()
    if output is None:
        if len(names) != 1:
            raise DatasetError(dataset.source, [f"the data measures {len(names)} outputs ({', '.join(names)}): "
                                                "say which one with output="])
        output = names[0]
    elif output not in names:
        raise DatasetError(dataset.source, [f"output '{output}' is not measured in the data (outputs: "
                                            f"{', '.join(names) or 'none'})"])
    rows = []
    rules = ""
    for s in dataset.subjects:
        mask = np.array([o == output for o in s.outputs], dtype=bool)
        if not mask.any():
            continue
        lines = s.lines[mask]
        right = np.flatnonzero(s.cens[mask] == CENSORED_RIGHT)
        if right.size:
            raise DatasetError(dataset.source, [f"line {lines[right[0]]}, column CENS: subject '{s.id}' has a "
                                                "right-censored sample (CENS=-1) of "
                                                f"'{output}'; NCA needs its level"])
        targets = {d.target for d in s.doses}
        dose = sum(d.amount for d in s.doses) if len(targets) == 1 else None
        try:
            r = nca(s.times[mask], s.dv[mask], lloq=lloq, censored=s.cens[mask] == CENSORED_LEFT, dose=dose,
                    blq_rule=blq_rule, auc_method=auc_method, half_life_points=half_life_points,
                    half_life_window=half_life_window)
        except SolverInputError as exc:
            raise DatasetError(dataset.source, [f"subject '{s.id}' (lines {lines[0]}-{lines[-1]}), output "
                                                f"'{output}': {exc}"]) from None
        row = {"id": s.id, **r.to_dict()}
        if len(targets) > 1:
            several = f"doses to several targets ({', '.join(sorted(targets))}): not dose-normalised"
            row["notes"] = "; ".join(filter(None, [row["notes"], several]))
        rules = r.rules
        rows.append(row)
    columns = ["id"] + [f.name for f in fields(NCAResult)]
    table = pd.DataFrame(rows, columns=columns)
    table.attrs["rules"] = rules
    return table


def nca_from_model(model: CompiledModel, times: Sequence[float] | np.ndarray | None = None,
                   params: Mapping[str, float] | np.ndarray | None = None, doses: Sequence[Dose] | None = None, *,
                   output: str | None = None, until: float = 84.0, step: float = 0.01, lloq: float | None = None,
                   blq_rule: BLQRule | Mapping[str, str] | None = None, auc_method: str = "linear-up/log-down",
                   half_life_points: int = 3, half_life_window: tuple[float, float] | None = None,
                   baseline: float | None = None, rtol: float = 1e-10, atol: float = 1e-12) -> NCAResult:
    """Exposure metrics of a model's predicted profile on a grid.

    Parameters
    ----------
    model
        A compiled model (``kinetics.load_model``).
    times
        Prediction grid (model time unit). Default: 0 to ``until`` every ``step``, plus the window
        ends 28 and 84 and the dose times inside it. A dense grid makes the trapezoid AUC converge
        to the integral (error O(step^2)) and Cmax/Tmax the grid maximum.
    params, doses
        As for ``model.simulate``.
    output
        Output name; may be left out for a model with one output.
    until, step
        The default grid.
    lloq, blq_rule, auc_method, half_life_points, half_life_window, baseline
        As for :func:`nca`; with ``lloq`` predictions below it count as BLQ (e.g. for Tbql).
    rtol, atol
        Solver tolerances.

    Returns
    -------
    NCAResult

    Raises
    ------
    SolverInputError
        Unknown output, bad grid, or a failed solve (its message included).

    Examples
    --------
    >>> import kinetics
    >>> from kinetics.analysis import nca_from_model
    >>> r = nca_from_model(kinetics.load_model("stein2019"))
    >>> round(r.cmax), round(r.tmax, 2)
    (24000, 9.3)
    """
    names = model.output_names
    if output is None:
        if len(names) != 1:
            raise SolverInputError(f"model '{model.name}' has {len(names)} outputs ({', '.join(names)}); "
                                   "say which one with output=")
        output = names[0]
    elif output not in names:
        raise SolverInputError(f"unknown output '{output}'; the model has {list(names)}")
    if times is None:
        if not (math.isfinite(until) and until > 0 and math.isfinite(step) and 0 < step <= until):
            raise SolverInputError(f"the default grid needs 0 < step <= until, got step={step!r}, until={until!r}")
        grid = np.round(np.arange(round(until / step) + 1) * step, 12)
        extra = [w for w in WINDOWS if w <= until] + [d.time for d in (doses or ()) if 0 <= d.time <= until]
        grid = np.union1d(grid[grid <= until], np.asarray(extra, dtype=float))
    else:
        grid = _vector(times, "times")
    sim = model.simulate(grid, params=params, doses=doses, rtol=rtol, atol=atol)
    if not sim.success:
        raise SolverInputError(f"model '{model.name}' could not be solved: {sim.message}")
    pred = sim.outputs[output]
    negative = int((pred < 0).sum())
    r = nca(grid, np.maximum(pred, 0.0), lloq=lloq, blq_rule=blq_rule, auc_method=auc_method,
            half_life_points=half_life_points, half_life_window=half_life_window, baseline=baseline)
    extra_notes = []
    if negative:
        extra_notes.append(f"{negative} prediction(s) below 0 (min {pred.min():.3g}, solver round-off) set to 0")
    unit = model.model.time_unit
    if unit not in ("day", "days", "d"):
        extra_notes.append(f"model time unit is '{unit}': the AUC windows are 28 and 84 {unit}")
    return replace(r, notes=r.notes + tuple(extra_notes)) if extra_notes else r


# -- helpers -----------------------------------------------------------------------------------


def _vector(x, name: str) -> np.ndarray:
    try:
        a = np.asarray(x, dtype=float)
    except (TypeError, ValueError):
        raise SolverInputError(f"{name} must be numbers, got {type(x).__name__}") from None
    if a.ndim != 1:
        raise SolverInputError(f"{name} must be one-dimensional, got shape {a.shape}")
    bad = np.flatnonzero(~np.isfinite(a))
    if bad.size:
        raise SolverInputError(f"{name}[{bad[0]}] is {a[bad[0]]}; every entry must be a finite number "
                               "(give a BLQ sample its LLOQ and flag it censored)")
    return a


def _censored(censored, n: int) -> np.ndarray:
    if censored is None:
        return np.zeros(n, dtype=bool)
    a = np.asarray(censored)
    if a.shape != (n,):
        raise SolverInputError(f"censored must have one flag per sample ({n}), got shape {a.shape}")
    if a.dtype != bool:
        try:
            ok = np.isin(a.astype(float), (0.0, 1.0))
        except (TypeError, ValueError):
            ok = np.zeros(n, dtype=bool)
        if not ok.all():
            j = int(np.flatnonzero(~ok)[0])
            raise SolverInputError(f"censored[{j}] = {a[j].item()!r}; flags must be True/False (or 1/0)")
        a = a.astype(float) == 1.0
    return a


def _lloq(lloq, n: int) -> np.ndarray:
    if lloq is None:
        return np.full(n, np.nan)
    try:
        a = None if isinstance(lloq, (str, bytes)) else np.asarray(lloq, dtype=float)
    except (TypeError, ValueError):
        a = None
    if a is None or a.ndim > 1 or (a.ndim == 1 and a.size != n):
        raise SolverInputError(f"lloq must be one number or one per sample ({n}), got {lloq!r}")
    a = np.broadcast_to(a, (n,)).astype(float)
    if not (np.isfinite(a) & (a > 0)).all():
        raise SolverInputError(f"lloq must be positive and finite, got {lloq!r}")
    return a


def _blq_rule(rule) -> BLQRule:
    if rule is None:
        return BLQRule()
    if isinstance(rule, BLQRule):
        return rule
    if isinstance(rule, Mapping):
        unknown = set(rule) - {"first", "middle", "last"}
        if unknown:
            raise SolverInputError(f"blq_rule has unknown key(s) {sorted(map(str, unknown))}; "
                                   "use 'first', 'middle', 'last'")
        return BLQRule(**rule)
    raise SolverInputError(f"blq_rule must be a BLQRule or a mapping, got {type(rule).__name__}")


def _window(window) -> tuple[float, float] | None:
    if window is None:
        return None
    try:
        start, end = (float(v) for v in window)
    except (TypeError, ValueError):
        raise SolverInputError(f"half_life_window must be (start, end), got {window!r}") from None
    if not (math.isfinite(start) and math.isfinite(end) and start < end):
        raise SolverInputError(f"half_life_window must be finite with start < end, got {window!r}")
    return start, end


def _positive_or_nan(x, name: str) -> float:
    if x is None:
        return math.nan
    try:
        v = float(x)
    except (TypeError, ValueError):
        raise SolverInputError(f"{name} must be a number, got {x!r}") from None
    if not (math.isfinite(v) and v > 0):
        raise SolverInputError(f"{name} must be positive and finite, got {x!r}")
    return v


def _rules_text(rule: BLQRule, method: str, min_points: int, window, has_baseline: bool) -> str:
    hl = (f"half-life from the log-linear regression of the quantifiable samples with {window[0]:g} <= t <= "
          f"{window[1]:g} (window given)" if window is not None else
          f"half-life from log-linear regression over the last n >= {min_points} quantifiable samples after Tmax "
          "(Tmax excluded): best adjusted R^2, ties within 1e-4 to the most points (PKNCA/Phoenix)")
    fold = ("fold expansion = Cmax / given baseline" if has_baseline
            else "fold expansion = Cmax / first quantifiable level at or after t=0")
    return (f"{rule.describe()}; AUC {method} trapezoid from t=0 (level 0 at t=0 if not sampled), window ends "
            f"interpolated ({'log-linear on falling segments' if method != 'linear' else 'linearly'}), no "
            f"extrapolation; {hl}; {fold}; Cmax/Tmax/Clast/Tlast observed, Tbql = first BLQ sample after Tmax")


def _segment_areas(t: np.ndarray, c: np.ndarray, log_down: bool) -> np.ndarray:
    """Area of each trapezoid between consecutive samples (linear, or logarithmic where falling)."""
    dt, c1, c2 = np.diff(t), c[:-1], c[1:]
    area = 0.5 * dt * (c1 + c2)
    if log_down:
        fall = (c2 < c1) & (c2 > 0)
        if fall.any():
            # (c1 - c2)/ln(c1/c2) written as c2 x / log1p(x), x = c1/c2 - 1: exact as c1 -> c2
            x = (c1[fall] - c2[fall]) / c2[fall]
            area[fall] = dt[fall] * c2[fall] * x / np.log1p(x)
    return area


def _auc_to(t: np.ndarray, c: np.ndarray, cum: np.ndarray, end: float, log_down: bool) -> float:
    """AUC from t[0] to ``end`` (t[0] <= end <= t[-1]), interpolating the level at ``end``."""
    k = int(np.searchsorted(t, end, side="right")) - 1   # t[k] <= end
    if t[k] == end:
        return float(cum[k])
    t1, t2, c1, c2 = t[k], t[k + 1], c[k], c[k + 1]
    frac = (end - t1) / (t2 - t1)
    # the part of the segment up to ``end`` follows the segment's own curve: log-linear only if the whole
    # segment is (a fall to 0 is linear, even though the level interpolated at ``end`` is still positive)
    log_segment = bool(log_down and c2 < c1 and c2 > 0)
    c_end = c1 * math.exp(frac * math.log(c2 / c1)) if log_segment else c1 + frac * (c2 - c1)
    part = _segment_areas(np.array([t1, end]), np.array([c1, c_end]), log_segment)[0]
    return float(cum[k] + part)


def _half_life(t: np.ndarray, c: np.ndarray, quant: np.ndarray, tmax: float, min_points: int, window,
               notes: list[str]) -> tuple[float, float, float, int, float, float]:
    none = (math.nan, math.nan, math.nan, 0, math.nan, math.nan)
    if window is not None:
        sel = quant & (t >= window[0]) & (t <= window[1])
        if sel.sum() < 3:
            notes.append(f"half-life is nan: {int(sel.sum())} quantifiable sample(s) in the window "
                         f"[{window[0]:g}, {window[1]:g}], at least 3 needed")
            return none
        lam, r2a = _regress(t[sel], np.log(c[sel]))
        if not lam > 0:
            notes.append("half-life is nan: the levels in the window do not decline (lambda_z <= 0)")
            return none
        ts = t[sel]
        return math.log(2) / lam, lam, r2a, int(sel.sum()), float(ts[0]), float(ts[-1])
    sel = quant & (t > tmax)
    n_all = int(sel.sum())
    if n_all < min_points:
        notes.append(f"half-life is nan: {n_all} quantifiable sample(s) after Tmax, at least {min_points} needed")
        return none
    ts, ys = t[sel], np.log(c[sel])
    lam, r2a = _suffix_regressions(ts, ys)   # index n-1 <-> the last n points
    n = np.arange(1, n_all + 1)
    ok = (n >= min_points) & (lam > 0) & np.isfinite(r2a)
    if not ok.any():
        notes.append("half-life is nan: no regression over the last samples has a declining slope")
        return none
    best = np.max(r2a[ok])
    chosen = int(np.flatnonzero(ok & (r2a > best - _ADJ_R2_TOLERANCE))[-1])
    k = chosen + 1
    lz = float(lam[chosen])
    return math.log(2) / lz, lz, float(r2a[chosen]), k, float(ts[-k]), float(ts[-1])


def _regress(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """-slope and adjusted R^2 of the least-squares line y = a + b x."""
    xm, ym = x - x.mean(), y - y.mean()
    sxx, sxy, syy = float(xm @ xm), float(xm @ ym), float(ym @ ym)
    if not sxx > 0:   # times closer than float resolution
        return math.nan, math.nan
    b = sxy / sxx
    n = x.size
    r2 = 1.0 if syy == 0 else min(1.0, sxy * sxy / (sxx * syy))
    return -b, 1.0 - (1.0 - r2) * (n - 1) / (n - 2)


def _suffix_regressions(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For n = 1..N: -slope and adjusted R^2 of the regression over the last n points (nan for n < 3).

    Sums run from the last point backwards on data shifted by the last point, so the short
    regressions (the ones that matter most) do not lose digits to the long ones.
    """
    xr, yr = (x - x[-1])[::-1], (y - y[-1])[::-1]
    n = np.arange(1, x.size + 1, dtype=float)
    sx, sy = np.cumsum(xr), np.cumsum(yr)
    sxx = np.cumsum(xr * xr) - sx * sx / n
    sxy = np.cumsum(xr * yr) - sx * sy / n
    syy = np.cumsum(yr * yr) - sy * sy / n
    with np.errstate(divide="ignore", invalid="ignore"):
        b = sxy / sxx
        r2 = np.where(syy > 0, np.minimum(1.0, sxy * sxy / (sxx * syy)), 1.0)
        r2a = 1.0 - (1.0 - r2) * (n - 1) / (n - 2)
    short = n < 3
    b[short], r2a[short] = np.nan, np.nan
    return -b, r2a


def _nan_result(*, notes: tuple[str, ...], dose: float, n_samples: int, n_blq: int, rules: str) -> NCAResult:
    nan = math.nan
    return NCAResult(cmax=nan, tmax=nan, auc_0_28=nan, auc_0_84=nan, auc_0_last=nan, clast=nan, tlast=nan, tbql=nan,
                     fold_expansion=nan, half_life=nan, lambda_z=nan, r2_adj=nan, n_points_half_life=0,
                     half_life_start=nan, half_life_end=nan, dose=dose, cmax_per_dose=nan, auc_0_28_per_dose=nan,
                     n_samples=n_samples, n_blq=n_blq, rules=rules, notes=notes)
