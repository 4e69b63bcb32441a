"""kinetics.analysis outcomes (Cmax, AUC(0-28), B-cell nadir, aplasia duration, recovery time, fractions of
baseline): closed forms, the lupus model's documented calibration, and batch evaluation equal to one-by-one."""

from __future__ import annotations

import functools
import math
from functools import partial

import numpy as np
import pytest

import kinetics
from kinetics.analysis import (
    OUTCOMES,
    aplasia_duration,
    auc_0_28,
    autoantibody_reduction,
    b_cell_nadir,
    b_cell_recovery_time,
    cmax,
    evaluate_outcome,
    evaluate_outcomes,
    fraction_of_baseline,
    recovery_time,
)
from kinetics.errors import DoseError, SolverInputError
from tests.references import bateman

# B cells fall at rate kd until Td, then refill towards B0 at rate k (the closed form of
# tests/analysis/test_recovery.py):  B(t) = B0 exp(-kd t) for t <= Td;  B0 - (B0 - B_Td) exp(-k (t - Td)) after.
REFILL = """
name = "refill"
time_unit = "day"
references = ["closed form in tests/analysis/test_outcomes.py"]
[parameters]
B0 = { value = 100.0, unit = "cells/uL" }
kd = { value = 1.0, unit = "1/day" }
Td = { value = 5.0, unit = "day" }
k  = { value = 0.05, unit = "1/day" }
[states]
B = { initial = "B0", unit = "cells/uL" }
[odes]
B = "ifelse(t < Td, -kd*B, k*(B0 - B))"
[outputs]
bcells = { expression = "B", unit = "cells/uL" }
"""
B0, KD, TD, K = 100.0, 1.0, 5.0, 0.05
B_TD = B0 * math.exp(-KD * TD)


def refill_b(t: float) -> float:
    return B0 * math.exp(-KD * t) if t <= TD else B0 - (B0 - B_TD) * math.exp(-K * (t - TD))


def refill_up(level: float) -> float:
    """Time the refilling B cells reach ``level`` (closed form above)."""
    return TD + math.log((B0 - B_TD) / (B0 - level)) / K


@pytest.fixture(scope="module")
def refill(tmp_path_factory):
    path = tmp_path_factory.mktemp("models") / "refill.toml"
    path.write_text(REFILL)
    return kinetics.load_model(path)


@pytest.fixture(scope="module")
def oral():
    return kinetics.load_model("oral_1cmt")


@pytest.fixture(scope="module")
def sle():
    return kinetics.load_model("cd19_sle")


SLE_DOSE = [kinetics.Dose(0.0, 6e7, "car19")]
ORAL_DOSE = [kinetics.Dose(0.0, 320.0, "depot")]


# -- closed forms -----------------------------------------------------------------------------------
def test_refill_outcomes_equal_closed_form(refill):
    level = 50.0
    down, up = math.log(B0 / level) / KD, refill_up(level)   # 0.693 d and 18.73 d
    assert aplasia_duration(refill, doses=[], output="bcells", threshold=level, until=400.0) == \
        pytest.approx(up - down, rel=1e-7)
    assert recovery_time(refill, output="bcells", threshold=level, until=400.0) == pytest.approx(up, rel=1e-7)
    # relative threshold: 0.5 of baseline is the same level
    assert recovery_time(refill, output="bcells", threshold=0.5, relative_to_baseline=True, until=400.0) == \
        pytest.approx(up, rel=1e-7)
    # the nadir sits at the kink t = Td: the parabolic refinement sees the kink and keeps the lowest of the 201
    # solution values across the bracket. until=10: Td is one of them (exact to the solver's rtol 1e-8);
    # until=9.7: Td falls between them (spacing 4.85e-5 d), off by at most the steeper slope (refill,
    # k (B0 - B_Td) = 4.97 /d) x 2.43e-5 d = 1.8e-4 relative
    assert b_cell_nadir(refill, output="bcells", until=10.0) == pytest.approx(B_TD, rel=1e-7)
    assert b_cell_nadir(refill, output="bcells", until=9.7) == pytest.approx(B_TD, rel=1.8e-4)
    for day in (3.0, 10.0, 60.0):
        assert fraction_of_baseline(refill, output="bcells", day=day) == pytest.approx(refill_b(day) / B0, rel=1e-7)
        assert autoantibody_reduction(refill, output="bcells", day=day) == \
            pytest.approx(1 - refill_b(day) / B0, rel=1e-6)


