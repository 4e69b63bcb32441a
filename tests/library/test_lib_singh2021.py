"""singh2021: anti-BCMA CAR-T multiscale PK-PD (Singh et al. 2021, doi:10.1002/psp4.12598).

Published numbers come from the nlmixr2lib vignette ``Singh_2021_idecabtageneVicleucel``
(github.com/nlmixr2/nlmixr2lib), which solves the authors' deposited Monolix code (clinical model,
Table 1 typical values) with rxode2 and prints Cmax of blood transgene and the M-protein nadir per
dose (Figure 3 analogue) and the dose x baseline-burden sweep (Figure 4 analogue). The paper's own
tabulated Cmax/Tmax and the digitised CRB-401 means were not retrievable (see the model metadata).
"""

from __future__ import annotations

import numpy as np
import pytest

import kinetics

from tests.library.conftest import check_sensitivities_match_central_differences, check_simulates_from_defaults

DOSES = (50e6, 150e6, 450e6, 800e6)  # CRB-401 flat dose levels, CAR+ cells
# the vignette's output grid: 0-2 d by 0.02, then 2-365 d by 0.5; Cmax is the grid maximum over t > 1 d
GRID = np.unique(np.round(np.concatenate([np.arange(0, 2.0001, 0.02), np.arange(2, 365.0001, 0.5)]), 10))
AFTER_DAY1 = GRID > 1


@pytest.fixture(scope="module")
def singh():
    return kinetics.load_model("singh2021")


def _infuse(cells):
    return [kinetics.Dose(time=0.0, amount=cells, target="car")]


def _cmax(model, cells, **params):
    sim = model.simulate(GRID, params=params or None, doses=_infuse(cells), rtol=1e-8, atol=1e-10)
    assert sim.success, sim.message
    return sim.outputs["transgene"][AFTER_DAY1].max()


def test_transgene_cmax_by_dose_matches_nlmixr2lib_vignette(singh):
    # vignette "peak_by_dose" (Figure 3a analogue), printed to the unit: rounding allows 0.5 copies/ug;
    # 1e-5 relative more for rxode2's default tolerances (rtol 1e-6 per step).
    published = np.array([37411.0, 36479.0, 35743.0, 35484.0])
    cmax = np.array([_cmax(singh, d) for d in DOSES])
    assert np.all(np.abs(cmax - published) <= 0.5 + 1e-5 * published), cmax


def test_mprotein_nadir_by_dose_matches_nlmixr2lib_vignette(singh):
    # vignette "mnadir_by_dose" (Figure 3c analogue), printed to 0.1 %
    published = np.array([-92.5, -92.4, -92.3, -92.3])
    nadir = []
    for d in DOSES:
        sim = singh.simulate(GRID, doses=_infuse(d), rtol=1e-8, atol=1e-10)
        assert sim.success, sim.message
        nadir.append(sim.outputs["mprotein_pctchg"].min())
    assert np.all(np.abs(np.array(nadir) - published) <= 0.05 + 1e-4), nadir


def test_baseline_tumour_burden_moves_expansion_more_than_dose(singh):
    # Singh 2021 abstract / Figure 4: "patient baseline tumor burden could be more sensitive than dose
    # levels toward overall extent of exposure". Vignette sweep: burden 0.2-5 x Tum0 at each dose,
    # printed medians of the Cmax fold-ranges: 5750 over burden ("%.0f"), 1.1 over dose ("%.1f").
    burdens = (0.2, 0.5, 1.0, 2.0, 5.0)
    cmax = np.array([[_cmax(singh, d, Tum0=2.5e9 * b) for b in burdens] for d in DOSES])
    fold_burden = np.median(cmax.max(axis=1) / cmax.min(axis=1))
    fold_dose = np.median(cmax.max(axis=0) / cmax.min(axis=0))
    assert fold_burden > 100 * fold_dose  # the published qualitative fact, by a wide margin
    assert abs(fold_burden - 5750) <= 0.5 + 1e-5 * 5750
    assert abs(fold_dose - 1.1) <= 0.05


@pytest.mark.parametrize("method", ["auto", "rodas5p"])
def test_stiff_binding_solves_with_stiff_methods(singh, method):
    # koff = 2.385e-3/s = 206/day against day-scale cell kinetics: both stiff-capable methods must
    # succeed and agree (same Cmax as the vignette check above, so they agree with each other too).
    sim = singh.simulate(GRID, doses=_infuse(450e6), rtol=1e-8, atol=1e-10, method=method)
    assert sim.success, sim.message
    assert sim.outputs["transgene"][AFTER_DAY1].max() == pytest.approx(35743.0, abs=0.5 + 1e-5 * 35743)


def test_binding_constants_converted_with_avogadro(singh):
    # Analytic identity: with blood and marrow free of CAR-T but E_bm0 tiny, the complex ODE is
    # dCplx/dt = kon*86400/N_A * (C_t*Ag_CAR - Cplx)(Tum*Ag_T - Cplx) - koff*86400*Cplx.
    # At t = 0 (Cplx = 0, C_t = E_bm0) its slope is kon*86400/6.023e23 * E_bm0*Ag_CAR*Tum0*Ag_T.
    p = singh.defaults
    h = 1e-7
    sim = singh.simulate([h], rtol=1e-12, atol=1e-30)
    slope = p["kon"] * 86400 / 6.023e23 * p["E_bm0"] * p["Ag_CAR"] * p["Tum0"] * p["Ag_T"]
    cplx = sim.states[0, singh.state_names.index("Cplx")]
    assert cplx / h == pytest.approx(slope, rel=1e-4)  # koff*h = 2e-5: first-order term of the expansion


def test_simulates_from_defaults(singh):
    check_simulates_from_defaults(singh, np.linspace(0.0, 365.0, 80), doses=_infuse(450e6))


def test_sensitivities_match_central_differences(singh):
    # default tolerances of the shared check hold for this stiff system
    check_sensitivities_match_central_differences(
        singh, np.array([0.5, 3.0, 7.0, 14.0, 28.0, 90.0, 180.0]),
        ["Kexp_max", "EC50_exp", "K12", "Kkill_max", "kon", "gm"], doses=_infuse(450e6))
