"""Reading and validating the NONMEM-style event table: public datasets read; every rule has a test
whose error names the line and column."""

from __future__ import annotations

import pandas as pd
import pytest

import kinetics
from kinetics.data import read_dataset
from kinetics.errors import DatasetError
from tests.references import shared_data

HEADER = "ID,TIME,DV,MDV,EVID,AMT,CMT,OUTPUT,CENS\n"
DOSE = "1,0,.,1,1,100,depot,,0\n"


def write(tmp_path, body: str, header: str = HEADER, name: str = "d.csv"):
    path = tmp_path / name
    path.write_text(header + body)
    return path


def test_theophylline_reads_as_documented():
    # ../shared/data/README.md: 12 subjects, 132 concentrations, one dose row per subject
    ds = read_dataset(shared_data("theoph_nonmem.csv"))
    assert ds.n_subjects == 12 and ds.n_observations == 132
    assert all(len(s.doses) == 1 and s.doses[0].target == "depot" for s in ds.subjects)
    assert ds.subjects[0].doses[0].amount == pytest.approx(319.992)
    assert ds.covariate_names == ("WT",) and ds.subjects[0].covariates["WT"] == pytest.approx(79.6)


def test_wang2007_m3_has_one_censored_row_per_subject():
    # ../shared/data/README.md: one below-LLOQ record per subject (t=1.5, LLOQ=3, CENS=1)
    ds = read_dataset(shared_data("wang2007_m3.csv"))
    assert ds.n_subjects == 10
    for s in ds.subjects:
        assert list(s.cens) == [0, 0, 1] and s.dv[2] == 3.0 and s.times[2] == 1.5
        assert s.limit[2] == float("-inf")


def test_lower_case_columns_and_dataframe_input():
    df = pd.DataFrame({"id": [1, 1], "time": [0, 1], "dv": [".", 2.0], "evid": [1, 0], "amt": [5, "."],
                       "cmt": ["depot", "."], "output": [".", "conc"]})
    ds = read_dataset(df)
    assert ds.n_observations == 1 and ds.subjects[0].doses[0].amount == 5


def test_rate_gives_infusion_duration(tmp_path):
    ds = read_dataset(write(tmp_path, "1,0,.,1,1,100,depot,,0,50\n1,1,3,0,0,.,,conc,0,.\n",
                            header=HEADER.strip() + ",RATE\n"))
    assert ds.subjects[0].doses[0].duration == pytest.approx(2.0)


def test_time_varying_covariate_carried_forward_and_flagged(tmp_path):
    ds = read_dataset(write(tmp_path, "1,0,.,1,1,100,depot,,0,70\n1,1,3,0,0,.,,conc,0,.\n1,2,3,0,0,.,,conc,0,72\n",
                            header=HEADER.strip() + ",WT\n"))
    s = ds.subjects[0]
    assert s.covariates["WT"] == 70 and "WT" in s.time_varying


BAD_CASES = {
    "missing column": ("ID,TIME\n1,0\n", "", "missing required column DV"),
    "not a number": (HEADER, "1,zero,3,0,0,.,,conc,0\n", "line 2, column TIME: 'zero' is not a number"),
    "decreasing time": (HEADER, DOSE + "1,2,3,0,0,.,,conc,0\n1,1,3,0,0,.,,conc,0\n",
                        "line 4, column TIME: time decreases"),
    "dose field on observation": (HEADER, DOSE + "1,1,3,0,0,5,,conc,0\n", "line 3, column AMT: dose field AMT"),
    "dose without amount": (HEADER, "1,0,.,1,1,.,depot,,0\n", "line 2, column AMT: a dose row needs a positive AMT"),
    "dose without CMT": (HEADER, "1,0,.,1,1,10,,,0\n", "line 2, column CMT: a dose row needs CMT"),
    "observation without DV": (HEADER, DOSE + "1,1,.,0,0,.,,conc,0\n", "line 3, column DV: observation row"),
    "observation without output": (HEADER, DOSE + "1,1,3,0,0,.,,,0\n", "line 3, column OUTPUT"),
    "bad EVID": (HEADER, DOSE + "1,1,3,0,3,.,,conc,0\n", "line 3, column EVID"),
    "bad CENS": (HEADER, DOSE + "1,1,3,0,0,.,,conc,2\n", "line 3, column CENS"),
    "NaN DV": (HEADER, DOSE + "1,1,nan,0,0,.,,conc,0\n", "line 3, column DV: value 'nan' is not finite"),
    "duplicate row": (HEADER, DOSE + "1,1,3,0,0,.,,conc,0\n1,1,3,0,0,.,,conc,0\n", "line 4: duplicate of line 3"),
    "split subject": (HEADER, DOSE + "2,0,3,0,0,.,,conc,0\n1,2,3,0,0,.,,conc,0\n",
                      "line 4, column ID: subject '1' appears again"),
    "below LLOQ not censored": (HEADER.strip() + ",LLOQ\n", DOSE.strip() + ",.\n1,1,0.5,0,0,.,,conc,0,1\n",
                                "line 3, column DV: DV is below LLOQ but CENS=0"),
    "censored DV not LLOQ": (HEADER.strip() + ",LLOQ\n", DOSE.strip() + ",.\n1,1,0.5,0,0,.,,conc,1,1\n",
                             "line 3, column LLOQ"),
    "LIMIT on wrong side": (HEADER.strip() + ",LIMIT\n", DOSE.strip() + ",.\n1,1,1,0,0,.,,conc,1,2\n",
                            "line 3, column LIMIT"),
    "AMT without EVID": ("ID,TIME,DV,AMT\n", "1,0,.,5\n", "EVID is missing"),
    "covariate missing on first row": (HEADER.strip() + ",WT\n", DOSE.strip() + ",.\n1,1,3,0,0,.,,conc,0,70\n",
                                       "line 2, column WT: covariate missing"),
}


