"""Cross-checks and options of population fits: R nlme's parameterisation of theophylline, full omega,
covariate effects."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import kinetics
from kinetics.data import read_dataset
from kinetics.fit import fit_population
from tests.fit.conftest import HERE
from tests.references import shared_data


@pytest.fixture(scope="module")
def theoph_per_kg():
    """theoph.csv (R datasets::Theoph) as an event table with the dose in mg/kg, as nlme's SSfol uses it."""
    raw = pd.read_csv(shared_data("theoph.csv"))
    rows = []
    for sid, g in raw.groupby("Subject", sort=False):
        rows.append(dict(ID=sid, TIME=0.0, DV=".", EVID=1, AMT=g["Dose"].iloc[0], CMT="depot", OUTPUT=""))
        rows += [dict(ID=sid, TIME=t, DV=c, EVID=0, AMT=".", CMT="", OUTPUT="conc") for t, c in zip(g["Time"], g["conc"])]
    return read_dataset(pd.DataFrame(rows), name="theoph (mg/kg)")


def test_theophylline_in_nlme_parameterisation(theoph_per_kg):
    # R nlme 3.1-162 (Lindstrom-Bates), SSfol on dose in mg/kg, diagonal random effects on lKa and lCl
    # (../shared/data/README.md): lKe -2.4547, lKa 0.4657, lCl -3.2272, residual SD 0.7093, logLik -177.02.
    # Lindstrom-Bates and FOCE-I are different approximations of the same likelihood: a looser cross-check
    # (0.02 on log parameters, 0.005 on the SD, 0.1 on logLik).
    model = kinetics.load_model(HERE / "sfol.toml")
    fit = fit_population(model, theoph_per_kg, estimate={"ka": np.exp(0.45), "ke": np.exp(-2.5), "CL": np.exp(-3.2)},
                         random_effects={"ka": 0.5, "CL": 0.1}, error={"conc": {"kind": "additive", "add": 0.7}},
                         covariance=None)
    assert fit.success, fit.message
    logs = {k: np.log(v) for k, v in fit.theta.items()}
    assert logs["ke"] == pytest.approx(-2.4547, abs=0.02)
    assert logs["ka"] == pytest.approx(0.4657, abs=0.02)
    assert logs["CL"] == pytest.approx(-3.2272, abs=0.02)
    assert fit.sigma["conc.add"] == pytest.approx(0.7093, abs=0.005)
    assert -0.5 * fit.ofv_with_constant == pytest.approx(-177.02, abs=0.1)


def test_full_omega_nests_the_diagonal_fit(oral, theoph):
    spec = dict(estimate={"ka": 1.6, "CL": 2.75, "V": 31.8}, error={"conc": {"kind": "additive", "add": 0.7}},
                covariance=None)
    diag = fit_population(oral, theoph, random_effects={"ka": 0.4, "CL": 0.07, "V": 0.02}, **spec)
    full = fit_population(oral, theoph, random_effects={"omega": np.diag([0.4, 0.07, 0.02]), "names": ["ka", "CL", "V"]},
                          **spec)
    assert diag.success and full.success, (diag.message, full.message)
    # three more parameters: the objective cannot rise, and the covariance matrix stays positive definite
    assert full.ofv <= diag.ofv + 1e-3
    assert np.all(np.linalg.eigvalsh(full.omega.to_numpy()) > 0)
    assert full.n_parameters == diag.n_parameters + 3
    assert "omega(CL,ka)" in list(full.estimates["name"])


def test_power_covariate_on_clearance(oral, theoph):
    spec = dict(estimate={"ka": 1.6, "CL": 2.75, "V": 31.8}, random_effects={"ka": 0.4, "CL": 0.07, "V": 0.02},
                error={"conc": {"kind": "additive", "add": 0.7}}, covariance=None)
    base = fit_population(oral, theoph, **spec)
    cov = fit_population(oral, theoph, covariates={"CL": {"WT": "power"}}, **spec)
    assert cov.success
    assert cov.ofv <= base.ofv + 1e-3            # nested model
    assert "CL~WT" in cov.covariate_coefficients
    # the typical CL refers to the median weight; individual CLs carry the weight factor
    wt = np.array([s.covariates["WT"] for s in theoph.subjects])
    beta = cov.covariate_coefficients["CL~WT"]
    typical_i = cov.theta["CL"] * (wt / np.median(wt)) ** beta
    eta_cl = cov.etas["eta_CL"].to_numpy()
    np.testing.assert_allclose(cov.individual_params["CL"].to_numpy(), typical_i * np.exp(eta_cl), rtol=1e-10)


def test_typical_parameters_carry_fixed_values_into_simulations(oral, theoph):
    # V held at 30 L (not the model file's 31.9): analyses that simulate "the fit's typical patient" must use 30,
    # not the file value; the Bateman closed form at the fit's typical values is the reference
    from kinetics.analysis import cmax, dose_sweep
    from functools import partial
    from tests.references import bateman

    fit = kinetics.fit_population(oral, theoph, estimate={"ka": 1.5, "CL": 2.7}, fixed={"V": 30.0},
                                  random_effects={"ka": 0.5, "CL": 0.1}, error={"conc": "additive"}, covariance=None)
    assert fit.typical_parameters["V"] == 30.0
    assert fit.typical_parameters["ka"] == fit.theta["ka"] and fit.typical_parameters["CL"] == fit.theta["CL"]
    assert fit.to_dict()["typical_parameters"]["V"] == 30.0
    c2 = {"c2": partial(cmax, output="conc", until=2.0, step=2.0)}
    # fit= is the same as the fit's typical values (V = 30 included) and omega given explicitly (same draws)
    via_fit = dose_sweep(oral, {"depot": [320.0]}, outcomes=c2, fit=fit, n_patients=5, seed=3)
    omega = {n: float(fit.omega.loc[n, n]) for n in fit.omega.index}
    explicit = dose_sweep(oral, {"depot": [320.0]}, outcomes=c2, params=fit.typical_parameters, omega=omega,
                          n_patients=5, seed=3)
    np.testing.assert_array_equal(via_fit.values["c2"], explicit.values["c2"])
    typical = dose_sweep(oral, {"depot": [320.0]}, outcomes=c2, params=fit.typical_parameters, n_patients=1)
    ref = bateman(np.array([2.0]), 320.0, fit.theta["ka"], fit.theta["CL"], 30.0)[0]
    assert typical.values["c2"].iloc[0] == pytest.approx(ref, rel=1e-6)
