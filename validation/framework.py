"""The validation case record and how its errors are measured.

A case is one solver configuration (model, settings, method) compared with
reference values taken from outside the project. ``compute`` returns the
achieved values and ``expected`` the reference values, both as
``{quantity name: scalar or 1-d array}`` with the same names and shapes. For an
array quantity (values on a time grid) the report shows the worst point.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["Case", "KINDS", "MODELS_DIR", "SolveFailed", "check_success", "compared", "pointwise_errors"]

#: Model files of the validation test problems.
MODELS_DIR = Path(__file__).resolve().parent / "models"

#: Error measures a case may state:
#: ``relative``          |achieved - reference| / |reference|, pointwise;
#: ``relative-to-peak``  |achieved - reference| / max |reference| over the quantity's grid
#:                       (for quantities that cross zero, e.g. sensitivities);
#: ``absolute``          |achieved - reference|.
KINDS = ("relative", "relative-to-peak", "absolute")

Values = Mapping[str, "float | np.ndarray"]


class SolveFailed(RuntimeError):
    """A case's solve did not succeed; the message is the solver's."""


def check_success(result: object, what: str) -> None:
    """Raise :class:`SolveFailed` naming ``what`` if a Simulation/Sensitivities did not succeed."""
    if not result.success:  # type: ignore[attr-defined]
        sim = getattr(result, "simulation", result)
        raise SolveFailed(f"{what}: {sim.message} ({sim.n_steps} steps, {sim.n_rejected} rejected)")


@dataclass(frozen=True)
class Case:
    """One validation case.

    Parameters
    ----------
    name
        Unique name, with the method in brackets, e.g. ``"hires[rodas5p]"``.
    source
        Where the reference values come from (citation with DOI or URL).
    compute
        Runs the solver; returns ``{quantity: achieved value(s)}``. Raises
        :class:`SolveFailed` when the solve fails.
    expected
        ``{quantity: reference value(s)}``, or a function returning it (for
        references that take work to compute, e.g. a matrix exponential).
    kind
        One of :data:`KINDS`.
    tolerance
        Largest error accepted, in the measure ``kind`` names.
    floor
        For ``relative``: reference entries with ``|value| <= floor`` do not count
        for pass/fail (their error is still shown).
    grid
        Times of the entries of array quantities (labels the worst point in the
        report): one sequence for all quantities, or one per quantity name.
    setup
        Solver settings and the reason for each (atol choice etc.), shown in the report.
    """

    name: str
    source: str
    compute: Callable[[], Values]
    expected: Values | Callable[[], Values]
    kind: str
    tolerance: float
    floor: float = 0.0
    grid: Sequence[float] | Mapping[str, Sequence[float]] | None = field(default=None, repr=False)
    setup: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"case {self.name!r}: kind must be one of {KINDS}, got {self.kind!r}")
        if not (self.tolerance > 0):
            raise ValueError(f"case {self.name!r}: tolerance must be > 0, got {self.tolerance!r}")

    def grid_for(self, quantity: str) -> Sequence[float] | None:
        """Times of ``quantity``'s entries, if the case gives them."""
        if isinstance(self.grid, Mapping):
            return self.grid.get(quantity)
        return self.grid

    def reference(self) -> dict[str, np.ndarray]:
        """Reference values as float arrays."""
        exp = self.expected() if callable(self.expected) else self.expected
        return {k: np.atleast_1d(np.asarray(v, dtype=float)) for k, v in exp.items()}


def pointwise_errors(kind: str, achieved: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Error of each entry in the measure ``kind``.

    A nan or inf achieved value gives an inf error, so it can never pass.
    """
    a = np.asarray(achieved, dtype=float)
    r = np.asarray(reference, dtype=float)
    diff = np.where(np.isfinite(a), np.abs(a - r), np.inf)
    if kind == "absolute":
        return diff
    scale = np.max(np.abs(r)) if kind == "relative-to-peak" else np.abs(r)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(diff == 0.0, 0.0, diff / scale)


def compared(kind: str, reference: np.ndarray, floor: float) -> np.ndarray:
    """Mask of the entries that count for pass/fail (``relative``: ``|reference| > floor``)."""
    r = np.asarray(reference, dtype=float)
    if kind == "relative":
        return np.abs(r) > floor
    return np.ones(r.shape, dtype=bool)
