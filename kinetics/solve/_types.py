"""Doses, solver statuses and result objects of the solve layer."""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from kinetics.errors import DoseError

if TYPE_CHECKING:  # pragma: no cover
    from collections.abc import Sequence

    import pandas as pd

__all__ = ["Dose", "SolveStatus", "Simulation", "BatchSimulation", "BatchCrossing", "Sensitivities", "Crossing",
           "METHODS"]

#: Registered integration methods: name -> kernel code.
METHODS: dict[str, int] = {"auto": 0, "dopri5": 1, "rodas5p": 2, "tsit5": 3}


class SolveStatus(enum.IntEnum):
    """Outcome of one solve."""

    SUCCESS = 0
    MAX_STEPS = 1
    STEP_UNDERFLOW = 2
    NONFINITE = 3
    SINGULAR = 4
    NEGATIVE_RATE = 5


def status_message(status: SolveStatus, fst: np.ndarray, max_steps: int, time_unit: str,
                   state_names: Sequence[str]) -> str:
    """A sentence saying what happened and, on failure, what to try (``fst``: the kernel's float results of
    the solve, time of failure first)."""
    if status is SolveStatus.SUCCESS:
        return "success"
    unit = f" {time_unit}" if time_unit else ""
    t_fail = float(fst[0])
    if status is SolveStatus.MAX_STEPS:
        return (f"max_steps ({max_steps}) reached at t={t_fail:.6g}{unit}; increase max_steps, "
                "loosen rtol/atol, or use method='rodas5p' if the problem is stiff")
    if status is SolveStatus.STEP_UNDERFLOW:
        return (f"step size underflow at t={t_fail:.6g}{unit}: the solution changes faster than the "
                "step size can resolve (a singularity or a discontinuity not declared as a switch?)")
    if status is SolveStatus.NONFINITE:
        return (f"non-finite state (nan or inf) at t={t_fail:.6g}{unit}: the right-hand side is undefined "
                "or the solution blows up (check parameter values, e.g. a log or division of a state that reached 0)")
    if status is SolveStatus.NEGATIVE_RATE:
        name = state_names[int(fst[4])]
        return (f"state '{name}' is declared non-negative but its rate is negative at {name} = 0 "
                f"(t={t_fail:.6g}{unit}): the equations take it below 0, so the declaration is wrong for "
                "these parameter values (remove nonnegative = true, or check the equations)")
    return (f"singular or non-finite iteration matrix I/(h*gamma) - J at t={t_fail:.6g}{unit}: the Jacobian is "
            "undefined there (e.g. sqrt or log of a state that reached 0)")


@dataclass(frozen=True)
class Dose:
    """A dose event.

    Parameters
    ----------
    time
        Start time, in the model's time unit, at or after the start of the solve.
    amount
        Amount (in the dose target's unit, e.g. mg or CAR+ cells); the state
        receives ``amount * scale`` with the target's scale expression.
    target
        Name of a dose target declared in the model's ``[doses]``.
    duration
        0 for a bolus (an instantaneous jump of the state); > 0 for a
        zero-order infusion at rate ``amount / duration`` over ``[time, time + duration)``.
    """

    time: float
    amount: float
    target: str
    duration: float = 0.0

    def __post_init__(self) -> None:
        for name in ("time", "amount", "duration"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float, np.floating, np.integer)):
                raise DoseError(f"Dose {name} must be a number, got {v!r}")
            if not math.isfinite(float(v)):
                raise DoseError(f"Dose {name} must be finite, got {v!r}")
            object.__setattr__(self, name, float(v))
        if self.time < 0.0:
            raise DoseError(f"Dose time must be >= 0 (time since the start, e.g. infusion day 0), got {self.time!r}")
        if self.amount < 0.0:
            raise DoseError(f"Dose amount must be >= 0, got {self.amount!r}")
        if self.duration < 0.0:
            raise DoseError(f"Dose duration must be >= 0 (0 = bolus), got {self.duration!r}")
        if not isinstance(self.target, str) or not self.target:
            raise DoseError(f"Dose target must be a dose name from the model's [doses], got {self.target!r}")


