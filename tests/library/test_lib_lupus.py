"""Lupus models `cd19_sle` and `dual_car_sle` (our own; models/*.toml state every assumption).

Each test checks one published fact that issue 3 sets as a calibration target and names its
source; the ranges are those of issue 3 (they bracket the published numbers with the spread
the studies report). Default scenario: 1e6 CAR+ cells/kg x 60 kg = 6e7 cells of each product
on day 0 (the Mackensen 2022 dose), lymphodepletion ending on day -3 (in the model defaults).
"""

from __future__ import annotations

import numpy as np
import pytest

import kinetics
from kinetics.analysis import b_cell_recovery_time
from tests.library.conftest import check_sensitivities_match_central_differences, check_simulates_from_defaults

DOSE = 6e7  # CAR+ cells: 1e6/kg (Mackensen 2022) x 60 kg
CD19 = [kinetics.Dose(0.0, DOSE, "car19")]
DUAL = [kinetics.Dose(0.0, DOSE, "car19"), kinetics.Dose(0.0, DOSE, "carbcma")]
YEAR = 365.0


@pytest.fixture(scope="module")
def cd19():
    return kinetics.load_model("cd19_sle")


@pytest.fixture(scope="module")
def dual():
    return kinetics.load_model("dual_car_sle")


@pytest.fixture(scope="module")
def cd19_run(cd19):
    t = np.arange(0.0, 730.0 + 1e-9, 0.05)
    sim = cd19.simulate(t, doses=CD19, rtol=1e-8, atol=1e-10)
    assert sim.success, sim.message
    return sim


@pytest.fixture(scope="module")
def dual_run(dual):
    t = np.arange(0.0, 730.0 + 1e-9, 0.05)
    sim = dual.simulate(t, doses=DUAL, rtol=1e-8, atol=1e-10)
    assert sim.success, sim.message
    return sim


def _at(sim, output, day):
    i = int(np.argmin(np.abs(sim.times - day)))
    assert abs(sim.times[i] - day) < 1e-6
    return float(sim.outputs[output][i])


def _rel(sim, output, day):
    return _at(sim, output, day) / float(sim.outputs[output][0])


# --- shared library checks ---------------------------------------------------------------

@pytest.mark.parametrize(("name", "doses"), [("cd19_sle", CD19), ("dual_car_sle", DUAL)], ids=["cd19", "dual"])
def test_simulates_from_defaults(name, doses):
    check_simulates_from_defaults(kinetics.load_model(name), np.linspace(0.0, 730.0, 147), doses)


SENS_TIMES = np.array([1.0, 4.0, 7.0, 14.0, 28.0, 60.0, 120.0, 200.0, 365.0])


def test_cd19_sensitivities_match_central_differences(cd19):
    check_sensitivities_match_central_differences(
        cd19, SENS_TIMES, ["rhoH_19", "dM_19", "kmax_19", "B0", "f_LD", "d_m", "fLL_igg", "thalf_IgG"], CD19)


def test_dual_sensitivities_match_central_differences(dual):
    check_sensitivities_match_central_differences(
        dual, SENS_TIMES, ["rhoH_bc", "dM_bc", "kmax_bc", "dM_19", "PL0", "t_LD"], DUAL)


# --- steady state and structure ----------------------------------------------------------

