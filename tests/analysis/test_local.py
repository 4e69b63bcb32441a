"""Local sensitivity: elasticities over time against the Bateman closed form and central differences, outcome
elasticities (chain rule from forward sensitivities) against closed forms and central differences, tornado data."""

from __future__ import annotations

import math
from functools import partial

import numpy as np
import pytest
import sympy as sp

import kinetics
from kinetics.analysis import (
    OUTCOMES,
    auc_0_28,
    cmax,
    elasticities,
    fraction_of_baseline,
    outcome_elasticities,
    recovery_time,
    tornado,
)
from kinetics.errors import SolverInputError
from tests.references import bateman, shared_data

KA, CL, V = 1.5, 2.75, 31.9          # models/oral_1cmt.toml defaults
ORAL_DOSE = [kinetics.Dose(0.0, 320.0, "depot")]
SLE_DOSE = [kinetics.Dose(0.0, 6e7, "car19")]
Z90 = 1.6448536269514722             # standard normal 95th percentile (5th-95th percentile range)


@pytest.fixture(scope="module")
def oral():
    return kinetics.load_model("oral_1cmt")


@pytest.fixture(scope="module")
def sle():
    return kinetics.load_model("cd19_sle")


def bateman_elasticities(t):
    """d ln C / d ln theta of the Bateman function C = F D ka / (V (ka - k)) (e^-kt - e^-ka t), k = CL/V
    (differentiating ln C term by term): CL: k/(ka-k) - k t e^-kt / E; V: -1 - (that); ka: 1 - ka/(ka-k) +
    ka t e^-ka t / E; F and dose: 1; E = e^-kt - e^-ka t."""
    k = CL / V
    E = np.exp(-k * t) - np.exp(-KA * t)
    e_cl = k / (KA - k) - k * t * np.exp(-k * t) / E
    return {"ka": 1 - KA / (KA - k) + KA * t * np.exp(-KA * t) / E, "CL": e_cl, "V": -1 - e_cl,
            "F": np.ones_like(t), "dose:depot": np.ones_like(t)}


# -- over time -----------------------------------------------------------------------------------------
def test_elasticities_equal_bateman_closed_form(oral):
    t = np.array([0.25, 1.0, 2.0, 6.0, 12.0, 24.0])
    df = elasticities(oral, t, doses=ORAL_DOSE, rtol=1e-10, atol=1e-12)
    assert set(df["wrt"]) == {"ka", "CL", "V", "F", "dose:depot"}
    want = bateman_elasticities(t)
    for name, values in want.items():
        got = df[df["wrt"] == name].sort_values("time")["elasticity"].to_numpy()
        np.testing.assert_allclose(got, values, atol=1e-7, err_msg=name)   # solver rtol 1e-10
    np.testing.assert_allclose(df[df["wrt"] == "V"]["level"], bateman(t, 320.0, KA, CL, V), rtol=1e-8)
    dose_rows = df[df["wrt"] == "dose:depot"]
    assert (dose_rows["method"] == "forward sensitivities (initial value)").all()
    np.testing.assert_allclose(dose_rows["sensitivity"] * 320.0, dose_rows["level"], rtol=1e-7)   # linear in dose


def test_dose_after_time_zero_by_central_difference(oral):
    # a dose at t = 1 h: C is linear in the dose, so the elasticity is 1 after it; before it C = 0 (nan)
    doses = [kinetics.Dose(1.0, 320.0, "depot")]
    df = elasticities(oral, [0.5, 2.0, 8.0], doses=doses, wrt=["dose:depot", "CL"], rtol=1e-10, atol=1e-12)
    d = df[df["wrt"] == "dose:depot"].sort_values("time")
    assert d["method"].iloc[0].startswith("central difference")
    assert math.isnan(d["elasticity"].iloc[0])
    np.testing.assert_allclose(d["elasticity"].iloc[1:], 1.0, atol=1e-6)
    cl = df[df["wrt"] == "CL"].sort_values("time")["elasticity"].to_numpy()[1:]
    np.testing.assert_allclose(cl, bateman_elasticities(np.array([1.0, 7.0]))["CL"], atol=1e-7)   # shifted by 1 h


