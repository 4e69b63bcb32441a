"""Event location, batches with per-set status, solver failures, and bad arguments."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.optimize

import kinetics
from tests.references import bateman

DOSE = [kinetics.Dose(time=0.0, amount=320.0, target="depot")]


@pytest.mark.parametrize("method", ["dopri5", "rodas5p"])
def test_crossing_time_matches_root_of_closed_form(oral, method):
    """Time the Bateman curve falls through 2 mg/L after its peak; reference: brentq on the closed form."""
    ref = scipy.optimize.brentq(lambda t: bateman(t, 320.0, 1.5, 2.75, 31.9) - 2.0, 3.0, 100.0, xtol=1e-14)
    cr = oral.crossing_time("conc", 2.0, after=3.0, until=200.0, direction="down", doses=DOSE, rtol=1e-10,
                            atol=1e-12, method=method)
    assert cr.found and cr.success
    assert cr.time == pytest.approx(ref, rel=1e-8)


def test_upward_crossing_and_no_crossing(oral):
    ref = scipy.optimize.brentq(lambda t: bateman(t, 320.0, 1.5, 2.75, 31.9) - 2.0, 1e-6, 2.0, xtol=1e-14)
    up = oral.crossing_time("conc", 2.0, until=200.0, direction="up", doses=DOSE, rtol=1e-10, atol=1e-12)
    assert up.time == pytest.approx(ref, rel=1e-8)
    never = oral.crossing_time("conc", 50.0, until=200.0, doses=DOSE)
    assert not never.found and math.isnan(never.time) and never.success


def test_dose_that_jumps_over_level_counts_as_crossing(iv):
    cr = iv.crossing_time("conc", 1.0, after=0.0, until=10.0, direction="up",
                          doses=[kinetics.Dose(4.0, 100.0, "central")])
    assert cr.found and cr.time == 4.0


def test_batch_equals_individual_solves(oral):
    rng = np.random.default_rng(1)
    P = np.tile([1.5, 2.75, 31.9, 1.0], (6, 1)) * np.exp(0.3 * rng.standard_normal((6, 4)))
    P[:, 3] = 1.0
    t = np.linspace(0.5, 24, 12)
    batch = oral.simulate_batch(t, params=P, doses=DOSE, rtol=1e-8, atol=1e-10)
    assert batch.outputs.shape == (6, 12, 1) and batch.success.all()
    for s in range(6):
        single = oral.simulate(t, params=P[s], doses=DOSE, rtol=1e-8, atol=1e-10)
        np.testing.assert_array_equal(batch.output("conc")[s], single.outputs["conc"])


def test_batch_with_dict_params_and_per_set_doses(oral):
    t = np.array([1.0, 4.0])
    schedules = [[kinetics.Dose(0.0, 100.0, "depot")], [kinetics.Dose(0.0, 200.0, "depot")], []]
    batch = oral.simulate_batch(t, params={"CL": [2.0, 2.0, 2.0]}, doses=schedules, rtol=1e-10, atol=1e-12)
    conc = batch.output("conc")
    np.testing.assert_allclose(conc[1], 2 * conc[0], rtol=1e-8)
    assert np.all(conc[2] == 0.0)


DIP = """
name = "dip"
time_unit = "day"
[parameters]
k = { value = 0.001, unit = "1/day" }
[states]
x = { initial = "1", unit = "1" }
[odes]
x = "-k*x"
[outputs]
g = { expression = "x - exp(-((t - 50)/8)**2)", unit = "1" }
"""


@pytest.mark.parametrize("method", ["dopri5", "rodas5p"])
def test_level_crossed_and_recrossed_within_one_step_is_found(tmp_path, method):
    # the state decays slowly, so steps grow to ~100 days, while the output dips below 0.5 and back within
    # ~14 days around day 50: both ends of the step are above the level. Reference: brentq on the closed form
    path = tmp_path / "dip.toml"
    path.write_text(DIP)
    dip = kinetics.load_model(path)
    assert dip.simulate([200.0], method=method).n_steps < 10
    ref = scipy.optimize.brentq(lambda t: math.exp(-1e-3 * t) - math.exp(-((t - 50) / 8) ** 2) - 0.5, 30, 50,
                                xtol=1e-14)
    c = dip.crossing_time("g", 0.5, until=200.0, direction="down", method=method, rtol=1e-8, atol=1e-10)
    assert c.found and c.time == pytest.approx(ref, rel=1e-8)
    ref_up = scipy.optimize.brentq(lambda t: math.exp(-1e-3 * t) - math.exp(-((t - 50) / 8) ** 2) - 0.5, 50, 70,
                                   xtol=1e-14)
    up = dip.crossing_time("g", 0.5, after=45.0, until=200.0, direction="up", method=method, rtol=1e-8, atol=1e-10)
    assert up.found and up.time == pytest.approx(ref_up, rel=1e-8)


def test_batch_crossings_match_closed_form_per_set(oral):
    """crossing_times: a level and a start per set; reference: brentq on the Bateman closed form."""
    cl = np.array([2.75, 2.75, 4.0, 2.75])
    levels = np.array([1.0, 2.0, 2.0, 50.0])   # the last is never reached
    after = np.array([3.0, 5.0, 3.0, 0.0])
    got = oral.crossing_times("conc", levels, after=after, until=200.0, direction="down", params={"CL": cl},
                              doses=DOSE, rtol=1e-10, atol=1e-12)
    assert got.success.all() and list(got.found) == [True, True, True, False] and math.isnan(got.time[3])
    for i in range(3):
        ref = scipy.optimize.brentq(lambda t: bateman(t, 320.0, 1.5, cl[i], 31.9) - levels[i], after[i], 200.0,
                                    xtol=1e-14)
        assert got.time[i] == pytest.approx(ref, rel=1e-8)
        one = oral.crossing_time("conc", levels[i], after=after[i], until=200.0, direction="down",
                                 params={"CL": cl[i]}, doses=DOSE, rtol=1e-10, atol=1e-12)
        assert got.time[i] == one.time   # the same kernel, one set at a time


def test_batch_with_a_time_grid_per_set_equals_individual_solves(oral):
    grids = np.array([[0.5, 1.0, 2.0], [3.0, 8.0, 24.0], [0.0, 0.0, 100.0]])
    batch = oral.simulate_batch(grids, params={"CL": [2.0, 2.75, 4.0]}, doses=DOSE, rtol=1e-10, atol=1e-12)
    assert batch.times.shape == (3, 3) and batch.success.all()
    for s, cl in enumerate([2.0, 2.75, 4.0]):
        single = oral.simulate(grids[s], params={"CL": cl}, doses=DOSE, rtol=1e-10, atol=1e-12)
        np.testing.assert_array_equal(batch.output("conc")[s], single.outputs["conc"])
    np.testing.assert_allclose(batch.output("conc")[1], bateman(grids[1], 320.0, 1.5, 2.75, 31.9), rtol=1e-8)


@pytest.mark.parametrize(("call", "match"), [
    (lambda m: m.simulate_batch(np.ones((3, 2)), params={"CL": [1.0, 2.0]}), r"shape \(n_sets, n_times\) = \(2"),
    (lambda m: m.simulate_batch([[0.0, 2.0], [3.0, 1.0]], params={"CL": [1.0, 2.0]}), "times of set 1: .*sorted"),
    (lambda m: m.crossing_times("conc", [1.0, np.inf], until=5.0, params={"CL": [1.0, 2.0]}), "level of set 1"),
    (lambda m: m.crossing_times("conc", 1.0, after=[0.0, 6.0], until=5.0, params={"CL": [1.0, 2.0]}),
     "set 1 has .*after=6"),
    (lambda m: m.crossing_times("conc", [1.0, 2.0, 3.0], until=5.0, params={"CL": [1.0, 2.0]}), "one number per set"),
    (lambda m: m.crossing_times("cnc", 1.0, until=5.0), "did you mean 'conc'"),
    (lambda m: m.crossing_times("conc", 1.0, until=5.0, direction="sideways"), "direction"),
], ids=["grid-rows", "grid-unsorted", "level-inf", "after-past-until", "level-count", "output", "direction"])
def test_bad_batch_grids_and_crossings_get_clear_errors(oral, call, match):
    with pytest.raises(kinetics.SolverInputError, match=match):
        call(oral)


def test_batch_reports_failed_member_without_raising(blowup):
    t = np.array([0.2, 0.4, 0.8])
    batch = blowup.simulate_batch(t, params={"k": [0.1, 2.0, 0.5]})
    assert list(batch.success) == [True, False, True]
    assert batch.status[1] in (kinetics.SolveStatus.STEP_UNDERFLOW, kinetics.SolveStatus.NONFINITE,
                               kinetics.SolveStatus.MAX_STEPS)
    assert 0.4 < batch.t_fail[1] <= 0.5 + 1e-6  # blow-up at t = 1/k = 0.5
    assert np.isnan(batch.outputs[1, 2, 0]) and np.isfinite(batch.outputs[1, 0, 0])
    np.testing.assert_allclose(batch.outputs[0, :, 0], 1 / (1 - 0.1 * t), rtol=1e-5)


def test_failed_solve_says_where_and_why(blowup):
    sim = blowup.simulate([0.5, 2.0])
    assert not sim.success
    assert "t=" in sim.message and np.isnan(sim.states[-1, 0])
    few = blowup.simulate([0.9], params={"k": 1.0}, max_steps=5)
    assert few.status is kinetics.SolveStatus.MAX_STEPS and "max_steps (5)" in few.message


def test_simulation_frame_and_readonly_arrays(oral):
    sim = oral.simulate([1.0, 2.0], doses=DOSE)
    df = sim.to_frame()
    assert list(df.columns) == ["time", "depot", "central", "conc"]
    with pytest.raises(ValueError):
        sim.states[0, 0] = 1.0
    assert "success" in sim.summary()


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"doses": [kinetics.Dose(0.0, 1.0, "dept")]}, kinetics.DoseError, "did you mean 'depot'"),
        ({"params": {"CL": float("nan")}}, kinetics.SolverInputError, "'CL' is not finite"),
        ({"params": {"Cl": 1.0}}, kinetics.SolverInputError, "did you mean 'CL'"),
        ({"rtol": -1.0}, kinetics.SolverInputError, "rtol"),
        ({"atol": [1.0]}, kinetics.SolverInputError, "atol"),
        ({"method": "rodas"}, kinetics.SolverInputError, "unknown method"),
        ({"max_steps": 0}, kinetics.SolverInputError, "max_steps"),
    ],
    ids=["unknown-target", "nan-param", "unknown-param", "bad-rtol", "bad-atol", "bad-method", "bad-max-steps"],
)
def test_bad_arguments_get_clear_errors(oral, kwargs, error, match):
    with pytest.raises(error, match=match):
        oral.simulate([1.0], **kwargs)


@pytest.mark.parametrize(("times", "match"), [([2.0, 1.0], "sorted"), ([-1.0, 1.0], "negative"),
                                               ([1.0, float("inf")], "finite")], ids=["unsorted", "negative", "inf"])
def test_bad_times_get_clear_errors(oral, times, match):
    with pytest.raises(kinetics.SolverInputError, match=match):
        oral.simulate(times)


@pytest.mark.parametrize(("kwargs", "match"), [({"time": -1.0}, "time must be >= 0"),
                                                ({"amount": -5.0}, "amount must be >= 0"),
                                                ({"amount": float("nan")}, "finite"),
                                                ({"duration": -1.0}, "duration")],
                         ids=["negative-time", "negative-amount", "nan-amount", "negative-duration"])
def test_bad_doses_get_clear_errors(kwargs, match):
    args = {"time": 0.0, "amount": 1.0, "target": "depot", **kwargs}
    with pytest.raises(kinetics.DoseError, match=match):
        kinetics.Dose(**args)


def test_second_process_loads_compiled_model_from_disk_cache(oral, tmp_path):
    """After one process compiled the model, a new process gets it from numba's cache (no recompilation)."""
    oral.simulate([1.0], doses=DOSE)  # make sure this process compiled and cached it
    code = (
        "import kinetics\n"
        "m = kinetics.load_model('oral_1cmt')\n"
        "m.simulate([1.0], doses=[kinetics.Dose(0.0, 1.0, 'depot')])\n"
        "st = m.kernels.simulate_kernel.stats\n"
        "print(sum(st.cache_hits.values()), sum(st.cache_misses.values()))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[2])
    hits, misses = (int(v) for v in out.stdout.split()[-2:])
    assert hits >= 1 and misses == 0


def test_undefined_jacobian_is_reported_as_singular_iteration_matrix():
    """x' = -sqrt(x) at x = 0: the right-hand side is 0 but d/dx = -1/(2 sqrt x) is infinite, so
    Rodas5P's iteration matrix cannot be factorised; the status must say so, not 'non-finite state'."""
    model = kinetics.compile_model(kinetics.build_model("sqrt0", {"k": 1.0}, {"x": 0.0}, {"x": "-k*sqrt(x)"}))
    sim = model.simulate([1.0], method="rodas5p")
    assert sim.status is kinetics.SolveStatus.SINGULAR
    assert "Jacobian" in sim.message and "t=0" in sim.message


def test_a_new_model_reuses_the_solver_helpers_compiled_for_another(tmp_path):
    """The model-independent solver helpers (kinetics/solve/_numerics.py) are compiled once per cache
    directory: a process compiling a second model loads every one it uses from numba's cache (a helper
    compiled again, e.g. for a model-specific literal argument, would cost every model's first solve)."""
    code = (
        "import sys, numba, kinetics\n"
        "from kinetics.solve._compiled import _numerics_module\n"
        "m = kinetics.load_model(sys.argv[1])\n"
        "m.simulate([1.0, 2.0], doses=[kinetics.Dose(0.0, 1.0, m.dose_target_names[0])])\n"
        "engine = [f for f in vars(_numerics_module()).values() if isinstance(f, numba.core.dispatcher.Dispatcher)]\n"
        "hits = sum(sum(f.stats.cache_hits.values()) for f in engine)\n"
        "misses = [f.__name__ for f in engine if sum(f.stats.cache_misses.values())]\n"
        "print(sum(m.kernels.simulate_kernel.stats.cache_misses.values()), hits, ','.join(misses) or '-')\n"
    )
    env = {**os.environ, "KINETICS_CACHE_DIR": str(tmp_path)}
    root = Path(__file__).resolve().parents[2]

    def run(model: str) -> list[str]:
        out = subprocess.run([sys.executable, "-c", code, model], capture_output=True, text=True, check=True,
                             cwd=root, env=env)
        return out.stdout.split()[-3:]

    first = run("oral_1cmt")
    assert first[0] == "1" and first[2] != "-"   # fresh cache: the model and the helpers are compiled
    kernel_misses, helper_hits, helpers_compiled = run("iv_1cmt")
    assert kernel_misses == "1"                    # the second model is compiled ...
    assert int(helper_hits) > 0 and helpers_compiled == "-"   # ... against the cached helpers
