"""The analysis commands of `kinetics` (nca, recovery, dose-sweep, sensitivity): the files they write hold
the numbers of the Python API called with the same arguments, and bad input is a one-line error, status 2."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import kinetics
from kinetics.analysis import (b_cell_recovery_time, cmax, dose_sweep, morris_screening, nca_from_model, nca_table,
                               outcome_elasticities, recovery_distribution, sobol_indices, tornado)
from kinetics.cli import main
from tests.references import shared_data

THEOPH_SPEC = Path(__file__).resolve().parent.parent / "fits" / "theophylline_focei.toml"
SLE_DOSE = [kinetics.Dose(0.0, 6e7, "car19")]
SLE = ["cd19_sle", "--dose", "0:6e7:car19"]


def run(argv: list[str]) -> int:
    """Exit status of the command line, whether main returns it or argparse exits."""
    try:
        return main(argv)
    except SystemExit as exc:
        return int(exc.code)


@pytest.fixture(scope="module")
def sle():
    return kinetics.load_model("cd19_sle")


def iiv_variances(model) -> dict[str, float]:
    """omega (variances) from the model file's suggested SDs, as the commands use them."""
    return {k: v ** 2 for k, v in model.model.metadata["iiv"].items()}


@pytest.fixture(scope="module")
def theoph_fit():
    return kinetics.run_fit_spec(THEOPH_SPEC, progress=False)


# -- nca -------------------------------------------------------------------------------------------
def test_nca_of_the_stein2019_model_matches_the_analytic_auc(tmp_path, capsys):
    assert main(["nca", "stein2019", "--out", str(tmp_path)]) == 0
    row = pd.read_csv(tmp_path / "nca.csv").iloc[0]
    # issue 5: AUC(0-28 d) = 171774 copies/ug x d from the closed form (tests/analysis/test_nca.py), within 0.5 %
    assert row["auc_0_28"] == pytest.approx(171774.0, rel=5e-3)
    direct = nca_from_model(kinetics.load_model("stein2019"))
    assert row["auc_0_28"] == pytest.approx(direct.auc_0_28, rel=1e-12)
    assert (row["id"], row["output"], row["tmax"]) == ("stein2019", "car_qpcr", 9.3)
    assert row["cmax"] == pytest.approx(24000.0, rel=1e-8)   # Stein 2019 Table 1
    captured = capsys.readouterr()
    assert "car_qpcr" in captured.out and f"wrote {tmp_path / 'nca.csv'}" in captured.err


def test_nca_of_a_dosed_model_takes_doses_parameters_and_grid(tmp_path):
    argv = ["nca", "oral_1cmt", "--dose", "0:320:depot", "--set", "CL=3", "--until", "24", "--step", "0.05",
            "--lloq", "0.5", "--out", str(tmp_path)]
    assert main(argv) == 0
    row = pd.read_csv(tmp_path / "nca.csv").iloc[0]
    r = nca_from_model(kinetics.load_model("oral_1cmt"), params={"CL": 3.0}, doses=[kinetics.Dose(0.0, 320.0, "depot")],
                       until=24.0, step=0.05, lloq=0.5)
    for field in ("cmax", "tmax", "auc_0_last", "clast", "tlast", "half_life"):
        assert row[field] == pytest.approx(getattr(r, field), rel=1e-12), field
    assert not (tmp_path / "nca.png").exists()   # a model's single profile has no exposure-table figure


def test_nca_of_a_dataset_is_the_per_subject_table_with_a_figure(tmp_path):
    path = shared_data("theoph_nonmem.csv")
    assert main(["nca", str(path), "--lloq", "1", "--out", str(tmp_path / "new")]) == 0
    written = pd.read_csv(tmp_path / "new" / "nca.csv")
    expected = nca_table(kinetics.read_dataset(path), lloq=1.0)
    assert list(written["output"].unique()) == ["conc"]
    np.testing.assert_array_equal(written["id"].astype(str), expected["id"])
    for col in ("cmax", "tmax", "auc_0_last", "half_life", "n_blq"):
        np.testing.assert_allclose(written[col], expected[col].astype(float), rtol=1e-12, err_msg=col)
    assert (tmp_path / "new" / "nca.png").stat().st_size > 10_000


