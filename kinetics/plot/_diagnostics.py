"""Diagnostic figures of a population fit: individual fits, goodness of fit, NPDE, (pc)VPC, random
effects and the parameter table.

Every function returns a :class:`matplotlib.figure.Figure` built without pyplot (no global figure
state, nothing to close; ``fig.savefig`` renders with Agg). Smoothers are LOWESS (Cleveland 1979:
local linear fits with tricube weights over the nearest 2/3 of the points, two bisquare
robustness iterations), written here because statsmodels is not a dependency.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

    from kinetics.fit import PopulationFit
    from kinetics.fit._npde import NPDEResult
    from kinetics.fit._vpc import VPCData

__all__ = ["plot_individual_fits", "plot_goodness_of_fit", "plot_npde", "plot_vpc", "plot_eta_distributions",
           "plot_eta_covariates", "plot_parameter_table", "lowess"]

SMOOTHER = "LOWESS (span 2/3, 2 robustness iterations)"
_OBS = dict(color="0.15", s=14, alpha=0.7, lw=0)
_CENS = dict(marker="v", facecolors="none", edgecolors="tab:red", s=22, lw=0.9)


def _figure(nrow: int, ncol: int, w: float, h: float, **kw):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w * ncol, h * nrow), layout="constrained")
    axes = fig.subplots(nrow, ncol, squeeze=False, **kw)
    return fig, axes


def lowess(x: np.ndarray, y: np.ndarray, frac: float = 2.0 / 3.0, iterations: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Robust locally weighted linear regression (Cleveland 1979, doi:10.1080/01621459.1979.10481038).

    Returns the sorted finite ``x`` and the smoothed values there. Each point's fit uses the
    ``floor(frac n)`` nearest points with tricube weights; each robustness iteration reweights by
    the bisquare of the residuals over 6 median absolute residuals (R's ``lowess`` with
    ``delta = 0``).
    """
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    ok = np.isfinite(x) & np.isfinite(y)
    order = np.argsort(x[ok], kind="stable")
    x, y = x[ok][order], y[ok][order]
    n = x.size
    if n < 3:
        return x, y.copy()
    r = min(n, max(2, int(math.floor(frac * n + 1e-7))))   # neighbours as in R's lowess (and statsmodels)
    robust = np.ones(n)
    fitted = y.copy()
    for _ in range(iterations + 1):
        for start in range(0, n, 256):   # (chunk, n) weight matrices keep memory bounded
            xi = x[start:start + 256, None]
            d = np.abs(x[None, :] - xi)
            h = np.partition(d, r - 1, axis=1)[:, r - 1:r]
            h = np.where(h > 0, h, 1.0)
            w = np.clip(1 - (d / h) ** 3, 0.0, None) ** 3 * robust[None, :]
            sw = w.sum(axis=1)
            mx = (w * x).sum(axis=1) / sw
            my = (w * y).sum(axis=1) / sw
            vxx = (w * (x - mx[:, None]) ** 2).sum(axis=1)
            vxy = (w * (x - mx[:, None]) * (y - my[:, None])).sum(axis=1)
            tiny = 1e-12 * sw * np.ptp(x) ** 2   # all x in the window equal: local constant
            slope = np.divide(vxy, vxx, out=np.zeros_like(vxy), where=vxx > tiny)
            fitted[start:start + 256] = my + slope * (xi[:, 0] - mx)
        res = y - fitted
        s = np.median(np.abs(res))
        if s <= 0:
            break
        robust = np.clip(1 - (res / (6 * s)) ** 2, 0.0, None) ** 2
    return x, fitted


def _log_outputs(fit: PopulationFit, log: bool | Mapping[str, bool] | None) -> dict[str, bool]:
    outputs = list(dict.fromkeys(fit.predictions["OUTPUT"].astype(str)))
    if isinstance(log, bool):
        return dict.fromkeys(outputs, log)
    if isinstance(log, Mapping):
        return {o: bool(log.get(o, False)) for o in outputs}
    from kinetics.fit._npde import infer_error_models

    try:
        kinds = infer_error_models(fit)
    except ValueError:
        kinds = {}
    return {o: bool(o in kinds and kinds[o].is_log_scale) for o in outputs}


