"""Where the approximations are exact: a model linear in the random effect on the transformed scale, with
additive error there, has a Gaussian marginal likelihood in closed form; FO, FOCE, FOCE-I and Laplace must all
equal it (Wang 2007, section 3: the methods differ only through the nonlinearity in eta)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import kinetics
from kinetics.data import read_dataset
from kinetics.fit import evaluate_objective
from tests.references import shared_data

MODEL = """
name = "exp_decline"
time_unit = "h"
[parameters]
A0 = { value = 10.0, unit = "mg/L", lower = 0.0 }
ke = { value = 0.5, unit = "1/h", lower = 0.0 }
[states]
A = { initial = "A0", unit = "mg/L" }
[odes]
A = "-ke*A"
[outputs]
ipre = { expression = "A", unit = "mg/L" }
"""


def closed_form_neg2ll(df: pd.DataFrame, a0: float, ke: float, omega: float, sd: float) -> float:
    """log DV_i ~ N(log A0 - ke t, omega 11' + sd^2 I): -2 log L without the n log(2 pi) terms."""
    total = 0.0
    for _, g in df.groupby("ID"):
        y, t = np.log(g["DV"].to_numpy()), g["TIME"].to_numpy()
        r = y - (np.log(a0) - ke * t)
        c = omega * np.ones((t.size, t.size)) + sd ** 2 * np.eye(t.size)
        total += np.linalg.slogdet(c)[1] + r @ np.linalg.solve(c, r)
    return total


@pytest.mark.parametrize("method", ["fo", "foce", "focei", "laplace"])
def test_all_methods_equal_the_exact_gaussian_likelihood(tmp_path, method):
    path = tmp_path / "exp_decline.toml"
    path.write_text(MODEL)
    model = kinetics.load_model(path)
    df = pd.read_csv(shared_data("wang2007_m3.csv"))
    df = df[df["CENS"] == 0].drop(columns="CENS")
    res = evaluate_objective(model, read_dataset(df), params={"A0": 10.0, "ke": 0.5}, random_effects={"A0": 0.04},
                             error={"ipre": {"kind": "log_additive", "add": 0.3}}, method=method, rtol=1e-10,
                             atol=1e-12)
    assert res.ofv == pytest.approx(closed_form_neg2ll(df, 10.0, 0.5, 0.04, 0.3), abs=1e-6)


def test_laplace_and_focei_bracket_the_quadrature_value_on_wang2007(wang_model):
    # Wang 2007 proportional error at ke 0.5, omega^2 0.04, sd sqrt(0.1): the exact marginal -2LL by 200-node
    # Gauss-Hermite quadrature is 39.355 (nlmixr2's adaptive quadrature "agq" gives 39.365, test-wang2007 values);
    # FOCE-I (first-order Hessian) and Laplace (exact Hessian) are approximations on either side of it.
    from scipy import stats

    df = pd.read_csv(shared_data("wang2007_m3.csv"))
    df = df[df["CENS"] == 0].drop(columns="CENS")
    x, w = np.polynomial.hermite_e.hermegauss(200)
    exact = 0.0
    for _, g in df.groupby("ID"):
        t, y = g["TIME"].to_numpy(), g["DV"].to_numpy()
        f = 10 * np.exp(-0.5 * np.exp(0.2 * x)[:, None] * t[None, :])
        ll = stats.norm.logpdf(y[None, :], f, np.sqrt(0.1) * f).sum(axis=1)
        exact += -2 * np.log(np.sum(w * np.exp(ll)) / np.sqrt(2 * np.pi))
    exact -= len(df) * np.log(2 * np.pi)
    assert exact == pytest.approx(39.365, abs=0.02)
    ofv = {m: evaluate_objective(wang_model, read_dataset(df), params={"ke": 0.5}, random_effects={"ke": 0.04},
                                 error={"ipre": {"kind": "proportional", "prop": np.sqrt(0.1)}}, method=m).ofv
           for m in ("focei", "laplace")}
    assert ofv["laplace"] < exact < ofv["focei"]
    assert abs(ofv["laplace"] - exact) < 0.2 and abs(ofv["focei"] - exact) < 0.2
