"""Closed-form reference solutions shared by tests (each names its source)."""

from __future__ import annotations

import numpy as np


def bateman(t: np.ndarray, dose: float, ka: float, cl: float, v: float) -> np.ndarray:
    """One-compartment first-order absorption concentration (Bateman 1910; Gibaldi & Perrier,
    Pharmacokinetics, 2nd ed., 1982, eq. 1.29): D ka / (V (ka - k)) (e^{-kt} - e^{-ka t}), k = CL/V."""
    k = cl / v
    return dose * ka / (v * (ka - k)) * (np.exp(-k * t) - np.exp(-ka * t))
