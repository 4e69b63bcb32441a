"""kinetics.analysis.b_cell_recovery_time: the threshold rule against closed forms, and on the lupus model."""

from __future__ import annotations

import math

import numpy as np
import pytest

import kinetics
from kinetics.analysis import BCellRecovery, b_cell_recovery_time
from kinetics.errors import SolverInputError

# B cells fall at rate kd until Td (depletion), then refill towards B0 at rate k:
#   B(t) = B0 exp(-kd t)                                  t <= Td
#   B(t) = B0 - (B0 - B_Td) exp(-k (t - Td)),  B_Td = B0 exp(-kd Td)      t > Td
# so the nadir is (Td, B_Td) and the level L is regained at t = Td + ln((B0 - B_Td)/(B0 - L))/k.
REFILL = """
name = "refill"
time_unit = "day"
references = ["closed form in tests/analysis/test_recovery.py"]
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

# A rotation with slowing phase: x = cos(theta), v = sin(theta), theta(t) = tau ln(1 + t/tau) (so the solver
# must resolve the oscillation), output y = 1 - x exp(-t/1000). y >= 1 exactly where cos(theta) <= 0:
# windows theta in [pi/2, 3pi/2] + 2 pi n, i.e. t in [w(pi/2 + 2 pi n), w(3pi/2 + 2 pi n)] with
# w(theta) = tau (exp(theta/tau) - 1); for tau = 10 they last 4.3, 8.1, 15.2, 28.4 d. The global nadir is y(0) = 0.
WAVE = """
name = "wave"
time_unit = "day"
references = ["closed form in tests/analysis/test_recovery.py"]
[parameters]
tau = { value = 10.0, unit = "day" }
[states]
x = { initial = "1", unit = "1" }
v = { initial = "0", unit = "1" }
[odes]
x = "-v/(1 + t/tau)"
v = "x/(1 + t/tau)"
[outputs]
y = { expression = "1 - x*exp(-t/1000)", unit = "1" }
"""


def wave_time(theta, tau=10.0):
    return tau * (math.exp(theta / tau) - 1.0)


@pytest.fixture(scope="module")
def refill(tmp_path_factory):
    path = tmp_path_factory.mktemp("models") / "refill.toml"
    path.write_text(REFILL)
    return kinetics.load_model(path)


@pytest.fixture(scope="module")
def wave(tmp_path_factory):
    path = tmp_path_factory.mktemp("models") / "wave.toml"
    path.write_text(WAVE)
    return kinetics.load_model(path)


def closed_form_recovery(level, b0=100.0, kd=1.0, td=5.0, k=0.05):
    b_td = b0 * math.exp(-kd * td)
    return td + math.log((b0 - b_td) / (b0 - level)) / k


@pytest.mark.parametrize("level", [1.0, 10.0, 80.0])
def test_absolute_threshold_matches_closed_form(refill, level):
    r = b_cell_recovery_time(refill, threshold=level, until=400.0)
    assert isinstance(r, BCellRecovery) and r.depleted and r.recovered
    assert r.time == pytest.approx(closed_form_recovery(level), rel=1e-7)
    assert r.level == level and r.baseline == pytest.approx(100.0)
    assert r.nadir_time == pytest.approx(5.0, abs=1e-3)
    assert r.nadir_value == pytest.approx(100.0 * math.exp(-5.0), rel=1e-3)
    assert "first time after the nadir" in r.rule and "event detection" in r.rule


def test_relative_threshold_uses_the_pre_treatment_value(refill):
    r = b_cell_recovery_time(refill, threshold=0.5, relative_to_baseline=True, until=400.0)
    assert r.level == pytest.approx(50.0)
    assert r.time == pytest.approx(closed_form_recovery(50.0), rel=1e-7)


def test_parameters_are_passed_through(refill):
    r = b_cell_recovery_time(refill, threshold=10.0, params={"k": 0.1, "Td": 8.0}, until=400.0)
    assert r.time == pytest.approx(closed_form_recovery(10.0, td=8.0, k=0.1), rel=1e-7)


def test_not_recovered_by_until_gives_none(refill):
    late = closed_form_recovery(80.0)
    r = b_cell_recovery_time(refill, threshold=80.0, until=late - 1.0)
    assert r.depleted and r.time is None and not r.recovered


def test_never_below_threshold_is_not_a_recovery(refill):
    r = b_cell_recovery_time(refill, threshold=0.1, until=100.0)  # nadir 0.67 > 0.1
    assert not r.depleted and r.time is None


def test_first_crossing_without_sustain(wave):
    r = b_cell_recovery_time(wave, output="y", threshold=1.0, until=200.0)
    assert r.nadir_time == pytest.approx(0.0, abs=0.2) and r.nadir_value == pytest.approx(0.0, abs=1e-3)
    assert r.time == pytest.approx(wave_time(math.pi / 2), rel=1e-6)


@pytest.mark.parametrize(("days", "window"), [(5.0, 1), (10.0, 2), (20.0, 3)], ids=["5d", "10d", "20d"])
def test_sustained_window_skips_short_excursions(wave, days, window):
    # windows last 4.3, 8.1, 15.2, 28.4 d: the first one at least `days` long is where recovery starts
    r = b_cell_recovery_time(wave, output="y", threshold=1.0, sustained_days=days, until=200.0)
    assert r.time == pytest.approx(wave_time(math.pi / 2 + 2 * math.pi * window), rel=1e-6)


def test_sustained_window_longer_than_any_gives_none(wave):
    assert b_cell_recovery_time(wave, output="y", threshold=1.0, sustained_days=60.0, until=120.0).time is None


def test_bad_arguments_are_rejected(refill):
    with pytest.raises(SolverInputError, match="unknown output"):
        b_cell_recovery_time(refill, output="nope")
    with pytest.raises(SolverInputError, match="threshold"):
        b_cell_recovery_time(refill, threshold=-1.0)
    with pytest.raises(SolverInputError, match="sustained_days"):
        b_cell_recovery_time(refill, sustained_days=-1.0)


# --- on the lupus model ------------------------------------------------------------------

@pytest.fixture(scope="module")
def cd19():
    return kinetics.load_model("cd19_sle")


CD19 = [kinetics.Dose(0.0, 6e7, "car19")]  # 1e6/kg x 60 kg (Mackensen 2022)


def test_lupus_reappearance_is_an_exact_crossing(cd19):
    r = b_cell_recovery_time(cd19, threshold=1.0, doses=CD19)
    assert r.depleted and 80.0 <= r.time <= 140.0  # Mackensen 2022: 110 +/- 32 d
    assert r.nadir_time < r.time and r.nadir_value < 1.0
    at = cd19.simulate([r.time - 1.0, r.time, r.time + 1.0], doses=CD19, rtol=1e-10, atol=1e-12).outputs["bcells"]
    assert at[1] == pytest.approx(1.0, rel=1e-5)  # the output equals the level at the reported time
    assert at[0] < 1.0 < at[2]


def test_lupus_rules_order(cd19):
    # B cells keep rising after reappearance: a sustained rule gives the same time, a higher level a later one
    first = b_cell_recovery_time(cd19, threshold=1.0, doses=CD19)
    sustained = b_cell_recovery_time(cd19, threshold=1.0, sustained_days=60.0, doses=CD19)
    half = b_cell_recovery_time(cd19, threshold=0.5, relative_to_baseline=True, doses=CD19)
    assert sustained.time == pytest.approx(first.time, rel=1e-9)
    assert half.level == pytest.approx(cd19.defaults["B0"] * 0.5) and half.time > first.time + 30.0


def test_lupus_without_car_t_is_not_depleted(cd19):
    assert not b_cell_recovery_time(cd19, threshold=1.0).depleted