def _select_outputs(fit: PopulationFit, outputs: Sequence[str] | str | None) -> list[str]:
    have = list(dict.fromkeys(fit.predictions["OUTPUT"].astype(str)))
    if outputs is None:
        return have
    want = [outputs] if isinstance(outputs, str) else list(outputs)
    for o in want:
        if o not in have:
            from kinetics.errors import did_you_mean

            raise ValueError(f"output '{o}' is not in the fit (outputs: {', '.join(have)}){did_you_mean(o, have)}")
    return want


def _quiet_log_axis(ax, axis: str = "y") -> None:
    """Log scale without minor tick labels (small panels: they overlap, and dominate drawing time)."""
    from matplotlib.ticker import LogLocator, NullFormatter

    target = ax.yaxis if axis == "y" else ax.xaxis
    (ax.set_yscale if axis == "y" else ax.set_xscale)("log")
    target.set_major_locator(LogLocator(base=10.0, numticks=5))
    target.set_minor_formatter(NullFormatter())


def _suptitle(fig, text: str, fontsize: float = 9) -> None:
    """Figure title wrapped to the figure's width."""
    import textwrap

    width = max(40, int(fig.get_figwidth() * 72 / (0.55 * fontsize)))
    fig.suptitle("\n".join(textwrap.wrap(text, width)), fontsize=fontsize)


def _fit_label(fit: PopulationFit) -> str:
    from kinetics.fit._results import METHOD_LABELS

    label = METHOD_LABELS.get(fit.method, fit.method)
    return label + (", objective at given values" if fit.n_iterations == 0 and fit.covariance is None else "")


def _hide_unused(axes, n: int) -> None:
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)