def test_elasticities_equal_central_differences_on_lupus_model(sle):
    # issue 5 "must show": elasticities equal finite-difference elasticities to 1e-4. B cells in the killing phase
    # are so curved in log p that a plain central difference with h = 1e-4 is off by 0.04 (its h^2 term); the
    # Richardson combination (4 D(h/2) - D(h))/3 removes that term, leaving < 1e-5 (round-off ~rtol/h = 1e-8).
    times = [3.0, 10.0, 60.0, 150.0]
    wrt = ["dM_19", "kmax_19", "rhoH_19", "thalf_IgG", "B0", "dose:car19"]
    outs = ["car19_flow", "bcells", "igg"]
    tol = {"rtol": 1e-12, "atol": 1e-14}
    df = elasticities(sle, times, doses=SLE_DOSE, outputs=outs, wrt=wrt, **tol)
    p0 = sle.parameter_vector(None)

    def central(w, h):
        sims = []
        for s in (1 + h, 1 - h):
            if w.startswith("dose:"):
                sims.append(sle.simulate(times, None, [kinetics.Dose(0.0, 6e7 * s, "car19")], **tol))
            else:
                sims.append(sle.simulate(times, {w: p0[sle.parameter_names.index(w)] * s}, SLE_DOSE, **tol))
        return {o: (np.log(sims[0].outputs[o]) - np.log(sims[1].outputs[o])) / (math.log1p(h) - math.log1p(-h))
                for o in outs}

    for w in wrt:
        d1, d2 = central(w, 1e-4), central(w, 5e-5)
        for o in outs:
            fd = (4 * d2[o] - d1[o]) / 3
            got = df[(df["wrt"] == w) & (df["output"] == o)].sort_values("time")["elasticity"].to_numpy()
            np.testing.assert_allclose(got, fd, atol=1e-4, err_msg=f"{o} wrt {w}")


# -- of outcomes ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["auc_0_28", "b_cell_nadir", "aplasia_duration", "recovery_time",
                                  "autoantibody_reduction_d90", "autoantibody_reduction_d180", "igg_fraction_1y"])
def test_outcome_chain_rule_equals_central_differences(sle, name):
    # issue 5 "must show" (1e-4): chain rule (forward sensitivities) vs central differences, relative step 1e-3
    wrt = ["dM_19", "kmax_19", "rhoH_19", "d_n", "B0", "thalf_IgG", "fLL_auto", "fLL_igg", "dose:car19"]
    chain = outcome_elasticities(sle, name, doses=SLE_DOSE, wrt=wrt, method="sensitivities")
    cd = outcome_elasticities(sle, name, doses=SLE_DOSE, wrt=wrt, method="central")
    assert chain["method"].str.startswith("forward sensitivities").all()
    assert cd["method"].str.startswith("central difference").all()
    m = chain.merge(cd, on="wrt", suffixes=("", "_cd"))
    assert m["outcome"].iloc[0] == pytest.approx(OUTCOMES[name](sle, None, SLE_DOSE), rel=1e-12)
    np.testing.assert_allclose(m["elasticity"], m["elasticity_cd"], atol=1e-4)
    np.testing.assert_allclose(m["derivative"] * m["value"] / m["outcome"], m["elasticity"], rtol=1e-12)


def test_cmax_and_auc_elasticities_equal_bateman(oral):
    k = CL / V
    tmax = math.log(KA / k) / (KA - k)
    want = bateman_elasticities(np.array([tmax]))   # envelope theorem: d ln Cmax = d ln C at tmax
    # a 1e-4 h grid puts the grid peak within 5e-5 h of tmax: |d e / dt| 5e-5 < 1e-5 error
    f = partial(cmax, output="conc", until=12.0, step=1e-4)
    got = outcome_elasticities(oral, f, doses=ORAL_DOSE).set_index("wrt")["elasticity"]
    for name, value in want.items():
        assert got[name] == pytest.approx(value[0], abs=1e-4), name
    # AUC(0-28 h): elasticities of the closed-form integral, differentiated by sympy
    ka, cl, v, F, D, T = sp.symbols("ka CL V F D T", positive=True)
    kk = cl / v
    auc = F * D * ka / (v * (ka - kk)) * ((1 - sp.exp(-kk * T)) / kk - (1 - sp.exp(-ka * T)) / ka)
    at = {ka: KA, cl: CL, v: V, F: 1.0, D: 320.0, T: 28.0}
    got = outcome_elasticities(oral, partial(auc_0_28, output="conc"), doses=ORAL_DOSE).set_index("wrt")["elasticity"]
    for name, sym in (("ka", ka), ("CL", cl), ("V", v), ("F", F), ("dose:depot", D)):
        e = float((sp.diff(auc, sym) * sym / auc).subs(at))
        assert got[name] == pytest.approx(e, abs=1e-5), name   # grid AUC error 1.2e-6 relative


