"""Issue 3 must-show for the models whose published-number tests live in tests/solve: each simulates
from its defaults with success and non-negative states, and its sensitivities match central differences."""

from __future__ import annotations

import numpy as np
import pytest

import kinetics
from tests.library.conftest import check_sensitivities_match_central_differences, check_simulates_from_defaults

CASES = {
    # Stein 2019: times straddle the Tmax switch; sensitivities across a parameter-dependent switch
    "stein2019": (np.array([1.0, 5.0, 9.0, 9.6, 20.0, 90.0, 365.0]), None,
                  ("foldx", "Tmax", "Cmax", "alpha", "FB", "beta")),
    "oral_1cmt": (np.array([0.5, 1.0, 2.0, 6.0, 24.0]), [kinetics.Dose(0.0, 320.0, "depot")], ("ka", "CL", "V", "F")),
    "iv_1cmt": (np.array([0.5, 1.0, 2.0, 6.0, 24.0]), [kinetics.Dose(0.0, 100.0, "central", duration=1.0)],
                ("CL", "V")),
}


@pytest.mark.parametrize("name", CASES, ids=list(CASES))
def test_simulates_and_sensitivities_match_differences(name):
    model = kinetics.load_model(name)
    times, doses, wrt = CASES[name]
    check_simulates_from_defaults(model, times, doses)
    check_sensitivities_match_central_differences(model, times, wrt, doses)
