"""B-cell recovery time after CAR-T: a stated threshold rule, located by event detection."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from kinetics.errors import SolverInputError
from kinetics.solve import CompiledModel, Dose

#: Solution values across the grid bracket of a nadir (see _nadir).
NADIR_POINTS = 201

__all__ = ["BCellRecovery", "b_cell_recovery_time"]


@dataclass(frozen=True)
class BCellRecovery:
    """When an output (B cells by default) recovers after its nadir.

    Attributes
    ----------
    time
        Recovery time (model time unit, days for the lupus models), or None when
        the output was never below the level or had not recovered by ``until``.
    nadir_time, nadir_value
        Time and value of the lowest point of the output in ``[0, until]``.
    level
        The absolute level used (output unit): ``threshold``, or
        ``threshold * baseline`` when the threshold is relative to baseline.
    baseline
        The output before treatment (at time 0, solved without doses).
    depleted
        Whether the output fell below ``level`` at all.
    output
        Name of the output examined.
    rule
        The rule in words, with the numbers used.
    """

    time: float | None
    nadir_time: float
    nadir_value: float
    level: float
    baseline: float
    depleted: bool
    output: str
    rule: str

    @property
    def recovered(self) -> bool:
        """True if a recovery time was found before ``until``."""
        return self.time is not None


def b_cell_recovery_time(model: CompiledModel, *, threshold: float = 1.0, relative_to_baseline: bool = False,
                         sustained_days: float = 0.0, params: Mapping[str, float] | np.ndarray | None = None,
                         doses: Sequence[Dose] | None = None, output: str = "bcells", until: float = 1095.0,
                         n_grid: int = 2001, rtol: float = 1e-8, atol: float = 1e-10) -> BCellRecovery:
    """Time at which an output (B cells by default) recovers after its nadir.

    Rule: the recovery time is the first time after the nadir at which the output
    reaches ``level`` going up, where ``level = threshold`` (output unit, e.g.
    cells/uL) or, with ``relative_to_baseline=True``, ``threshold`` times the
    pre-treatment value (output at time 0 solved without doses). With
    ``sustained_days > 0`` the output must then stay at or above the level for
    that many days; if it drops below earlier, the search resumes at the next
    upward crossing. If the output never falls below the level there is nothing
    to recover from and ``time`` is None (``depleted`` False); if it has not
    recovered (with the sustained window inside ``until``) by ``until``, ``time``
    is None too.

    Parameters
    ----------
    model
        A compiled model (``kinetics.load_model``).
    threshold
        Absolute level in the output's unit, or a fraction of the baseline.
    relative_to_baseline
        Interpret ``threshold`` as a fraction of the pre-treatment value.
    sustained_days
        Days the output must stay at or above the level (0: the first crossing counts).
    params, doses
        As for ``model.simulate``.
    output
        Output name (``"bcells"`` in the lupus models, cells/uL).
    until
        End of the search window (model time unit).
    n_grid
        Points of the grid on which the nadir is bracketed before it is refined
        on 201 solution values across the bracket (parabolic vertex where smooth); never
        used for the recovery time itself.
    rtol, atol
        Solver tolerances.

    Returns
    -------
    BCellRecovery

    Notes
    -----
    The crossing times are located by event detection on the solver's dense
    output (``model.crossing_time``), so they are exact to solver accuracy and
    independent of any output grid. Definitions of B-cell "reappearance" differ
    between studies (e.g. first count above 1 cell/uL, or above 1 % of
    lymphocytes); state the threshold used with every result.

    Examples
    --------
    >>> import kinetics
    >>> from kinetics.analysis import b_cell_recovery_time
    >>> m = kinetics.load_model("cd19_sle")
    >>> r = b_cell_recovery_time(m, threshold=1.0, doses=[kinetics.Dose(0.0, 6e7, "car19")])
    >>> 80 < r.time < 140
    True
    """
    if output not in model.output_names:
        raise SolverInputError(f"unknown output '{output}'; the model has {list(model.output_names)}")
    if not (math.isfinite(threshold) and threshold > 0):
        raise SolverInputError(f"threshold must be a positive finite number, got {threshold!r}")
    if not (math.isfinite(sustained_days) and sustained_days >= 0):
        raise SolverInputError(f"sustained_days must be >= 0, got {sustained_days!r}")
    if not (math.isfinite(until) and until > 0):
        raise SolverInputError(f"until must be a positive finite time, got {until!r}")
    if n_grid < 3:
        raise SolverInputError(f"n_grid must be at least 3, got {n_grid}")
    tol = {"rtol": rtol, "atol": atol}

    base_sim = model.simulate([0.0], params=params, **tol)
    if not base_sim.success:
        raise SolverInputError(f"baseline solve failed: {base_sim.message}")
    baseline = float(base_sim.outputs[output][0])
    level = threshold * baseline if relative_to_baseline else threshold
    unit = "of baseline" if relative_to_baseline else "(output unit)"
    rule = (f"first time after the nadir that '{output}' reaches {level:.6g} going up "
            f"(threshold {threshold:g} {unit}"
            + (f", staying at or above it for {sustained_days:g} days" if sustained_days > 0 else "")
            + f"), searched up to t = {until:g}, located by event detection")

    nadir_time, nadir_value = _nadir(model, output, until, n_grid, params, doses, tol)
    if nadir_value >= level:
        return BCellRecovery(None, nadir_time, nadir_value, level, baseline, False, output, rule)

    after = nadir_time
    while True:
        up = model.crossing_time(output, level, after=after, until=until, direction="up", params=params,
                                 doses=doses, **tol)
        if not up.success:
            raise SolverInputError(f"solve failed while locating the recovery: {up.message}")
        if not up.found:
            return BCellRecovery(None, nadir_time, nadir_value, level, baseline, True, output, rule)
        if sustained_days == 0:
            return BCellRecovery(up.time, nadir_time, nadir_value, level, baseline, True, output, rule)
        end = up.time + sustained_days
        if end > until:  # the window cannot be confirmed inside the search window
            return BCellRecovery(None, nadir_time, nadir_value, level, baseline, True, output, rule)
        down = model.crossing_time(output, level, after=up.time, until=end, direction="down", params=params,
                                   doses=doses, **tol)
        if not down.success:
            raise SolverInputError(f"solve failed while checking the sustained window: {down.message}")
        if not down.found:
            return BCellRecovery(up.time, nadir_time, nadir_value, level, baseline, True, output, rule)
        after = down.time


def _nadir(model: CompiledModel, output: str, until: float, n_grid: int,
           params: Mapping[str, float] | np.ndarray | None, doses: Sequence[Dose] | None,
           tol: dict[str, float]) -> tuple[float, float]:
    """Lowest point of ``output`` on [0, until]: bracketed on an ``n_grid``-point grid, then located by
    :func:`lowest_point` on :data:`NADIR_POINTS` solution values across the bracket."""
    times = np.linspace(0.0, until, n_grid)
    sim = model.simulate(times, params=params, doses=doses, **tol)
    if not sim.success:
        raise SolverInputError(f"solve failed while locating the nadir: {sim.message}")
    y = sim.outputs[output]
    i = int(np.argmin(y))
    local = bracket_grid(times[max(i - 1, 0)], times[min(i + 1, n_grid - 1)])
    fine = model.simulate(local, params=params, doses=doses, **tol)
    if not fine.success:
        raise SolverInputError(f"solve failed while locating the nadir: {fine.message}")
    t, v = lowest_point(local[None, :], fine.outputs[output][None, :])
    return float(t[0]), float(v[0])


def bracket_grid(lo: float | np.ndarray, hi: float | np.ndarray) -> np.ndarray:
    """:data:`NADIR_POINTS` equally spaced times from ``lo`` to ``hi`` (each row for arrays of brackets)."""
    lo, hi = np.asarray(lo, dtype=float), np.asarray(hi, dtype=float)
    g = lo[..., None] + (hi - lo)[..., None] * np.linspace(0.0, 1.0, NADIR_POINTS)
    g[..., -1] = hi
    return g


def lowest_point(times: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the minimum of a sampled curve: the vertex of the parabola through the lowest sample and
    its neighbours where the curve is smooth there, else the lowest sample itself.

    The vertex makes the value smooth in the parameters (a sample minimum jumps as the minimum moves
    between samples) and exact to O(h^3) at a smooth minimum. "Smooth there" means the second
    differences just left and right of the lowest sample agree with the central one within 25 %; at a
    kink (a declared switch) they do not, and the lowest sample is kept (off by at most slope x spacing / 2).
    """
    n = values.shape[1]
    rows = np.arange(values.shape[0])
    j = np.argmin(np.where(np.isnan(values), np.inf, values), axis=1)
    t, v = times[rows, j].astype(float), values[rows, j].astype(float)
    inner = (j > 1) & (j < n - 2)
    r, k = rows[inner], j[inner]

    def slope(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return (values[r, b] - values[r, a]) / (times[r, b] - times[r, a])

    def curvature(a: np.ndarray) -> np.ndarray:   # second divided difference over samples a, a+1, a+2
        return (slope(a + 1, a + 2) - slope(a, a + 1)) / (times[r, a + 2] - times[r, a])

    c_left, c_mid, c_right = curvature(k - 2), curvature(k - 1), curvature(k)
    t0, t1, y0, y1 = times[r, k - 1], times[r, k], values[r, k - 1], values[r, k]
    d01 = slope(k - 1, k)
    with np.errstate(divide="ignore", invalid="ignore"):
        tv = 0.5 * (t0 + t1) - d01 / (2 * c_mid)   # Newton form of the parabola through k-1, k, k+1
        yv = y0 + d01 * (tv - t0) + c_mid * (tv - t0) * (tv - t1)
        smooth = (np.abs(c_left - c_mid) <= 0.25 * c_mid) & (np.abs(c_right - c_mid) <= 0.25 * c_mid)
    use = smooth & (c_mid > 0) & (tv >= t0) & (tv <= times[r, k + 1]) & (yv <= y1)
    t[r[use]], v[r[use]] = tv[use], yv[use]
    return t, v