def _readonly(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a


@dataclass(frozen=True)
class Simulation:
    """States and outputs of one solve at the requested times.

    ``states`` is ``(n_times, n_states)``; ``outputs[name]`` is ``(n_times,)``.
    After a failure, rows from the failure time on are nan and ``success`` is False.
    """

    times: np.ndarray
    states: np.ndarray
    outputs: dict[str, np.ndarray]
    state_names: tuple[str, ...]
    status: SolveStatus
    message: str
    n_steps: int
    n_rejected: int
    n_rhs: int
    n_jacobians: int
    stiff_from: float = math.nan   # time of the first hand-over to the stiff method (method auto); nan if none
    method: str = "auto"           # the method asked for
    method_at_end: str = ""        # the method that took the last step (auto: "tsit5" or "rodas5p")

    @property
    def success(self) -> bool:
        """True if the solve reached the last requested time."""
        return self.status is SolveStatus.SUCCESS

    def to_frame(self) -> "pd.DataFrame":
        """Table with ``time``, one column per state and one per output."""
        import pandas as pd  # not at module level: keeps ``import kinetics`` fast

        data = {"time": self.times}
        data.update({n: self.states[:, i] for i, n in enumerate(self.state_names)})
        data.update(self.outputs)
        return pd.DataFrame(data)

    def summary(self) -> str:
        """A few lines for people."""
        stiff = f", stiff method from t={self.stiff_from:.4g}" if math.isfinite(self.stiff_from) else ""
        end = f", {self.method_at_end} at the end" if self.method_at_end and self.method_at_end != self.method else ""
        return (f"Simulation: {self.message}; {len(self.times)} output times, {self.n_steps} steps "
                f"({self.n_rejected} rejected), {self.n_rhs} rhs evaluations, {self.n_jacobians} Jacobians"
                f" [{self.method}{stiff}{end}]")

    def __repr__(self) -> str:
        return f"<{self.summary()}>"


@dataclass(frozen=True)
class BatchSimulation:
    """Outputs of many solves: ``outputs`` is ``(n_sets, n_times, n_outputs)``.

    ``status`` has one :class:`SolveStatus` code per set; failed sets have nan
    rows from their failure time on. ``states`` is ``(n_sets, n_times, n_states)``.
    """

    times: np.ndarray
    states: np.ndarray
    outputs: np.ndarray
    output_names: tuple[str, ...]
    state_names: tuple[str, ...]
    status: np.ndarray
    t_fail: np.ndarray
    n_steps: np.ndarray
    messages: tuple[str, ...] = field(repr=False, default=())

    @property
    def success(self) -> np.ndarray:
        """Boolean mask of sets that solved to the end."""
        return self.status == SolveStatus.SUCCESS

    def output(self, name: str) -> np.ndarray:
        """``(n_sets, n_times)`` array of one output."""
        return self.outputs[:, :, self.output_names.index(name)]

    def summary(self) -> str:
        """A line for people."""
        n = len(self.status)
        ok = int(self.success.sum())
        return f"BatchSimulation: {n} sets, {ok} succeeded, {n - ok} failed; {len(self.times)} output times"

    def __repr__(self) -> str:
        return f"<{self.summary()}>"


@dataclass(frozen=True)
class Sensitivities:
    """Forward sensitivities at the requested times.

    ``outputs`` is ``(n_times, n_outputs, n_wrt)``: d output / d theta; ``states``
    is ``(n_times, n_states, n_wrt)``. ``wrt`` names each theta: a parameter
    name, or ``"init:<state>"`` for a state's initial value.
    """

    simulation: Simulation
    wrt: tuple[str, ...]
    outputs: np.ndarray
    states: np.ndarray
    output_names: tuple[str, ...]

    @property
    def success(self) -> bool:
        """True if the underlying solve succeeded."""
        return self.simulation.success

    def __array__(self, dtype: object = None, copy: object = None) -> np.ndarray:
        return np.asarray(self.outputs, dtype=dtype)

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of ``outputs``."""
        return self.outputs.shape

    def __getitem__(self, item: object) -> np.ndarray:
        return self.outputs[item]  # type: ignore[index]

    def to_frame(self) -> "pd.DataFrame":
        """Long table: time, output, wrt, value."""
        import pandas as pd

        nt, no, nw = self.outputs.shape
        return pd.DataFrame({
            "time": np.repeat(self.simulation.times, no * nw),
            "output": np.tile(np.repeat(np.array(self.output_names, dtype=object), nw), nt),
            "wrt": np.tile(np.array(self.wrt, dtype=object), nt * no),
            "value": self.outputs.reshape(-1),
        })


@dataclass(frozen=True)
class Crossing:
    """When an output first crosses a level after a given time.

    ``time`` is nan when there is no crossing before ``until`` (``found`` False);
    a failed solve says so in ``status``/``message``.
    """

    output: str
    level: float
    time: float
    found: bool
    status: SolveStatus
    message: str

    @property
    def success(self) -> bool:
        """True if the solve itself succeeded (whether or not a crossing was found)."""
        return self.status is SolveStatus.SUCCESS


@dataclass(frozen=True)
class BatchCrossing:
    """First crossings of an output for many parameter sets (:meth:`CompiledModel.crossing_times`).

    ``time[i]`` is nan where set ``i`` has no crossing before ``until`` (``found[i]`` False) or its solve
    failed (``status[i]`` non-zero, ``messages[i]`` says why).
    """

    output: str
    level: np.ndarray
    time: np.ndarray
    found: np.ndarray
    status: np.ndarray
    messages: tuple[str, ...] = field(repr=False, default=())

    @property
    def success(self) -> np.ndarray:
        """Boolean mask of sets whose solve succeeded (whether or not a crossing was found)."""
        return self.status == SolveStatus.SUCCESS
