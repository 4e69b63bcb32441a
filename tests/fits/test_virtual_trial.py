"""The shipped virtual co-infusion trial (fits/data/) and its generator fits/make_virtual_trial.py.

Expected values come from: issue 3 "Example data" (15 patients, three dose levels, the CAR-T
sampling days, baseline to two years, CENS=1 with DV holding the LLOQ), the event-table rules of
kinetics/data/_read.py, and the lupus calibration targets of models/dual_car_sle.toml (B cells
< 1 cell/uL within a week, reappearance ~110 d (Mackensen 2022), all autoantibodies negative by 3
months with dual targeting (Wang 2024)).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import chi2

import kinetics
from fits import make_virtual_trial as vt

DATA = Path(__file__).resolve().parents[2] / "fits" / "data"
FILES = ("virtual_trial.csv", "virtual_trial_truth.csv", "virtual_trial.json")
#: issue 3, "Example data": qPCR and flow CAR-T samples at these days
ISSUE_CART_DAYS = [0, 1, 4, 7, 10, 14, 21, 28, 42, 56, 84, 112, 168]
CART = ["car19_qpcr", "car19_flow", "carbcma_qpcr", "carbcma_flow"]
LABS = ["bcells", "igg", "anti_dsdna"]
LOG_OUTPUTS = ["car19_qpcr", "car19_flow", "carbcma_qpcr", "carbcma_flow", "bcells"]


@pytest.fixture(scope="module")
def model():
    return kinetics.load_model("dual_car_sle")


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    return vt.main(seed=vt.DEFAULT_SEED, out_dir=tmp_path_factory.mktemp("virtual_trial"))


@pytest.fixture(scope="module")
def table():
    return pd.read_csv(DATA / "virtual_trial.csv", na_values=".", keep_default_na=False)


@pytest.fixture(scope="module")
def obs(table):
    return table[table["EVID"] == 0].reset_index(drop=True)


@pytest.fixture(scope="module")
def spec():
    return json.loads((DATA / "virtual_trial.json").read_text())


@pytest.mark.parametrize("name", FILES, ids=[f.split(".")[0] + "_" + f.split(".")[1] for f in FILES])
def test_default_seed_reproduces_the_shipped_file_byte_for_byte(generated, name):
    written = {p.name: p for p in generated.paths}
    assert written[name].read_bytes() == (DATA / name).read_bytes(), (
        f"fits/data/{name} differs from a fresh run of fits/make_virtual_trial.py; if the model or the "
        "generator changed on purpose, regenerate with `python fits/make_virtual_trial.py`")


def test_shipped_files_are_small():
    total = sum((DATA / f).stat().st_size for f in FILES)
    assert total < 1_000_000, f"fits/data is {total} bytes; the brief allows < 1 MB"


def test_dataset_passes_the_validator_and_matches_the_model(model, spec):
    data = kinetics.read_dataset(DATA / "virtual_trial.csv")
    checked = data.for_model(model, log_outputs=LOG_OUTPUTS)
    assert checked.n_subjects == 15
    assert set(checked.output_names()) == set(CART + LABS)
    assert spec["log_outputs"] == LOG_OUTPUTS
    assert data.covariate_names == ("WT", "DOSE_LEVEL", "DOSEKG", "DOSE19", "DOSEBCMA")


def test_design_three_dose_levels_of_both_products_at_day_0(table):
    doses = table[table["EVID"] == 1]
    assert table["ID"].nunique() == 15
    assert (doses["TIME"] == 0).all() and (doses["MDV"] == 1).all()
    for sid, d in doses.groupby("ID"):
        assert sorted(d["CMT"]) == ["car19", "carbcma"], f"subject {sid}"
        row = d.iloc[0]
        # AMT in CAR+ cells = cells/kg x body weight, the same for both products (co-infusion escalation)
        assert (d["AMT"] == row["DOSEKG"] * row["WT"]).all(), f"subject {sid}"
        assert row["DOSE19"] == row["DOSEBCMA"] == d["AMT"].iloc[0]
        first = table[table["ID"] == sid].iloc[:2]
        assert (first["EVID"] == 1).all(), f"subject {sid}: the dose rows must precede the day-0 samples"
    levels = doses.drop_duplicates("ID").groupby("DOSE_LEVEL")["DOSEKG"].agg(["nunique", "first", "size"])
    assert list(levels.index) == [1, 2, 3]
    assert list(levels["size"]) == [5, 5, 5] and (levels["nunique"] == 1).all()
    assert list(levels["first"]) == [1e6, 2e6, 3e6]


@pytest.mark.parametrize("output", CART + LABS)
def test_every_subject_has_the_full_sampling_schedule(obs, spec, output):
    expected = ISSUE_CART_DAYS if output in CART else spec["schedule"]["labs"]["days"]
    if output in LABS:   # issue 3: from baseline to two years
        assert expected[0] == 0 and expected[-1] == 730
    else:
        assert spec["schedule"]["car_t"]["days"] == ISSUE_CART_DAYS
    rows = obs[obs["OUTPUT"] == output]
    for sid, r in rows.groupby("ID"):
        assert list(r["TIME"]) == expected, f"subject {sid}, {output}"
    assert rows["ID"].nunique() == 15


def test_censored_rows_hold_the_lloq_and_observed_rows_are_above_it(obs, spec):
    cens = obs[obs["CENS"] == 1]
    assert len(cens) > 0
    assert (cens["DV"] == cens["LLOQ"]).all()
    assert (obs.loc[obs["CENS"] == 0, "DV"] >= obs.loc[obs["CENS"] == 0, "LLOQ"]).all()
    assert set(obs["CENS"]) == {0, 1}
    lloq = obs.groupby("OUTPUT")["LLOQ"].agg(["nunique", "first"])
    assert (lloq["nunique"] == 1).all()
    assert {k: v["value"] for k, v in spec["lloq"].items()} == lloq["first"].to_dict()


def test_reported_censored_fractions_are_those_of_the_data(obs, spec):
    for output, c in spec["censored"].items():
        rows = obs[obs["OUTPUT"] == output]
        assert (c["n"], c["n_censored"]) == (len(rows), int(rows["CENS"].sum())), output
        assert c["fraction"] == pytest.approx(rows["CENS"].mean(), abs=5e-5), output


def censored_days(obs, output):
    rows = obs[obs["OUTPUT"] == output]
    return rows.groupby("TIME")["CENS"].mean()


def test_b_cells_are_censored_during_aplasia_only(obs):
    frac = censored_days(obs, "bcells")
    # model calibration: B cells < 1 cell/uL within a week, reappearance 110 +/- 32 d (Mackensen 2022)
    assert frac[0] == 0.0
    assert (frac[[7, 14, 28, 56]] == 1.0).all()
    # complete recovery within 2-6 months after BCMA-CD19 targeting (Wang 2024)
    assert (frac[[365, 540, 730]] == 0.0).all()
    # at least the four aplasia visits, at most those up to day 168 (7 of 12 visits)
    assert 4 / 12 <= obs.loc[obs["OUTPUT"] == "bcells", "CENS"].mean() <= 7 / 12


@pytest.mark.parametrize("output", CART)
def test_car_t_is_censored_late_only(obs, output):
    frac = censored_days(obs, output)
    # expansion and early contraction are well above the LLOQ; censoring starts in the persistence phase
    assert (frac[[1, 4, 7, 10, 14, 21, 28, 42, 56]] == 0.0).all()
    assert frac[168] >= 0.5
    assert 0.0 < obs.loc[obs["OUTPUT"] == output, "CENS"].mean() <= 3 / 13


def test_anti_dsdna_is_below_lloq_once_plasma_cells_are_gone(obs):
    frac = censored_days(obs, "anti_dsdna")
    assert (frac[[0, 7, 14, 28, 56]] == 0.0).all()
    # all autoantibodies negative by 3 months (Wang 2024); the model: < 1 % of baseline from day 180
    assert (frac[[168, 252, 365, 540, 730]] == 1.0).all()
    assert frac[0] == 0.0 and censored_days(obs, "igg")[0] == 0.0


def _simulate_truth(model, truth_row, subject):
    params = {k: float(truth_row[k]) for k in vt.random_effect_sds(model)}
    times = np.unique(subject.times)
    sim = model.simulate(times, params=params, doses=list(subject.doses), rtol=vt.RTOL, atol=vt.ATOL)
    assert sim.success, sim.message
    k = np.searchsorted(times, subject.times)
    return np.array([sim.outputs[o][i] for o, i in zip(subject.outputs, k)])


def test_truth_parameters_reproduce_the_generator_medians(model, generated):
    truth = pd.read_csv(DATA / "virtual_trial_truth.csv")
    data = kinetics.read_dataset(DATA / "virtual_trial.csv")
    assert list(truth.columns[6:]) == list(vt.random_effect_sds(model))
    assert [s.id for s in data.subjects] == [str(i) for i in truth["ID"]]
    for subject, (_, row) in zip(data.subjects, truth.iterrows()):
        assert all(d.amount == row["DOSE19"] for d in subject.doses)
        ipred = _simulate_truth(model, row, subject)
        used = generated.medians[generated.medians["ID"] == row["ID"]]
        assert list(used["OUTPUT"]) == list(subject.outputs)
        # single solve vs the generator's batch solve, same integrator at rtol 1e-10: any difference
        # beyond 1e-9 means different parameters or doses, not solver error
        np.testing.assert_allclose(ipred, used["IPRED"].to_numpy(), rtol=1e-9, atol=0,
                                   err_msg=f"subject {row['ID']}")


def _standardised(rows, kind, sd):
    f, y = rows["IPRED"].to_numpy(), rows["DV"].to_numpy()
    if kind == "log_additive":
        return np.log(y / f) / sd["add"]
    if kind == "proportional":
        return (y - f) / (sd["prop"] * f)
    return (y - f) / np.sqrt(sd["add"] ** 2 + (sd["prop"] * f) ** 2)


@pytest.mark.parametrize("output", CART + LABS)
def test_observations_scatter_around_the_medians_with_the_stated_error(obs, spec, generated, output):
    rows = obs.assign(IPRED=generated.medians["IPRED"].to_numpy())
    assert list(rows["OUTPUT"]) == list(generated.medians["OUTPUT"])
    # far above the LLOQ (median >= 10 LLOQ) censoring cannot truncate the residuals
    rows = rows[(rows["OUTPUT"] == output) & (rows["IPRED"] >= 10 * rows["LLOQ"])]
    err = spec["error"][output]
    z = _standardised(rows, err["kind"], err)
    n = z.size
    assert n >= 40
    # standardised residuals ~ N(0, 1): mean within 4 standard errors, SD within 4 SE (SE of an SD
    # ~ 1/sqrt(2n)), no value beyond 5 (P ~ 6e-7 each)
    assert abs(z.mean()) < 4 / np.sqrt(n)
    assert abs(z.std(ddof=1) - 1) < 4 / np.sqrt(2 * n)
    assert np.abs(z).max() < 5


def test_random_effects_are_the_model_metadata_sds(model, spec):
    iiv = model.model.metadata["iiv"]
    assert spec["random_effects"]["omega_sd"] == iiv
    assert spec["random_effects"]["omega_variance"] == pytest.approx({k: v * v for k, v in iiv.items()}, rel=1e-12)
    assert spec["typical_values"] == model.defaults
    truth = pd.read_csv(DATA / "virtual_trial_truth.csv")
    eta = np.log(truth[list(iiv)] / pd.Series({k: model.defaults[k] for k in iiv}))
    # 15 draws: (n-1) s^2 / omega^2 ~ chi-square(14); two-sided 1e-4 bounds per parameter (about 1e-3
    # for the nine together). SDs used as variances (0.09 for 0.3) would fall far outside.
    lo, hi = np.sqrt(chi2.ppf([5e-5, 1 - 5e-5], 14) / 14)
    ratio = eta.std(ddof=1) / pd.Series(iiv)
    assert ((ratio > lo) & (ratio < hi)).all(), ratio.to_dict()


def test_different_seeds_give_different_trials(generated, tmp_path):
    other = vt.main(seed=vt.DEFAULT_SEED + 1, out_dir=tmp_path)
    params = list(other.spec["random_effects"]["omega_sd"])
    assert not np.any(other.truth[params].to_numpy() == generated.truth[params].to_numpy())
    assert not other.data["DV"].equals(generated.data["DV"])
    same = ["ID", "TIME", "EVID", "CMT", "OUTPUT", "DOSE_LEVEL"]
    pd.testing.assert_frame_equal(other.data[same], generated.data[same])
    assert other.spec["seed"] == vt.DEFAULT_SEED + 1
    assert (tmp_path / "virtual_trial.csv").read_bytes() != (DATA / "virtual_trial.csv").read_bytes()


def test_a_failed_solve_is_an_error_naming_the_subject(model):
    rng = np.random.default_rng(1)
    design = vt.design_subjects(rng)
    params = vt.draw_parameters(model, len(design), rng)
    params["rhoA_19"] = model.defaults["rhoA_19"]
    params.loc[4, "rhoA_19"] = 1e300   # expansion too fast to resolve: step-size underflow
    with pytest.raises(vt.VirtualTrialError, match="1 of 15 subjects failed to solve; subject 5: step size"):
        vt.simulate_medians(model, design, params)


def test_a_draw_outside_the_bounds_is_an_error_not_clipped(model):
    wide = kinetics.compile_model(dataclasses.replace(model.model, metadata={"iiv": {"dM_19": 50.0}}))
    with pytest.raises(vt.VirtualTrialError, match=r"drawn dM_19 = .* is outside the bounds \[0.0, 1.0\]"):
        vt.draw_parameters(wide, 15, np.random.default_rng(0))


@pytest.mark.parametrize("metadata, message", [
    ({}, r"has no \[metadata\] iiv"),
    ({"iiv": {"dM_1": 0.3}}, r"names unknown parameters \['dM_1'\]"),
    ({"iiv": {"dM_19": -0.3}}, r"dM_19 = -0.3 is not a finite SD >= 0"),
    ({"iiv": {"dM_19": "0.3"}}, r"dM_19 = '0.3' is not a finite SD >= 0"),
], ids=["missing", "unknown-parameter", "negative", "text"])
def test_a_bad_iiv_table_is_an_error(model, metadata, message):
    bad = kinetics.compile_model(dataclasses.replace(model.model, metadata=metadata))
    with pytest.raises(vt.VirtualTrialError, match=message):
        vt.draw_parameters(bad, 15, np.random.default_rng(0))