@pytest.mark.parametrize("name", ["cd19_sle", "dual_car_sle"])
def test_without_car_t_nothing_moves(name):
    """Production rates are derived from the baselines: without CAR-T the B-lineage, plasma cells and
    antibodies stay at baseline (analytic steady state); without lymphodepletion nothing moves at all."""
    m = kinetics.load_model(name)
    t = np.linspace(0.0, 730.0, 50)
    sim = m.simulate(t, rtol=1e-10, atol=1e-12)
    assert sim.success
    d = m.defaults
    moving = {"N"}  # host lymphocytes recover from lymphodepletion
    # atol: states that start at exactly 0 (the CAR-T compartments) come back as rounding residues ~1e-31 once
    # the default method hands over to Rodas5P and its W matrix needs row exchanges (rows mix, and zeros become
    # differences of equal numbers); 1e-20 cells/uL is 13 orders below one cell in the blood volume
    for j, s in enumerate(m.state_names):
        if s not in moving:
            np.testing.assert_allclose(sim.states[:, j], sim.states[0, j], rtol=1e-9, atol=1e-20, err_msg=s)
    np.testing.assert_allclose(sim.outputs["bcells"], d["B0"], rtol=1e-9)
    np.testing.assert_allclose(sim.outputs["igg"], d["IgG0"], rtol=1e-9)
    np.testing.assert_allclose(sim.outputs["anti_dsdna"], d["A0"], rtol=1e-9)
    np.testing.assert_allclose(sim.outputs["vaccine_titre"], 1.0, rtol=1e-9)
    n = sim.states[:, m.state_names.index("N")]
    assert n[0] < 0.1 * d["K_N"] and n[-1] == pytest.approx(d["K_N"], rel=1e-6)
    flat = m.simulate(t, params={"f_LD": 1.0}, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(flat.states, np.broadcast_to(flat.states[0], flat.states.shape), rtol=1e-9, atol=1e-30)


def test_lymphodepletion_start_value_is_the_gompertz_closed_form(cd19):
    """N(0) = K_N exp(ln(f_LD) exp(r_N t_LD)): Gompertz dN/dt = r_N N ln(K_N/N) solved from t_LD to 0
    (Kimmel 2021 host T-cell equation without CAR-T); checked against the same ODE solved from t_LD."""
    d = cd19.defaults
    n0 = cd19.simulate([0.0]).states[0, cd19.state_names.index("N")]
    # same ODE integrated from the end of lymphodepletion: the solution continues smoothly through day 0
    later = cd19.simulate([5.0], rtol=1e-10, atol=1e-12).states[0, cd19.state_names.index("N")]
    u = np.log(d["f_LD"]) * np.exp(-d["r_N"] * (5.0 - d["t_LD"]))
    assert n0 == pytest.approx(d["K_N"] * np.exp(np.log(d["f_LD"]) * np.exp(d["r_N"] * d["t_LD"])), rel=1e-12)
    assert later == pytest.approx(d["K_N"] * np.exp(u), rel=1e-7)


def test_dual_without_bcma_dose_is_cd19_sle(cd19, dual):
    """Identity: with a zero BCMA dose the dual model has the cd19_sle equations and defaults."""
    t = np.array([3.0, 10.0, 60.0, 150.0, 365.0])
    a = cd19.simulate(t, doses=CD19, rtol=1e-10, atol=1e-12)
    b = dual.simulate(t, doses=CD19, rtol=1e-10, atol=1e-12)
    for out in cd19.output_names:
        np.testing.assert_allclose(b.outputs[out], a.outputs[out], rtol=1e-7, atol=1e-12, err_msg=out)


# --- CAR-T kinetics ----------------------------------------------------------------------

@pytest.mark.parametrize("output", ["car19_flow", "car19_qpcr"])
def test_cd19_car_t_peak_between_day_7_and_14(cd19_run, output):
    # Mackensen 2022: expansion peaking ~day 9 [R]; allogeneic CD19 CAR-T in SLE peak day 14 [S] (issue 3: day 7-14)
    tpk = cd19_run.times[np.argmax(cd19_run.outputs[output])]
    assert 7.0 <= tpk <= 14.0


def test_qpcr_follows_the_observation_model(cd19_run, cd19):
    # reference/models.md section 3: copies/ug = CAR+/uL x VCN / (nucleated cells/uL x 6.6e-6 ug)
    d = cd19.defaults
    nucleated = cd19_run.outputs["lymphocytes"] + d["W_other"]
    np.testing.assert_allclose(cd19_run.outputs["car19_qpcr"],
                               cd19_run.outputs["car19_flow"] * d["VCN_19"] / (nucleated * 6.6e-6), rtol=1e-12)


def test_lymphodepletion_drives_expansion(cd19):
    # Kimmel 2021: expansion in low-antigen settings comes from the homeostatic space lymphodepletion opens
    t = np.linspace(0.0, 30.0, 301)
    with_ld = cd19.simulate(t, doses=CD19).outputs["car19_flow"].max()
    without = cd19.simulate(t, params={"f_LD": 1.0}, doses=CD19).outputs["car19_flow"].max()
    assert with_ld > 10 * without


# --- B cells -----------------------------------------------------------------------------

@pytest.mark.parametrize("which", ["cd19", "dual"])
def test_b_cells_below_1_per_ul_within_a_week(which, cd19_run, dual_run):
    # Mackensen 2022: deep B-cell depletion; issue 3: B cells < 1 cell/uL within a week
    sim = cd19_run if which == "cd19" else dual_run
    assert _at(sim, "bcells", 7.0) < 1.0


def test_typical_b_cell_reappearance_80_to_140_days(cd19):
    # Mackensen 2022: reappearance 110 +/- 32 d (mean +/- SD, n = 5); typical patient 80-140 d (issue 3)
    r = b_cell_recovery_time(cd19, threshold=1.0, doses=CD19)
    assert r.depleted and r.time is not None
    assert 80.0 <= r.time <= 140.0


def test_population_mean_reappearance_80_to_150_days(cd19):
    """500 seeded patients with the model's suggested log-normal IIV (metadata 'iiv'); Mackensen 2022
    110 +/- 32 d; issue 3 asks for a population mean of 80-150 d."""
    iiv = cd19.model.metadata["iiv"]
    rng = np.random.default_rng(20220915)  # Mackensen 2022 publication date
    n = 500
    draws = {k: cd19.defaults[k] * np.exp(w * rng.standard_normal(n)) for k, w in iiv.items()}
    grid = np.linspace(0.0, 60.0, 241)
    batch = cd19.simulate_batch(grid, params=draws, doses=CD19, rtol=1e-8, atol=1e-10)
    assert batch.success.all()
    b = batch.output("bcells")
    assert (b[:, grid == 7.0] < 1.0).mean() > 0.9  # depletion within a week in nearly everyone
    times = []
    for i in range(n):
        p = {k: v[i] for k, v in draws.items()}
        after = float(grid[np.argmin(b[i])])  # well inside the aplasia, below the 1 cell/uL threshold
        assert b[i].min() < 1.0
        c = cd19.crossing_time("bcells", 1.0, after=after, until=1095.0, direction="up", params=p, doses=CD19,
                               rtol=1e-8, atol=1e-10)
        assert c.success and c.found
        times.append(c.time)
    times = np.array(times)
    assert 80.0 <= times.mean() <= 150.0
    assert 15.0 <= times.std() <= 60.0  # Mackensen 2022 SD 32 d (n = 5): same order of spread


def test_reappearing_b_cells_are_naive(cd19):
    # Mackensen 2022: reappearing B cells were naive, non-class-switched
    r = b_cell_recovery_time(cd19, threshold=1.0, doses=CD19)
    base = cd19.simulate([0.0]).outputs["naive_fraction"][0]
    at = cd19.simulate([r.time, r.time + 60.0], doses=CD19).outputs["naive_fraction"]
    assert at[0] > 0.95 and at[1] > 0.9 and base < 0.8


def test_dual_complete_b_cell_recovery_within_2_to_6_months(dual):
    # Wang 2024 (BCMA-CD19 cCAR in SLE): complete B-cell recovery within 2-6 months;
    # complete = back to 50 % of baseline (100 /uL by default, the lower end of the normal range 104-140 /uL)
    r = b_cell_recovery_time(dual, threshold=0.5, relative_to_baseline=True, doses=DUAL)
    assert r.time is not None
    assert 60.0 <= r.time <= 182.5


# --- immunoglobulins and autoantibodies --------------------------------------------------

def test_cd19_total_igg_10_to_30_percent_lower_at_one_year(cd19_run):
    # Hill 2019: total IgG -17.5 % about a year after CD19 CAR-T (issue 3: 10-30 % lower)
    assert 0.70 <= _rel(cd19_run, "igg", YEAR) <= 0.90


def test_cd19_vaccine_titre_within_10_percent_at_one_year(cd19_run):
    # Hill 2019: measles IgG +1.2 %; Bhoj 2016: vaccine titres stable (CD19- LLPC untouched)
    assert abs(_at(cd19_run, "vaccine_titre", YEAR) - 1.0) <= 0.10


def test_dual_igg_and_vaccine_titre_clearly_lower(cd19_run, dual_run):
    # issue 3: clearly lower after dual targeting (the BCMA product removes long-lived plasma cells)
    assert _rel(dual_run, "igg", YEAR) < 0.70  # below the whole CD19-only band
    assert _rel(dual_run, "igg", YEAR) < _rel(cd19_run, "igg", YEAR) - 0.3
    assert _at(dual_run, "vaccine_titre", YEAR) < 0.5


def test_cd19_anti_dsdna_plateaus_above_zero(cd19_run, cd19):
    # Feng 2025 / Mei 2015: with part of the autoantibody from CD19- LLPCs, CD19-only CAR-T leave a plateau
    share = cd19.defaults["fLL_auto"]
    assert share > 0
    a6, a12 = _rel(cd19_run, "anti_dsdna", 182.5), _rel(cd19_run, "anti_dsdna", YEAR)
    assert a12 > 0.1  # above zero
    assert abs(a12 - a6) < 0.05  # flat between 6 and 12 months


def test_dual_anti_dsdna_falls_near_zero(dual_run):
    # Wang 2024: all autoantibodies negative by 3 months, including LLPC-derived ones
    assert _rel(dual_run, "anti_dsdna", 90.0) < 0.10
    assert _rel(dual_run, "anti_dsdna", 182.5) < 0.02 and _rel(dual_run, "anti_dsdna", YEAR) < 0.02


def test_cd19_anti_dsdna_seroconverts_without_llpc_share(cd19):
    # Mackensen 2022: anti-dsDNA seroconversion in all 5 patients; with fLL_auto = 0 it falls to ~zero
    sim = cd19.simulate([0.0, 182.5], params={"fLL_auto": 0.0}, doses=CD19)
    assert sim.outputs["anti_dsdna"][1] / sim.outputs["anti_dsdna"][0] < 0.02
