"""Virtual populations at scale: draw individual parameters, simulate them in chunks with the batch
solver (numba threads), in-process or mapped over a Dask cluster, and keep either every trajectory
or streaming summaries.

Each chunk draws its patients from its own ``numpy.random.SeedSequence(seed).spawn`` stream, so a
seed gives the same population whichever scheduler runs the chunks and in whatever order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from kinetics.errors import KineticsError, SolverInputError, did_you_mean
from kinetics.solve import Dose

__all__ = ["PopulationSimulation", "simulate_population"]

_KEEP_LIMIT_BYTES = 512 * 2 ** 20


@dataclass(frozen=True)
class PopulationSimulation:
    """Result of :func:`simulate_population`.

    ``summary``: per output and time, the mean, SD, min, max and the 5th/50th/95th percentiles over
    the patients that solved (exact when trajectories are kept; with ``keep=False`` the percentiles
    are chunk-size-weighted averages of the chunks' percentiles: an approximation that is exact for
    one chunk and close for many equal chunks). ``outputs`` ``(n, n_times, n_outputs)`` when kept.
    """

    times: np.ndarray
    output_names: tuple[str, ...]
    n: int
    n_failed: int
    summary: pd.DataFrame
    outputs: np.ndarray | None
    params: np.ndarray | None
    seed: int
    n_chunks: int
    scheduler: str


def simulate_population(model, n: int, *, times: Sequence[float], doses: Sequence[Dose] | None = None,
                        params: Mapping[str, float] | None = None, omega: Mapping[str, float] | None = None,
                        seed: int = 0, chunk_size: int = 20_000, keep: bool | None = None, scheduler=None,
                        rtol: float = 1e-6, atol: float = 1e-9, progress: bool = False) -> PopulationSimulation:
    """Simulate ``n`` virtual patients with log-normal between-subject variability.

    Parameters
    ----------
    model
        A compiled model (library models and models built in Python both travel to Dask workers).
    n, times, doses
        Number of patients, output times (model time unit), one dose schedule for all.
    params, omega
        Typical values (others keep the model's) and variances of log-normal random effects.
    seed, chunk_size
        Reproducibility: chunk ``k`` draws from ``SeedSequence(seed).spawn(n_chunks)[k]``.
    keep
        Keep every trajectory (default: when they fit in 512 MB), else only streaming summaries.
    scheduler
        None (in-process, numba threads), a ``dask.distributed.Client``, or a scheduler address
        ``"tcp://host:port"``: chunks are mapped over the cluster.
    progress
        A progress bar (tqdm) over chunks.

    Raises
    ------
    SolverInputError
        For unknown parameter names, non-positive ``n``/``chunk_size``, negative variances.
    KineticsError
        When a scheduler address cannot be reached.
    """
    _check(model, n, params or {}, omega or {}, chunk_size)
    t = np.asarray(times, dtype=float)
    n_chunks = -(-n // chunk_size)
    sizes = [min(chunk_size, n - k * chunk_size) for k in range(n_chunks)]
    seeds = np.random.SeedSequence(seed).spawn(n_chunks)
    keep = (n * t.size * max(len(model.output_names), 1) * 8 <= _KEEP_LIMIT_BYTES) if keep is None else keep
    task = _ChunkTask(model.model, t, list(doses or []), dict(params or {}), dict(omega or {}), rtol, atol, keep)
    results, label = _run(task, sizes, seeds, scheduler, progress)
    return _assemble(results, t, model.output_names, n, seed, n_chunks, label, keep)


@dataclass(frozen=True)
class _ChunkTask:
    """Everything a worker needs for one chunk (picklable: the symbolic model, not the compiled one)."""

    model: object
    times: np.ndarray
    doses: list
    params: dict
    omega: dict
    rtol: float
    atol: float
    keep: bool

    def __call__(self, size: int, seed_seq: np.random.SeedSequence) -> dict:
        from kinetics.solve import compile_model  # on a worker: loads the kernels from the disk cache

        model = compile_model(self.model)
        rng = np.random.default_rng(seed_seq)
        names = model.parameter_names
        pmat = np.tile(model.parameter_vector(self.params), (size, 1))
        for k, var in self.omega.items():
            pmat[:, names.index(k)] *= np.exp(np.sqrt(var) * rng.standard_normal(size))
        batch = model.simulate_batch(self.times, params=pmat, doses=self.doses, rtol=self.rtol, atol=self.atol)
        out = np.where(batch.success[:, None, None], batch.outputs, np.nan)
        ok = batch.success
        stats = _chunk_stats(out[ok])
        return {"stats": stats, "n_ok": int(ok.sum()), "outputs": out if self.keep else None,
                "params": pmat if self.keep else None}


def _run(task: _ChunkTask, sizes: list[int], seeds, scheduler, progress: bool) -> tuple[list[dict], str]:
    if scheduler is None:
        it = range(len(sizes))
        if progress:
            from tqdm import tqdm

            it = tqdm(it, desc="virtual patients", unit="chunk")
        return [task(sizes[k], seeds[k]) for k in it], "in-process"
    client, label = _client(scheduler)
    futures = client.map(task, sizes, seeds, pure=False)
    if progress:
        from dask.distributed import progress as dask_progress

        dask_progress(futures)
    return client.gather(futures), label


def _client(scheduler):
    try:
        from dask.distributed import Client
    except ImportError as exc:  # pragma: no cover - distributed is a declared dependency
        raise KineticsError("scale-out needs dask.distributed (pip install distributed)") from exc
    if isinstance(scheduler, Client):
        return scheduler, f"dask {scheduler.scheduler.address}"
    if not isinstance(scheduler, str):
        raise SolverInputError(f"scheduler must be None, a dask.distributed.Client or an address, got {scheduler!r}")
    try:
        return Client(scheduler, timeout="5s"), f"dask {scheduler}"
    except (OSError, TimeoutError) as exc:
        raise KineticsError(f"cannot reach the Dask scheduler at {scheduler!r}: {exc}") from None


def _chunk_stats(out: np.ndarray) -> dict:
    """Per time and output: count, sum, sum of squares, min, max, 5/50/95th percentiles."""
    if out.shape[0] == 0:
        shape = out.shape[1:]
        nan = np.full(shape, np.nan)
        return {"n": 0, "sum": np.zeros(shape), "sumsq": np.zeros(shape), "min": nan, "max": nan,
                "q": np.full((3, *shape), np.nan)}
    return {"n": out.shape[0], "sum": out.sum(axis=0), "sumsq": (out * out).sum(axis=0), "min": out.min(axis=0),
            "max": out.max(axis=0), "q": np.percentile(out, [5, 50, 95], axis=0)}


def _assemble(results: list[dict], t: np.ndarray, names, n: int, seed: int, n_chunks: int, label: str,
              keep: bool) -> PopulationSimulation:
    n_ok = sum(r["n_ok"] for r in results)
    outputs = np.concatenate([r["outputs"] for r in results]) if keep else None
    params = np.concatenate([r["params"] for r in results]) if keep else None
    if keep:
        ok = outputs[~np.isnan(outputs).any(axis=(1, 2))] if outputs.size else outputs
        stats = _chunk_stats(ok)
        q = stats["q"]
    else:
        stats = {"n": n_ok, "sum": sum(r["stats"]["sum"] for r in results),
                 "sumsq": sum(r["stats"]["sumsq"] for r in results),
                 "min": np.nanmin([r["stats"]["min"] for r in results], axis=0),
                 "max": np.nanmax([r["stats"]["max"] for r in results], axis=0)}
        weights = np.array([r["n_ok"] for r in results], dtype=float)
        qs = np.array([np.nan_to_num(r["stats"]["q"]) for r in results])
        q = np.tensordot(weights / max(weights.sum(), 1), qs, axes=1)
    count = max(stats["n"], 1)
    mean = stats["sum"] / count
    sd = np.sqrt(np.maximum(stats["sumsq"] / count - mean ** 2, 0.0) * count / max(count - 1, 1))
    rows = []
    for o, name in enumerate(names):
        rows.append(pd.DataFrame({"output": name, "time": t, "mean": mean[:, o], "sd": sd[:, o],
                                  "min": stats["min"][:, o], "max": stats["max"][:, o], "p05": q[0][:, o],
                                  "p50": q[1][:, o], "p95": q[2][:, o]}))
    return PopulationSimulation(times=t, output_names=tuple(names), n=n, n_failed=n - n_ok,
                                summary=pd.concat(rows, ignore_index=True), outputs=outputs, params=params, seed=seed,
                                n_chunks=n_chunks, scheduler=label)


def _check(model, n: int, params: Mapping, omega: Mapping, chunk_size: int) -> None:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise SolverInputError(f"simulate_population: n must be a positive integer, got {n!r}")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1:
        raise SolverInputError(f"simulate_population: chunk_size must be a positive integer, got {chunk_size!r}")
    names = model.parameter_names
    for k in list(params) + list(omega):
        if k not in names:
            raise SolverInputError(f"simulate_population: '{k}' is not a parameter of '{model.name}'"
                                   f"{did_you_mean(k, names)}")
    for k, v in omega.items():
        if not (np.isfinite(v) and v >= 0):
            raise SolverInputError(f"simulate_population: omega of '{k}' must be a variance >= 0, got {v!r}")
