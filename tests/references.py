"""Closed-form reference solutions shared by tests (each names its source)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

_REPO = Path(__file__).resolve().parents[1]


def shared_data(name: str) -> Path:
    """A public reference dataset from ``../shared/data`` (DESIGN.md: loaded from there, never copied
    into the package; some are GPL). ``KINETICS_SHARED_DATA`` overrides the location."""
    candidates = [Path(os.environ["KINETICS_SHARED_DATA"])] if os.environ.get("KINETICS_SHARED_DATA") else []
    candidates += [p / "shared" / "data" for p in (_REPO, *_REPO.parents)]
    for c in candidates:
        if (c / name).is_file():
            return c / name
    pytest.skip(f"public reference dataset {name} not found in ../shared/data (set KINETICS_SHARED_DATA)")


def bateman(t: np.ndarray, dose: float, ka: float, cl: float, v: float) -> np.ndarray:
    """One-compartment first-order absorption concentration (Bateman 1910; Gibaldi & Perrier,
    Pharmacokinetics, 2nd ed., 1982, eq. 1.29): D ka / (V (ka - k)) (e^{-kt} - e^{-ka t}), k = CL/V."""
    k = cl / v
    return dose * ka / (v * (ka - k)) * (np.exp(-k * t) - np.exp(-ka * t))