def test_refill_not_depleted_and_not_recovered(refill):
    # never below 0.1 cells/uL (nadir 0.67): nothing to recover from
    assert recovery_time(refill, output="bcells", threshold=0.1) == 0.0
    assert aplasia_duration(refill, output="bcells", threshold=0.1) == 0.0
    # 50 cells/uL is regained at 18.7 d: with until = 10 both report the (censored) bound
    assert recovery_time(refill, output="bcells", threshold=50.0, until=10.0) == 10.0
    assert aplasia_duration(refill, output="bcells", threshold=50.0, until=10.0) == \
        pytest.approx(10.0 - math.log(2.0), rel=1e-7)


def test_cmax_and_auc_equal_bateman(oral):
    # Bateman (Gibaldi & Perrier eq. 1.29): tmax = ln(ka/k)/(ka - k); AUC(0-T) by integrating term by term.
    ka, cl, v = 1.5, 2.75, 31.9
    k = cl / v
    tmax = math.log(ka / k) / (ka - k)
    c_max = float(bateman(np.array([tmax]), 320.0, ka, cl, v)[0])
    auc = 320.0 * ka / (v * (ka - k)) * ((1 - math.exp(-28 * k)) / k - (1 - math.exp(-28 * ka)) / ka)
    # grid step 0.01 h: the grid maximum is within C''/2 (0.005)^2 of the peak, i.e. ~1e-6 relative
    assert cmax(oral, doses=ORAL_DOSE, output="conc") == pytest.approx(c_max, rel=1e-5)
    # trapezoid on a 0.01 h grid: error step^2/12 (C'(28) - C'(0)) ~ 1.3e-4 mg h/L (C'(0) = D ka / V = 15), 1.2e-6
    assert auc_0_28(oral, doses=ORAL_DOSE, output="conc") == pytest.approx(auc, rel=2e-6)


# -- the lupus model (its calibration as documented in models/cd19_sle.toml [metadata]) --------------------
def test_cd19_sle_outcomes_match_model_file_calibration(sle):
    d = SLE_DOSE
    assert cmax(sle, doses=d) == pytest.approx(35.0, abs=0.5)                # "car19_flow peak ... (35 cells/uL)"
    assert recovery_time(sle, doses=d) == pytest.approx(98.2, abs=0.05)      # "Typical patient 98.2 d"
    assert recovery_time(sle, doses=d) == b_cell_recovery_time(sle, doses=d, rtol=1e-8, atol=1e-10).time
    assert OUTCOMES["igg_fraction_1y"](sle, None, d) == pytest.approx(1 - 0.172, abs=5e-4)   # "-17.2 % at 1 y"
    # "0.30 of baseline at 6 months"
    assert OUTCOMES["autoantibody_reduction_d180"](sle, None, d) == pytest.approx(0.70, abs=0.005)
    # B cells < 1 /uL from day ~3 (calibration text), so aplasia starts within days and ends at reappearance
    apl = aplasia_duration(sle, doses=d)
    assert 90.0 < apl < recovery_time(sle, doses=d)
    assert b_cell_nadir(sle, doses=d) < 0.01                                  # "bcells 0.003 /uL at day 7"


