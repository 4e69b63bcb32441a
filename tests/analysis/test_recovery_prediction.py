"""B-cell recovery predicted per fitted patient and for a new patient, and observed (interval-censored)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import kinetics
from kinetics.analysis import (b_cell_recovery_time, observed_recovery_intervals, predict_patient_recovery,
                               recovery_distribution, turnbull_survival)
from kinetics.data import read_dataset

FITS = Path(__file__).resolve().parents[2] / "fits"


def test_turnbull_equals_kaplan_meier_for_exact_and_right_censored_times():
    # Kaplan-Meier by hand: t=2 (1 of 5) -> 0.8; t=3 (2 of 4) -> 0.4; censored at 5; t=7 (1 of 1) -> 0
    curve = turnbull_survival([2, 3, 3, 5, 7], [2, 3, 3, np.inf, 7])
    np.testing.assert_allclose(curve["time"], [0, 2, 3, 7])
    np.testing.assert_allclose(curve["survival"], [1, 0.8, 0.4, 0.0], atol=1e-8)


def test_turnbull_on_disjoint_intervals_puts_equal_mass_on_each():
    curve = turnbull_survival([0, 20], [10, 30])
    np.testing.assert_allclose(curve["survival"], [1, 0.5, 0.0], atol=1e-8)


def test_turnbull_overlapping_intervals_share_the_common_cell():
    # (0, 10] and (5, 15]: the NPMLE puts all mass on the intersection [5, 10] (Turnbull 1976)
    curve = turnbull_survival([0, 5], [10, 15])
    np.testing.assert_allclose(curve["survival"].iloc[-1], 0.0, atol=1e-8)
    assert curve["time"].iloc[1] == 10


def test_observed_intervals_follow_the_stated_rule():
    rows = []
    for sid, values in {1: [300, 0.2, 0.5, 3.0, 50], 2: [300, 0.5, 0.4, 0.3, 0.2], 3: [300, 200, 250, 260, 240]}.items():
        for t, v in zip([0, 7, 56, 112, 168], values):
            rows.append(dict(ID=sid, TIME=t, DV=max(v, 1.0) if v < 1 else v, CENS=int(v < 1), OUTPUT="bcells"))
    obs = observed_recovery_intervals(read_dataset(pd.DataFrame(rows)), threshold=1.0).set_index("ID")
    assert tuple(obs.loc["1", ["left", "right", "status"]]) == (56.0, 112.0, "recovered")
    assert obs.loc["2", "status"] == "not recovered" and obs.loc["2", "right"] == np.inf
    assert obs.loc["3", "status"] == "not depleted"


@pytest.fixture(scope="module")
def lupus_truth_fit():
    """The virtual trial evaluated at the values it was simulated with (no estimation): EBEs and their
    conditional covariances, as a fitted model would give."""
    spec = json.loads((FITS / "data" / "virtual_trial.json").read_text())
    model = kinetics.load_model("dual_car_sle")
    data = read_dataset(FITS / "data" / "virtual_trial.csv")
    omega = spec["random_effects"]["omega_variance"]
    fit = kinetics.evaluate_objective(model, data, params={k: spec["typical_values"][k] for k in omega},
                                      random_effects=omega, error={k: dict(v) for k, v in spec["error"].items()},
                                      method="focei")
    return model, data, fit


def test_patient_predictions_match_the_rule_and_the_observed_intervals(lupus_truth_fit):
    model, data, fit = lupus_truth_fit
    pred = predict_patient_recovery(fit, model, data, n_draws=40, seed=1).set_index("ID")
    # the point estimate is the rule applied at the individual parameters
    sid = pred.index[0]
    doses = list(next(s for s in data.subjects if s.id == str(sid)).doses)
    direct = b_cell_recovery_time(model, params=fit.individual_params.loc[sid].to_numpy(), doses=doses).time
    assert pred.loc[sid, "time"] == pytest.approx(direct, rel=1e-6)
    assert (pred["low"] <= pred["time"] + 1e-6).all() and (pred["time"] <= pred["high"] + 1e-6).all()
    # the data were simulated from these parameters: predictions fall in (or next to) the observed visit interval
    obs = observed_recovery_intervals(data).set_index("ID")
    rec = obs[obs["status"] == "recovered"]
    inside = [(rec.loc[i, "left"] - 28 <= pred.loc[i, "time"] <= rec.loc[i, "right"] + 28) for i in rec.index]
    assert len(rec) >= 10 and np.mean(inside) >= 0.8


def test_new_patient_distribution():
    model = kinetics.load_model("cd19_sle")
    doses = [kinetics.Dose(0.0, 6e7, "car19")]
    typical = recovery_distribution(model, doses, n_patients=3, seed=0)
    # without variability every simulated patient is the typical one (cd19_sle calibration: 98.2 d)
    np.testing.assert_allclose(typical.times, b_cell_recovery_time(model, doses=doses).time, rtol=1e-6)
    pop = recovery_distribution(model, doses, omega={"dM_19": 0.09, "kmax_19": 0.09, "B0": 0.09}, n_patients=60,
                                seed=0)
    p = pop.probability_recovered_by([60, 120, 240, 720])
    assert list(p.values()) == sorted(p.values()) and p[720.0] > 0.9
    q = pop.quantiles([0.05, 0.5, 0.95])
    assert q[0.05] < q[0.5] < q[0.95] and 60 < q[0.5] < 160
    surv = pop.survival([0, 100, 1095])
    assert surv["survival"].iloc[0] == 1.0 and "nadir" in pop.rule


def test_event_location_agrees_with_a_fine_grid_brute_force():
    # issue 5 must-show: the recovery time from event location agrees with a 0.001-day grid search within 0.01 day
    model = kinetics.load_model("cd19_sle")
    doses = [kinetics.Dose(0.0, 6e7, "car19")]
    rec = b_cell_recovery_time(model, doses=doses)
    grid = np.arange(rec.nadir_time, rec.time + 2.0, 0.001)
    b = model.simulate(grid, doses=doses, rtol=1e-10, atol=1e-12).outputs["bcells"]
    brute = grid[np.argmax(b >= rec.level)]
    assert 80 <= rec.time <= 140                      # typical patient in the calibrated window
    assert rec.time == pytest.approx(brute, abs=0.01)