def test_outcome_elasticities_of_a_user_function_and_zero_parameter(oral):
    def conc_at_2h(model, params, doses):
        return float(model.simulate([2.0], params, doses, rtol=1e-10, atol=1e-12).outputs["conc"][0])

    df = outcome_elasticities(oral, conc_at_2h, {"F": 1.0}, ORAL_DOSE).set_index("wrt")
    assert (df["method"].str.startswith("central difference")).all()
    for name, value in bateman_elasticities(np.array([2.0])).items():
        assert df.loc[name, "elasticity"] == pytest.approx(value[0], abs=1e-5)   # h^2 ~ 1e-6 truncation
    with pytest.raises(SolverInputError, match="no chain rule"):
        outcome_elasticities(oral, conc_at_2h, doses=ORAL_DOSE, method="sensitivities")


def test_lupus_recovery_elasticities_rank_car_t_parameters(sle):
    # B cells do not depend on the IgG half-life at all (no path in models/cd19_sle.toml [odes]), and reappearance
    # is set by the CAR-T decline (memory loss dM_19, expansion rhoH_19; calibration text of the model file)
    df = outcome_elasticities(sle, "recovery_time", doses=SLE_DOSE)
    e = df.set_index("wrt")["elasticity"]
    assert e["thalf_IgG"] == 0.0
    assert e["dM_19"] < -0.5 and e["rhoH_19"] > 0.5
    # with r_N (host recovery ends the space-driven expansion), the CAR-T expansion and persistence rates lead
    assert {"rhoH_19", "dM_19"} <= set(df["wrt"][:3])


# -- tornado -------------------------------------------------------------------------------------------
def test_tornado_with_bounds_equals_closed_form(oral):
    f = partial(auc_0_28, output="conc")
    df = tornado(oral, f, {"CL": (2.0, 4.0), "dose:depot": (160.0, 640.0), "ka": (1.0, 2.0)}, doses=ORAL_DOSE)
    assert list(df.columns) == ["parameter", "value", "low", "high", "outcome_low", "outcome_high", "outcome_base",
                                "range_source", "swing"]
    assert (np.diff(df["swing"]) <= 0).all()
    r = df.set_index("parameter")
    base = auc_0_28(oral, doses=ORAL_DOSE, output="conc")

    def auc_closed(cl, dose=320.0, ka=KA):   # as in test_outcomes: the Bateman integral to 28 h
        k = cl / V
        return dose * ka / (V * (ka - k)) * ((1 - math.exp(-28 * k)) / k - (1 - math.exp(-28 * ka)) / ka)

    assert r.loc["CL", "outcome_low"] == pytest.approx(auc_closed(2.0), rel=3e-6)
    assert r.loc["CL", "outcome_high"] == pytest.approx(auc_closed(4.0), rel=3e-6)
    # linear in dose: exactly proportional
    assert r.loc["dose:depot", "outcome_low"] == pytest.approx(base / 2, rel=1e-9)
    assert r.loc["dose:depot", "outcome_high"] == pytest.approx(base * 2, rel=1e-9)
    assert r.loc["CL", "outcome_base"] == base


def test_tornado_from_omega_on_lupus_model(sle):
    iiv = sle.model.metadata["iiv"]   # SDs of eta; omega= takes variances
    df = tornado(sle, "recovery_time", omega={k: s ** 2 for k, s in iiv.items()}, doses=SLE_DOSE)
    r = df.set_index("parameter")
    for name, om in iiv.items():
        v = sle.defaults[name]
        assert r.loc[name, "low"] == pytest.approx(v * math.exp(-Z90 * om), rel=1e-12)
        assert r.loc[name, "high"] == pytest.approx(v * math.exp(Z90 * om), rel=1e-12)
    assert r["outcome_base"].iloc[0] == pytest.approx(recovery_time(sle, doses=SLE_DOSE), rel=1e-12)
    # |elasticity| x omega: dM_19 0.86 x 0.3 beats rhoH_19 1.33 x 0.1 and the rest (test above)
    assert df["parameter"].iloc[0] == "dM_19"


