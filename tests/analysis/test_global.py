"""Global sensitivity (Sobol' indices, Morris screening) against analytic indices, and on the lupus model."""

from __future__ import annotations

import math
from functools import partial

import numpy as np
import pytest

import kinetics
from kinetics.analysis import (
    MorrisResult,
    ParameterDistribution,
    SobolResult,
    fraction_of_baseline,
    morris_screening,
    parameter_distributions,
    sobol_indices,
)
from kinetics.errors import SolverInputError

PI = math.pi
ISHIGAMI_BOUNDS = {"x1": (-PI, PI), "x2": (-PI, PI), "x3": (-PI, PI)}
SLE_DOSE = [kinetics.Dose(0.0, 6e7, "car19")]


def ishigami(X: np.ndarray, a: float = 7.0, b: float = 0.1) -> np.ndarray:
    return np.sin(X[:, 0]) + a * np.sin(X[:, 1]) ** 2 + b * X[:, 2] ** 4 * np.sin(X[:, 0])


def ishigami_indices(a: float = 7.0, b: float = 0.1) -> tuple[np.ndarray, np.ndarray, float]:
    """Analytic S1, ST and S13 of the Ishigami function on [-pi, pi]^3 (Ishigami & Homma 1990; Sobol' & Levitan
    1999; Saltelli et al., Global Sensitivity Analysis: The Primer, 2008, sec. 4.9):
    V = a^2/8 + b pi^4/5 + b^2 pi^8/18 + 1/2, V1 = (1 + b pi^4/5)^2 / 2, V2 = a^2/8, V3 = 0, V13 = 8 b^2 pi^8/225."""
    v1, v2, v13 = 0.5 * (1 + b * PI**4 / 5) ** 2, a * a / 8, 8 * b * b * PI**8 / 225
    v = a * a / 8 + b * PI**4 / 5 + b * b * PI**8 / 18 + 0.5
    return np.array([v1, v2, 0.0]) / v, np.array([v1 + v13, v2, v13]) / v, v13 / v


def test_analytic_ishigami_values_are_the_published_ones():
    s1, st, _ = ishigami_indices()
    np.testing.assert_allclose(s1, [0.3139, 0.4424, 0.0], atol=5e-5)   # the values quoted in issue 5
    np.testing.assert_allclose(st, [0.5576, 0.4424, 0.2437], atol=5e-5)


@pytest.fixture(scope="module")
def ishigami_result() -> SobolResult:
    return sobol_indices(ishigami, bounds=ISHIGAMI_BOUNDS, n_base=2**14, rng=20240601)


def test_sobol_ishigami_within_002_with_2_14_samples(ishigami_result):
    # issue 5 "must show": within 0.02 of the analytic indices with 2^14 base samples
    r = ishigami_result
    s1, st, _ = ishigami_indices()
    assert r.n_evaluations == 2**14 * 5
    np.testing.assert_allclose(r.S1, s1, atol=0.02)
    np.testing.assert_allclose(r.ST, st, atol=0.02)
    # the 95 % intervals of this run cover the truth (over replicates: test_sobol_interval_coverage, slow)
    assert (np.abs(r.S1 - s1) <= r.S1_conf).all() and (np.abs(r.ST - st) <= r.ST_conf).all()
    assert r.ranking() == ["x1", "x2", "x3"]
    df = r.to_frame()
    assert list(df["parameter"]) == ["x1", "x2", "x3"]
    np.testing.assert_allclose(df["ST_high"] - df["ST"], df["ST"] - df["ST_low"])


def test_sobol_second_order_ishigami():
    # x1 and x3 interact (S13 = 0.2437), nothing else does (analytic, as above)
    r = sobol_indices(ishigami, bounds=ISHIGAMI_BOUNDS, n_base=2**13, second_order=True, rng=3)
    _, _, s13 = ishigami_indices()
    assert r.n_evaluations == 2**13 * 8
    assert r.S2[0, 2] == pytest.approx(s13, abs=0.03)
    assert r.S2[0, 1] == pytest.approx(0.0, abs=0.03) and r.S2[1, 2] == pytest.approx(0.0, abs=0.03)


