"""Simulate a population trial from a model: log-normal between-subject variability, residual
error per output and LLOQ censoring, written in the event-table layout ``read_dataset`` reads.

Used for simulation-estimation studies (bias, coverage), for checking estimators against a known
truth, and for predictive checks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from kinetics.errors import FitSpecError, did_you_mean
from kinetics.fit._likelihood import ErrorModel
from kinetics.solve import Dose

__all__ = ["simulate_trial"]


def simulate_trial(model, *, n_subjects: int, times: Mapping[str, Sequence[float]], doses: Sequence[Dose] = (),
                   params: Mapping[str, float] | None = None, omega: Mapping[str, float] | None = None,
                   error: Mapping[str, Mapping[str, float]], lloq: Mapping[str, float] | None = None,
                   seed: int = 0, rtol: float = 1e-8, atol: float = 1e-10) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Simulate ``n_subjects`` patients; returns ``(event_table, true_individual_parameters)``.

    Parameters
    ----------
    times
        Output name -> sampling times (model time unit) for every subject.
    doses
        Dose schedule given to every subject.
    params
        Typical values (others keep the model defaults).
    omega
        Parameter name -> variance of its log-normal random effect.
    error
        Output -> ``{"kind": ..., "add": sd, "prop": sd}`` (see :class:`~kinetics.fit.ErrorModel`).
    lloq
        Output -> lower limit of quantification: a value below it becomes ``CENS=1`` with ``DV`` = LLOQ.
    seed
        Seed of ``numpy.random.default_rng``; the same seed gives the same table.

    Raises
    ------
    FitSpecError
        For unknown parameter or output names, and if any simulated subject's solve fails.
    """
    rng = np.random.default_rng(seed)
    names = model.parameter_names
    for n in list(params or {}) + list(omega or {}):
        if n not in names:
            raise FitSpecError(f"simulate_trial: '{n}' is not a parameter of '{model.name}'{did_you_mean(n, names)}")
    for out in list(times) + list(error) + list(lloq or {}):
        if out not in model.output_names:
            raise FitSpecError(f"simulate_trial: '{out}' is not an output of '{model.name}'"
                               f"{did_you_mean(out, model.output_names)}")
    base = model.parameter_vector(dict(params or {}))
    eta_names = list(omega or {})
    sd = np.sqrt(np.array([omega[n] for n in eta_names], dtype=float)) if eta_names else np.zeros(0)
    etas = rng.standard_normal((n_subjects, len(eta_names))) * sd
    pmat = np.tile(base, (n_subjects, 1))
    for k, n in enumerate(eta_names):
        pmat[:, names.index(n)] *= np.exp(etas[:, k])
    grid = np.unique(np.concatenate([np.asarray(t, dtype=float) for t in times.values()]))
    batch = model.simulate_batch(grid, params=pmat, doses=list(doses), rtol=rtol, atol=atol)
    if not np.all(batch.success):
        bad = np.flatnonzero(~batch.success)
        raise FitSpecError(f"simulate_trial: solve failed for {bad.size} simulated subjects "
                           f"(subject {bad[0] + 1}: {batch.messages[int(bad[0])]})")
    rows = []
    for i in range(n_subjects):
        sid = i + 1
        for d in doses:
            rows.append(dict(ID=sid, TIME=d.time, DV=np.nan, MDV=1, EVID=1, AMT=d.amount, CMT=d.target, OUTPUT="",
                             CENS=0, DUR=d.duration))
        for out, ts in times.items():
            k = model.output_names.index(out)
            f = batch.outputs[i, np.searchsorted(grid, np.asarray(ts, dtype=float)), k]
            y = _add_error(ErrorModel(str(error[out]["kind"])), error[out], f, rng)
            limit = (lloq or {}).get(out)
            for t, v in zip(ts, y):
                cens = int(limit is not None and v < limit)
                rows.append(dict(ID=sid, TIME=float(t), DV=limit if cens else v, MDV=0, EVID=0, AMT=np.nan, CMT="",
                                 OUTPUT=out, CENS=cens, DUR=np.nan))
    table = pd.DataFrame(rows).sort_values(["ID", "TIME", "EVID"], ascending=[True, True, False], kind="stable")
    truth = pd.DataFrame(pmat[:, [names.index(n) for n in eta_names]], columns=eta_names,
                         index=pd.Index(range(1, n_subjects + 1), name="ID"))
    return table.reset_index(drop=True), truth


def _add_error(e: ErrorModel, spec: Mapping[str, float], f: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    sds = np.array([float(spec[p]) for p in e.parameter_names])
    eps = rng.standard_normal(f.size)
    if e.is_log_scale:
        return f * np.exp(sds[0] * eps)
    return f + np.sqrt(e.variance(f, sds)[0]) * eps
