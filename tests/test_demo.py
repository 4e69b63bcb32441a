"""``make demo`` (kinetics/demo.py): the pipeline runs end to end on a reduced configuration (fast), and the full
run recovers the truth saved with the virtual trial (slow).

Truth: fits/data/virtual_trial_truth.csv (the parameters the 15 patients were simulated with). As in
tests/fits/test_virtual_trial_fit.py, the target of a 15-patient fit is the simulated sample (its geometric
mean and log-variance); the tolerances are that test's (20 % on typical values, 50 % on omega^2, for the
parameters with eta shrinkage below 0.3). NPDE: issue 6 asks mean within 0.1 and variance within 0.15 of
N(0, 1) on data simulated from the model (here the model that generated the trial, fitted to it).
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from kinetics.demo import DEMO_ANALYSES, QUICK_ANALYSES, main, run_demo, truth_comparison

PARAMETERS = ["dM_19", "kmax_19", "rhoH_19", "B0", "d_n", "V_car", "dM_bc", "kmax_bc", "rhoH_bc"]


def test_quick_demo_runs_every_stage(tmp_path):
    lines: list[str] = []
    res = run_demo(tmp_path, analyses=QUICK_ANALYSES, saem_iterations=(10, 10), stein=False, echo=lines.append)
    stages = [ln for ln in lines if re.match(r"\[\d/\d\] ", ln)]
    assert [s[:5] for s in stages] == ["[1/4]", "[2/4]", "[3/4]", "[4/4]"]
    assert all(re.search(r"\(\d+\.\d s\)$", s) for s in stages)        # elapsed time on every progress line
    assert lines[-1] == f"report: {res.report.resolve()}"
    assert res.report.exists() and (tmp_path / "truth_comparison.csv").exists()
    for name in ("estimates.csv", "recovery_patients.csv", "dose_sweep.csv", "tornado.csv"):
        assert (tmp_path / name).exists(), name
    assert list(res.truth["parameter"]) == PARAMETERS
    assert {"npde", "vpc", "recovery", "dose_sweep"} <= {k.strip() for k in res.timings}
    assert res.fit.n_iterations == 20


def test_truth_comparison_uses_the_simulated_sample(tmp_path):
    # a stand-in fit at the sample's own geometric means and log-variances must compare as ratio 1
    truth = pd.read_csv(__import__("kinetics.demo", fromlist=["TRUTH"]).TRUTH)
    logs = np.log(truth[PARAMETERS])

    class Fit:
        theta = {p: float(np.exp(logs[p].mean())) for p in PARAMETERS}
        omega = pd.DataFrame(np.diag([float(logs[p].var(ddof=0)) for p in PARAMETERS]), index=PARAMETERS,
                             columns=PARAMETERS)
        eta_shrinkage = dict.fromkeys(PARAMETERS, 0.1)

    t = truth_comparison(Fit())
    np.testing.assert_allclose(t["ratio"], 1.0, rtol=1e-12)
    np.testing.assert_allclose(t["omega2_ratio"], 1.0, rtol=1e-12)


@pytest.mark.slow
def test_full_demo_recovers_the_truth(tmp_path, capsys):
    assert main(["--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"report: {(tmp_path / 'report.html').resolve()}" in out
    t = pd.read_csv(tmp_path / "truth_comparison.csv")
    identified = t[t["shrinkage"] < 0.3]
    assert len(identified) >= 6, t
    for r in identified.itertuples(index=False):
        assert r.ratio == pytest.approx(1.0, abs=0.20), r.parameter
        assert r.omega2_ratio == pytest.approx(1.0, abs=0.50), r.parameter
    npde = pd.read_csv(tmp_path / "npde.csv")["NPDE"].to_numpy(dtype=float)
    assert DEMO_ANALYSES.npde_sims >= 300
    assert abs(np.nanmean(npde)) < 0.1 and abs(np.nanvar(npde, ddof=1) - 1) < 0.15