def test_sobol_linear_model_with_every_distribution_kind():
    # y = sum b_i x_i, independent inputs: S_i = ST_i = b_i^2 var_i / sum_j b_j^2 var_j (variance decomposition of a
    # sum). var: uniform (hi - lo)^2/12; log-normal (median 1, omega w) (e^{w^2} - 1) e^{w^2}; log-uniform on [l, h]
    # E x^2 - (E x)^2 with E x = (h - l)/ln(h/l), E x^2 = (h^2 - l^2)/(2 ln(h/l)).
    b = np.array([1.0, 2.0, 0.5, 0.0])
    lo, hi = 1.0, math.e**2
    var = np.array([1 / 12, math.expm1(0.25) * math.exp(0.25),
                    (hi**2 - lo**2) / (2 * math.log(hi / lo)) - ((hi - lo) / math.log(hi / lo)) ** 2, 1 / 3])
    truth = b**2 * var / np.sum(b**2 * var)
    dists = {"x1": ParameterDistribution("uniform", 0.0, 1.0), "x2": ParameterDistribution("log-normal", 1.0, 0.5),
             "x3": ParameterDistribution("log-uniform", lo, hi), "x4": ParameterDistribution("uniform", -1.0, 1.0)}
    r = sobol_indices(lambda X: X @ b, distributions=dists, n_base=2**13, rng=11)
    # observed error over seeds 0-4 was <= 0.0016; the intervals are ~0.035 wide
    np.testing.assert_allclose(r.S1, truth, atol=0.01)
    np.testing.assert_allclose(r.ST, truth, atol=0.01)
    assert r.ST[3] == 0.0   # an input the function ignores: f(A) = f(A_B^4) exactly


def test_sobol_is_reproducible_with_a_seed():
    a = sobol_indices(ishigami, bounds=ISHIGAMI_BOUNDS, n_base=256, rng=5)
    b = sobol_indices(ishigami, bounds=ISHIGAMI_BOUNDS, n_base=256, rng=np.random.default_rng(5))
    c = sobol_indices(ishigami, bounds=ISHIGAMI_BOUNDS, n_base=256, rng=6)
    np.testing.assert_array_equal(a.ST, b.ST)
    np.testing.assert_array_equal(a.ST_conf, b.ST_conf)
    assert not np.array_equal(a.ST, c.ST)


def test_constant_output_gives_zero_indices_with_a_note():
    r = sobol_indices(lambda X: np.ones(len(X)), bounds={"x": (0, 1), "y": (0, 1)}, n_base=64, rng=1)
    assert (r.S1 == 0).all() and (r.ST == 0).all() and "constant" in r.notes[0]


# -- Morris -----------------------------------------------------------------------------------------------
def test_morris_linear_and_inactive_inputs_exact():
    # f = 2 x1 - 3 x2 + ln x4: on the scaled grid every elementary effect of a linear input is b (hi - lo)
    # (Morris 1991), of ln x on a log-uniform [l, h] it is ln(h/l); x3 is inactive: mu* = sigma = 0.
    r = morris_screening(lambda X: 2 * X[:, 0] - 3 * X[:, 1] + np.log(X[:, 3]),
                         bounds={"x1": (0.0, 2.0), "x2": (1.0, 5.0), "x3": (0.0, 1.0)},
                         log_bounds={"x4": (1.0, math.e**3)}, n_trajectories=12, rng=4)
    assert isinstance(r, MorrisResult) and r.n_evaluations == 12 * 5
    np.testing.assert_allclose(r.mu_star, [4.0, 12.0, 0.0, 3.0], atol=1e-12)
    np.testing.assert_allclose(r.mu, [4.0, -12.0, 0.0, 3.0], atol=1e-12)
    np.testing.assert_allclose(r.sigma, 0.0, atol=1e-12)
    assert r.ranking()[:2] == ["x2", "x1"]


def test_morris_finds_the_active_inputs_of_ishigami():
    # x2 acts alone, x1 and x3 through sin(x1)(1 + b x3^4); a fourth input is not used: mu* = 0 exactly
    r = morris_screening(lambda X: ishigami(X[:, :3]), bounds={**ISHIGAMI_BOUNDS, "x4": (0.0, 1.0)},
                         n_trajectories=40, optimal_trajectories=20, rng=8)
    assert r.n_trajectories == 20
    assert r.mu_star[3] == 0.0 and r.sigma[3] == 0.0
    assert (r.mu_star[:3] > 0.5).all()


# -- the lupus model -------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sle():
    return kinetics.load_model("cd19_sle")