# -- individual fits ----------------------------------------------------------------------------
def plot_individual_fits(fit: PopulationFit, *, model=None, data=None, outputs: Sequence[str] | str | None = None,
                         ids: Sequence | None = None, log: bool | Mapping[str, bool] | None = None,
                         ncols: int = 4, n_grid: int = 200) -> Figure:
    """Observations, IPRED and PRED per subject and output (one panel each).

    Parameters
    ----------
    model, data
        The fit's compiled model and dataset: when both are given IPRED and PRED are drawn as
        curves on a grid of ``n_grid`` times (solved from ``fit.individual_params`` and the
        typical parameters); otherwise they join the values at the observation times.
    outputs, ids
        Outputs and subject IDs to show (default: all).
    log
        Log-scale y axes: a bool, output -> bool, or None for the outputs fitted on the log scale
        (``log_additive`` error).

    Censored samples are drawn as open red triangles at their limit (the LLOQ).
    """
    p = fit.predictions
    outs = _select_outputs(fit, outputs)
    all_ids = list(dict.fromkeys(p["ID"].astype(str)))
    sel_ids = all_ids if ids is None else [str(i) for i in ids]
    missing = [i for i in sel_ids if i not in all_ids]
    if missing:
        raise ValueError(f"subject(s) {', '.join(missing)} are not in the fit")
    logs = _log_outputs(fit, log)
    curves = _dense_curves(fit, model, data, sel_ids, outs, n_grid) if (model is not None and data is not None) else {}
    panels = [(i, o) for i in sel_ids for o in outs if np.any((p["ID"].astype(str) == i) & (p["OUTPUT"] == o))]
    ncol = max(1, min(ncols, len(panels)))
    nrow = max(1, -(-len(panels) // ncol))
    fig, axes = _figure(nrow, ncol, 3.0, 2.4)
    for ax, (sid, out) in zip(axes.flat, panels):
        g = p[(p["ID"].astype(str) == sid) & (p["OUTPUT"] == out)].sort_values("TIME", kind="stable")
        if (sid, out) in curves:
            t, ipred, pred = curves[(sid, out)]
        else:
            t, ipred, pred = g["TIME"].to_numpy(), g["IPRED"].to_numpy(), g["PRED"].to_numpy()
        ax.plot(t, ipred, color="tab:blue", lw=1.4, label="IPRED")
        ax.plot(t, pred, color="tab:orange", lw=1.2, ls="--", label="PRED")
        obs, cen = g[g["CENS"] == 0], g[g["CENS"] != 0]
        ax.scatter(obs["TIME"], obs["DV"], label="observed", zorder=3, **_OBS)
        if len(cen):
            ax.scatter(cen["TIME"], cen["DV"], label="censored (at LLOQ)", zorder=3, **_CENS)
        if logs.get(out):
            _quiet_log_axis(ax)
            _floor_log_axis(ax, g)
        ax.set_title(f"ID {sid} · {out}", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    _hide_unused(axes, len(panels))
    handles, labels = _legend_entries(axes.flat)
    fig.legend(handles, labels, loc="outside lower center", ncol=len(labels), fontsize=8, frameon=False)
    _suptitle(fig, f"Individual fits: {fit.model_name} ({_fit_label(fit)}), {len(sel_ids)} subjects"
                 + (", curves solved on a grid" if curves else ", predictions at the observation times"), fontsize=10)
    return fig


def _legend_entries(axes) -> tuple[list, list]:
    seen: dict[str, object] = {}
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(lab, h)
    return list(seen.values()), list(seen)


def _floor_log_axis(ax, g: pd.DataFrame) -> None:
    """Keep a log axis on the data: predictions that decay towards 0 would stretch it over decades."""
    vals = g["DV"].to_numpy(dtype=float)
    vals = vals[vals > 0]
    if vals.size:
        lo, hi = ax.get_ylim()
        ax.set_ylim(max(lo, vals.min() / 30.0), hi)


def _dense_curves(fit, model, data, ids, outs, n_grid) -> dict:
    from kinetics.fit._npde import build_simulation_spec

    spec = build_simulation_spec(fit, model, data)
    indiv = fit.individual_params
    res = {}
    for s in spec.subjects:
        if s.id not in ids:
            continue
        tmax = float(s.solve_times[-1]) if s.solve_times.size else 1.0
        grid = np.unique(np.concatenate([np.linspace(max(s.t0, 0.0), tmax, n_grid), s.solve_times]))
        params = np.vstack([indiv.loc[s.id, list(model.parameter_names)].to_numpy(dtype=float), s.typical])
        b = model.simulate_batch(grid, params=params, doses=list(s.doses), rtol=spec.rtol, atol=spec.atol, t0=s.t0)
        for o in outs:
            k = model.output_names.index(o)
            res[(s.id, o)] = (b.times, b.outputs[0, :, k], b.outputs[1, :, k])
    return res


# -- goodness of fit ----------------------------------------------------------------------------
def plot_goodness_of_fit(fit: PopulationFit, *, output: str | None = None,
                         log: bool | Mapping[str, bool] | None = None) -> Figure:
    """Eight panels: DV vs PRED and vs IPRED (identity line), CWRES vs TIME and vs PRED, IWRES vs TIME and
    vs PRED (each with a LOWESS smoother), a normal QQ plot and a histogram of CWRES.

    ``output`` restricts to one output (default: all, coloured by output). Censored rows appear at
    their LLOQ in the DV panels and not in the residual panels (they have no residual). Axes of DV
    and PRED are logarithmic where the output is fitted on the log scale (``log`` overrides).
    """
    outs = _select_outputs(fit, output)
    p = fit.predictions[fit.predictions["OUTPUT"].isin(outs)]
    logs = _log_outputs(fit, log)
    use_log = all(logs[o] for o in outs) and bool(np.all(p[["DV", "PRED", "IPRED"]].to_numpy() > 0))
    fig, axes = _figure(2, 4, 3.3, 3.0)
    ax = axes.flat
    colours = _colours(outs)
    obs, cen = p[p["CENS"] == 0], p[p["CENS"] != 0]
    for k, x in enumerate(("PRED", "IPRED")):
        for o in outs:
            g = obs[obs["OUTPUT"] == o]
            ax[k].scatter(g[x], g["DV"], color=colours[o], s=12, alpha=0.6, lw=0, label=o if len(outs) > 1 else "observed")
        if len(cen):
            ax[k].scatter(cen[x], cen["DV"], label="censored (at LLOQ)", **_CENS)
        vals = p[["DV", x]].to_numpy(dtype=float)
        vals = vals[np.isfinite(vals) & ((vals > 0) if use_log else True)]
        if vals.size:
            lim = (vals.min(), vals.max())
            ax[k].plot(lim, lim, color="k", lw=1, label="identity")
        if use_log:
            ax[k].set_xscale("log")
            ax[k].set_yscale("log")
        ax[k].set_xlabel(x)
        ax[k].set_ylabel("DV")
        ax[k].set_title(f"DV vs {x}", fontsize=9)
    for k, (res, x) in enumerate((("CWRES", "TIME"), ("CWRES", "PRED"), ("IWRES", "TIME"), ("IWRES", "PRED")), start=2):
        _residual_panel(ax[k], obs, x, res, outs, colours, use_log and x == "PRED")
    cw = obs["CWRES"].to_numpy(dtype=float)
    cw = cw[np.isfinite(cw)]
    _qq_panel(ax[6], cw, "CWRES")
    _hist_panel(ax[7], cw, "CWRES")
    for a in ax:
        a.grid(alpha=0.3)
        a.tick_params(labelsize=7)
    ax[0].legend(fontsize=7, loc="upper left")
    _suptitle(fig, f"Goodness of fit: {fit.model_name} ({_fit_label(fit)}), {', '.join(outs)}: {len(obs)} observed, "
                 f"{len(cen)} censored rows (no residual); smoother {SMOOTHER}", fontsize=9)
    return fig


def _colours(outs: Sequence[str]) -> dict[str, str]:
    cycle = ["tab:blue", "tab:green", "tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan", "tab:gray"]
    return {o: cycle[i % len(cycle)] for i, o in enumerate(outs)}


def _residual_panel(ax, obs: pd.DataFrame, x: str, res: str, outs, colours, logx: bool) -> None:
    for o in outs:
        g = obs[obs["OUTPUT"] == o]
        ax.scatter(g[x], g[res], color=colours[o], s=12, alpha=0.6, lw=0)
    xs, ys = obs[x].to_numpy(dtype=float), obs[res].to_numpy(dtype=float)
    if logx:
        ok = xs > 0
        sx, sy = lowess(np.log(xs[ok]), ys[ok])
        sx = np.exp(sx)
        ax.set_xscale("log")
    else:
        sx, sy = lowess(xs, ys)
    ax.plot(sx, sy, color="tab:red", lw=1.6, label="LOWESS")
    ax.axhline(0, color="k", lw=0.8)
    for level in (-1.96, 1.96):
        ax.axhline(level, color="k", lw=0.6, ls=":")
    ax.set_xlabel(x)
    ax.set_ylabel(res)
    ax.set_title(f"{res} vs {x}", fontsize=9)


def _qq_panel(ax, values: np.ndarray, label: str) -> None:
    from scipy import stats

    v = np.sort(values[np.isfinite(values)])
    n = v.size
    if n:
        q = stats.norm.ppf((np.arange(1, n + 1) - 0.375) / (n + 0.25))   # Blom plotting positions
        ax.scatter(q, v, s=10, color="0.2", lw=0)
        lim = (min(q.min(), v.min()), max(q.max(), v.max()))
        ax.plot(lim, lim, color="tab:red", lw=1)
    ax.set_xlabel("N(0, 1) quantile")
    ax.set_ylabel(f"{label} quantile")
    ax.set_title(f"QQ plot of {label}", fontsize=9)


def _hist_panel(ax, values: np.ndarray, label: str) -> None:
    from scipy import stats

    v = values[np.isfinite(values)]
    if v.size:
        ax.hist(v, bins=min(30, max(5, int(np.sqrt(v.size)))), density=True, color="0.7", edgecolor="white")
    g = np.linspace(-4, 4, 200)
    ax.plot(g, stats.norm.pdf(g), color="tab:red", lw=1.4, label="N(0, 1)")
    ax.set_xlabel(label)
    ax.set_ylabel("density")
    ax.set_title(f"{label}: mean {v.mean():.2f}, SD {v.std(ddof=1):.2f}" if v.size > 1 else label, fontsize=9)
    ax.legend(fontsize=7, loc="upper right")


# -- NPDE ----------------------------------------------------------------------------------------
def plot_npde(result: NPDEResult, *, output: str | None = None) -> Figure:
    """Four panels of NPDE: histogram with the N(0, 1) density, QQ plot, NPDE vs TIME and vs EPRED (the
    mean simulated prediction), with LOWESS smoothers and the 95 % band of N(0, 1); the tests of
    :func:`~kinetics.fit.npde_tests` in the title. Censored rows (imputed, see ``result.method``) are
    marked."""
    t = result.table if output is None else result.table[result.table["OUTPUT"] == output]
    if output is not None and not len(t):
        raise ValueError(f"output '{output}' is not in the NPDE table")
    v = t["NPDE"].to_numpy(dtype=float)
    tests = result.tests(output)
    fig, axes = _figure(2, 2, 3.8, 3.0)
    ax = axes.flat
    _hist_panel(ax[0], v, "NPDE")
    _qq_panel(ax[1], v, "NPDE")
    cen = t["CENS"].to_numpy() != 0
    for a, x in ((ax[2], "TIME"), (ax[3], "EPRED")):
        xs = t[x].to_numpy(dtype=float)
        a.scatter(xs[~cen], v[~cen], s=10, color="0.2", lw=0, alpha=0.7, label="observed")
        if cen.any():
            a.scatter(xs[cen], v[cen], label="censored (imputed)", **_CENS)
        logx = x == "EPRED" and bool(np.all(xs[np.isfinite(xs)] > 0)) and np.nanmax(xs) / max(np.nanmin(xs), 1e-300) > 1e3
        if logx:
            a.set_xscale("log")
            sx, sy = lowess(np.log(xs), v)
            sx = np.exp(sx)
        else:
            sx, sy = lowess(xs, v)
        a.plot(sx, sy, color="tab:red", lw=1.6, label="LOWESS")
        a.axhline(0, color="k", lw=0.8)
        for level in (-1.96, 1.96):
            a.axhline(level, color="k", lw=0.6, ls=":")
        a.set_xlabel(x)
        a.set_ylabel("NPDE")
        a.set_title(f"NPDE vs {x}", fontsize=9)
    ax[2].legend(fontsize=7, loc="upper right")
    for a in ax:
        a.grid(alpha=0.3)
        a.tick_params(labelsize=7)
    _suptitle(fig, f"NPDE{' of ' + output if output else ''} ({result.n_sim} simulations, seed {result.seed}): "
                 f"mean {tests.mean:.2f} (p {tests.p_mean:.2g}), variance {tests.variance:.2f} (p {tests.p_variance:.2g}), "
                 f"{tests.normality_test} p {tests.p_normality:.2g}, global p {tests.p_global:.2g}", fontsize=9)
    return fig


# -- VPC -----------------------------------------------------------------------------------------
def plot_vpc(vpc: VPCData, *, outputs: Sequence[str] | str | None = None,
             log: bool | Mapping[str, bool] | None = None) -> Figure:
    """(Prediction-corrected) VPC: per output a panel of observations, observed percentiles (lines) and
    the simulated intervals of those percentiles (bands), with the bin edges marked and the
    binning stated, over a panel of the fraction below the LLOQ per bin (observed vs simulated).

    ``log``: log y axis (bool or output -> bool; default: the outputs fitted on the log scale).
    """
    have = list(dict.fromkeys(vpc.table["OUTPUT"]))
    outs = have if outputs is None else ([outputs] if isinstance(outputs, str) else list(outputs))
    for o in outs:
        if o not in have:
            raise ValueError(f"output '{o}' is not in the VPC data (outputs: {', '.join(have)})")
    if isinstance(log, bool):
        logs = dict.fromkeys(outs, log)
    else:
        logs = {o: bool((log or {}).get(o, o in vpc.log_outputs)) for o in outs}
    ncol = min(3, len(outs))
    nrow = -(-len(outs) // ncol)
    fig, axes = _figure(2 * nrow, ncol, max(4.6, 7.5 / ncol), 2.2, gridspec_kw={"height_ratios": [2.6, 1.0] * nrow})
    kind = "Prediction-corrected VPC" if vpc.prediction_corrected else "VPC"
    tops = []
    for j, out in enumerate(outs):
        top, bottom = axes[2 * (j // ncol), j % ncol], axes[2 * (j // ncol) + 1, j % ncol]
        bottom.sharex(top)
        tops.append(top)
        tab = vpc.table[vpc.table["OUTPUT"] == out].sort_values("BIN")
        obs = vpc.observations[(vpc.observations["OUTPUT"] == out) & (vpc.observations["BIN"] >= 0)]
        lloq = obs["LLOQ"].to_numpy(dtype=float)
        has_lloq = bool(np.isfinite(lloq).any())
        positive = obs["DV"].to_numpy(dtype=float)
        positive = positive[positive > 0]
        floor = (np.nanmin(lloq) if has_lloq else (positive.min() if positive.size else 1.0)) / 3 if logs[out] else None
        oc = obs[obs["CENS"] == 0]
        top.scatter(oc["TIME"], oc["DV"], s=8, color="0.55", lw=0, alpha=0.6, label="observed")
        cc = obs[obs["CENS"] != 0]
        if len(cc):
            top.scatter(cc["TIME"], cc["DV"], label="censored (at LLOQ)", **_CENS)
        x = tab["TIME_MEDIAN"].to_numpy(dtype=float)
        for p in vpc.percentiles:
            key = f"P{p:g}".replace(".", "_")
            colour = "tab:red" if p == 50 else "tab:blue"
            lo, hi = (_finite_for_plot(tab[f"SIM_{key}_{s}"].to_numpy(dtype=float), floor, logs[out]) for s in ("LOW", "HIGH"))
            top.fill_between(x, lo, hi, color=colour, alpha=0.22, lw=0,
                             label=f"simulated {100 * vpc.ci:g} % interval of P{p:g}")
            ob = _finite_for_plot(tab[f"OBS_{key}"].to_numpy(dtype=float), floor, logs[out], keep_nan=True)
            top.plot(x, ob, color=colour, lw=1.6, ls="-" if p == 50 else "--", marker="o", ms=3,
                     label=f"observed P{p:g}")
        if has_lloq:
            top.axhline(float(np.nanmedian(lloq)), color="tab:red", lw=0.8, ls=":", label="LLOQ")
        for e in vpc.edges.get(out, ()):
            top.axvline(e, color="0.8", lw=0.6, zorder=0)
            bottom.axvline(e, color="0.8", lw=0.6, zorder=0)
        if logs[out]:
            _quiet_log_axis(top)
            if floor is not None and np.isfinite(floor) and floor > 0:
                top.set_ylim(bottom=floor)
        ylabel = f"{out} (prediction-corrected)" if vpc.prediction_corrected else out
        top.set_ylabel(ylabel, fontsize=8)
        top.set_title(_bin_title(vpc, out), fontsize=7)
        bottom.fill_between(x, tab["BLQ_SIM_LOW"], tab["BLQ_SIM_HIGH"], color="tab:blue", alpha=0.25, lw=0,
                            label=f"simulated {100 * vpc.ci:g} % interval")
        bottom.plot(x, tab["BLQ_SIM_MEDIAN"], color="tab:blue", lw=1.0, ls="--", label="simulated median")
        bottom.plot(x, tab["BLQ_OBS"], color="k", lw=1.4, marker="o", ms=3, label="observed")
        bottom.set_ylim(-0.02, 1.02)
        bottom.set_ylabel("fraction < LLOQ", fontsize=8)
        bottom.set_xlabel("TIME")
        if not has_lloq:
            bottom.text(0.5, 0.5, "no LLOQ in the data", transform=bottom.transAxes, ha="center", va="center",
                        fontsize=8, color="0.4")
        for a in (top, bottom):
            a.grid(alpha=0.3)
            a.tick_params(labelsize=7)
    for j in range(len(outs), nrow * ncol):
        axes[2 * (j // ncol), j % ncol].set_visible(False)
        axes[2 * (j // ncol) + 1, j % ncol].set_visible(False)
    h, lab = _legend_entries(tops)
    fig.legend(h, lab, loc="outside lower center", ncol=3, fontsize=7, frameon=False)
    _suptitle(fig, f"{kind}: {vpc.n_sim} simulated replicates (seed {vpc.seed}); bin edges as grey lines", fontsize=9)
    return fig


def _bin_title(vpc: VPCData, out: str) -> str:
    """``out: <how it was binned>`` with the edges, from ``vpc.binning``."""
    import textwrap

    text = next((t for t in vpc.binning.removeprefix("binning by TIME. ").split("; ") if t.startswith(out + ": ")),
                out)
    how, _, edges = text.removeprefix(out + ": ").rpartition(", edges ")
    how = how.split(" (")[0]
    return "\n".join(textwrap.wrap(f"{out}: {how} of TIME" + (f", edges {edges}" if edges else ""), 70))


def _finite_for_plot(v: np.ndarray, floor: float | None, log: bool, keep_nan: bool = False) -> np.ndarray:
    """-inf (percentile below the LLOQ) drawn at the axis floor; observed ones left out (nan)."""
    out = v.astype(float).copy()
    low = np.isneginf(out)
    if keep_nan:
        out[low] = np.nan
    else:
        out[low] = floor if (log and floor) else np.nanmin(np.where(np.isfinite(out), out, np.nan)) if np.isfinite(out).any() else 0.0
    out[np.isposinf(out)] = np.nan
    return out


# -- random effects ------------------------------------------------------------------------------
def plot_eta_distributions(fit: PopulationFit) -> Figure:
    """One panel per random effect: histogram of the EBEs with the N(0, omega) density, omega as CV % and
    the SD-based shrinkage in the title."""
    from scipy import stats

    names = [c.removeprefix("eta_") for c in fit.etas.columns]
    if not names:
        raise ValueError("the fit has no random effects")
    ncol = min(4, len(names))
    nrow = -(-len(names) // ncol)
    fig, axes = _figure(nrow, ncol, 3.0, 2.6)
    cv = fit.omega_cv_percent
    for ax, n in zip(axes.flat, names):
        e = fit.etas[f"eta_{n}"].to_numpy(dtype=float)
        sd = math.sqrt(fit.omega.loc[n, n])
        ax.hist(e, bins=max(5, min(20, int(np.sqrt(e.size)) + 2)), density=True, color="0.7", edgecolor="white",
                label="EBE")
        g = np.linspace(-4 * sd, 4 * sd, 200)
        ax.plot(g, stats.norm.pdf(g, scale=sd), color="tab:red", lw=1.4, label="N(0, omega)")
        ax.axvline(0, color="k", lw=0.6)
        ax.set_title(f"eta {n}: CV {cv[n]:.0f} %, shrinkage {100 * fit.eta_shrinkage[n]:.0f} %", fontsize=8)
        ax.set_xlabel(f"eta_{n}", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    _hide_unused(axes, len(names))
    axes.flat[0].legend(fontsize=7, loc="upper right")
    _suptitle(fig, f"Random effects of {fit.model_name}: {fit.n_subjects} subjects (shrinkage = 1 - SD(EBE) / omega)",
                 fontsize=9)
    return fig


def plot_eta_covariates(fit: PopulationFit, data, *, covariates: Sequence[str] | None = None,
                        max_levels: int = 5) -> Figure:
    """EBEs against covariates: a grid of random effects (rows) by covariates (columns); scatter with a
    LOWESS smoother for continuous covariates, box plots for categorical ones (non-numeric, or at
    most ``max_levels`` distinct values). Covariate values are each subject's first-row values;
    each row states the shrinkage (high shrinkage hides relationships)."""
    if not hasattr(data, "subjects"):
        from kinetics.data import read_dataset
        data = read_dataset(data)
    names = [c.removeprefix("eta_") for c in fit.etas.columns]
    if not names:
        raise ValueError("the fit has no random effects")
    covs = list(data.covariate_names if covariates is None else covariates)
    for c in covs:
        if c not in data.covariate_names:
            raise ValueError(f"covariate '{c}' is not a column of the dataset (covariates: "
                             f"{', '.join(data.covariate_names) or 'none'})")
    if not covs:
        raise ValueError("the dataset has no covariate columns")
    values = pd.DataFrame({c: {s.id: s.covariates.get(c) for s in data.subjects} for c in covs})
    values = values.reindex(fit.etas.index.astype(str))
    fig, axes = _figure(len(names), len(covs), 2.6, 2.2)
    for i, n in enumerate(names):
        e = fit.etas[f"eta_{n}"].to_numpy(dtype=float)
        for j, c in enumerate(covs):
            ax = axes[i, j]
            col = values[c]
            numeric = pd.to_numeric(col, errors="coerce")
            if numeric.notna().all() and numeric.nunique() > max_levels:
                ax.scatter(numeric, e, s=12, color="0.2", lw=0)
                sx, sy = lowess(numeric.to_numpy(dtype=float), e)
                ax.plot(sx, sy, color="tab:red", lw=1.4)
            else:
                levels = sorted(col.dropna().unique(), key=lambda v: (str(type(v)), v))
                groups = [e[(col == lv).to_numpy()] for lv in levels]
                ax.boxplot(groups, tick_labels=[str(lv) for lv in levels])
            ax.axhline(0, color="k", lw=0.6)
            if i == len(names) - 1:
                ax.set_xlabel(c, fontsize=8)
            if j == 0:
                ax.set_ylabel(f"eta_{n}\n(shrinkage {100 * fit.eta_shrinkage[n]:.0f} %)", fontsize=7)
            ax.tick_params(labelsize=7)
            ax.grid(alpha=0.3)
    _suptitle(fig, f"EBEs vs covariates ({fit.n_subjects} subjects; {SMOOTHER})", fontsize=9)
    return fig


# -- parameter table -----------------------------------------------------------------------------
def plot_parameter_table(fit: PopulationFit) -> Figure:
    """The estimates as a table figure: natural-scale estimate, RSE %, 95 % CI, omega as CV %, shrinkage,
    and the covariance health (kind, condition number, positive definiteness) and status below."""
    rows = []
    cv = fit.omega_cv_percent if len(fit.omega) else {}
    for r in fit.estimates.itertuples(index=False):
        name = str(r.name)
        cv_text, shrink = "", ""
        if name.startswith("omega(") and "," not in name:
            eta = name[6:-1]
            cv_text = f"{cv[eta]:.1f}"
            shrink = f"{100 * fit.eta_shrinkage[eta]:.1f}"
        elif name in fit.sigma:
            out = name.rpartition(".")[0]
            if out in fit.epsilon_shrinkage:
                shrink = f"{100 * fit.epsilon_shrinkage[out]:.1f} (eps)"
        ci = f"[{r.ci_low:.4g}, {r.ci_high:.4g}]" if np.isfinite(r.ci_low) else "-"
        rse = f"{r.rse_percent:.1f}" if np.isfinite(r.rse_percent) else "-"
        rows.append([name, f"{r.natural:.4g}", rse, ci, cv_text, shrink])
    header = ["parameter", "estimate", "RSE %", "95 % CI", "CV %", "shrinkage %"]
    health = "\n".join(_health_lines(fit))
    n_text = health.count("\n") + 1
    table_h, text_h = 0.25 * (len(rows) + 1), 0.16 * n_text + 0.2
    fig, axes = _figure(1, 1, 8.0, table_h + text_h + 0.4)
    ax = axes[0, 0]
    ax.axis("off")
    split = text_h / (table_h + text_h)
    table = ax.table(cellText=rows or [["-"] * len(header)], colLabels=header, cellLoc="center",
                     colWidths=[0.22, 0.13, 0.09, 0.28, 0.09, 0.19], bbox=[0.0, split, 1.0, 1.0 - split])
    table.auto_set_font_size(False)
    table.set_fontsize(8)
    for k in range(len(header)):
        table[0, k].set_facecolor("0.88")
    ax.text(0.0, split - 0.02, health, transform=ax.transAxes, va="top", ha="left", fontsize=7, family="monospace")
    _suptitle(fig, f"Parameter estimates: {fit.model_name} ({_fit_label(fit)})", fontsize=10)
    return fig


def _health_lines(fit: PopulationFit) -> list[str]:
    lines = [f"OFV {fit.ofv:.3f} ({fit.n_subjects} subjects, {fit.n_observations} observations, "
             f"{fit.n_censored} censored); status: {'SUCCESS' if fit.success else 'FAILED'}",
             _wrap(fit.message, 105)]
    cov = fit.covariance
    if cov is None:
        lines.append("covariance step: not run (no standard errors)")
        return lines
    lines.append(f"covariance: {cov.kind}; condition number {cov.condition_number:.3g}; R positive definite "
                 f"{cov.r_positive_definite}" + ("" if cov.s is None else f"; S positive definite {cov.s_positive_definite}"))
    lines.append(_wrap(f"covariance used positive definite: {cov.success} ({cov.message})", 105))
    return lines


def _wrap(text: str, width: int) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(str(text), width)) or "-"