@pytest.mark.parametrize("header,body,expected", BAD_CASES.values(), ids=BAD_CASES.keys())
def test_each_violation_names_line_and_column(tmp_path, header, body, expected):
    path = write(tmp_path, body, header=header)
    with pytest.raises(DatasetError) as err:
        read_dataset(path)
    assert expected in str(err.value)
    assert str(path) in str(err.value)


def test_all_violations_are_reported_together(tmp_path):
    path = write(tmp_path, DOSE + "1,1,x,0,0,.,,conc,0\n1,2,3,0,0,9,,conc,7\n")
    with pytest.raises(DatasetError) as err:
        read_dataset(path)
    assert len(err.value.problems) == 3


def test_model_check_names_unknown_output_and_target(tmp_path):
    ds = read_dataset(write(tmp_path, "1,0,.,1,1,100,dept,,0\n1,1,3,0,0,.,,cnc,0\n"))
    model = kinetics.load_model("oral_1cmt")
    with pytest.raises(DatasetError) as err:
        ds.for_model(model)
    msg = str(err.value)
    assert "line 2, column CMT: dose target 'dept'" in msg and "did you mean 'depot'" in msg
    assert "line 3, column OUTPUT: 'cnc'" in msg and "did you mean 'conc'" in msg


def test_model_check_rejects_non_positive_dv_on_log_scale(tmp_path):
    ds = read_dataset(write(tmp_path, DOSE + "1,1,0,0,0,.,,conc,0\n1,2,0.5,0,0,.,,conc,1\n"))
    with pytest.raises(DatasetError, match="line 3, column DV: DV 0 is not positive"):
        ds.for_model(kinetics.load_model("oral_1cmt"), log_outputs=["conc"])


def test_dvid_resolves_to_model_outputs(tmp_path):
    ds = read_dataset(write(tmp_path, "1,0,.,1,1,100,depot,0\n1,1,3,0,0,.,,1\n",
                            header="ID,TIME,DV,MDV,EVID,AMT,CMT,DVID\n"))
    bound = ds.for_model(kinetics.load_model("oral_1cmt"))
    assert bound.subjects[0].outputs == ("conc",)


def test_unit_column_is_checked_against_the_model_output(tmp_path):
    # issue 3: a wrong unit where an output meets data is flagged (line and column named)
    header = HEADER.strip() + ",UNIT\n"
    ok = read_dataset(write(tmp_path, DOSE.strip() + ",.\n1,1,3,0,0,.,,conc,0,mg / l\n", header=header))
    ok.for_model(kinetics.load_model("oral_1cmt"))
    bad = read_dataset(write(tmp_path, DOSE.strip() + ",.\n1,1,3,0,0,.,,conc,0,ng/mL\n", header=header, name="b.csv"))
    with pytest.raises(DatasetError, match="line 3, column UNIT: DV is in 'ng/mL' but output 'conc' .* is in 'mg/L'"):
        bad.for_model(kinetics.load_model("oral_1cmt"))


def test_a_missing_file_is_one_line_naming_it(tmp_path):
    missing = tmp_path / "nope.csv"
    with pytest.raises(DatasetError) as err:
        read_dataset(missing)
    assert str(err.value) == f"{missing}: file not found: {missing}"
    assert err.value.problems == [f"file not found: {missing}"]