# -- recovery ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("options, rule", [
    ([], dict()),
    (["--threshold", "0.25", "--relative", "--sustained-days", "14", "--until", "730"],
     dict(threshold=0.25, relative_to_baseline=True, sustained_days=14.0, until=730.0)),
], ids=["default-rule", "relative-sustained"])
def test_recovery_matches_the_api(tmp_path, sle, options, rule):
    argv = ["recovery", *SLE, "--n-patients", "20", "--seed", "3", "--days", "60,120", "--out", str(tmp_path), *options]
    assert main(argv) == 0
    dist = recovery_distribution(sle, SLE_DOSE, omega=iiv_variances(sle), n_patients=20, seed=3, **rule)
    q = pd.read_csv(tmp_path / "recovery_quantiles.csv")
    assert dict(zip(q["quantile"], q["time"])) == pytest.approx(dist.quantiles(), rel=1e-12)
    p = pd.read_csv(tmp_path / "recovery_probability.csv")
    assert dict(zip(p["day"], p["probability"])) == dist.probability_recovered_by([60.0, 120.0])
    np.testing.assert_allclose(pd.read_csv(tmp_path / "recovery_times.csv")["time"], dist.times, rtol=1e-12)
    typical = pd.read_csv(tmp_path / "recovery_typical.csv").iloc[0]
    assert typical["time"] == pytest.approx(b_cell_recovery_time(sle, doses=SLE_DOSE, **rule).time, rel=1e-12)
    assert (tmp_path / "recovery.png").stat().st_size > 10_000


@pytest.mark.slow
def test_recovery_with_a_fit_predicts_each_patient(tmp_path):
    # a short FOCE-I of the virtual trial (two iterations: it stops unconverged, which must give status 3)
    data = Path(__file__).resolve().parent.parent / "fits" / "data" / "virtual_trial.csv"
    spec = tmp_path / "spec.toml"
    spec.write_text(f'model = "dual_car_sle"\ndata = "{data}"\nmethod = "focei"\n'
                    "[estimate]\ndM_19 = 0.05\nB0 = 200.0\n[random_effects]\ndM_19 = 0.09\nB0 = 0.09\n[error]\n"
                    + "".join(f'{o} = {{ kind = "log_additive", add = 0.4 }}\n'
                              for o in ("car19_qpcr", "car19_flow", "carbcma_qpcr", "carbcma_flow", "bcells"))
                    + 'igg = { kind = "proportional", prop = 0.08 }\n'
                    + 'anti_dsdna = { kind = "combined", add = 2.0, prop = 0.15 }\n[options]\nmax_iterations = 2\n')
    out = tmp_path / "out"
    assert main(["recovery", "dual_car_sle", "--dose", "0:6e7:car19", "--dose", "0:6e7:carbcma", "--fit", str(spec),
                 "--n-patients", "20", "--out", str(out)]) == 3
    patients = pd.read_csv(out / "recovery_patients.csv")
    assert len(patients) == 15 and {"time", "low", "high", "observed_left", "observed_status"} <= set(patients)
    assert (out / "recovery_patients.png").exists() and (out / "recovery_quantiles.csv").exists()


