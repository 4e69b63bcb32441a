"""The `kinetics` command: listing, simulating, and clear errors."""

from __future__ import annotations

import pandas as pd
import pytest

from kinetics.cli import main
from tests.references import bateman


def test_models_lists_the_library(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for name in ("oral_1cmt", "iv_1cmt", "stein2019"):
        assert name in out
    assert "doi:10.1002/psp4.12388" in out


def test_simulate_writes_csv_matching_closed_form(tmp_path):
    csv = tmp_path / "conc.csv"
    code = main(["simulate", "oral_1cmt", "--dose", "0:320:depot", "--until", "24", "--points", "25",
                 "--rtol", "1e-10", "--atol", "1e-12", "--csv", str(csv)])
    assert code == 0
    df = pd.read_csv(csv)
    assert list(df.columns) == ["time", "depot", "central", "conc"]
    t = df["time"].to_numpy()[1:]
    assert (abs(df["conc"].to_numpy()[1:] / bateman(t, 320.0, 1.5, 2.75, 31.9) - 1) < 1e-8).all()


def test_simulate_with_set_and_plot(tmp_path):
    png = tmp_path / "stein.png"
    assert main(["simulate", "stein2019", "--set", "Tlag=2", "--until", "60", "--plot", str(png), "--log"]) == 0
    assert png.stat().st_size > 10_000


def test_unknown_model_is_a_clear_error(capsys):
    assert main(["simulate", "stein2091"]) == 2
    assert "did you mean 'stein2019'" in capsys.readouterr().err


@pytest.mark.parametrize("bad", [["--dose", "0:abc:depot"], ["--dose", "0:1"], ["--set", "CL"], ["--dose", "-1:5:depot"]],
                         ids=["non-numeric-amount", "missing-target", "set-without-value", "negative-dose-time"])
def test_bad_arguments_exit_with_usage_error(bad, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["simulate", "oral_1cmt", *bad])
    assert exc.value.code == 2
    assert "--" in capsys.readouterr().err


def test_unknown_dose_target_is_reported(capsys):
    assert main(["simulate", "oral_1cmt", "--dose", "0:5:dept"]) == 2
    assert "did you mean 'depot'" in capsys.readouterr().err
