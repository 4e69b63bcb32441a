"""Figures of the analyses (kinetics.analysis): B-cell recovery (new-patient distribution, predicted vs
observed, Kaplan-Meier style), dose-sweep bands, tornado bars, Sobol' bars with intervals, and the
exposure-metrics (NCA) table.

Every function returns a :class:`matplotlib.figure.Figure` built without pyplot (no global figure
state; ``fig.savefig`` renders with Agg), as :mod:`kinetics.plot._diagnostics` does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from kinetics.plot._diagnostics import _figure, _hide_unused, _suptitle

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

    from kinetics.analysis import DoseSweep, RecoveryDistribution, SobolResult

__all__ = ["plot_recovery_distribution", "plot_recovery_comparison", "plot_dose_sweep", "plot_tornado", "plot_sobol",
           "plot_exposure_table"]


def _check_columns(frame: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{what} lacks column(s) {', '.join(missing)} (has: {', '.join(map(str, frame.columns))})")


# -- recovery -----------------------------------------------------------------------------------
def plot_recovery_distribution(dist: RecoveryDistribution, *, days: Sequence[float] = (90.0, 180.0, 365.0),
                               time_unit: str = "day", title: str = "") -> Figure:
    """Recovery time of simulated new patients: histogram of the recovered (with the 5/50/95th
    percentiles marked) and the fraction not yet recovered over time, with P(recovered by day d).

    ``dist`` from :func:`~kinetics.analysis.recovery_distribution`; times equal to ``dist.until`` mean
    not recovered by then and are counted, not drawn, in the histogram.
    """
    t = np.asarray(dist.times, dtype=float)
    ok = np.isfinite(t)
    recovered = t[ok & (t < dist.until)]
    fig, axes = _figure(1, 2, 4.4, 3.3)
    ax0, ax1 = axes[0]
    if recovered.size:
        ax0.hist(recovered, bins=max(5, min(40, int(np.sqrt(recovered.size)) + 2)), color="0.65", edgecolor="white")
    # nan (failed solves) left out of the quantiles; times at ``until`` stay in (not recovered by then)
    q = {p: float(np.quantile(t[ok], p)) for p in (0.05, 0.5, 0.95)} if ok.any() else {}
    for p, v in q.items():
        if v < dist.until:
            ax0.axvline(v, color="tab:red" if p == 0.5 else "tab:blue", lw=1.4 if p == 0.5 else 1.0,
                        ls="-" if p == 0.5 else "--", label=f"{100 * p:g}th percentile {v:.0f}")
    ax0.set_xlabel(f"recovery time ({time_unit})")
    ax0.set_ylabel("simulated patients")
    n_not = int(np.count_nonzero(ok & (t >= dist.until)))
    ax0.set_title(f"{recovered.size} recovered, {n_not} not by {dist.until:g}, {int((~ok).sum())} failed solves",
                  fontsize=8)
    if ax0.get_legend_handles_labels()[0]:
        ax0.legend(fontsize=7, loc="upper right")
    shown = t[ok]
    upper = float(np.quantile(shown, 0.99)) if shown.size else dist.until
    horizon = dist.until if upper >= dist.until else min(dist.until, max(upper * 1.2, max(days)))
    grid = np.linspace(0.0, horizon, 400)
    ax1.step(grid, [(shown > g).mean() for g in grid], where="post", color="tab:blue", lw=1.6)
    probs = {float(d): float((shown <= d).mean()) for d in days} if shown.size else {}
    for d, p in probs.items():
        if d <= horizon:
            ax1.axvline(d, color="0.7", lw=0.8, ls=":")
            ax1.annotate(f"P(rec. by {d:g}) = {p:.2f}", (d, 1 - p), fontsize=7, xytext=(4, 4),
                         textcoords="offset points")
    ax1.set_ylim(-0.02, 1.02)
    ax1.set_xlim(0.0, horizon)
    ax1.set_xlabel(f"time ({time_unit})")
    ax1.set_ylabel("fraction not yet recovered")
    ax1.set_title("Kaplan-Meier style curve of the simulated patients", fontsize=8)
    for a in (ax0, ax1):
        a.grid(alpha=0.3)
        a.tick_params(labelsize=7)
    _suptitle(fig, title or f"Recovery time of a new patient ({t.size} simulated): {dist.rule}", fontsize=9)
    return fig


def plot_recovery_comparison(predicted: pd.DataFrame, observed: pd.DataFrame, *, until: float | None = None,
                             distribution: RecoveryDistribution | None = None, time_unit: str = "day",
                             title: str = "") -> Figure:
    """Predicted against observed B-cell recovery.

    Left, Kaplan-Meier style: the fraction of patients not yet recovered over time, observed (Turnbull's
    estimate from the interval-censored visits, :func:`~kinetics.analysis.turnbull_survival`) against
    predicted (the same patients' recovery times at their individual parameters; and, if given, the
    ``distribution`` of a new patient). Right: per patient, the predicted time with its interval and the
    observed interval ``(left, right]`` between visits (an arrow for not recovered by the last visit).

    Parameters
    ----------
    predicted
        From :func:`~kinetics.analysis.predict_patient_recovery`: ``ID, time, low, high`` (``time`` nan =
        not recovered within the prediction horizon).
    observed
        From :func:`~kinetics.analysis.observed_recovery_intervals`: ``ID, left, right, status``.
    until
        Horizon of the predictions (default: the distribution's, else the largest time shown).
    """
    from kinetics.analysis import turnbull_survival

    _check_columns(predicted, ["ID", "time", "low", "high"], "predicted")
    _check_columns(observed, ["ID", "left", "right", "status"], "observed")
    obs = observed[observed["status"] != "not depleted"]
    finite = np.concatenate([predicted[["time", "low", "high"]].to_numpy(dtype=float).ravel(),
                             obs[["left", "right"]].to_numpy(dtype=float).ravel()])
    finite = finite[np.isfinite(finite)]
    if until is not None:
        horizon = float(until)
    else:   # the data's range (the prediction horizon, often years, would squeeze the curves)
        horizon = float(finite.max() * 1.15) if finite.size else 1.0
        if distribution is not None:
            dt = np.asarray(distribution.times, dtype=float)
            dt = dt[np.isfinite(dt)]
            if dt.size:
                horizon = max(horizon, min(float(np.quantile(dt, 0.95)) * 1.1, distribution.until))
    fig, axes = _figure(1, 2, 4.6, max(3.3, 0.22 * len(predicted) + 1.2))
    ax0, ax1 = axes[0]
    if len(obs):
        tb = turnbull_survival(obs["left"].to_numpy(dtype=float), obs["right"].to_numpy(dtype=float))
        tt = np.append(tb["time"].to_numpy(), horizon)
        ss = np.append(tb["survival"].to_numpy(), tb["survival"].to_numpy()[-1])
        ax0.step(tt, ss, where="post", color="k", lw=1.8, label=f"observed (Turnbull, {len(obs)} patients)")
    pt = predicted["time"].to_numpy(dtype=float)
    if pt.size:
        grid = np.linspace(0.0, horizon, 400)
        done = np.where(np.isfinite(pt), pt, np.inf)
        ax0.step(grid, [(done > g).mean() for g in grid], where="post", color="tab:blue", lw=1.6,
                 label=f"predicted, same patients ({pt.size})")
    if distribution is not None:
        s = distribution.survival(np.linspace(0.0, horizon, 400))
        ax0.plot(s["time"], s["survival"], color="tab:orange", lw=1.2, ls="--",
                 label=f"predicted, new patient ({len(distribution.times)} simulated)")
    ax0.set_ylim(-0.02, 1.02)
    ax0.set_xlim(0, horizon)
    ax0.set_xlabel(f"time ({time_unit})")
    ax0.set_ylabel("fraction not yet recovered")
    ax0.set_title("Recovery curves (Kaplan-Meier style)", fontsize=9)
    ax0.legend(fontsize=7, loc="upper right")
    ids = [str(i) for i in predicted["ID"]]
    obs_by = {str(r.ID): r for r in observed.itertuples(index=False)}
    for y, row in enumerate(predicted.itertuples(index=False)):
        lo, hi = float(row.low), float(row.high)
        if np.isfinite(lo) and np.isfinite(hi):
            ax1.plot([lo, hi], [y + 0.15, y + 0.15], color="tab:blue", lw=2.2, alpha=0.6,
                     label="predicted interval")
        if np.isfinite(row.time):
            ax1.plot(row.time, y + 0.15, "o", color="tab:blue", ms=4, label="predicted (EBE)")
        else:
            ax1.annotate("", (horizon, y + 0.15), (horizon * 0.93, y + 0.15),
                         arrowprops=dict(arrowstyle="->", color="tab:blue"))
        o = obs_by.get(str(row.ID))
        if o is None or o.status == "not depleted":
            continue
        right = float(o.right)
        if np.isfinite(right):
            ax1.plot([o.left, right], [y - 0.15, y - 0.15], color="k", lw=2.2, label="observed interval")
        else:
            ax1.annotate("", (horizon, y - 0.15), (float(o.left), y - 0.15),
                         arrowprops=dict(arrowstyle="->", color="k"))
            ax1.plot([o.left], [y - 0.15], "|", color="k", ms=8, label="observed: not recovered by last visit")
    ax1.set_yticks(range(len(ids)), ids)
    ax1.set_ylim(-0.7, len(ids) - 0.3)
    ax1.invert_yaxis()
    ax1.set_xlim(0, horizon)
    ax1.set_xlabel(f"recovery time ({time_unit})")
    ax1.set_ylabel("patient")
    ax1.set_title("Per patient: predicted vs observed", fontsize=9)
    handles, labels = ax1.get_legend_handles_labels()
    seen = dict(zip(labels, handles))
    if seen:
        ax1.legend(seen.values(), seen.keys(), fontsize=7, loc="lower right")
    for a in (ax0, ax1):
        a.grid(alpha=0.3)
        a.tick_params(labelsize=7)
    _suptitle(fig, title or "B-cell recovery: predicted (model) vs observed (interval-censored between visits)",
              fontsize=9)
    return fig


# -- dose sweep ---------------------------------------------------------------------------------
def plot_dose_sweep(sweep: DoseSweep, *, outcomes: Sequence[str] | None = None, target: str | None = None,
                    units: Mapping[str, str] | None = None, ncols: int = 4) -> Figure:
    """Median and 5-95 % band of each outcome against dose, one panel per outcome.

    The x axis is the dose of ``target`` (default: the sweep's first target), log scale; the other
    targets' dose combinations are separate lines (common random numbers: the same virtual patients
    at every dose). ``units``: outcome -> unit for the axis labels (default: the sweep's own ``units``).
    """
    outs = list(sweep.outcomes if outcomes is None else outcomes)
    for o in outs:
        if o not in sweep.outcomes:
            raise ValueError(f"outcome '{o}' is not in the sweep (outcomes: {', '.join(sweep.outcomes)})")
    target = target or sweep.targets[0]
    if target not in sweep.targets:
        raise ValueError(f"'{target}' is not a dose target of the sweep (targets: {', '.join(sweep.targets)})")
    others = [t for t in sweep.targets if t != target]
    s = sweep.summary
    ncol = max(1, min(ncols, len(outs)))
    nrow = max(1, -(-len(outs) // ncol))
    fig, axes = _figure(nrow, ncol, 3.2, 2.7)
    # one line per combination of the other targets' doses; when every level gives all targets the same
    # dose (co-escalation) the other targets follow the x axis and there is a single line
    levels = s.drop_duplicates("level")[list(sweep.targets)]
    diagonal = bool(others) and all(np.allclose(levels[o].to_numpy(), levels[target].to_numpy()) for o in others)
    groups = [("", s)] if (not others or diagonal) else [
        (", ".join(f"{o} {v:.3g}" for o, v in zip(others, key if isinstance(key, tuple) else (key,))), g)
        for key, g in s.groupby(others, sort=True)]
    colours = ["tab:blue", "tab:orange", "tab:green", "tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan"]
    for ax, name in zip(axes.flat, outs):
        for k, (label, g) in enumerate(groups):
            g = g[g["outcome"] == name].sort_values(target)
            x = g[target].to_numpy(dtype=float)
            c = colours[k % len(colours)]
            ax.fill_between(x, g["p05"], g["p95"], color=c, alpha=0.2, lw=0,
                            label=f"5-95 % {label}".strip())
            ax.plot(x, g["median"], color=c, lw=1.6, marker="o", ms=3, label=f"median {label}".strip())
        if (s[target] > 0).all():
            from matplotlib.ticker import NullFormatter, NullLocator

            ticks = np.unique(s[target].to_numpy(dtype=float))
            ax.set_xscale("log")
            ax.xaxis.set_minor_locator(NullLocator())
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.set_xticks(ticks, [f"{v:.3g}" for v in ticks])
        unit = (units if units is not None else getattr(sweep, "units", {})).get(name, "")
        ax.set_ylabel(f"{name} ({unit})" if unit else name, fontsize=8)
        ax.set_xlabel(f"dose {target}" + (" (= " + ", ".join(others) + ")" if diagonal else ""), fontsize=8)
        nf = int(s.loc[s["outcome"] == name, "n_failed"].sum())
        ax.set_title(name + (f" ({nf} failed solves left out)" if nf else ""), fontsize=8)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=7)
    _hide_unused(axes, len(outs))
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=min(4, len(labels)), fontsize=7, frameon=False)
    _suptitle(fig, f"Dose sweep: {sweep.n_patients} virtual patients per dose (seed {sweep.seed}, the same patients at "
                   f"every dose), median and 5-95th percentiles", fontsize=9)
    return fig


# -- sensitivity --------------------------------------------------------------------------------
def plot_tornado(table: pd.DataFrame, *, outcome: str | None = None, unit: str = "", max_bars: int = 15) -> Figure:
    """Tornado bars: the outcome with each parameter (or dose) at the low and at the high end of its
    range, around the base value, largest swing at the top.

    ``table`` from :func:`~kinetics.analysis.tornado` (its ``attrs["outcome"]`` and ``attrs["unit"]`` name the
    outcome and its unit unless ``outcome`` / ``unit`` are given).
    """
    unit = unit or table.attrs.get("unit", "")
    _check_columns(table, ["parameter", "low", "high", "outcome_low", "outcome_high", "outcome_base", "swing"],
                   "the tornado table")
    if not len(table):
        raise ValueError("the tornado table is empty")
    t = table.sort_values("swing", ascending=False, kind="stable").head(max_bars)
    base = float(t["outcome_base"].iloc[0])
    name = outcome or table.attrs.get("outcome", "outcome")
    fig, axes = _figure(1, 1, 6.4, 0.32 * len(t) + 1.4)
    ax = axes[0, 0]
    y = np.arange(len(t))
    lo_v, hi_v = t["outcome_low"].to_numpy(dtype=float), t["outcome_high"].to_numpy(dtype=float)
    ax.barh(y, lo_v - base, left=base, color="tab:blue", alpha=0.8, label="parameter at its low end")
    ax.barh(y, hi_v - base, left=base, color="tab:red", alpha=0.8, label="parameter at its high end")
    ax.axvline(base, color="k", lw=1)
    labels = []
    for r in t.itertuples(index=False):
        src = f" [{r.range_source}]" if hasattr(r, "range_source") else ""
        labels.append(f"{r.parameter} {r.low:.3g}..{r.high:.3g}{src}")
    ax.set_yticks(y, labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel(f"{name} ({unit})" if unit else name, fontsize=8)
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3, axis="x")
    ax.tick_params(labelsize=7)
    _suptitle(fig, f"Tornado: {name}, base {base:.4g}; each input at the ends of its range (omega ranges: 5th-95th "
                   f"percentile of the log-normal), the others at their base values", fontsize=9)
    return fig


def plot_sobol(result: SobolResult, *, max_bars: int = 20) -> Figure:
    """Sobol' first-order (S1) and total (ST) indices per input as bars with their bootstrap intervals,
    largest ST first."""
    df = result.to_frame().head(max_bars)
    if not len(df):
        raise ValueError("the Sobol' result has no inputs")
    fig, axes = _figure(1, 1, max(5.0, 0.45 * len(df) + 2.0), 3.4)
    ax = axes[0, 0]
    x = np.arange(len(df))
    w = 0.38
    for off, key, colour in ((-w / 2, "S1", "tab:blue"), (w / 2, "ST", "tab:red")):
        v = df[key].to_numpy(dtype=float)
        err = np.vstack([v - df[f"{key}_low"].to_numpy(dtype=float), df[f"{key}_high"].to_numpy(dtype=float) - v])
        ax.bar(x + off, v, w, color=colour, alpha=0.8, label=f"{key} ({'first order' if key == 'S1' else 'total'})")
        ax.errorbar(x + off, v, yerr=np.abs(err), fmt="none", ecolor="k", elinewidth=0.9, capsize=2.5)
    ax.axhline(0, color="k", lw=0.6)
    ax.set_xticks(x, df["parameter"], rotation=45, ha="right", fontsize=7)
    ax.set_ylabel("Sobol' index")
    ax.legend(fontsize=7, loc="upper right")
    ax.grid(alpha=0.3, axis="y")
    ax.tick_params(labelsize=7)
    _suptitle(fig, f"Sobol' indices of {result.outcome}: N = {result.n_base} ({result.n_evaluations} evaluations), "
                   f"{100 * result.conf_level:g} % bootstrap intervals ({result.num_resamples} resamples)", fontsize=9)
    return fig


# -- exposure -----------------------------------------------------------------------------------
_EXPOSURE_COLUMNS = (("cmax", "Cmax"), ("tmax", "Tmax"), ("auc_0_28", "AUC0-28"), ("tlast", "Tlast"),
                     ("half_life", "t1/2"))


def plot_exposure_table(tables: Mapping[str, pd.DataFrame] | pd.DataFrame, *, units: Mapping[str, str] | None = None,
                        time_unit: str = "") -> Figure:
    """Exposure metrics (NCA) as a table figure: per output, the median [min-max] over subjects of Cmax,
    Tmax, AUC0-28, Tlast and the terminal half-life, with the number of subjects where each is estimable.

    ``tables``: output -> :func:`~kinetics.analysis.nca_table` result (or one table). ``units``: output ->
    unit of its level (AUC is level x ``time_unit``). ``time_unit``: of the data's times ("" when not known:
    a dataset says nothing of its unit, so the figure says "the data's time unit" rather than guess days).
    """
    time_text = time_unit or "the data's time unit"
    if isinstance(tables, pd.DataFrame):
        tables = {"output": tables}
    if not tables:
        raise ValueError("no exposure tables given")
    rows = []
    for out, t in tables.items():
        _check_columns(t, [c for c, _ in _EXPOSURE_COLUMNS], f"the NCA table of '{out}'")
        cells = [out, str(len(t))]
        for col, _ in _EXPOSURE_COLUMNS:
            v = t[col].to_numpy(dtype=float)
            v = v[np.isfinite(v)]
            cells.append(f"{np.median(v):.3g} [{v.min():.3g}-{v.max():.3g}] (n={v.size})" if v.size else "-")
        rows.append(cells)
    u = units or {}
    header = ["output", "N"] + [lab for _, lab in _EXPOSURE_COLUMNS]
    fig, axes = _figure(1, 1, 10.0, 0.3 * (len(rows) + 1) + 1.0)
    ax = axes[0, 0]
    ax.axis("off")
    table = ax.table(cellText=rows, colLabels=header, cellLoc="center", loc="center",
                     colWidths=[0.12, 0.04, 0.19, 0.17, 0.19, 0.15, 0.14])
    table.auto_set_font_size(False)
    table.set_fontsize(8)
    table.scale(1.0, 1.3)
    for k in range(len(header)):
        table[0, k].set_facecolor("0.88")
    unit_text = "; ".join(f"{o}: Cmax in {u[o]}, AUC in {u[o]} x {time_unit or 'time'}" for o in tables if u.get(o))
    _suptitle(fig, f"Exposure metrics from the observed profiles (NCA, median [min-max] over subjects; times in "
                   f"{time_text})" + (f". {unit_text}" if unit_text else ""), fontsize=9)
    return fig
