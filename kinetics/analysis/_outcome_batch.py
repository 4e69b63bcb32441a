"""Several outcomes of many parameter sets from shared batch solves.

A dose sweep asks seven outcomes of every virtual patient; solved one outcome at a time that is a
dozen solves per patient. Here each outcome that can be batched states a *plan*: the output times
it needs, whether it needs the no-dose baseline, and how it finishes from the solution on those
times (locating crossings by event location in further batch solves). :func:`evaluate_outcomes`
solves the union of the plans' grids once per chunk of sets and dose-time pattern, then lets every
plan finish. The values equal the single-set functions of :mod:`kinetics.analysis._outcomes` (same
grids, tolerances and rules); outcomes without a plan (a user's function, options a plan does not
cover) are evaluated set by set.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from kinetics.errors import SolverInputError

__all__ = ["Plan", "BatchContext", "run_plans"]


@dataclass(frozen=True)
class Plan:
    """How one outcome is computed for a chunk of sets from shared solves.

    ``times(schedule)`` gives the output times the outcome needs for a dose schedule;
    ``finish(ctx)`` returns the ``(n_sets,)`` values (nan where a solve failed); ``baseline``
    says whether it needs the outputs at time 0 solved without doses.
    """

    times: Callable[[Sequence], np.ndarray]
    finish: Callable[["BatchContext"], np.ndarray]
    baseline: bool = False


@dataclass
class BatchContext:
    """The shared solves of one chunk of sets with one dose-time pattern, for the plans to finish from.

    ``grid`` is the union of the plans' times; ``outputs`` ``(n_sets, n_times, n_outputs)`` on it
    (solved with ``rtol``/``atol``), ``ok`` the sets whose grid solve succeeded.
    """

    model: object
    params: np.ndarray
    schedules: list
    grid: np.ndarray
    outputs: np.ndarray
    ok: np.ndarray
    rtol: float
    atol: float
    _baseline: np.ndarray | None = field(default=None, repr=False)
    _crossings: dict = field(default_factory=dict, repr=False)

    def on(self, output: str, times: np.ndarray) -> np.ndarray:
        """``(n_sets, len(times))`` values of ``output`` at ``times`` (all on the grid); nan for failed sets."""
        idx = np.searchsorted(self.grid, times)
        y = self.outputs[:, idx, self.model.output_names.index(output)]
        return np.where(self.ok[:, None], y, np.nan)

    def baseline(self, output: str) -> np.ndarray:
        """``(n_sets,)`` value of ``output`` at time 0 solved without doses (nan where that failed)."""
        if self._baseline is None:
            b = self.model.simulate_batch([0.0], self.params, None, rtol=self.rtol, atol=self.atol)
            self._baseline = np.where(b.success[:, None], b.outputs[:, 0, :], np.nan)
        return self._baseline[:, self.model.output_names.index(output)]

    def doses(self, rows: np.ndarray) -> list | None:
        """The schedules of sets ``rows`` as ``simulate_batch`` takes them: one shared list (or None) when
        every set has the same schedule object, else one per row."""
        first = self.schedules[0]
        if all(s is first for s in self.schedules):
            return first or None
        return [self.schedules[i] for i in rows]

    def crossings(self, output: str, level: np.ndarray, after: np.ndarray, until: float, direction: str,
                  rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """First crossings after ``after`` for the sets ``rows``: (time, found, solved), each ``(len(rows),)``.

        A crossing already located for a set from an earlier start ``a <= after`` with the same output,
        level, direction and end answers without a solve when it lies after ``after`` (there is no
        crossing between ``a`` and it), as does "none before ``until``".
        """
        n = rows.size
        t, found, solved = np.full(n, np.nan), np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
        todo = np.ones(n, dtype=bool)
        for (o, d, u), known in self._crossings.items():
            if (o, d, u) != (output, direction, until):
                continue
            k_level, k_after, k_time, k_found, k_solved = (x[rows] for x in known)
            hit = todo & k_solved & (k_level == level) & (k_after <= after) & (~k_found | (k_time > after))
            t[hit], found[hit], solved[hit] = k_time[hit], k_found[hit], True
            todo &= ~hit
        sub = rows[todo]
        if sub.size:
            c = self.model.crossing_times(output, level[todo], after=after[todo], until=until, direction=direction,
                                          params=self.params[sub], doses=self.doses(sub), rtol=self.rtol,
                                          atol=self.atol)
            t[todo], found[todo], solved[todo] = c.time, c.found, c.success
            known = self._crossings.setdefault((output, direction, until), tuple(
                np.full(self.params.shape[0], np.nan) if i < 3 else np.zeros(self.params.shape[0], dtype=bool)
                for i in range(5)))
            for arr, val in zip(known, (level[todo], after[todo], c.time, c.found, c.success)):
                arr[sub] = val
        return t, found, solved

    def on_grids(self, output: str, grids: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Values of ``output`` on a time grid per set (``grids`` ``(len(rows), n)``, one row per set in
        ``rows``): (values, solved); a further batch solve."""
        if rows.size == 0:
            return np.zeros((0, grids.shape[1])), np.zeros(0, dtype=bool)
        b = self.model.simulate_batch(grids, self.params[rows], self.doses(rows), rtol=self.rtol, atol=self.atol)
        return b.outputs[:, :, self.model.output_names.index(output)], b.success


def run_plans(model, plans: Mapping[str, Plan], params: np.ndarray, schedules: list, *, rtol: float,
              atol: float) -> dict[str, np.ndarray]:
    """Every plan's values for the sets ``params`` (``(n_sets, n_params)``) with one schedule per set.

    Sets are grouped by the times of their doses (the grids include dose times); each group is solved
    once on the union of the plans' grids.
    """
    n = params.shape[0]
    out = {label: np.full(n, np.nan) for label in plans}
    groups: dict[tuple, list[int]] = {}
    for i, s in enumerate(schedules):
        groups.setdefault(tuple(sorted({d.time for d in s})), []).append(i)
    for idx_list in groups.values():
        idx = np.asarray(idx_list)
        first = schedules[idx[0]]
        grid = np.unique(np.concatenate([np.asarray(p.times(first), dtype=float) for p in plans.values()]))
        if not np.isfinite(grid).all():
            raise SolverInputError("an outcome asked for a non-finite output time")
        shared = all(schedules[i] is first for i in idx)
        sched = (first or None) if shared else [schedules[i] for i in idx]
        b = model.simulate_batch(grid, params[idx], sched, rtol=rtol, atol=atol)
        ctx = BatchContext(model=model, params=params[idx], schedules=[schedules[i] for i in idx], grid=grid,
                           outputs=np.asarray(b.outputs), ok=np.asarray(b.success), rtol=rtol, atol=atol)
        for label, plan in plans.items():
            out[label][idx] = plan.finish(ctx)
    return out