# -- dose-sweep ----------------------------------------------------------------------------------------
def test_factorial_dose_sweep_matches_the_api(tmp_path, sle):
    argv = ["dose-sweep", "cd19_sle", "--doses", "car19=1e7,6e7,2e8", "--outcomes", "recovery_time,cmax:car19_qpcr",
            "--n-patients", "20", "--seed", "2", "--out", str(tmp_path)]
    assert main(argv) == 0
    outcomes = {"recovery_time": "recovery_time", "cmax:car19_qpcr": partial(cmax, output="car19_qpcr")}
    sweep = dose_sweep(sle, {"car19": [1e7, 6e7, 2e8]}, outcomes=outcomes, n_patients=20, omega=iiv_variances(sle),
                       seed=2)
    values = pd.read_csv(tmp_path / "dose_sweep_values.csv")
    pd.testing.assert_frame_equal(values, sweep.values, check_dtype=False, rtol=1e-12)
    summary = pd.read_csv(tmp_path / "dose_sweep_summary.csv")
    pd.testing.assert_frame_equal(summary, sweep.summary, check_dtype=False, rtol=1e-12)
    power = pd.read_csv(tmp_path / "power_model.csv").set_index("outcome")
    pm = sweep.power_model("recovery_time", "car19")
    assert power.loc["recovery_time", "slope"] == pytest.approx(pm.slope, rel=1e-12)
    assert power.loc["recovery_time", ["ci_low", "ci_high"]].tolist() == pytest.approx(list(pm.ci), rel=1e-12)
    assert (tmp_path / "dose_sweep.png").stat().st_size > 10_000


def test_one_at_a_time_sweep_holds_the_other_product_at_its_reference(tmp_path):
    argv = ["dose-sweep", "dual_car_sle", "--doses", "car19=3e7,6e7,1e8", "--doses", "carbcma=3e7,1e8",
            "--grid", "one-at-a-time", "--reference", "carbcma=6e7", "--outcomes", "b_cell_nadir",
            "--n-patients", "5", "--out", str(tmp_path)]
    assert main(argv) == 0
    levels = [{"car19": 3e7, "carbcma": 6e7}, {"car19": 6e7, "carbcma": 6e7}, {"car19": 1e8, "carbcma": 6e7},
              {"car19": 6e7, "carbcma": 3e7}, {"car19": 6e7, "carbcma": 1e8}]   # car19's reference: its middle dose
    model = kinetics.load_model("dual_car_sle")
    sweep = dose_sweep(model, levels, outcomes=["b_cell_nadir"], n_patients=5, omega=iiv_variances(model), seed=0)
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "dose_sweep_values.csv"), sweep.values, check_dtype=False,
                                  rtol=1e-12)
    for target in ("car19", "carbcma"):   # one figure per product, the other at its reference
        assert (tmp_path / f"dose_sweep_{target}.png").stat().st_size > 10_000
    assert set(pd.read_csv(tmp_path / "power_model.csv")["target"]) == {"car19", "carbcma"}


def test_a_fit_gives_the_population_and_linear_pk_is_dose_proportional(tmp_path, theoph_fit):
    argv = ["dose-sweep", "oral_1cmt", "--fit", str(THEOPH_SPEC), "--doses", "depot=160,320,640", "--outcomes",
            "cmax:conc", "--n-patients", "8", "--out", str(tmp_path)]
    assert main(argv) == 0
    model = kinetics.load_model("oral_1cmt")
    sweep = dose_sweep(model, {"depot": [160.0, 320.0, 640.0]}, outcomes={"cmax:conc": partial(cmax, output="conc")},
                       n_patients=8, fit=theoph_fit, seed=0)
    np.testing.assert_allclose(pd.read_csv(tmp_path / "dose_sweep_values.csv")["cmax:conc"],
                               sweep.values["cmax:conc"], rtol=1e-9)
    # a linear model: Cmax is proportional to the dose, slope 1 (to the solver's tolerance)
    assert pd.read_csv(tmp_path / "power_model.csv")["slope"].iloc[0] == pytest.approx(1.0, abs=1e-6)


