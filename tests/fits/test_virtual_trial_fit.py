"""Issue 4 must-show "recovery of known truth" on the bundled virtual lupus trial: fits/virtual_trial_saem.toml
(dual_car_sle by SAEM with M3 censoring, 15 patients) against the parameters the trial was simulated with
(fits/data/virtual_trial_truth.csv)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import kinetics

FITS = Path(__file__).resolve().parents[2] / "fits"


@pytest.mark.slow
def test_virtual_trial_saem_recovers_the_simulated_patients():
    fit = kinetics.run_fit_spec(FITS / "virtual_trial_saem.toml", progress=False)
    assert fit.success, fit.message
    assert fit.covariance is not None and fit.covariance.success
    truth = pd.read_csv(FITS / "data" / "virtual_trial_truth.csv")
    shrink = fit.eta_shrinkage
    identified = [n for n in fit.theta if shrink[n] < 0.3]
    # with 15 patients the target is the sample that was simulated: its geometric mean and log-variance
    for name in identified:
        logs = np.log(truth[name].to_numpy())
        assert fit.theta[name] == pytest.approx(np.exp(logs.mean()), rel=0.20), name
        assert fit.omega.loc[name, name] == pytest.approx(logs.var(), rel=0.50), name
    # parameters the design cannot separate (killing capacity vs naive B-cell loss: B cells are censored at every
    # visit from day 7 to 56) are flagged by their shrinkage; at least the six others must be identified
    assert len(identified) >= 6, shrink
    # the residual SDs come back (generating values in fits/data/virtual_trial.json)
    assert fit.sigma["car19_flow.add"] == pytest.approx(0.35, rel=0.15)
    assert fit.sigma["bcells.add"] == pytest.approx(0.3, rel=0.2)
    assert fit.sigma["igg.prop"] == pytest.approx(0.08, rel=0.2)