def test_sobol_ranks_b_cell_recovery_drivers_on_lupus_model(sle):
    # omega (variances) from the model file's iiv (SDs of log-normal etas) plus an IgG half-life SD of 0.2. B cells do not
    # depend on thalf_IgG (no path in models/cd19_sle.toml [odes]): its indices are 0 up to solver noise; the CAR-T
    # memory loss dM_19 (largest iiv and elasticity -0.86, test_local) dominates reappearance (model calibration text).
    omega = {**{k: s ** 2 for k, s in sle.model.metadata["iiv"].items()}, "thalf_IgG": 0.2 ** 2}
    r = sobol_indices(sle, outcome="recovery_time", doses=SLE_DOSE, omega=omega, n_base=64, rng=1)
    assert r.n_evaluations == 64 * (len(omega) + 2)
    st = dict(zip(r.names, r.ST))
    assert r.ranking()[0] == "dM_19"
    assert st["thalf_IgG"] < 1e-6
    for car_t in ("dM_19", "kmax_19", "rhoH_19"):
        assert st[car_t] > 100 * max(st["thalf_IgG"], 1e-9)
    assert "log-normal, median 0.05, omega (SD of log) 0.3" in r.to_frame().set_index("parameter").loc["dM_19",
                                                                                                      "distribution"]


def test_sobol_ranks_igg_half_life_for_igg_while_b_cells_are_absent(sle):
    # IgG at day 60: plasmablasts are gone within days in every patient, so IgG is the LLPC share fLL_igg plus the
    # decaying short-lived share (half-life thalf_IgG); CAR-T and B-cell parameters only shift the first few days
    # (total indices ~1e-5 at this seed).
    omega = {"fLL_igg": 0.2 ** 2, "thalf_IgG": 0.2 ** 2, "dM_19": 0.3 ** 2, "kmax_19": 0.3 ** 2, "B0": 0.3 ** 2}
    f = partial(fraction_of_baseline, output="igg", day=60.0)
    r = sobol_indices(sle, outcome=f, doses=SLE_DOSE, omega=omega, n_base=64, rng=2)
    assert r.ranking()[:2] == ["fLL_igg", "thalf_IgG"]
    assert r.ST[r.names.index("thalf_IgG")] > 0.02
    assert max(r.ST[r.names.index(n)] for n in ("dM_19", "kmax_19", "B0")) < 1e-3


def test_morris_on_lupus_model_with_a_dose_input_and_progress(sle, capsys):
    omega = {"dM_19": 0.3 ** 2, "kmax_19": 0.3 ** 2, "thalf_IgG": 0.2 ** 2}
    r = morris_screening(sle, outcome="recovery_time", doses=SLE_DOSE, omega=omega,
                         log_bounds={"dose:car19": (2e7, 2e8)}, n_trajectories=6, rng=3, progress=True)
    assert r.ranking()[0] == "dM_19"
    assert r.mu[r.names.index("dose:car19")] > 0     # more CAR-T, later reappearance (elasticity > 0)
    assert r.mu_star[r.names.index("thalf_IgG")] < 1e-6
    assert "100%" in capsys.readouterr().err


@pytest.mark.slow
def test_sobol_lupus_larger_run(sle):
    # a larger run: N = 512 over the iiv parameters plus the IgG half-life and the dose (log-uniform 2e7-2e8)
    omega = {**{k: s ** 2 for k, s in sle.model.metadata["iiv"].items()}, "thalf_IgG": 0.2 ** 2}
    r = sobol_indices(sle, outcome="recovery_time", doses=SLE_DOSE, omega=omega,
                      log_bounds={"dose:car19": (2e7, 2e8)}, n_base=512, rng=4)
    st = dict(zip(r.names, r.ST))
    assert r.ranking()[0] == "dM_19"
    assert st["thalf_IgG"] < 1e-6
    assert (r.ST_conf < 0.1).all()


@pytest.mark.slow
def test_sobol_interval_coverage():
    # 95 % bootstrap intervals at N = 2^10 cover the analytic Ishigami indices in about 95 % of 100 replicates;
    # below 85 % (binomial 5th percentile for p = 0.95, n = 100 is 91) would mean the intervals are too narrow
    s1, st, _ = ishigami_indices()
    hits = np.zeros(6)
    for seed in range(100):
        r = sobol_indices(ishigami, bounds=ISHIGAMI_BOUNDS, n_base=2**10, rng=seed)
        hits += np.concatenate([np.abs(r.S1 - s1) <= r.S1_conf, np.abs(r.ST - st) <= r.ST_conf])
    assert (hits >= 85).all(), hits