# -- sensitivity -------------------------------------------------------------------------------------
def test_local_sensitivity_matches_the_api(tmp_path, sle, capsys):
    argv = ["sensitivity", *SLE, "--outcome", "recovery_time", "--params", "dM_19,B0,thalf_IgG", "--out", str(tmp_path)]
    assert main(argv) == 0
    el = outcome_elasticities(sle, "recovery_time", doses=SLE_DOSE, wrt=["dM_19", "B0", "thalf_IgG"])
    written = pd.read_csv(tmp_path / "elasticities.csv")
    assert list(written["wrt"]) == list(el["wrt"])
    np.testing.assert_allclose(written["elasticity"], el["elasticity"], rtol=1e-12, atol=1e-15)
    tor = tornado(sle, "recovery_time", omega={"dM_19": 0.3 ** 2, "B0": 0.3 ** 2}, doses=SLE_DOSE)
    written = pd.read_csv(tmp_path / "tornado.csv")
    assert list(written["parameter"]) == list(tor["parameter"])
    np.testing.assert_allclose(written[["outcome_low", "outcome_high"]], tor[["outcome_low", "outcome_high"]],
                               rtol=1e-12)
    assert (tmp_path / "tornado.png").stat().st_size > 10_000
    assert "thalf_IgG left out" in capsys.readouterr().err   # no between-subject variability: no tornado range


def test_local_sensitivity_with_a_fit_uses_its_omega(tmp_path, theoph_fit):
    argv = ["sensitivity", "oral_1cmt", "--fit", str(THEOPH_SPEC), "--dose", "0:320:depot", "--outcome", "cmax:conc",
            "--out", str(tmp_path)]
    assert main(argv) == 0
    tor = tornado(kinetics.load_model("oral_1cmt"), partial(cmax, output="conc"), omega=theoph_fit,
                  doses=[kinetics.Dose(0.0, 320.0, "depot")])
    written = pd.read_csv(tmp_path / "tornado.csv")
    assert list(written["parameter"]) == list(tor["parameter"])
    np.testing.assert_allclose(written["outcome_high"], tor["outcome_high"], rtol=1e-9)


def test_sobol_and_morris_match_the_api(tmp_path, sle):
    common = ["sensitivity", *SLE, "--outcome", "recovery_time", "--params", "dM_19,kmax_19", "--seed", "1"]
    assert main([*common, "--method", "sobol", "--n-base", "32", "--out", str(tmp_path)]) == 0
    omega = {"dM_19": 0.3 ** 2, "kmax_19": 0.3 ** 2}
    r = sobol_indices(sle, outcome="recovery_time", doses=SLE_DOSE, omega=omega, n_base=32, rng=1)
    written = pd.read_csv(tmp_path / "sobol.csv")
    expected = r.to_frame()
    assert list(written["parameter"]) == list(expected["parameter"])
    np.testing.assert_allclose(written[["S1", "S1_low", "ST", "ST_high"]], expected[["S1", "S1_low", "ST", "ST_high"]],
                               rtol=1e-9)
    assert (tmp_path / "sobol.png").stat().st_size > 10_000
    assert main([*common, "--method", "morris", "--trajectories", "4", "--out", str(tmp_path)]) == 0
    m = morris_screening(sle, outcome="recovery_time", doses=SLE_DOSE, omega=omega, n_trajectories=4, rng=1)
    written = pd.read_csv(tmp_path / "morris.csv")
    np.testing.assert_allclose(written["mu_star"], m.to_frame()["mu_star"], rtol=1e-9)


