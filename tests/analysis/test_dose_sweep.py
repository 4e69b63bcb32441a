"""Dose sweeps over a virtual population: linear PK is exactly dose-proportional (slope 1); the lupus model's
outcomes move with dose in the calibrated direction."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest

import kinetics
from kinetics.analysis import auc_0_28, cmax, dose_sweep

PK_OUTCOMES = {"cmax": partial(cmax, output="conc", until=48.0), "auc_0_28": partial(auc_0_28, output="conc")}
from kinetics.errors import SolverInputError


@pytest.fixture(scope="module")
def oral():
    return kinetics.load_model("oral_1cmt")


def test_linear_pk_is_exactly_dose_proportional(oral):
    # one-compartment linear PK: concentrations scale with dose (superposition), so Cmax and AUC(0-28) have a
    # power-model slope of exactly 1 and every patient's ratio between doses equals the dose ratio
    sweep = dose_sweep(oral, {"depot": [100.0, 200.0, 400.0]}, outcomes=PK_OUTCOMES, n_patients=20,
                       omega={"CL": 0.1, "V": 0.05, "ka": 0.2}, seed=3)
    for name in ("cmax", "auc_0_28"):
        pm = sweep.power_model(name, "depot")
        assert pm.slope == pytest.approx(1.0, abs=1e-6) and pm.ci[1] - pm.ci[0] < 1e-5
        v = sweep.values.pivot(index="patient", columns="depot", values=name)
        np.testing.assert_allclose(v[400.0] / v[100.0], 4.0, rtol=1e-6)
    table, notes = sweep.power_models()
    assert list(table["outcome"]) == ["cmax", "auc_0_28"] and not notes
    np.testing.assert_allclose(table["slope"], 1.0, atol=1e-6)
    assert sweep.units == {"cmax": "mg/L", "auc_0_28": "mg/L x h"}     # from models/oral_1cmt.toml
    s = sweep.summary
    assert set(s["outcome"]) == {"cmax", "auc_0_28"} and (s["n_failed"] == 0).all()
    assert (s["p05"] <= s["median"]).all() and (s["median"] <= s["p95"]).all()


def test_same_patients_at_every_dose_and_seeded(oral):
    kw = dict(outcomes={"cmax": PK_OUTCOMES["cmax"]}, n_patients=8, omega={"CL": 0.2}, seed=1)
    a = dose_sweep(oral, [{"depot": 100.0}, {"depot": 300.0}], **kw)
    b = dose_sweep(oral, [{"depot": 100.0}, {"depot": 300.0}], **kw)
    np.testing.assert_array_equal(a.values["cmax"], b.values["cmax"])
    assert a.n_patients == 8 and len(a.values) == 16


def test_lupus_outcomes_move_with_cd19_dose():
    # models/cd19_sle.toml calibration: higher CAR-T dose -> deeper, longer aplasia and later B-cell recovery
    model = kinetics.load_model("cd19_sle")
    sweep = dose_sweep(model, {"car19": [6e6, 6e7]}, outcomes=("cmax", "recovery_time", "aplasia_duration"),
                       n_patients=12, omega={"dM_19": 0.09, "B0": 0.09}, seed=2)
    med = sweep.summary.pivot(index="outcome", columns="car19", values="median")
    assert med.loc["cmax", 6e7] > med.loc["cmax", 6e6]
    assert med.loc["recovery_time", 6e7] > med.loc["recovery_time", 6e6]
    assert med.loc["aplasia_duration", 6e7] > med.loc["aplasia_duration", 6e6]
    slope = sweep.power_model("cmax", "car19")
    assert 0 < slope.slope < 1.0        # expansion saturates (space and antigen limited): less than proportional
    assert "slope" in slope.summary()


@pytest.mark.parametrize("kwargs,match", [
    (dict(doses={"dpot": [1.0]}), "did you mean 'depot'"),
    (dict(doses={"depot": [-1.0]}), ">= 0"),
    (dict(doses=[]), "at least one dose level"),
    (dict(doses={"depot": [1.0]}, omega={"cl": 0.1}), "did you mean 'CL'"),
])
def test_bad_sweep_arguments(oral, kwargs, match):
    with pytest.raises(SolverInputError, match=match):
        dose_sweep(oral, outcomes=("cmax",), n_patients=2, **kwargs)


def test_default_outcomes_follow_the_model_outputs(oral):
    # a model without the CAR-T outputs: Cmax and AUC(0-28) of its first output; the lupus model: the library set
    from kinetics.analysis import DEFAULT_SWEEP_OUTCOMES, default_sweep_outcomes

    pk = default_sweep_outcomes(oral)
    assert list(pk) == ["cmax", "auc_0_28"] and all(f.keywords == {"output": "conc"} for f in pk.values())
    sle = default_sweep_outcomes(kinetics.load_model("dual_car_sle"))
    assert set(sle) <= set(DEFAULT_SWEEP_OUTCOMES) and "recovery_time" in sle