def test_registry_lists_the_issue_outcomes_with_docs():
    for name in ("cmax", "auc_0_28", "b_cell_nadir", "aplasia_duration", "recovery_time",
                 "autoantibody_reduction_d90", "autoantibody_reduction_d180"):
        assert name in OUTCOMES
    for f in OUTCOMES.values():
        assert f.__doc__ and f.__doc__.strip()


# -- batch evaluation --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sle_sets(sle):
    rng = np.random.default_rng(7)
    P = np.tile(sle.parameter_vector(None), (6, 1))
    for name, omega in sle.model.metadata["iiv"].items():
        P[:, sle.parameter_names.index(name)] *= np.exp(omega * rng.standard_normal(6))
    return P


@pytest.mark.parametrize("name", list(OUTCOMES), ids=list(OUTCOMES))
def test_batch_equals_one_by_one(sle, sle_sets, name):
    # two code paths (batch solver + event location, or the loop) must give the single-call values
    batch = evaluate_outcome(name, sle, sle_sets, SLE_DOSE)
    single = np.array([OUTCOMES[name](sle, p, SLE_DOSE) for p in sle_sets])
    np.testing.assert_allclose(batch, single, rtol=1e-10)


def test_outcomes_together_equal_one_by_one_in_any_order(sle, sle_sets):
    # evaluate_outcomes shares solves between outcomes (one grid solve, crossings reused between the
    # aplasia's end and the recovery); the values must not depend on which outcomes come along or their order
    names = ["cmax", "auc_0_28", "b_cell_nadir", "aplasia_duration", "recovery_time", "autoantibody_reduction_d90",
             "igg_fraction_1y"]
    doses = [[kinetics.Dose(0.0, a, "car19")] for a in (2e7, 6e7, 1.8e8, 6e7, 2e7, 6e7)]
    forward = evaluate_outcomes(names, sle, sle_sets, doses, chunk_size=4)
    backward = evaluate_outcomes(names[::-1], sle, sle_sets, doses)
    for name in names:
        # together the solve runs to the latest time any outcome needs, so a value may come from the dense
        # output rather than a step ending there: equal to the solver's rtol (1e-8), not to round-off
        single = [OUTCOMES[name](sle, p, s) for p, s in zip(sle_sets, doses)]
        np.testing.assert_allclose(forward[name], single, rtol=1e-7, err_msg=name)
        np.testing.assert_allclose(backward[name], forward[name], rtol=1e-12, err_msg=name)
    labelled = evaluate_outcomes({"reappearance": "recovery_time", "half": partial(recovery_time, threshold=100.0)},
                                 sle, sle_sets[:2], SLE_DOSE)
    assert list(labelled) == ["reappearance", "half"] and (labelled["half"] > labelled["reappearance"]).all()


def test_unknown_outcome_option_names_the_outcome(sle):
    with pytest.raises(SolverInputError, match="outcome 'late'.*threshhold"):
        evaluate_outcomes({"late": partial(recovery_time, threshhold=2.0)}, sle, n_sets=1)


def test_batch_with_options_and_one_schedule_per_set(sle, sle_sets):
    doses = [[kinetics.Dose(0.0, a, "car19")] for a in (2e7, 6e7, 1.8e8, 6e7, 2e7, 6e7)]
    f = partial(recovery_time, threshold=0.5, relative_to_baseline=True)
    got = evaluate_outcome(f, sle, sle_sets, doses, chunk_size=4)
    want = [recovery_time(sle, p, s, threshold=0.5, relative_to_baseline=True) for p, s in zip(sle_sets, doses)]
    np.testing.assert_allclose(got, want, rtol=1e-10)
    got = evaluate_outcome(partial(cmax, output="car19_qpcr"), sle, sle_sets, doses)
    np.testing.assert_allclose(got, [cmax(sle, p, s, output="car19_qpcr") for p, s in zip(sle_sets, doses)],
                               rtol=1e-10)


