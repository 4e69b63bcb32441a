"""Virtual populations: in-process chunks, streaming summaries, and a real Dask LocalCluster on loopback
giving the same numbers for the same seed (issue 5 item 4)."""

from __future__ import annotations

import numpy as np
import pytest

import kinetics
from kinetics.analysis import simulate_population
from kinetics.errors import KineticsError, SolverInputError

DOSE = [kinetics.Dose(0.0, 320.0, "depot")]
TIMES = [0.5, 1.0, 2.0, 6.0, 24.0]
OMEGA = {"CL": 0.09, "V": 0.04, "ka": 0.16}


@pytest.fixture(scope="module")
def oral():
    return kinetics.load_model("oral_1cmt")


def test_a_seed_gives_the_same_population_and_seeds_differ(oral):
    a = simulate_population(oral, 300, times=TIMES, doses=DOSE, omega=OMEGA, seed=5, chunk_size=100)
    b = simulate_population(oral, 300, times=TIMES, doses=DOSE, omega=OMEGA, seed=5, chunk_size=100)
    c = simulate_population(oral, 300, times=TIMES, doses=DOSE, omega=OMEGA, seed=6, chunk_size=100)
    np.testing.assert_array_equal(a.outputs, b.outputs)
    assert not np.allclose(a.outputs, c.outputs)
    assert a.n_failed == 0 and a.outputs.shape == (300, 5, 1) and a.n_chunks == 3


def test_summary_matches_the_kept_trajectories_and_lognormal_theory(oral):
    pop = simulate_population(oral, 4000, times=TIMES, doses=DOSE, omega={"V": 0.04}, seed=1, chunk_size=1000)
    s = pop.summary.set_index("time")
    np.testing.assert_allclose(s["mean"], pop.outputs[:, :, 0].mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(s["p50"], np.median(pop.outputs[:, :, 0], axis=0), rtol=1e-12)
    # with IIV on V only, C(t) = f(t; CL/V, ka) / V is not lognormal, but at t = 0.5 h (absorption phase) C ~ 1/V:
    # the median concentration is close to the typical-patient value
    typical = oral.simulate(TIMES, doses=DOSE).outputs["conc"]
    assert s["p50"].iloc[0] == pytest.approx(typical[0], rel=0.05)


def test_streaming_summaries_approximate_the_exact_ones(oral):
    kept = simulate_population(oral, 3000, times=TIMES, doses=DOSE, omega=OMEGA, seed=2, chunk_size=1000, keep=True)
    streamed = simulate_population(oral, 3000, times=TIMES, doses=DOSE, omega=OMEGA, seed=2, chunk_size=1000,
                                   keep=False)
    assert streamed.outputs is None
    a, b = kept.summary, streamed.summary
    np.testing.assert_allclose(b["mean"], a["mean"], rtol=1e-10)       # exact: running sums
    np.testing.assert_allclose(b["sd"], a["sd"], rtol=1e-8)
    np.testing.assert_allclose(b["p50"], a["p50"], rtol=0.03)          # merged chunk percentiles: approximate


def test_dask_local_cluster_gives_the_in_process_numbers(oral):
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1", processes=True,
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        remote = simulate_population(oral, 500, times=TIMES, doses=DOSE, omega=OMEGA, seed=9, chunk_size=125,
                                     scheduler=client)
    local = simulate_population(oral, 500, times=TIMES, doses=DOSE, omega=OMEGA, seed=9, chunk_size=125)
    np.testing.assert_array_equal(remote.outputs, local.outputs)
    assert remote.scheduler.startswith("dask") and remote.n_chunks == 4


def test_unreachable_scheduler_is_a_clear_error(oral):
    pytest.importorskip("distributed")
    with pytest.raises(KineticsError, match="cannot reach the Dask scheduler at 'tcp://127.0.0.1:1'"):
        simulate_population(oral, 10, times=TIMES, doses=DOSE, scheduler="tcp://127.0.0.1:1")


@pytest.mark.parametrize("kwargs,match", [
    (dict(n=0), "positive integer"), (dict(n=10, chunk_size=0), "chunk_size"),
    (dict(n=10, omega={"cl": 0.1}), "did you mean 'CL'"), (dict(n=10, omega={"CL": -1.0}), "variance >= 0"),
])
def test_bad_population_arguments(oral, kwargs, match):
    with pytest.raises(SolverInputError, match=match):
        simulate_population(oral, times=TIMES, doses=DOSE, **kwargs)