# -- bad input ---------------------------------------------------------------------------------------
BAD = {
    "unknown-model": (["nca", "stein2091"], "did you mean 'stein2019'"),
    "unknown-output": (["nca", "stein2019", "--output", "qpcr"], "did you mean 'car_qpcr'"),
    "model-option-on-data": (["nca", str(shared_data("theoph_nonmem.csv")), "--dose", "0:1:depot"],
                             "for a model, not for a dataset"),
    "missing-dose": (["nca", "oral_1cmt"], "give --dose TIME:AMOUNT:TARGET"),
    "negative-lloq": (["nca", "stein2019", "--lloq", "-1"], "argument --lloq"),
    "zero-threshold": (["recovery", *SLE, "--threshold", "0"], "argument --threshold: expected a finite number > 0"),
    "no-patients": (["recovery", *SLE, "--n-patients", "0"], "argument --n-patients: expected at least 1"),
    "unknown-dose-target": (["recovery", "cd19_sle", "--dose", "0:6e7:car91"], "did you mean 'car19'"),
    "recovery-without-dose": (["recovery", "cd19_sle"], "its default scenario: car19 dose 6e7"),
    "unknown-recovery-output": (["recovery", *SLE, "--output", "bcell"], "did you mean 'bcells'"),
    "no-variability": (["recovery", "oral_1cmt", "--dose", "0:320:depot", "--output", "conc"], "pass --fit SPEC"),
    "bad-days": (["recovery", *SLE, "--days", "90,x"], "argument --days"),
    "fit-of-another-model": (["recovery", *SLE, "--fit", str(THEOPH_SPEC)], "fits model 'oral_1cmt', not 'cd19_sle'"),
    "set-with-fit": (["recovery", *SLE, "--fit", str(THEOPH_SPEC), "--set", "CL=2"], "--set cannot be combined"),
    "unknown-parameter": (["recovery", *SLE, "--set", "dm_19=0.1"], "did you mean 'dM_19'"),
    "doses-without-amounts": (["dose-sweep", "cd19_sle", "--doses", "car19"], "expected TARGET=AMOUNT"),
    "doses-not-numbers": (["dose-sweep", "cd19_sle", "--doses", "car19=1e7,abc"], "amounts must be numbers"),
    "sweep-unknown-target": (["dose-sweep", "cd19_sle", "--doses", "car91=1e7"], "did you mean 'car19'"),
    "target-twice": (["dose-sweep", "cd19_sle", "--doses", "car19=1e7", "--doses", "car19=2e7"], "given twice"),
    "swept-and-held": (["dose-sweep", "cd19_sle", "--doses", "car19=1e7,2e7", "--reference", "car19=1e7"],
                       "either swept (--doses) or held"),
    "unknown-outcome": (["dose-sweep", "cd19_sle", "--doses", "car19=1e7", "--outcomes", "cmaxx"],
                        "did you mean 'cmax'"),
    "outcome-output-missing": (["dose-sweep", "oral_1cmt", "--doses", "depot=1", "--outcomes", "cmax"],
                               "name one as cmax:OUTPUT"),
    "unknown-grid": (["dose-sweep", "cd19_sle", "--doses", "car19=1e7", "--grid", "diagonal"], "invalid choice"),
    "n-base-not-power-of-2": (["sensitivity", *SLE, "--outcome", "cmax", "--method", "sobol", "--n-base", "100"],
                              "expected a power of 2 (>= 2), got 100; e.g. 64 or 128"),
    "unknown-sensitivity-parameter": (["sensitivity", *SLE, "--outcome", "cmax", "--params", "dm_19"],
                                      "did you mean 'dM_19'"),
    "parameter-without-sd": (["sensitivity", *SLE, "--outcome", "cmax", "--method", "sobol", "--params", "thalf_IgG"],
                             "no between-subject variability"),
    "misspelt-outcome": (["sensitivity", *SLE, "--outcome", "recovery_tim"], "did you mean 'recovery_time'"),
    "missing-outcome": (["sensitivity", *SLE], "the following arguments are required: --outcome"),
    "one-trajectory": (["sensitivity", *SLE, "--outcome", "cmax", "--method", "morris", "--trajectories", "1"],
                       "expected at least 2"),
}


@pytest.mark.parametrize("argv, message", BAD.values(), ids=BAD.keys())
def test_bad_input_is_a_clear_error_with_status_2(argv, message, tmp_path, capsys):
    assert run([*argv, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()   # nothing written


def test_an_output_folder_that_cannot_be_made_is_an_error(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["nca", "stein2019", "--out", str(blocker / "sub")]) == 2
    assert "cannot write results" in capsys.readouterr().err
