"""Library models reproduce their published numbers."""

from __future__ import annotations

import numpy as np
import pytest

import kinetics


@pytest.fixture(scope="module")
def stein():
    return kinetics.load_model("stein2019")


def stein_closed_form(t, foldx=3900.0, tmax=9.3, cmax=24000.0, alpha=0.16, fb=0.0079, beta=0.0032):
    """Stein et al. 2019 (doi:10.1002/psp4.12388), supplement: piecewise closed form of E + M."""
    r0, rho = cmax / foldx, np.log(foldx) / tmax
    after = (1 - fb) * cmax * np.exp(-alpha * (t - tmax)) + fb * cmax * np.exp(-beta * (t - tmax))
    return np.where(t < tmax, r0 * np.exp(rho * t), after)


def test_stein2019_reproduces_published_typical_profile(stein):
    # published typical-value profile (issue 3, from the Stein 2019 closed form at Table 1 values)
    t = np.array([7.0, 14.0, 28.0, 90.0, 365.0])
    published = np.array([3105.26, 11411.53, 1373.56, 146.508, 60.7445])
    sim = stein.simulate(t, rtol=1e-10, atol=1e-10)
    assert sim.success, sim.message
    np.testing.assert_allclose(sim.outputs["car_qpcr"], published, rtol=5e-6)  # published to 6 significant digits


@pytest.mark.parametrize("method", ["auto", "rodas5p"])
def test_stein2019_ode_matches_closed_form(stein, method):
    t = np.concatenate([np.linspace(0.1, 9.2, 20), [9.3], np.linspace(9.4, 365, 40)])
    sim = stein.simulate(t, rtol=1e-10, atol=1e-10, method=method)
    np.testing.assert_allclose(sim.outputs["car_qpcr"], stein_closed_form(t), rtol=1e-6)


def test_stein2019_lag_variant_delays_expansion(stein):
    t = np.array([2.0, 3.27, 9.3, 30.0])
    sim = stein.simulate(t, params={"Tlag": 3.27}, rtol=1e-10, atol=1e-10)
    c = sim.outputs["car_qpcr"]
    assert c[0] == pytest.approx(24000 / 3900, rel=1e-9) and c[1] == pytest.approx(24000 / 3900, rel=1e-9)
    assert c[2] == pytest.approx(24000.0, rel=1e-7)  # the peak stays at Cmax, Tmax
