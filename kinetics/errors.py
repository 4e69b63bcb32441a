"""Exceptions raised by kinetics.

Each subclasses the matching built-in so callers can catch either. Messages
name the file / entry / argument, what was received and what was expected.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = [
    "KineticsError",
    "ModelError",
    "ModelFileError",
    "ExpressionError",
    "DoseError",
    "SolverInputError",
    "DatasetError",
    "FitSpecError",
    "did_you_mean",
]


class KineticsError(Exception):
    """Base class of every kinetics exception."""


class ModelError(KineticsError, ValueError):
    """A model (symbolic definition) is inconsistent."""


class ModelFileError(ModelError):
    """A model file cannot be read; the message names the file and entry."""


class ExpressionError(ModelError):
    """A math expression in a model is malformed or not allowed."""


class DoseError(KineticsError, ValueError):
    """A dose is invalid (negative time/amount, unknown target, ...)."""


class SolverInputError(KineticsError, ValueError):
    """Arguments to a solve are invalid (times, parameters, tolerances, ...)."""


class DatasetError(KineticsError, ValueError):
    """A patient dataset violates the event-table rules; ``problems`` lists every violation
    (file, line, column, what is wrong)."""

    def __init__(self, source: str, problems: list[str], max_shown: int = 40) -> None:
        self.source = source
        self.problems = list(problems)
        shown = "\n".join(f"  - {p}" for p in self.problems[:max_shown])
        more = len(self.problems) - max_shown
        tail = f"\n  ... and {more} more" if more > 0 else ""
        n = len(self.problems)
        if n == 1:   # one line: "data.csv: file not found: data.csv"
            super().__init__(f"{source}: {self.problems[0]}")
        else:
            super().__init__(f"{source}: {n} problems in the dataset:\n{shown}{tail}")


class FitSpecError(KineticsError, ValueError):
    """A fit specification (arguments or a fits/*.toml file) is invalid; the message names the entry."""


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """Return ``"; did you mean 'x'?"`` for the closest candidate, or ``""``."""
    cands = list(candidates)
    same_case = [c for c in cands if c.lower() == name.lower()]
    close = same_case or difflib.get_close_matches(name, cands, n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""