def test_tornado_from_a_population_fit(oral):
    theoph = kinetics.read_dataset(shared_data("theoph_nonmem.csv"))
    fit = kinetics.fit_population(oral, theoph, estimate={"ka": 1.57, "CL": 2.72, "V": 31.5},
                                  random_effects={"ka": 0.6, "CL": 0.3, "V": 0.1}, error={"conc": "additive"})
    df = tornado(oral, partial(cmax, output="conc"), omega=fit, doses=ORAL_DOSE).set_index("parameter")
    for name in ("ka", "CL", "V"):
        sd = math.sqrt(fit.omega.loc[name, name])     # fit.omega holds variances
        assert df.loc[name, "value"] == pytest.approx(fit.theta[name], rel=1e-12)
        assert df.loc[name, "low"] == pytest.approx(fit.theta[name] * math.exp(-Z90 * sd), rel=1e-12)
    base = cmax(oral, {k: fit.theta[k] for k in ("ka", "CL", "V")}, ORAL_DOSE, output="conc")
    assert df["outcome_base"].iloc[0] == pytest.approx(base, rel=1e-12)


# -- bad input -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("call, match", [
    (lambda m: elasticities(m, [1.0], doses=ORAL_DOSE, wrt=["Cl"]), "did you mean 'CL'"),
    (lambda m: elasticities(m, [1.0], doses=ORAL_DOSE, outputs=["cnc"]), "unknown output 'cnc'"),
    (lambda m: elasticities(m, [1.0], wrt=["dose:depot"]), "no dose"),
    (lambda m: elasticities(m, [1.0], doses=ORAL_DOSE, wrt=["dose:oral"]), "unknown dose target 'oral'"),
    (lambda m: elasticities(m, [1.0], doses=ORAL_DOSE, wrt="CL"), "list of names"),
    (lambda m: outcome_elasticities(m, "cmax", doses=ORAL_DOSE, method="exact"), "method must be"),
    (lambda m: outcome_elasticities(m, "cmax", doses=ORAL_DOSE, rel_step=0.0), "rel_step"),
    (lambda m: tornado(m, "cmax", doses=ORAL_DOSE), "ranges= .* or omega="),
    (lambda m: tornado(m, "cmax", {"CL": (3.0, 4.0)}, doses=ORAL_DOSE), r"excludes the value 2.75"),
    (lambda m: tornado(m, "cmax", {"CL": (4.0, 3.0)}, doses=ORAL_DOSE), "low < high"),
    (lambda m: tornado(m, "cmax", {"CL": 3.0}, doses=ORAL_DOSE), "pair"),
    (lambda m: tornado(m, "cmax", omega={"CL": -0.1}, doses=ORAL_DOSE), "variance >= 0"),
    (lambda m: tornado(m, "cmax", omega={"CL": 0.3}, ranges={"CL": (1.0, 4.0)}, doses=ORAL_DOSE), "both"),
    (lambda m: tornado(m, "cmax", omega=[0.3], doses=ORAL_DOSE), "PopulationFit or a mapping"),
    (lambda m: tornado(m, "cmax", omega={"CL": 0.3}, doses=ORAL_DOSE, coverage=1.0), "coverage"),
], ids=["wrt-name", "output", "no-dose", "dose-target", "wrt-string", "method", "step", "no-ranges", "excludes",
        "reversed", "not-pair", "negative-omega", "twice", "omega-type", "coverage"])
def test_bad_input(oral, call, match):
    with pytest.raises(SolverInputError, match=match):
        call(oral)


def test_fraction_of_baseline_chain_rule_handles_dose_independent_baseline(sle):
    # the baseline (time 0, no doses) does not move with the dose: the dose elasticity is that of the level
    f = partial(fraction_of_baseline, output="anti_dsdna", day=90.0)
    e = outcome_elasticities(sle, f, doses=SLE_DOSE, wrt=["dose:car19"]).set_index("wrt")["elasticity"]
    lvl = elasticities(sle, [90.0], doses=SLE_DOSE, outputs=["anti_dsdna"], wrt=["dose:car19"])["elasticity"].iloc[0]
    assert e["dose:car19"] == pytest.approx(lvl, abs=1e-9)
