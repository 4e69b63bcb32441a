"""kinetics.analysis.nca: exposure metrics against closed forms, Phoenix WinNonlin on theophylline, and properties."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import brentq

import kinetics
from kinetics.analysis import AUC_METHODS, BLQRule, NCAResult, nca, nca_from_model, nca_table
from kinetics.errors import DatasetError, SolverInputError
from tests.references import shared_data

# --- (a) the must-show: stein2019 typical profile ----------------------------------------------

# Stein 2019 Table 1 typical values (models/stein2019.toml) and the closed form of its supplement:
#   C(t) = R0 e^{rho t} (t < Tmax),  (1-FB) Cmax e^{-alpha (t-Tmax)} + FB Cmax e^{-beta (t-Tmax)} after,
#   R0 = Cmax/foldx, rho = ln(foldx)/Tmax.
STEIN = {"foldx": 3900.0, "Tmax": 9.3, "Cmax": 24000.0, "alpha": 0.16, "FB": 0.0079, "beta": 0.0032}


def stein_auc(end: float, p=STEIN) -> float:
    """Integral of the closed form from 0 to ``end`` (> Tmax)."""
    r0, rho = p["Cmax"] / p["foldx"], math.log(p["foldx"]) / p["Tmax"]
    d = end - p["Tmax"]
    return ((p["Cmax"] - r0) / rho + (1 - p["FB"]) * p["Cmax"] * (1 - math.exp(-p["alpha"] * d)) / p["alpha"]
            + p["FB"] * p["Cmax"] * (1 - math.exp(-p["beta"] * d)) / p["beta"])


def stein_level(t: float, p=STEIN) -> float:
    d = t - p["Tmax"]
    return (1 - p["FB"]) * p["Cmax"] * math.exp(-p["alpha"] * d) + p["FB"] * p["Cmax"] * math.exp(-p["beta"] * d)


@pytest.fixture(scope="module")
def stein():
    return kinetics.load_model("stein2019")


def test_stein2019_typical_profile_matches_the_analytic_auc(stein):
    grid = np.round(np.arange(8401) * 0.01, 12)   # 0..84 d every 0.01 d
    assert 9.3 in grid and 28.0 in grid
    r = nca_from_model(stein, grid)
    # issue 5: AUC(0-28 d) = 171774 copies/ug x d (analytic), NCA on a dense grid within 0.5 %
    assert r.auc_0_28 == pytest.approx(171774.0, rel=5e-3)
    # and the closed form itself, to the trapezoid error of a 0.01 d grid (~h^2 rho Cmax / 12 ~ 0.2, i.e. 1e-6)
    assert stein_auc(28.0) == pytest.approx(171774.0, abs=0.5)
    assert r.auc_0_28 == pytest.approx(stein_auc(28.0), rel=1e-5)
    assert r.auc_0_84 == pytest.approx(stein_auc(84.0), rel=1e-5)
    assert r.auc_0_last == r.auc_0_84 and r.tlast == 84.0
    # Cmax 24000 copies/ug at Tmax 9.3 d (Stein 2019 Table 1), to solver accuracy
    assert r.cmax == pytest.approx(24000.0, rel=1e-8) and r.tmax == 9.3
    assert r.fold_expansion == pytest.approx(3900.0, rel=1e-8)   # Cmax / R0, Stein's foldx
    assert r.clast == pytest.approx(stein_level(84.0), rel=1e-8)
    assert math.isnan(r.tbql) and r.n_blq == 0


def test_stein2019_default_grid_and_window_half_life(stein):
    r = nca_from_model(stein)   # default grid: 0..84 d every 0.01 d
    assert r.tmax == 9.3 and r.auc_0_28 == pytest.approx(stein_auc(28.0), rel=1e-5)
    # far out on the persistence phase the fast term (e^{-0.16 (t-9.3)} ~ 1e-30 at 440 d) is gone:
    # the window regression recovers beta = 0.0032/d (ln 2 / beta = 216.6 d, Stein 2019)
    late = nca_from_model(stein, np.linspace(0.0, 500.0, 5001), half_life_window=(440.0, 500.0))
    assert late.lambda_z == pytest.approx(0.0032, rel=1e-6)
    assert late.half_life == pytest.approx(math.log(2) / 0.0032, rel=1e-6)


def test_model_tbql_is_the_first_grid_time_below_the_lloq(stein):
    lloq = 200.0   # copies/ug: reached on the contraction phase, found exactly by root finding on the closed form
    t_star = brentq(lambda t: stein_level(t) - lloq, 9.3, 84.0)
    r = nca_from_model(stein, lloq=lloq)
    assert t_star < r.tbql <= t_star + 0.01 + 1e-9
    assert r.tlast == pytest.approx(r.tbql - 0.01) and math.isnan(r.auc_0_84)


def test_model_errors(stein):
    with pytest.raises(SolverInputError, match="unknown output"):
        nca_from_model(stein, output="nope")
    with pytest.raises(SolverInputError, match="step"):
        nca_from_model(stein, step=-1.0)


# --- (b) closed forms ----------------------------------------------------------------------------------

def test_mono_exponential_log_down_auc_and_half_life_are_exact():
    # C = 100 e^{-0.1 t}: integral 0..T = 1000 (1 - e^{-0.1 T}); 28 falls between samples (log interpolation)
    t = np.array([0.0, 1.0, 2.5, 7.0, 14.0, 30.0, 56.0, 90.0])
    r = nca(t, 100.0 * np.exp(-0.1 * t))
    assert r.auc_0_28 == pytest.approx(1000.0 * (1 - math.exp(-2.8)), rel=1e-12)
    assert r.auc_0_84 == pytest.approx(1000.0 * (1 - math.exp(-8.4)), rel=1e-12)
    assert r.auc_0_last == pytest.approx(1000.0 * (1 - math.exp(-9.0)), rel=1e-12)
    assert r.half_life == pytest.approx(10.0 * math.log(2), rel=1e-12)
    assert r.lambda_z == pytest.approx(0.1, rel=1e-12) and r.r2_adj == pytest.approx(1.0, abs=1e-12)
    assert r.n_points_half_life == 7 and (r.half_life_start, r.half_life_end) == (1.0, 90.0)  # Tmax = 0 excluded


def test_linear_profiles_are_exact_with_the_linear_trapezoid():
    t = np.array([0.0, 3.0, 10.0, 20.0, 31.0, 60.0, 90.0])
    up = nca(t, 5.0 + 2.0 * t)   # rising: linear-up/log-down uses the linear trapezoid
    assert up.auc_0_28 == pytest.approx(5 * 28 + 28.0**2, rel=1e-12)
    assert up.auc_0_84 == pytest.approx(5 * 84 + 84.0**2, rel=1e-12)
    down = 100.0 - t
    lin = nca(t, down, auc_method="linear")
    assert lin.auc_0_28 == pytest.approx(100 * 28 - 28.0**2 / 2, rel=1e-12)
    assert lin.auc_0_84 == pytest.approx(100 * 84 - 84.0**2 / 2, rel=1e-12)
    # log-down on a straight falling line is not exact; it underestimates (log mean < arithmetic mean)
    assert nca(t, down).auc_0_28 < lin.auc_0_28


def test_window_is_nan_without_extrapolation_and_says_why():
    r = nca([0.0, 7.0, 14.0, 21.0], [1.0, 50.0, 20.0, 5.0])
    assert math.isnan(r.auc_0_28) and math.isnan(r.auc_0_84) and r.auc_0_last > 0
    assert any("AUC(0-28) is nan" in n and "t=21" in n for n in r.notes)


def test_missing_time_zero_is_taken_as_zero_and_negative_times_are_ignored():
    # pre-infusion level 0 (rules text); linear trapezoid 0..2 = 2*4/2, 2..28 = 26*(4+4)/2
    r = nca([-3.0, 2.0, 28.0], [7.0, 4.0, 4.0], auc_method="linear")
    assert r.auc_0_28 == pytest.approx(4.0 + 104.0) and r.n_samples == 2
    assert "level 0 at t=0" in r.rules and any("before time 0" in n for n in r.notes)


def test_fold_expansion_rules():
    t, c = [0.0, 7.0, 14.0], [2.0, 400.0, 100.0]
    assert nca(t, c).fold_expansion == pytest.approx(200.0)
    assert nca(t, c, baseline=4.0).fold_expansion == pytest.approx(100.0)
    assert "Cmax / first quantifiable level" in nca(t, c).rules
    # a BLQ first sample is not the reference: the first quantifiable one is
    assert nca(t, c, censored=[True, False, False]).fold_expansion == pytest.approx(1.0)


def test_dose_normalised_metrics():
    t = [0.0, 7.0, 14.0, 28.0]
    r = nca(t, [0.0, 100.0, 50.0, 10.0], dose=50.0, auc_method="linear")
    assert r.cmax_per_dose == pytest.approx(2.0) and r.auc_0_28_per_dose == pytest.approx(r.auc_0_28 / 50.0)
    assert math.isnan(nca(t, [0.0, 100.0, 50.0, 10.0]).cmax_per_dose)


def test_window_half_life_on_a_biexponential():
    # C = 1000 e^{-0.5 t} + 10 e^{-0.01 t}: past t = 100 the fast term is < 2e-19 of the slow one
    t = np.linspace(0.0, 300.0, 61)
    c = 1000 * np.exp(-0.5 * t) + 10 * np.exp(-0.01 * t)
    r = nca(t, c, half_life_window=(100.0, 300.0))
    assert r.lambda_z == pytest.approx(0.01, rel=1e-10) and r.n_points_half_life == 41
    # the automatic rule, redone by brute force with numpy.polyfit: last n >= 3 points after Tmax (t=0),
    # adjusted R^2 within 1e-4 of the best, most points among those
    auto = nca(t, c)
    fits = []
    for n in range(3, t.size):
        x, y = t[-n:], np.log(c[-n:])
        slope, icpt = np.polyfit(x, y, 1)
        r2 = 1 - np.sum((y - (icpt + slope * x)) ** 2) / np.sum((y - y.mean()) ** 2)
        fits.append((n, -slope, 1 - (1 - r2) * (n - 1) / (n - 2)))
    best = max(f[2] for f in fits)
    n, lam, r2a = [f for f in fits if f[2] > best - 1e-4][-1]
    assert auto.n_points_half_life == n and auto.lambda_z == pytest.approx(lam, rel=1e-9)
    assert auto.r2_adj == pytest.approx(r2a, abs=1e-9) and auto.half_life_start == t[-n]
    assert 0.01 < auto.lambda_z < 0.0101   # the tolerance lets in a few points where the fast phase remains


def test_half_life_not_estimable_says_why():
    r = nca([0.0, 7.0, 14.0], [1.0, 100.0, 50.0])
    assert math.isnan(r.half_life) and r.n_points_half_life == 0
    assert any("at least 3 needed" in n for n in r.notes)
    rising = nca([0.0, 7.0, 14.0, 21.0, 28.0], [1.0, 100.0, 50.0, 60.0, 70.0])
    assert math.isnan(rising.half_life) and any("declining" in n for n in rising.notes)


def test_result_is_frozen_and_readable():
    r = nca([0.0, 7.0, 14.0, 28.0, 56.0, 90.0], [1.0, 100.0, 50.0, 20.0, 10.0, 5.0])
    with pytest.raises(AttributeError):
        r.cmax = 1.0
    assert "Cmax 100 at Tmax 7" in r.summary() and "NCAResult" in repr(r)
    assert set(r.to_dict()) >= {"cmax", "tmax", "auc_0_28", "auc_0_84", "auc_0_last", "clast", "tlast", "tbql",
                                "fold_expansion", "half_life", "lambda_z", "r2_adj", "rules", "notes"}


# --- (c) Phoenix WinNonlin on theophylline ---------------------------------------------------------------

# Phoenix WinNonlin 6.3/7.0 results for R datasets::Theoph (12 subjects, extravascular, dose 320 mg,
# "best fit" lambda_z), as tabulated side by side with NonCompart 0.4.2 in
# asancpt/NonCompart-tests validation.md (S. Han, 2018-05-11; commit 87e95efd), "WinNonlin" column,
# tests 1 (Linear) and 2 (Linear Up Log Down). Values are printed to 7 decimals, hence abs=1e-7.
# subject: Cmax, Tmax, AUClast linear, AUClast lin-up/log-down, Lambda_z, HL_Lambda_z, Rsq_adjusted,
#          No_points_lambda_z, Lambda_z_lower, Tlast, Clast
WINNONLIN_THEOPH = {
    1: (10.50, 1.12, 148.9230500, 147.2347485, 0.0484570, 14.3043776, 0.9999995, 3, 9.05, 24.37, 3.28),
    2: (8.33, 1.92, 91.5268000, 88.7312755, 0.1040864, 6.6593416, 0.9957931, 4, 7.03, 24.30, 0.90),
    3: (8.20, 1.02, 99.2865000, 95.8781978, 0.1024443, 6.7660874, 0.9986499, 3, 9.00, 24.17, 1.05),
    4: (8.60, 1.07, 106.7963000, 102.6336232, 0.0992870, 6.9812467, 0.9978483, 3, 9.02, 24.65, 1.15),
    5: (11.40, 1.00, 121.2944000, 118.1793538, 0.0866189, 8.0022640, 0.9979708, 4, 7.02, 24.35, 1.57),
    6: (6.44, 1.15, 73.7755500, 71.6970150, 0.0877957, 7.8949979, 0.9978896, 7, 2.03, 23.85, 0.92),
    7: (7.09, 3.48, 90.7534000, 87.9692274, 0.0883365, 7.8466683, 0.9980053, 4, 6.98, 24.22, 1.15),
    8: (7.56, 2.02, 88.5599500, 86.8065635, 0.0814505, 8.5100379, 0.9887655, 6, 3.53, 24.12, 1.25),
    9: (9.03, 0.63, 86.3261500, 83.9374360, 0.0824586, 8.4059988, 0.9988873, 3, 8.80, 24.43, 1.12),
    10: (10.21, 3.55, 138.3681000, 135.5760701, 0.0749598, 9.2469158, 0.9990174, 3, 9.38, 23.70, 2.42),
    11: (8.00, 0.98, 80.0936000, 77.8934723, 0.0954586, 7.2612365, 0.9999965, 3, 9.03, 24.08, 0.86),
    12: (9.75, 3.52, 119.9775000, 115.2202082, 0.1102595, 6.2865082, 0.9987936, 3, 9.03, 24.15, 1.17),
}


@pytest.fixture(scope="module")
def theoph():
    return pd.read_csv(shared_data("theoph.csv"))


@pytest.mark.parametrize("subject", sorted(WINNONLIN_THEOPH), ids=lambda s: f"subject{s}")
def test_theophylline_matches_phoenix_winnonlin(theoph, subject):
    cmax, tmax, auc_lin, auc_log, lam, hl, r2a, npt, lower, tlast, clast = WINNONLIN_THEOPH[subject]
    d = theoph[theoph["Subject"] == subject]
    lin = nca(d["Time"], d["conc"], auc_method="linear")
    log = nca(d["Time"], d["conc"])
    assert (lin.cmax, lin.tmax, lin.tlast, lin.clast) == (cmax, tmax, tlast, clast)
    assert lin.auc_0_last == pytest.approx(auc_lin, abs=1e-7)
    assert log.auc_0_last == pytest.approx(auc_log, abs=1e-7)
    for r in (lin, log):   # the half-life does not depend on the AUC method
        assert r.lambda_z == pytest.approx(lam, abs=1e-7)
        assert r.half_life == pytest.approx(hl, abs=1e-7)
        assert r.r2_adj == pytest.approx(r2a, abs=1e-7)
        assert r.n_points_half_life == npt and r.half_life_start == lower and r.half_life_end == tlast


def test_nca_table_on_the_theophylline_event_table():
    data = kinetics.read_dataset(shared_data("theoph_nonmem.csv"))
    table = nca_table(data)   # one output (conc): no need to name it
    assert list(table["id"]) == [str(s) for s in range(1, 13)]
    expected = [WINNONLIN_THEOPH[s][3] for s in range(1, 13)]
    np.testing.assert_allclose(table["auc_0_last"], expected, atol=1e-7)
    assert table["dose"].iloc[0] == pytest.approx(319.992)   # AMT of subject 1 (mg)
    assert table["cmax_per_dose"].iloc[0] == pytest.approx(10.5 / 319.992)
    assert "linear-up/log-down" in table.attrs["rules"]
    # a level of 0 counts as BLQ (PKNCA's convention): the pre-dose zeros of all but subjects 1, 7, 10 (theoph.csv)
    assert list(table["n_blq"]) == [0, 1, 1, 1, 1, 1, 0, 1, 1, 0, 1, 1]


# --- (d) BLQ rules, (e) Tbql ---------------------------------------------------------------------------------

# BLQ (LLOQ 1, DV = LLOQ) at t = 0, 1 (before the first quantifiable), 10 (between), 28, 35 (after the last).
BLQ_T = [0.0, 1.0, 3.0, 7.0, 10.0, 14.0, 21.0, 28.0, 35.0]
BLQ_C = [1.0, 1.0, 4.0, 16.0, 1.0, 8.0, 2.0, 1.0, 1.0]
BLQ_CENS = [True, True, False, False, True, False, False, True, True]


def blq_case(**rule):
    return nca(BLQ_T, BLQ_C, censored=BLQ_CENS, blq_rule=rule, auc_method="linear")


def test_default_blq_rule_by_hand():
    # (0,0) (1,0) (3,4) (7,16) (14,8) (21,2): 0 + 4 + 40 + 84 + 35 = 163; ends at Tlast = 21 < 28
    r = blq_case()
    assert r.auc_0_last == pytest.approx(163.0) and math.isnan(r.auc_0_28)
    assert (r.cmax, r.tmax, r.clast, r.tlast, r.n_blq) == (16.0, 7.0, 2.0, 21.0, 5)
    assert "before the first quantifiable sample -> 0" in r.rules
    assert "between quantifiable samples -> excluded" in r.rules
    assert "after the last quantifiable sample -> excluded" in r.rules
    assert any("blq_rule={'last': 'zero'}" in n for n in r.notes)


def test_first_blq_excluded_changes_the_rising_limb():
    # (0,0) assumed, then (3,4): 6 instead of 0 + 4
    assert blq_case(first="exclude").auc_0_last == pytest.approx(165.0)


def test_middle_blq_at_half_lloq():
    # 7 -> 10 -> 14 through LLOQ/2 = 0.5: 3 (16 + 0.5)/2 + 4 (0.5 + 8)/2 = 41.75 instead of 84
    r = blq_case(middle="half_lloq")
    assert r.auc_0_last == pytest.approx(120.75) and "LLOQ/2" in r.rules
    assert r.cmax == 16.0 and r.tlast == 21.0   # substituted levels are not observations


def test_last_blq_as_zero_closes_the_window():
    # AUC(0-last) unchanged; 21 -> 28 falls to 0 linearly (log-down cannot reach 0): + 7
    for method in AUC_METHODS:
        r = nca(BLQ_T, BLQ_C, censored=BLQ_CENS, blq_rule={"last": "zero"}, auc_method=method)
        default = nca(BLQ_T, BLQ_C, censored=BLQ_CENS, auc_method=method)
        assert r.auc_0_last == pytest.approx(default.auc_0_last)
        assert r.auc_0_28 == pytest.approx(default.auc_0_last + 7.0)
        assert math.isnan(r.auc_0_84)   # last kept sample at 35 < 84
    assert "after the last quantifiable sample -> 0" in blq_case(last="zero").rules


def test_blq_from_a_numeric_lloq_and_from_zero_values():
    flagged = blq_case()
    by_lloq = nca(BLQ_T, [0.5, 0.2, 4, 16, 0.9, 8, 2, 0.1, 0.3], lloq=1.0, auc_method="linear")
    by_zero = nca(BLQ_T, [0, 0, 4, 16, 0, 8, 2, 0, 0], auc_method="linear")
    for r in (by_lloq, by_zero):
        assert r.auc_0_last == pytest.approx(flagged.auc_0_last) and r.n_blq == 5 and r.tbql == 10.0


def test_half_lloq_needs_an_lloq():
    with pytest.raises(SolverInputError, match="half_lloq"):
        nca(BLQ_T, [0, 0, 4, 16, 0, 8, 2, 0, 0], blq_rule={"middle": "half_lloq"})


def test_tbql_is_the_first_blq_after_the_peak():
    assert blq_case().tbql == 10.0   # even though 14 and 21 are quantifiable again
    assert nca([0.0, 7, 14, 28], [1.0, 100, 10, 1], censored=[True, False, False, True]).tbql == 28.0
    assert math.isnan(nca([0.0, 7, 14, 28], [1.0, 100, 10, 5], censored=[True, False, False, False]).tbql)


def test_nothing_quantifiable():
    r = nca([0.0, 7.0, 14.0], [1.0, 1.0, 1.0], censored=[True, True, True])
    assert math.isnan(r.cmax) and math.isnan(r.auc_0_last) and r.n_blq == 3
    assert any("no quantifiable" in n for n in r.notes)


def test_nca_table_uses_censored_rows_as_blq():
    rows = [(1, 0.0, 1.0, 1), (1, 7.0, 500.0, 0), (1, 14.0, 100.0, 0), (1, 28.0, 1.0, 1),
            (2, 0.0, 3.0, 0), (2, 10.0, 900.0, 0), (2, 28.0, 90.0, 0)]
    events = [{"ID": 1, "TIME": 0.0, "DV": ".", "MDV": 1, "EVID": 1, "AMT": 1e8, "CMT": "E", "OUTPUT": "", "CENS": 0},
              {"ID": 2, "TIME": 0.0, "DV": ".", "MDV": 1, "EVID": 1, "AMT": 2e8, "CMT": "E", "OUTPUT": "", "CENS": 0}]
    obs = [{"ID": i, "TIME": t, "DV": dv, "MDV": 0, "EVID": 0, "AMT": ".", "CMT": "", "OUTPUT": "car_qpcr",
            "CENS": c} for i, t, dv, c in rows]
    frame = pd.DataFrame([events[0]] + obs[:4] + [events[1]] + obs[4:])
    table = nca_table(kinetics.read_dataset(frame), "car_qpcr", blq_rule={"last": "zero"})
    one = nca([0.0, 7, 14, 28], [1.0, 500, 100, 1], censored=[True, False, False, True],
              blq_rule={"last": "zero"}, dose=1e8)
    row = table.iloc[0]
    assert row["auc_0_28"] == pytest.approx(one.auc_0_28) and row["tbql"] == 28.0 and row["n_blq"] == 2
    assert table.iloc[1]["dose"] == 2e8 and table.iloc[1]["fold_expansion"] == pytest.approx(300.0)


def test_nca_table_errors():
    base = {"MDV": 0, "EVID": 0, "OUTPUT": "car_qpcr"}
    dup = pd.DataFrame([{**base, "ID": 1, "TIME": 0.0, "DV": 5.0}, {**base, "ID": 1, "TIME": 7.0, "DV": 50.0},
                        {**base, "ID": 1, "TIME": 7.0, "DV": 60.0}])
    with pytest.raises(DatasetError, match="subject '1'.*strictly increasing"):
        nca_table(kinetics.read_dataset(dup))
    with pytest.raises(DatasetError, match="'cells' is not measured"):
        nca_table(kinetics.read_dataset(dup), "cells")
    right = pd.DataFrame([{**base, "ID": 1, "TIME": 0.0, "DV": 5.0, "CENS": 0},
                          {**base, "ID": 1, "TIME": 7.0, "DV": 1e6, "CENS": -1}])
    with pytest.raises(DatasetError, match="right-censored"):
        nca_table(kinetics.read_dataset(right))


# --- (f) bad input --------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("kwargs", "match"), [
    ({"times": [0.0, 2.0, 1.0], "values": [1.0, 2.0, 3.0]}, r"strictly increasing: times\[2\] = 1"),
    ({"times": [0.0, 1.0, 1.0], "values": [1.0, 2.0, 3.0]}, "strictly increasing"),
    ({"times": [0.0, 1.0], "values": [1.0, -2.0]}, r"values\[1\] = -2"),
    ({"times": [0.0, 1.0], "values": [1.0, float("nan")]}, r"values\[1\] is nan"),
    ({"times": [0.0, float("inf")], "values": [1.0, 2.0]}, r"times\[1\] is inf"),
    ({"times": [0.0, 1.0, 2.0], "values": [1.0, 2.0]}, "differ in length"),
    ({"times": [], "values": []}, "empty"),
    ({"times": [[0.0, 1.0]], "values": [[1.0, 2.0]]}, "one-dimensional"),
    ({"times": ["a", "b"], "values": [1.0, 2.0]}, "must be numbers"),
    ({"censored": [True]}, "one flag per sample"),
    ({"censored": [0, 2, 0]}, r"censored\[1\] = 2"),
    ({"lloq": -1.0}, "lloq must be positive"),
    ({"lloq": [1.0, 2.0]}, "one per sample"),
    ({"dose": 0.0}, "dose must be positive"),
    ({"baseline": float("nan")}, "baseline must be positive"),
    ({"blq_rule": {"first": "half"}}, "first='half' is not allowed"),
    ({"blq_rule": {"end": "zero"}}, "unknown key"),
    ({"blq_rule": "zero"}, "BLQRule or a mapping"),
    ({"auc_method": "log"}, "auc_method 'log' is not known"),
    ({"half_life_points": 2}, "half_life_points must be an integer >= 3"),
    ({"half_life_window": (5.0, 1.0)}, "start < end"),
    ({"half_life_window": 3.0}, r"\(start, end\)"),
], ids=["unsorted", "duplicate", "negative", "nan", "inf", "length", "empty", "2d", "strings", "cens-length",
        "cens-code", "lloq-negative", "lloq-length", "dose", "baseline", "rule-value", "rule-key", "rule-type",
        "method", "hl-points", "window-order", "window-type"])
def test_bad_input_is_rejected_with_a_clear_error(kwargs, match):
    args = {"times": [0.0, 7.0, 14.0], "values": [1.0, 10.0, 5.0], **kwargs}
    with pytest.raises(SolverInputError, match=match):
        nca(args.pop("times"), args.pop("values"), **args)


def test_blq_rule_object_validates():
    with pytest.raises(SolverInputError, match="last='drop'"):
        BLQRule(last="drop")


# --- (g) properties -------------------------------------------------------------------------------------------

RULES = [BLQRule(f, m, la) for f in ("zero", "exclude") for m in ("exclude", "half_lloq") for la in ("exclude", "zero")]


@st.composite
def profiles(draw, rule=None):
    n = draw(st.integers(1, 12))
    times = sorted(draw(st.lists(st.floats(-5.0, 150.0, allow_nan=False), min_size=n, max_size=n, unique=True)))
    values = draw(st.lists(st.one_of(st.just(0.0), st.floats(1e-3, 1e6)), min_size=n, max_size=n))
    cens = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    rule = rule or draw(st.sampled_from(RULES))
    lloq = draw(st.floats(1e-3, 1e3)) if rule.middle == "half_lloq" else draw(st.none() | st.floats(1e-3, 1e3))
    method = draw(st.sampled_from(AUC_METHODS))
    return dict(times=times, values=values, censored=cens, lloq=lloq, blq_rule=rule, auc_method=method)


def below(a: float, b: float) -> bool:
    """a <= b up to round-off (nan-aware: nothing to compare is fine)."""
    return math.isnan(a) or math.isnan(b) or a <= b * (1 + 1e-9) + 1e-12


def test_window_end_inside_a_fall_to_zero_is_integrated_linearly():
    # found by the property test below: 1 at t=1, 0 at t=85 (a linear segment under linear-up/log-down, since
    # log-down needs two positive levels); AUC(0-84) used the log trapezoid on [1, 84] because the level
    # interpolated at 84 (1/84) is positive, and came out below AUC(0-28). Hand values: 0.25 for [0.5, 1];
    # [1, 28] linear 27 (1 + 57/84) / 2; [1, 84] linear 83 (1 + 1/84) / 2.
    r = nca([0.0, 0.5, 1.0, 85.0, 86.0], [0.0, 0.0, 1.0, 0.0, 0.0], auc_method="linear-up/log-down",
            blq_rule=BLQRule("zero", "exclude", "zero"))   # trailing zeros kept as 0
    assert r.auc_0_28 == pytest.approx(0.25 + 27 * (1 + 57 / 84) / 2, rel=1e-12)
    assert r.auc_0_84 == pytest.approx(0.25 + 83 * (1 + 1 / 84) / 2, rel=1e-12)


@settings(deadline=None, max_examples=200)
@given(profiles())
def test_random_valid_profiles_never_crash_and_aucs_are_ordered(p):
    r = nca(p.pop("times"), p.pop("values"), **p)
    assert isinstance(r, NCAResult)
    for auc in (r.auc_0_28, r.auc_0_84, r.auc_0_last):
        assert math.isnan(auc) or auc >= 0.0
    assert below(r.auc_0_28, r.auc_0_84)   # monotone in the window end
    if r.tlast >= 28.0 and p["blq_rule"].last == "exclude":
        assert below(r.auc_0_28, r.auc_0_last)
    if r.tlast >= 84.0 and p["blq_rule"].last == "exclude":
        assert below(r.auc_0_84, r.auc_0_last)
    if not math.isnan(r.half_life):
        assert r.lambda_z > 0 and r.r2_adj <= 1.0 + 1e-12 and r.n_points_half_life >= 3
        assert r.half_life_start > r.tmax and r.half_life_end <= r.tlast
    if not math.isnan(r.cmax):
        assert r.tmax <= r.tlast and r.cmax >= r.clast and r.fold_expansion >= 1.0


@settings(deadline=None, max_examples=100)
@given(profiles())
def test_log_down_never_exceeds_the_linear_trapezoid(p):
    p.pop("auc_method")
    t, c = p.pop("times"), p.pop("values")
    lin, log = nca(t, c, auc_method="linear", **p), nca(t, c, **p)
    for a, b in ((log.auc_0_28, lin.auc_0_28), (log.auc_0_84, lin.auc_0_84), (log.auc_0_last, lin.auc_0_last)):
        assert below(a, b)


@settings(deadline=None, max_examples=100)
@given(profiles(rule=BLQRule()), st.lists(st.floats(0.01, 50.0), min_size=1, max_size=4))
def test_blq_rows_after_tlast_change_nothing_under_the_default_rule(p, gaps):
    t, c, cens = list(p.pop("times")), list(p.pop("values")), list(p.pop("censored"))
    before = nca(t, c, censored=cens, **p)
    extra_t = list(max(t[-1], 0.0) + np.cumsum(gaps))   # after infusion, so they count as samples
    fill = p["lloq"] or 1.0   # a censored row's value is its LLOQ
    after = nca(t + extra_t, c + [fill] * len(gaps), censored=cens + [True] * len(gaps), **p)
    for name in ("cmax", "tmax", "auc_0_28", "auc_0_84", "auc_0_last", "clast", "tlast", "fold_expansion",
                 "half_life", "r2_adj"):
        a, b = getattr(before, name), getattr(after, name)
        assert (math.isnan(a) and math.isnan(b)) or a == b, name
    assert after.n_blq == before.n_blq + len(gaps)


@settings(deadline=None, max_examples=100)
@given(profiles(), st.integers(3, 6), st.none() | st.tuples(st.floats(-10, 150), st.floats(0.001, 200)),
       st.none() | st.floats(1e-3, 1e9), st.none() | st.floats(1e-3, 1e6))
def test_random_options_never_crash(p, points, window, dose, baseline):
    window = None if window is None else (window[0], window[0] + window[1])
    r = nca(p.pop("times"), p.pop("values"), half_life_points=points, half_life_window=window, dose=dose,
            baseline=baseline, **p)
    assert math.isnan(r.half_life) or (r.lambda_z > 0 and r.n_points_half_life >= 3)
    assert math.isnan(r.cmax_per_dose) or r.cmax_per_dose == pytest.approx(r.cmax / dose)
