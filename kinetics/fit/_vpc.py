"""Visual predictive checks: observed and simulated percentiles per time bin (VPC), optionally
prediction-corrected (pcVPC), with the fraction of samples below the LLOQ, from the simulation of
a fitted population on the subjects' own designs (:func:`kinetics.fit._npde.build_simulation_spec`).
Nothing here plots (see :func:`kinetics.plot.plot_vpc`).

References
----------
Bergstrand M, Hooker AC, Wallin JE, Karlsson MO. Prediction-corrected visual predictive checks for
diagnosing nonlinear mixed-effects models. AAPS J 2011;13:143-51, doi:10.1208/s12248-011-9255-z.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from kinetics.data import CENSORED_LEFT, CENSORED_RIGHT
from kinetics.errors import FitSpecError, did_you_mean
from kinetics.fit._npde import SimulationSpec, _rng, build_simulation_spec

__all__ = ["VPCData", "vpc_data"]


@dataclass(frozen=True)
class VPCData:
    """The numbers behind a visual predictive check (VPC) or prediction-corrected VPC.

    ``table``: one row per output and time bin: ``OUTPUT, BIN, TIME_LOW, TIME_HIGH, TIME_MEDIAN``
    (median observation time), ``N_OBS, N_CENSORED``; per percentile ``p`` (e.g. ``P5``):
    ``OBS_P5`` (observed) and ``SIM_P5_LOW, SIM_P5_MEDIAN, SIM_P5_HIGH`` (the ``ci`` interval and median
    of that percentile over the simulated replicates); ``BLQ_OBS`` and ``BLQ_SIM_LOW, BLQ_SIM_MEDIAN,
    BLQ_SIM_HIGH`` (fraction of samples below the LLOQ). A percentile that falls among the
    left-censored values of a bin is ``-inf`` (below the LLOQ; ``+inf`` above an upper limit).
    ``observations``: the observed rows with their ``BIN`` (-1: outside every bin), ``DV`` and ``LLOQ``
    (prediction-corrected when ``prediction_corrected``) and ``PRED``.
    """

    table: pd.DataFrame
    observations: pd.DataFrame
    edges: Mapping[str, np.ndarray]
    binning: str
    prediction_corrected: bool
    percentiles: tuple[float, ...]
    ci: float
    n_sim: int
    seed: int | None
    n_failed: int     # replicates left out because a subject's solve failed in them
    log_outputs: tuple[str, ...] = ()   # outputs fitted on the log scale (log_additive error)
    notes: tuple[str, ...] = ()

    def outside(self) -> pd.DataFrame:
        """Observed percentiles outside their simulated interval: ``OUTPUT, BIN, PERCENTILE, OBSERVED, LOW,
        HIGH`` (an observed percentile below the LLOQ is inside when the interval reaches below it too)."""
        rows = []
        for r in self.table.itertuples(index=False):
            d = r._asdict()
            for p in self.percentiles:
                key = _pkey(p)
                obs, lo, hi = d[f"OBS_{key}"], d[f"SIM_{key}_LOW"], d[f"SIM_{key}_HIGH"]
                if not np.isnan(obs) and not (lo <= obs <= hi):
                    rows.append({"OUTPUT": d["OUTPUT"], "BIN": d["BIN"], "PERCENTILE": p, "OBSERVED": obs,
                                 "LOW": lo, "HIGH": hi})
        return pd.DataFrame(rows, columns=["OUTPUT", "BIN", "PERCENTILE", "OBSERVED", "LOW", "HIGH"])

    @property
    def n_compared(self) -> int:
        """Number of (output, bin, percentile) comparisons with an observed percentile."""
        return int(sum(np.count_nonzero(~np.isnan(self.table[f"OBS_{_pkey(p)}"])) for p in self.percentiles))

    def summary(self) -> str:
        kind = "prediction-corrected VPC" if self.prediction_corrected else "VPC"
        out = self.outside()
        return "\n".join([f"{kind}: {self.n_sim} simulated replicates (seed {self.seed}, {self.n_failed} left out); "
                          f"observed percentiles {', '.join(f'{p:g}' for p in self.percentiles)} outside the "
                          f"simulated {100 * self.ci:g} % interval in {len(out)} of {self.n_compared} bins",
                          self.binning, *self.notes])


def _pkey(p: float) -> str:
    return f"P{p:g}".replace(".", "_")


def vpc_data(fit, model, data, *, n_sim: int = 200, bins: str | int | Sequence[float] | Mapping = "auto",
             seed: int | np.random.Generator = 0, prediction_corrected: bool = False,
             percentiles: Sequence[float] = (5.0, 50.0, 95.0), ci: float = 0.95,
             error: Mapping[str, str] | None = None, rtol: float = 1e-6, atol: float = 1e-8) -> VPCData:
    """Observed and simulated percentiles per time bin for a (prediction-corrected) VPC.

    Parameters
    ----------
    fit, model, data
        The fit, the compiled model and the dataset it was fitted to (see :func:`build_simulation_spec`).
    n_sim
        Simulated replicates of the whole dataset.
    bins
        ``"auto"`` (default: one bin per distinct sampling time when an output has at most 15, as in a
        nominal design; else 8 quantile bins), ``"quantile"`` (8 bins per output with about equal
        numbers of observations, edges placed midway between distinct sampling times, so one time is
        never split), an integer (that many quantile bins), a sequence of edges (bins ``[e0, e1), ...,
        [e_n-1, e_n]``; rows outside are left out), or a mapping output -> any of these. The binning
        used is stated in ``VPCData.binning`` and ``VPCData.edges``.
    prediction_corrected
        Bergstrand et al. 2011: each observed and simulated value (and its LLOQ) is multiplied by
        ``PRED_bin / PRED``, ``PRED_bin`` the median PRED of its bin (rows with PRED <= 0 are not
        corrected, and counted in ``notes``).
    percentiles, ci
        Percentiles of the data per bin, and the interval of each over the replicates.

    Notes
    -----
    Censored observations count in each bin at their limit: a percentile is reported only when it
    falls among the uncensored values (else ``-inf``, below the LLOQ); simulated data are censored
    at the rows' LLOQ the same way (see :func:`build_simulation_spec`), and the fraction below the
    LLOQ is compared per bin.
    """
    if not (isinstance(n_sim, (int, np.integer)) and n_sim >= 20):
        raise FitSpecError(f"n_sim must be an integer >= 20, got {n_sim!r}")
    pcts = tuple(float(p) for p in percentiles)
    if not pcts or any(not 0 < p < 100 for p in pcts):
        raise FitSpecError(f"percentiles must lie in (0, 100), got {percentiles!r}")
    if not 0 < ci < 1:
        raise FitSpecError(f"ci must lie in (0, 1), got {ci!r}")
    spec = build_simulation_spec(fit, model, data, error=error, rtol=rtol, atol=atol)
    rng = _rng(seed)
    sim = np.empty((n_sim, spec.n_rows))
    for k, s in enumerate(spec.subjects):
        if s.time_index.size:
            sim[:, s.rows] = spec.simulate_subject(k, n_sim, rng)[0]
    ok = np.all(np.isfinite(sim), axis=1)
    sim = sim[ok]
    if sim.shape[0] < 20:
        raise FitSpecError(f"only {sim.shape[0]} of {n_sim} simulated replicates solved: cannot build a VPC")
    sim_v, sim_c = spec.censor(sim)
    obs_v = spec.dv.copy()
    bin_of, edges, text, notes = _assign_bins(spec, bins)
    factor = np.ones(spec.n_rows)
    if prediction_corrected:
        factor, note = _pc_factor(spec, bin_of)
        notes += note
    lloq = spec.lloq * factor
    obs_v, sim_v = obs_v * factor, sim_v * factor
    lo_q, hi_q = 50 * (1 - ci), 50 * (1 + ci)
    rows = []
    for out in dict.fromkeys(spec.outputs):
        sel_out = spec.outputs == out
        for b in range(len(edges[out]) - 1):
            sel = sel_out & (bin_of == b)
            if not sel.any():
                continue
            row = {"OUTPUT": out, "BIN": b, "TIME_LOW": edges[out][b], "TIME_HIGH": edges[out][b + 1],
                   "TIME_MEDIAN": float(np.median(spec.times[sel])), "N_OBS": int(sel.sum()),
                   "N_CENSORED": int(np.count_nonzero(spec.cens[sel]))}
            obs_p = _censored_percentiles(obs_v[None, sel], spec.cens[None, sel], pcts)[:, 0]
            sim_p = _censored_percentiles(sim_v[:, sel], sim_c[:, sel], pcts)
            for j, p in enumerate(pcts):
                key = _pkey(p)
                row[f"OBS_{key}"] = obs_p[j]
                row[f"SIM_{key}_LOW"], row[f"SIM_{key}_MEDIAN"], row[f"SIM_{key}_HIGH"] = _interval(sim_p[j], lo_q, hi_q)
            row["BLQ_OBS"] = float(np.mean(spec.cens[sel] == CENSORED_LEFT))
            blq = np.mean(sim_c[:, sel] == CENSORED_LEFT, axis=1)
            row["BLQ_SIM_LOW"], row["BLQ_SIM_MEDIAN"], row["BLQ_SIM_HIGH"] = _interval(blq, lo_q, hi_q)
            rows.append(row)
    observations = pd.DataFrame({"ID": spec.ids, "TIME": spec.times, "OUTPUT": spec.outputs, "DV": obs_v,
                                 "CENS": spec.cens, "LLOQ": lloq, "PRED": spec.pred, "BIN": bin_of})
    return VPCData(table=pd.DataFrame(rows), observations=observations, edges=edges, binning=text,
                   prediction_corrected=bool(prediction_corrected), percentiles=pcts, ci=float(ci), n_sim=int(n_sim),
                   seed=seed if isinstance(seed, (int, np.integer)) else None, n_failed=int(np.count_nonzero(~ok)),
                   log_outputs=tuple(o for o, e in spec.error_models.items() if e.is_log_scale), notes=tuple(notes))


def _censored_percentiles(values: np.ndarray, cens: np.ndarray, pcts: tuple[float, ...]) -> np.ndarray:
    """Percentiles (len(pcts), m) of each row of ``values`` (censored entries at their limit); -inf where a
    percentile falls among left-censored values, +inf among right-censored ones."""
    p = np.percentile(values, pcts, axis=1)
    left = np.mean(cens == CENSORED_LEFT, axis=1)
    right = np.mean(cens == CENSORED_RIGHT, axis=1)
    q = np.array(pcts)[:, None] / 100.0
    return np.where(q <= left, -np.inf, np.where(q >= 1 - right, np.inf, p))


def _interval(x: np.ndarray, lo_q: float, hi_q: float) -> tuple[float, float, float]:
    with np.errstate(invalid="ignore"):
        r = np.percentile(x, [lo_q, 50.0, hi_q])
    if np.any(np.isnan(r)):   # interpolation between an infinite and a finite percentile: take order statistics
        r = np.percentile(x, [lo_q, 50.0, hi_q], method="inverted_cdf")
    return float(r[0]), float(r[1]), float(r[2])


def _assign_bins(spec: SimulationSpec, bins) -> tuple[np.ndarray, dict[str, np.ndarray], str, list[str]]:
    bin_of = np.full(spec.n_rows, -1, dtype=int)
    edges: dict[str, np.ndarray] = {}
    texts, notes = [], []
    outputs = list(dict.fromkeys(spec.outputs))
    if isinstance(bins, Mapping):
        unknown = [k for k in bins if k not in outputs]
        if unknown:
            raise FitSpecError(f"bins: '{unknown[0]}' is not an output of the data (outputs: {', '.join(outputs)})"
                               f"{did_you_mean(str(unknown[0]), outputs)}")
    for out in outputs:
        sel = spec.outputs == out
        how = bins.get(out, "auto") if isinstance(bins, Mapping) else bins
        t = spec.times[sel]
        e, idx, text = _bins_for(t, how, out)
        edges[out], texts = e, texts + [f"{out}: {text}"]
        bin_of[sel] = idx
        if np.all(idx < 0):
            raise FitSpecError(f"bins: no observation of output '{out}' falls inside the bin edges "
                               f"{', '.join(f'{x:g}' for x in e)}")
        if np.any(idx < 0):
            notes.append(f"{out}: {int(np.count_nonzero(idx < 0))} observations outside the given bin edges left out")
    return bin_of, edges, "binning by TIME. " + "; ".join(texts), notes


def _bins_for(t: np.ndarray, how, out: str) -> tuple[np.ndarray, np.ndarray, str]:
    u = np.unique(t)
    if isinstance(how, str) or isinstance(how, (int, np.integer)):
        if isinstance(how, str):
            if how not in ("auto", "quantile"):
                raise FitSpecError(f"bins must be 'auto', 'quantile', a number of bins or a sequence of edges, "
                                   f"got {how!r}")
            n = u.size if (how == "auto" and u.size <= 15) else min(8, u.size)
        else:
            if how < 1:
                raise FitSpecError(f"bins: need at least 1 bin for output '{out}', got {how}")
            n = int(how)
        if u.size <= n:
            inner = (u[:-1] + u[1:]) / 2
            text = f"one bin per distinct sampling time ({u.size} bins)"
        else:
            qs = np.quantile(t, np.linspace(0, 1, n + 1)[1:-1])
            k = np.clip(np.searchsorted(u, qs, side="right") - 1, 0, u.size - 2)
            inner = np.unique((u[k] + u[k + 1]) / 2)
            text = (f"{inner.size + 1} quantile bins (about equal numbers of observations, edges midway between "
                    "distinct sampling times)")
        edges = np.concatenate([[u[0]], inner, [u[-1]]])
        idx = np.searchsorted(inner, t, side="right")
        return edges, idx, text + ", edges " + ", ".join(f"{x:.4g}" for x in edges)
    edges = np.asarray(how, dtype=float)
    if edges.ndim != 1 or edges.size < 2 or not np.all(np.isfinite(edges)) or np.any(np.diff(edges) <= 0):
        raise FitSpecError(f"bins for output '{out}': edges must be at least 2 finite, strictly increasing "
                           f"numbers, got {how!r}")
    idx = np.searchsorted(edges, t, side="right") - 1
    idx[t == edges[-1]] = edges.size - 2
    idx[(t < edges[0]) | (t > edges[-1])] = -1
    return edges, idx, "given edges " + ", ".join(f"{x:.4g}" for x in edges)


def _pc_factor(spec: SimulationSpec, bin_of: np.ndarray) -> tuple[np.ndarray, list[str]]:
    factor = np.ones(spec.n_rows)
    frame = pd.DataFrame({"O": spec.outputs, "B": bin_of, "P": spec.pred})
    pred_bin = frame.groupby(["O", "B"])["P"].transform("median").to_numpy(dtype=float)
    good = (spec.pred > 0) & (pred_bin > 0) & (bin_of >= 0)
    factor[good] = pred_bin[good] / spec.pred[good]
    bad = int(np.count_nonzero(~good & (bin_of >= 0)))
    return factor, ([f"prediction correction: {bad} rows with PRED <= 0 (or a bin median <= 0) left uncorrected"]
                    if bad else [])
