"""Every diagnostic figure of kinetics.plot on the theophylline FOCE-I fit and on the virtual lupus
trial (the objective at the true values, fits/data/virtual_trial.json: a PopulationFit without
estimation): a PNG is written, is not blank, and has the expected panels, axes and scales.

Expected panel counts follow from each function's documented layout; the log axes from the error
models (theophylline: additive, so linear; virtual trial: log_additive for the CAR-T and B-cell
outputs, fits/data/virtual_trial.json "error"). The LOWESS check uses a straight line, which a
local linear smoother reproduces exactly (Cleveland 1979).
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.image as mpimg  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

import kinetics  # noqa: E402
from kinetics.fit import fit_population  # noqa: E402
from kinetics.fit import npde, vpc_data  # noqa: E402
from kinetics.plot import (  # noqa: E402
    lowess,
    plot_eta_covariates,
    plot_eta_distributions,
    plot_goodness_of_fit,
    plot_individual_fits,
    plot_npde,
    plot_parameter_table,
    plot_vpc,
)
from tests.references import shared_data  # noqa: E402

FITS = Path(__file__).resolve().parents[2] / "fits" / "data"
VT_OUTPUTS = ["car19_qpcr", "car19_flow", "carbcma_qpcr", "carbcma_flow", "bcells", "igg", "anti_dsdna"]
VT_LOG = {"car19_qpcr", "car19_flow", "carbcma_qpcr", "carbcma_flow", "bcells"}


# -- fixtures: the two fits and their simulation diagnostics -------------------------------------
@pytest.fixture(scope="module")
def oral():
    return kinetics.load_model("oral_1cmt")


@pytest.fixture(scope="module")
def theoph():
    return kinetics.read_dataset(shared_data("theoph_nonmem.csv"))


@pytest.fixture(scope="module")
def theoph_fit(oral, theoph):
    # FOCE-I as in tests/fit/test_population.py (nlmixr2's OFV 116.80)
    return fit_population(oral, theoph, estimate={"ka": np.exp(0.45), "CL": np.exp(1.0), "V": np.exp(3.45)},
                          random_effects={"ka": 0.6, "CL": 0.3, "V": 0.1},
                          error={"conc": {"kind": "additive", "add": 0.7}})


@pytest.fixture(scope="module")
def lupus():
    return kinetics.load_model("dual_car_sle")


@pytest.fixture(scope="module")
def vt_data():
    return kinetics.read_dataset(FITS / "virtual_trial.csv")


@pytest.fixture(scope="module")
def vt_fit(lupus, vt_data):
    spec = json.loads((FITS / "virtual_trial.json").read_text())
    omega = spec["random_effects"]["omega_variance"]
    return kinetics.evaluate_objective(lupus, vt_data, params={k: spec["typical_values"][k] for k in omega},
                                       random_effects=omega, error=spec["error"])


def _cases(request):
    """(model, data, fit) of the case named by the parametrisation."""
    if request.param == "theophylline":
        return (request.getfixturevalue("oral"), request.getfixturevalue("theoph"),
                request.getfixturevalue("theoph_fit"))
    return request.getfixturevalue("lupus"), request.getfixturevalue("vt_data"), request.getfixturevalue("vt_fit")


@pytest.fixture(scope="module", params=["theophylline", "virtual_trial"])
def case(request):
    return request.param, *_cases(request)


def _saved(fig: Figure, path: Path) -> np.ndarray:
    """Write the figure as PNG and read it back: it must exist, be non-trivial and not be blank."""
    assert isinstance(fig, Figure)
    fig.savefig(path, dpi=60)
    assert path.stat().st_size > 5_000
    img = mpimg.imread(path)
    assert img.ndim == 3 and img[..., :3].std() > 0.02   # something drawn on the white canvas
    return img


def _title(fig: Figure) -> str:
    """The figure title with its line wrapping undone."""
    return " ".join(fig._suptitle.get_text().split())


def _visible(fig: Figure) -> list:
    return [a for a in fig.axes if a.get_visible()]


# -- individual fits -----------------------------------------------------------------------------
def test_individual_fits(case, tmp_path):
    name, model, data, fit = case
    ids = None if name == "theophylline" else list(fit.etas.index[:2])
    fig = plot_individual_fits(fit, model=model, data=data, ids=ids)
    _saved(fig, tmp_path / "individual.png")
    axes = _visible(fig)
    if name == "theophylline":
        assert len(axes) == 12 and all(a.get_yscale() == "linear" for a in axes)
    else:
        assert len(axes) == 2 * 7   # 2 subjects x 7 outputs
        scales = {a.get_title().split(" · ")[1]: a.get_yscale() for a in axes}
        assert {o for o, s in scales.items() if s == "log"} == VT_LOG
        # censored samples are drawn (open triangles at the LLOQ) where the subject has any
        labels = {lab for a in axes for lab in a.get_legend_handles_labels()[1]}
        assert "censored (at LLOQ)" in labels
    assert all({"IPRED", "PRED", "observed"} <= set(a.get_legend_handles_labels()[1]) for a in axes)
    assert "curves solved on a grid" in _title(fig)


def test_individual_fits_at_observation_times_without_a_model(theoph_fit, tmp_path):
    fig = plot_individual_fits(theoph_fit, ids=["1", "2"], ncols=2)
    _saved(fig, tmp_path / "ind.png")
    assert len(_visible(fig)) == 2 and "at the observation times" in _title(fig)
    with pytest.raises(ValueError, match="subject"):
        plot_individual_fits(theoph_fit, ids=["99"])


# -- goodness of fit -----------------------------------------------------------------------------
def test_goodness_of_fit(case, tmp_path):
    name, _, _, fit = case
    output = None if name == "theophylline" else "car19_qpcr"
    fig = plot_goodness_of_fit(fit, output=output)
    _saved(fig, tmp_path / "gof.png")
    axes = _visible(fig)
    assert len(axes) == 8
    titles = [a.get_title() for a in axes]
    assert titles[:6] == ["DV vs PRED", "DV vs IPRED", "CWRES vs TIME", "CWRES vs PRED", "IWRES vs TIME",
                          "IWRES vs PRED"]
    assert titles[6] == "QQ plot of CWRES" and titles[7].startswith("CWRES: mean")
    assert [lab for lab in axes[0].get_legend_handles_labels()[1] if lab == "identity"]
    assert all("LOWESS" in a.get_legend_handles_labels()[1] for a in axes[2:6])
    expected = "log" if name == "virtual_trial" else "linear"
    assert axes[0].get_xscale() == axes[0].get_yscale() == expected


def test_goodness_of_fit_of_all_outputs_and_a_bad_output(vt_fit, tmp_path):
    fig = plot_goodness_of_fit(vt_fit)
    _saved(fig, tmp_path / "gof_all.png")
    labels = axes_labels = _visible(fig)[0].get_legend_handles_labels()[1]
    assert set(VT_OUTPUTS) <= set(axes_labels) and "censored (at LLOQ)" in labels
    with pytest.raises(ValueError, match="did you mean 'igg'"):
        plot_goodness_of_fit(vt_fit, output="IgG")


#: statsmodels 0.15.0 ``lowess(y, x, frac=2/3, it=2, delta=0)`` on x = 1..20, y = sin(x/3) + 0.1 (x mod 4),
#: y[7] += 3 (an outlier)
STATSMODELS_LOWESS = [0.945353980984, 0.935407019873, 0.911455540415, 0.874682045654, 0.82603859562, 0.766680578087,
                      0.683896986467, 0.491520906008, 0.267341458569, 0.022635655158, -0.218928226328,
                      -0.415354276461, -0.533898620387, -0.580224791808, -0.475437165525, -0.358509560669,
                      -0.237086150016, -0.106581906078, 0.035237284568, 0.18879510292]


def test_lowess_matches_statsmodels():
    x = np.arange(1.0, 21.0)
    y = np.sin(x / 3.0) + 0.1 * (x % 4)
    y[7] += 3.0
    np.testing.assert_allclose(lowess(x, y, frac=2 / 3, iterations=2)[1], STATSMODELS_LOWESS, atol=1e-11)


def test_lowess_reproduces_a_line_and_resists_an_outlier():
    x = np.linspace(0, 10, 60)
    y = 2 * x + 1
    sx, sy = lowess(x[::-1], y[::-1])
    np.testing.assert_allclose(sx, x)
    np.testing.assert_allclose(sy, y, atol=1e-9)
    y2 = y.copy()
    y2[30] += 100.0
    np.testing.assert_allclose(lowess(x, y2)[1][25:36], y[25:36], atol=0.5)   # robustness iterations


# -- NPDE and VPC --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def diagnostics(case):
    name, model, data, fit = case
    k = 300 if name == "theophylline" else 200   # K > observations per subject (88) for the covariance
    n_vpc = 100 if name == "theophylline" else 30
    return (name, npde(fit, model, data, n_sim=k, seed=1), vpc_data(fit, model, data, n_sim=n_vpc, seed=2),
            vpc_data(fit, model, data, n_sim=n_vpc, seed=2, prediction_corrected=True))


def test_npde_figure(diagnostics, tmp_path):
    name, res, _, _ = diagnostics
    fig = plot_npde(res)
    _saved(fig, tmp_path / "npde.png")
    axes = _visible(fig)
    assert len(axes) == 4
    assert [a.get_title() for a in axes[2:]] == ["NPDE vs TIME", "NPDE vs EPRED"]
    assert "global p" in _title(fig)
    if name == "virtual_trial":
        assert "censored (imputed)" in axes[2].get_legend_handles_labels()[1]
        _saved(plot_npde(res, output="bcells"), tmp_path / "npde_bcells.png")


@pytest.mark.parametrize("which", ["vpc", "pcvpc"])
def test_vpc_figure(diagnostics, which, tmp_path):
    name, _, vpc, pcvpc = diagnostics
    data = vpc if which == "vpc" else pcvpc
    outputs = None if name == "theophylline" else ["car19_qpcr", "bcells", "igg"]
    fig = plot_vpc(data, outputs=outputs)
    _saved(fig, tmp_path / f"{which}.png")
    n_out = 1 if outputs is None else len(outputs)
    axes = _visible(fig)
    assert len(axes) == 2 * n_out   # a percentile panel over a below-LLOQ panel per output
    assert [a.get_ylabel() for a in axes[n_out:]] == ["fraction < LLOQ"] * n_out
    top = axes[0]
    labels = top.get_legend_handles_labels()[1]
    assert {"observed P5", "observed P50", "observed P95"} <= set(labels)
    assert any(lab.startswith("simulated 95 % interval of P50") for lab in labels)
    title = _title(fig)
    assert ("Prediction-corrected VPC" in title) == (which == "pcvpc") and "bin edges" in title
    assert all("of TIME, edges" in a.get_title() for a in axes[:n_out])   # the binning, stated per output
    if name == "virtual_trial":
        assert top.get_yscale() == "log" and axes[2].get_yscale() == "linear"   # car19_qpcr log, igg not
        assert "LLOQ" in labels


# -- random effects and the parameter table ------------------------------------------------------
def test_eta_distributions(case, tmp_path):
    name, _, _, fit = case
    fig = plot_eta_distributions(fit)
    _saved(fig, tmp_path / "etas.png")
    axes = _visible(fig)
    assert len(axes) == fit.etas.shape[1] == (3 if name == "theophylline" else 9)
    assert all("shrinkage" in a.get_title() and "CV" in a.get_title() for a in axes)


def test_eta_covariates(case, tmp_path):
    name, _, data, fit = case
    covs = None if name == "theophylline" else ["WT", "DOSE_LEVEL"]
    fig = plot_eta_covariates(fit, data, covariates=covs)
    _saved(fig, tmp_path / "eta_cov.png")
    n_cov = 1 if name == "theophylline" else 2   # theophylline: WT
    assert len(_visible(fig)) == fit.etas.shape[1] * n_cov
    with pytest.raises(ValueError, match="not a column of the dataset"):
        plot_eta_covariates(fit, data, covariates=["AGE"])


def test_parameter_table(case, tmp_path):
    name, _, _, fit = case
    fig = plot_parameter_table(fit)
    _saved(fig, tmp_path / "table.png")
    ax = _visible(fig)[0]
    table = ax.tables[0]
    cells = table.get_celld()
    n_rows = max(r for r, _ in cells) + 1
    assert n_rows == len(fit.estimates) + 1
    header = [cells[(0, c)].get_text().get_text() for c in range(6)]
    assert header == ["parameter", "estimate", "RSE %", "95 % CI", "CV %", "shrinkage %"]
    text = " ".join(t.get_text() for t in ax.texts)
    if name == "theophylline":
        assert "covariance: sandwich; condition number" in text and "R positive definite True" in text
        omega_ka = next(r for r in range(1, n_rows) if cells[(r, 0)].get_text().get_text() == "omega(ka)")
        cv = float(cells[(omega_ka, 4)].get_text().get_text())
        assert cv == pytest.approx(fit.omega_cv_percent["ka"], abs=0.06)   # ~70 % (nlmixr2 FOCEi)
    else:
        assert "covariance step: not run" in text