def test_batch_dict_params_and_user_function(oral):
    def conc_at_2h(model, params, doses):
        assert isinstance(params, dict)   # the documented calling convention
        return float(model.simulate([2.0], params, doses).outputs["conc"][0])

    cl = np.array([2.0, 2.75, 4.0])
    got = evaluate_outcome(conc_at_2h, oral, {"CL": cl}, ORAL_DOSE)
    want = bateman(np.array([2.0]), 320.0, 1.5, cl, 31.9)
    np.testing.assert_allclose(got, want, rtol=1e-5)   # default solver rtol 1e-6


def test_failed_solve_is_nan_in_batch_and_an_error_alone(oral):
    # V = 0 divides by zero in central/V: the solve fails
    got = evaluate_outcome(partial(cmax, output="conc"), oral, {"V": np.array([31.9, 0.0])}, ORAL_DOSE)
    assert np.isfinite(got[0]) and np.isnan(got[1])
    with pytest.raises(SolverInputError, match="could not be solved"):
        cmax(oral, {"V": 0.0}, ORAL_DOSE, output="conc")


@pytest.mark.parametrize("call, error, match", [
    (lambda m: evaluate_outcome("recovery_tme", m), SolverInputError, "did you mean 'recovery_time'"),
    (lambda m: recovery_time(m, output="bcell"), SolverInputError, "unknown output 'bcell'"),
    (lambda m: recovery_time(m, doses=SLE_DOSE, threshold=0.0), SolverInputError, "threshold"),
    (lambda m: aplasia_duration(m, threshold=-1.0), SolverInputError, "threshold"),
    (lambda m: aplasia_duration(m, until=0.0), SolverInputError, "until"),
    (lambda m: fraction_of_baseline(m, output="igg", day=-5.0), SolverInputError, "day"),
    (lambda m: evaluate_outcome("cmax", m, np.ones((2, 3))), SolverInputError, "shape"),
    (lambda m: evaluate_outcome("cmax", m, {"dM_19": [0.1, 0.2]}, [[], [], []]), DoseError, "3 schedules"),
    (lambda m: evaluate_outcome("cmax", m, {"dM_19": [0.1, np.nan]}), SolverInputError, "not finite"),
    (lambda m: evaluate_outcome("cmax", m, {"dM_9": [0.1]}), SolverInputError, "did you mean 'dM_19'"),
    (lambda m: evaluate_outcome("cmax", m, chunk_size=0), SolverInputError, "chunk_size"),
    (lambda m: evaluate_outcome(42, m), SolverInputError, "outcome must be"),
], ids=["outcome-name", "output", "threshold-0", "threshold-neg", "until", "day", "params-shape",
        "schedules", "nan-param", "param-name", "chunk", "not-callable"])
def test_bad_input(sle, call, error, match):
    with pytest.raises(error, match=match):
        call(sle)


def test_outcome_units_follow_the_model_for_axis_labels():
    # units come from the model file: cd19_sle outputs and its time unit (days); AUC is level x time
    from kinetics.analysis import outcome_output, outcome_unit

    sle = kinetics.load_model("cd19_sle")
    units = {o.name: o.unit for o in sle.model.outputs}
    assert outcome_output("b_cell_nadir") in units
    assert outcome_unit("b_cell_nadir", sle) == units[outcome_output("b_cell_nadir")]
    assert outcome_unit("recovery_time", sle) == sle.model.time_unit == "day"
    assert outcome_unit("autoantibody_reduction_d90", sle) == "fraction"
    out = outcome_output("cmax")
    if out in units:
        assert outcome_unit("cmax", sle) == units[out]
        assert outcome_unit("auc_0_28", sle) == f"{units[out]} x day"
    theo = kinetics.load_model("oral_1cmt")
    assert outcome_unit(functools.partial(kinetics.analysis.cmax, output="conc"), theo) == "mg/L"
    assert outcome_unit(functools.partial(kinetics.analysis.auc_0_28, output="conc"), theo) == "mg/L x h"
    assert outcome_unit(lambda model, params=None, doses=None: 1.0, theo) == ""