# -- bad input -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, match", [
    (dict(n_base=1000), "power of 2.*512 or 1024"),
    (dict(n_base=1), "n_base must be an integer >= 2"),
    (dict(bounds={"x1": (1.0, 1.0)}), "low < high"),
    (dict(bounds={"x1": (0.0, math.inf)}), "finite"),
    (dict(log_bounds={"x1": (0.0, 1.0)}), "0 < low < high"),
    (dict(bounds={"x1": (0, 1)}, distributions={"x1": ParameterDistribution("uniform", 0, 1)}), "not both"),
    (dict(distributions={"x1": (0, 1)}), "ParameterDistribution"),
    (dict(omega={"x1": 0.3}), "needs a median"),
    (dict(bounds={"x1": (0, 1)}, rng="seed"), "rng must be"),
    (dict(bounds={"x1": (0, 1)}, conf_level=95), "conf_level"),
    (dict(bounds={"x1": (0, 1)}, num_resamples=1), "num_resamples"),
    (dict(), "no inputs"),
], ids=["not-power-2", "n-base-small", "empty-range", "infinite", "log-zero", "both", "not-dist", "omega-median",
        "rng", "conf", "resamples", "no-inputs"])
def test_sobol_bad_input(kwargs, match):
    with pytest.raises(SolverInputError, match=match):
        sobol_indices(lambda X: X[:, 0], **{"n_base": 64, **kwargs})


@pytest.mark.parametrize("f, match", [
    (lambda X: X, r"returned shape \(64, 2\)"),
    (lambda X: np.where(X[:, 0] > 0.5, np.nan, 1.0), "non-finite"),
    ("not a function", "target must be"),
], ids=["shape", "nan", "not-callable"])
def test_sobol_bad_function(f, match):
    with pytest.raises(SolverInputError, match=match):
        sobol_indices(f, bounds={"a": (0, 1), "b": (0, 1)}, n_base=16)


@pytest.mark.parametrize("kwargs, match", [
    (dict(outcome=None, bounds={"dM_19": (0.01, 0.1)}), "needs outcome="),
    (dict(bounds={"dM_19": (0.1, 0.2)}), r"excludes its value 0.05"),
    (dict(bounds={"dM19": (0.01, 0.1)}), "did you mean 'dM_19'"),
    (dict(omega={"dM_19": 0.0}), "omega > 0"),
    (dict(omega={"t_LD": 0.3}), "positive value"),
    (dict(log_bounds={"dose:car19": (1e7, 1e8)}, doses=None), "no dose"),
    (dict(log_bounds={"dose:car20": (1e7, 1e8)}), "unknown dose target"),
    (dict(outcome="recovery", bounds={"dM_19": (0.01, 0.1)}), "did you mean 'recovery_time'"),
], ids=["no-outcome", "excludes-default", "unknown-param", "zero-omega", "negative-median", "no-dose",
        "unknown-target", "unknown-outcome"])
def test_sobol_model_bad_input(sle, kwargs, match):
    args = {"outcome": "recovery_time", "doses": SLE_DOSE, "n_base": 16, **kwargs}
    with pytest.raises(SolverInputError, match=match):
        sobol_indices(sle, **args)


def test_failed_model_runs_are_reported(tmp_path):
    oral = kinetics.load_model("oral_1cmt")
    # V down to 0 makes central/V undefined: the runs fail and the error says how many and where
    with pytest.raises(SolverInputError, match="model runs gave no value"):
        sobol_indices(oral, outcome=partial(fraction_of_baseline, output="conc", day=2.0),
                      doses=[kinetics.Dose(0.0, 1.0, "depot")], bounds={"V": (0.0, 40.0)}, n_base=16, rng=1)


@pytest.mark.parametrize("kwargs, match", [
    (dict(num_levels=3), "even"),
    (dict(optimal_trajectories=20), "fewer than"),
    (dict(quantiles=(0.5, 0.4)), "quantiles"),
    (dict(n_trajectories=1), "n_trajectories"),
], ids=["odd-levels", "optimal", "quantiles", "trajectories"])
def test_morris_bad_input(kwargs, match):
    with pytest.raises(SolverInputError, match=match):
        morris_screening(lambda X: X[:, 0], bounds={"a": (0, 1)}, **{"n_trajectories": 10, **kwargs})


def test_parameter_distributions_from_model_and_omega(sle):
    d = parameter_distributions(sle, omega={"dM_19": 0.3 ** 2}, bounds={"B0": (100.0, 300.0)},
                                params={"dM_19": 0.08})
    assert d["dM_19"] == ParameterDistribution("log-normal", 0.08, 0.3)
    assert d["B0"] == ParameterDistribution("uniform", 100.0, 300.0)
    # median and quantiles of the log-normal: value * exp(+-1.645 omega) at 5 % / 95 %
    np.testing.assert_allclose(d["dM_19"].ppf(np.array([0.05, 0.5, 0.95])),
                               0.08 * np.exp(np.array([-1.6448536269514722, 0.0, 1.6448536269514722]) * 0.3))
    with pytest.raises(SolverInputError, match="kind must be"):
        ParameterDistribution("normal", 0.0, 1.0)
