"""Simulation and re-estimation with a known truth (CONVENTIONS.md ladder rung 5): the Stein 2019
tisagenlecleucel model with its published between-subject variability and log-additive error,
sampled on a typical CAR-T schedule with an LLOQ, fitted by SAEM with the M3 likelihood, and the same
data with the censored rows dropped or imputed at LLOQ/2 (Beal's M1 and M6-like rules; Ahn et al.
2008; Bergstrand & Karlsson 2009)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import kinetics
from kinetics.data import read_dataset
from kinetics.fit import fit_population
from kinetics.fit._saem import SaemOptions
from kinetics.fit._simulate import simulate_trial

# Stein et al. 2019, Table 1: typical values (model defaults), omega^2 on the log scale, additive log error 0.56
OMEGA = {"foldx": 2.4, "Tmax": 0.38, "Cmax": 0.65, "alpha": 0.91, "FB": 0.80, "beta": 0.86}
TIMES = {"car_qpcr": [1, 4, 7, 10, 14, 21, 28, 56, 84, 180, 270, 365]}
ERROR = {"car_qpcr": {"kind": "log_additive", "add": 0.56}}
LLOQ = {"car_qpcr": 50.0}   # copies/ug: an assumption (product LLOQs not published, reference/models.md section 3)


@pytest.fixture(scope="module")
def stein():
    return kinetics.load_model("stein2019")


def simulate(stein, seed: int, n_subjects: int = 40) -> pd.DataFrame:
    return simulate_trial(stein, n_subjects=n_subjects, times=TIMES, omega=OMEGA, error=ERROR, lloq=LLOQ, seed=seed)[0]


def variants(table: pd.DataFrame) -> dict[str, pd.DataFrame]:
    censored = table["CENS"] == 1
    return {"M3": table, "drop": table[~censored],
            "LLOQ/2": table.assign(DV=np.where(censored, table["DV"] / 2, table["DV"]), CENS=0)}


def fit(stein, table: pd.DataFrame, seed: int, n_burn: int = 150, n_smooth: int = 100,
        covariance: str = "linearised", n_information: int = 300):
    typical = {k: stein.defaults[k] for k in OMEGA}
    return fit_population(stein, read_dataset(table), estimate=typical, random_effects=OMEGA,
                          error={"car_qpcr": {"kind": "log_additive", "add": 0.5}}, method="saem",
                          covariance=covariance,
                          saem=SaemOptions(n_burn=n_burn, n_smooth=n_smooth, seed=seed, n_information=n_information))


def log_error_z(result, stein, name: str) -> float:
    """(log estimate - log truth) / its standard error."""
    row = result.estimates.set_index("name").loc[name]
    return float((row["estimate"] - np.log(stein.defaults[name])) / row["se"])


def test_m3_recovers_stein_truth_where_dropping_or_imputing_blq_biases_the_terminal_phase(stein):
    table = simulate(stein, seed=1)
    assert 0.15 < table.loc[table["EVID"] == 0, "CENS"].mean() < 0.35   # the late samples are where BLQ accumulate
    fits = {k: fit(stein, t, seed=1) for k, t in variants(table).items()}
    assert all(f.success for f in fits.values())
    m3 = fits["M3"]
    assert m3.covariance is not None and m3.covariance.kind == "linearised" and m3.covariance.success
    # M3: every typical value within 2.5 of its own standard errors of the truth (a per-replicate unbiasedness check)
    for name in OMEGA:
        assert abs(log_error_z(m3, stein, name)) < 2.5, name
    # the persistence rate: dropping BLQ rows biases it clearly (> 2.5 SE), LLOQ/2 less, M3 least
    z = {k: log_error_z(f, stein, "beta") for k, f in fits.items()}
    assert z["drop"] < -2.5
    assert abs(z["M3"]) < abs(z["LLOQ/2"]) < abs(z["drop"])


@pytest.fixture(scope="module")
def replicates(stein):
    """20 simulated Stein trials (40 patients each), fitted by SAEM with M3 (300 smoothing iterations) and
    standard errors from the S matrix of the exact M3 likelihood (covariance="stochastic_s"), and the
    terminal-phase rate estimated on the same data with the censored rows dropped or imputed at LLOQ/2."""
    est, cover, beta_other = [], [], {"drop": [], "LLOQ/2": []}
    truth = np.log([stein.defaults[n] for n in OMEGA])
    for seed in range(100, 120):
        table = simulate(stein, seed)
        res = fit(stein, table, seed, n_smooth=300, covariance="stochastic_s", n_information=1500)
        assert res.success and res.covariance.success, (seed, res.covariance.message)
        e = res.estimates.set_index("name")
        est.append(e["estimate"])
        half = 1.6449 * e.loc[list(OMEGA), "se"].to_numpy()
        cover.append(np.abs(e.loc[list(OMEGA), "estimate"].to_numpy() - truth) <= half)
        for k in beta_other:
            other = fit(stein, variants(table)[k], seed)
            beta_other[k].append(np.log(other.theta["beta"] / stein.defaults["beta"]))
    return pd.DataFrame(est), pd.DataFrame(cover, columns=list(OMEGA)), beta_other


@pytest.mark.slow
def test_stein_replicates_unbiased_and_blq_handling_matters(stein, replicates):
    # issue 4 must-show: over replicates typical values within 20 %, omegas within 50 %; dropping / LLOQ/2 bias the
    # terminal phase where M3 does not
    est, _, beta_other = replicates
    typical_bias = np.exp(est[list(OMEGA)].mean() - np.log([stein.defaults[n] for n in OMEGA]))
    assert np.all(np.abs(typical_bias - 1) < 0.20), typical_bias
    omega_ratio = np.exp(est[[f"omega({n})" for n in OMEGA]].mean()) / np.array(list(OMEGA.values()))
    assert np.all(np.abs(omega_ratio - 1) < 0.50), omega_ratio
    assert np.mean(beta_other["drop"]) < np.log(0.8) and np.mean(beta_other["LLOQ/2"]) < np.log(0.9)


@pytest.mark.slow
def test_stein_90_percent_intervals_cover_the_well_identified_parameters(replicates):
    # measured over 20 replicates (seeds 100-119, S matrix): foldx 0.85, Tmax 0.90, Cmax 0.85, alpha 1.00
    # (nominal 0.90; 2 binomial SE = 0.13)
    coverage = replicates[1].mean()
    assert np.all(coverage[["foldx", "Tmax", "Cmax", "alpha"]] >= 0.75), coverage


@pytest.mark.slow
def test_stein_90_percent_intervals_cover_the_terminal_phase(replicates):
    # the high-shrinkage terminal-phase parameters: measured FB 1.00, beta 0.95 with the S matrix (mean SE FB 0.28,
    # beta 0.31 against empirical SDs 0.26 / 0.32). The linearised information understated their uncertainty
    # (FB 0.70, beta 0.65), and Louis' observed information R was not positive definite in 3 of 20 replicates
    # (omega(beta) or omega(foldx) barely identified): counting those as misses FB 0.80, beta 0.75
    coverage = replicates[1].mean()
    assert np.all(coverage[["FB", "beta"]] >= 0.75), coverage
