"""The self-contained report (kinetics.report) and the analysis figures (kinetics.plot._analysis), written from
two cheap fits: theophylline by FOCE-I (as tests/fit/test_population.py; nlmixr2's OFV 116.80) and the virtual
lupus trial's objective at its true values (fits/data/virtual_trial.json: a PopulationFit without estimation).

Expected values: the data summary against fits/data/README.md ("B cells 45.0 %" censored, 15 subjects,
1,320 observations) and the theophylline data (12 subjects, 132 concentrations, none censored); the
CSV tables against the fit objects they were written from; panel and bar counts from each figure
function's documented layout. The HTML is checked for external resources by parsing it, and opened in
headless Chromium (Debian's ``chromium``) to check that every embedded image decodes and renders.
"""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.image as mpimg  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

import kinetics  # noqa: E402
from kinetics.cli import main as cli_main  # noqa: E402
from kinetics.plot import (plot_dose_sweep, plot_exposure_table, plot_recovery_comparison,  # noqa: E402
                           plot_recovery_distribution, plot_sobol, plot_tornado)
from kinetics.report import REPORT_SECTIONS, ReportAnalyses, run_analyses, write_report  # noqa: E402
from tests.references import shared_data  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
FITS = REPO / "fits" / "data"
SMALL = ReportAnalyses(npde_sims=200, vpc_sims=20, recovery_draws=20, new_patients=60, sweep_patients=8,
                       sweep_factors=(0.5, 1.0, 2.0), sobol_base=8)


# -- fixtures ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def theoph(tmp_path_factory):
    model = kinetics.load_model("oral_1cmt")
    data = kinetics.read_dataset(shared_data("theoph_nonmem.csv"))
    fit = kinetics.fit_population(model, data, estimate={"ka": np.exp(0.45), "CL": np.exp(1.0), "V": np.exp(3.45)},
                                  random_effects={"ka": 0.6, "CL": 0.3, "V": 0.1},
                                  error={"conc": {"kind": "additive", "add": 0.7}})
    results = run_analyses(fit, model, data, SMALL, seed=3)
    out = tmp_path_factory.mktemp("theoph_report")
    path = write_report(fit, model, data, out, results=results, seed=3, figures_dir=out / "figures")
    return dict(model=model, data=data, fit=fit, results=results, path=path)


@pytest.fixture(scope="module")
def lupus(tmp_path_factory):
    model = kinetics.load_model("dual_car_sle")
    data = kinetics.read_dataset(FITS / "virtual_trial.csv")
    spec = json.loads((FITS / "virtual_trial.json").read_text())
    omega = spec["random_effects"]["omega_variance"]
    fit = kinetics.evaluate_objective(model, data, params={k: spec["typical_values"][k] for k in omega},
                                      random_effects=omega, error=spec["error"])
    results = run_analyses(fit, model, data, SMALL, seed=5)
    out = tmp_path_factory.mktemp("lupus_report")
    path = write_report(fit, model, data, out, results=results, seed=5)
    return dict(model=model, data=data, fit=fit, results=results, path=path)


CASES = ["theoph", "lupus"]


@pytest.fixture(params=CASES)
def case(request):
    return request.getfixturevalue(request.param)


class _Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def _tags(path: Path) -> list[tuple[str, dict]]:
    p = _Tags()
    p.feed(path.read_text(encoding="utf-8"))
    return p.tags


# -- the HTML ------------------------------------------------------------------------------------
def test_html_is_self_contained(case):
    tags = _tags(case["path"])
    for tag, attrs in tags:
        for key in ("src", "href", "data", "srcset", "poster", "action"):
            value = (attrs.get(key) or "").strip()
            assert not re.match(r"(?i)(https?:|//|file:|ftp:)", value), f"<{tag} {key}={value[:60]!r}> is external"
            if key == "href" and value:
                assert value.startswith("#"), f"<{tag} href={value!r}>: only in-page links"
        assert tag not in ("link", "script", "iframe", "object", "embed"), f"<{tag}> in the report"
    assert "@import" not in case["path"].read_text() and "url(" not in case["path"].read_text()


def test_every_image_is_an_embedded_nonblank_png(case):
    imgs = [a for t, a in _tags(case["path"]) if t == "img"]
    assert len(imgs) >= 8   # parameters, individual fits, GOF, NPDE, VPC, eta panels, dose sweep, tornado, ...
    for a in imgs:
        src = a["src"]
        assert src.startswith("data:image/png;base64,"), src[:40]
        png = base64.b64decode(src.split(",", 1)[1], validate=True)
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        pixels = mpimg.imread(io.BytesIO(png), format="png")
        assert pixels.shape[0] > 50 and pixels.shape[1] > 50
        assert pixels[..., :3].std() > 0.01, f"{a.get('alt')}: blank image"


def test_sections_and_model_equations(case):
    text = case["path"].read_text()
    ids = [a.get("id") for t, a in _tags(case["path"]) if t == "section"]
    assert ids == list(REPORT_SECTIONS)
    m = case["model"].model
    assert text.count('<math display="block">') >= 2 * len(m.states) + len(m.outputs)   # ODE + initial value each
    for st, ode in zip(m.states, m.odes):
        assert f"d{st.name}/dt = {ode}" in text   # the plain-text rendering, from the model's own expressions
    for p in m.parameters:
        assert f"<td>{p.name}</td>" in text
    for o in m.outputs:
        assert o.name in text


def test_software_versions_and_seed(case):
    import numba
    import scipy

    text = case["path"].read_text()
    for v in (np.__version__, scipy.__version__, numba.__version__, kinetics.__version__):
        assert f"<td>{v}</td>" in text
    assert f"<b>Seed {case['results'].seed}</b>" in text


def test_data_summary_theophylline(theoph):
    text = theoph["path"].read_text()
    assert "<b>12 subjects</b>, 132 observations" in text
    assert "<td>conc</td><td>mg/L</td><td>132</td><td>0</td><td>0.000</td>" in text


def test_data_summary_virtual_trial(lupus):
    # fits/data/README.md: 15 subjects, 1,320 observations; B cells 45.0 % censored (81 of 180)
    text = lupus["path"].read_text()
    assert "<b>15 subjects</b>, 1320 observations" in text
    assert "<td>bcells</td><td>cells/uL</td><td>180</td><td>81</td><td>0.450</td>" in text


def test_csv_tables_match_the_fit(case):
    out, fit = case["path"].parent, case["fit"]
    est = pd.read_csv(out / "estimates.csv")
    assert list(est["name"]) == list(fit.estimates["name"])
    np.testing.assert_allclose(est["natural"], fit.estimates["natural"], rtol=1e-12)
    pred = pd.read_csv(out / "predictions.csv")
    assert len(pred) == fit.n_observations
    etas = pd.read_csv(out / "etas.csv")
    assert len(etas) == fit.n_subjects
    assert all(c in etas.columns for c in fit.etas.columns)
    r = case["results"]
    sweep = pd.read_csv(out / "dose_sweep.csv")
    assert len(sweep) == len(r.dose_sweep.summary)
    assert (out / "tornado.csv").exists() and (out / "sobol.csv").exists() and (out / "nca.csv").exists()


def test_recovery_tables_of_the_virtual_trial(lupus):
    out = lupus["path"].parent
    rec = pd.read_csv(out / "recovery_patients.csv")
    assert len(rec) == 15
    # observed intervals come from the data's B-cell visits (fits/data/README.md: every subject is below the
    # LLOQ of 1 cell/uL at days 7-56 and none from day 365), so each recovered between day 56 and 365
    assert (rec["observed_status"] == "recovered").all()
    assert (rec["observed_left"] >= 56).all() and (rec["observed_right"] <= 365).all()
    new = pd.read_csv(out / "recovery_new_patient.csv")
    assert "quantile 0.5" in set(new["statistic"])


def test_theophylline_has_no_recovery_and_says_why(theoph):
    r = theoph["results"]
    assert r.patient_recovery is None and r.new_patient is None
    assert any("no output 'bcells'" in n for n in r.notes)
    assert "no output &#x27;bcells&#x27;" in theoph["path"].read_text()


def test_figures_dir_holds_the_embedded_figures(theoph):
    files = sorted(p.name for p in (theoph["path"].parent / "figures").glob("*.png"))
    n_img = sum(1 for t, _ in _tags(theoph["path"]) if t == "img")
    assert len(files) == n_img
    assert "dose_sweep.png" in files and "tornado.png" in files and "sobol.png" in files


# -- the analysis figures ------------------------------------------------------------------------
def _visible_axes(fig):
    return [a for a in fig.axes if a.get_visible()]


def test_dose_sweep_figure_has_one_panel_per_outcome(case):
    sweep = case["results"].dose_sweep
    fig = plot_dose_sweep(sweep)
    axes = _visible_axes(fig)
    assert len(axes) == len(sweep.outcomes)
    assert [a.get_title().split(" (")[0] for a in axes] == list(sweep.outcomes)
    assert all(a.get_xscale() == "log" for a in axes)
    # lupus: 3 x 3 grid: one line per BCMA dose (3 medians); theophylline: one target, one line
    n_lines = 3 if len(sweep.targets) == 2 else 1
    assert len([ln for ln in axes[0].get_lines() if ln.get_label().startswith("median")]) == n_lines
    # axis labels carry the outcome's unit from the model (e.g. recovery time in days, theophylline AUC in mg/L x h)
    for a, name in zip(axes, sweep.outcomes):
        unit = sweep.units[name]
        assert a.get_ylabel() == (f"{name} ({unit})" if unit else name)
    assert all(sweep.units.values())


def test_tornado_and_sobol_figures(case, tmp_path):
    tor = case["results"].tornado
    fig = plot_tornado(tor)
    ax = _visible_axes(fig)[0]
    assert len(ax.patches) == 2 * len(tor)     # a low and a high bar per input
    assert len(ax.get_yticklabels()) == len(tor)
    assert tor.attrs["unit"] and ax.get_xlabel().endswith(f"({tor.attrs['unit']})")
    sob = case["results"].sobol
    fig2 = plot_sobol(sob)
    assert len(_visible_axes(fig2)[0].patches) == 2 * len(sob.names)   # S1 and ST per input
    fig2.savefig(tmp_path / "sobol.png")
    assert (tmp_path / "sobol.png").stat().st_size > 5000


def test_recovery_figures(lupus, tmp_path):
    r = lupus["results"]
    fig = plot_recovery_comparison(r.patient_recovery, r.observed_recovery, distribution=r.new_patient)
    ax0, ax1 = _visible_axes(fig)
    assert len(ax1.get_yticklabels()) == 15
    labels = [ln.get_label() for ln in ax0.get_lines()]
    assert any(lab.startswith("observed (Turnbull") for lab in labels)
    assert any(lab.startswith("predicted, same patients") for lab in labels)
    fig2 = plot_recovery_distribution(r.new_patient)
    assert len(_visible_axes(fig2)) == 2
    for f, name in ((fig, "a.png"), (fig2, "b.png")):
        f.savefig(tmp_path / name)
        assert mpimg.imread(tmp_path / name)[..., :3].std() > 0.01


def test_exposure_table_figure(case):
    fig = plot_exposure_table(case["results"].nca)
    ax = _visible_axes(fig)[0]
    table = ax.tables[0]
    cells = table.get_celld()
    n_rows = 1 + len(case["results"].nca)
    assert max(r for r, _ in cells) + 1 == n_rows
    assert cells[(0, 2)].get_text().get_text() == "Cmax"
    # a table alone does not say its time unit: the figure must not guess days (theophylline is in hours)
    assert "times in the data's time unit" in fig._suptitle.get_text()
    fig_h = plot_exposure_table(case["results"].nca, units={"conc": "mg/L"}, time_unit="h")
    assert "times in h" in fig_h._suptitle.get_text() and "day" not in fig_h._suptitle.get_text()


def test_figure_functions_reject_wrong_input(lupus):
    r = lupus["results"]
    with pytest.raises(ValueError, match="outcome 'nope' is not in the sweep"):
        plot_dose_sweep(r.dose_sweep, outcomes=["nope"])
    with pytest.raises(ValueError, match="lacks column"):
        plot_recovery_comparison(r.patient_recovery.drop(columns=["low"]), r.observed_recovery)
    with pytest.raises(ValueError, match="empty"):
        plot_tornado(r.tornado.iloc[:0])


# -- the command ---------------------------------------------------------------------------------
def test_cli_report_refuses_a_fit_json(tmp_path, capsys):
    f = tmp_path / "fit.json"
    f.write_text("{}")
    assert cli_main(["report", str(f), "--out", str(tmp_path / "r")]) == 2
    assert "does not record its data" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_cli_report_bad_spec_exits_2(tmp_path, capsys):
    f = tmp_path / "bad.toml"
    f.write_text('model = "oral_1cmt"\nmethod = "focei"\n')
    assert cli_main(["report", str(f), "--out", str(tmp_path / "r")]) == 2
    assert str(f) in capsys.readouterr().err


def test_cli_report_runs_the_spec(tmp_path, capsys):
    # fits/theophylline_focei.toml (nlmixr2 OFV 116.80); simulation stages off to keep it short
    spec = REPO / "fits" / "theophylline_focei.toml"
    if not (spec.parent / "../../shared/data/theoph_nonmem.csv").resolve().is_file():
        pytest.skip("the shipped spec reads ../shared/data/theoph_nonmem.csv, not present here")
    rc = cli_main(["report", str(spec), "--out", str(tmp_path), "--npde-sims", "0", "--vpc-sims", "0",
                   "--sweep-patients", "0", "--sobol-base", "0"])
    out = capsys.readouterr().out
    assert rc == 0
    assert f"report: {(tmp_path / 'report.html').resolve()}" in out
    text = (tmp_path / "report.html").read_text()
    assert "theophylline_focei.toml" in text and "OFV (-2LL, no 2pi constant) 116.8" in text


# -- headless Chromium ---------------------------------------------------------------------------
_PROBE = """<script>
window.addEventListener('load', function () {
  var imgs = Array.from(document.images);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0 && i.naturalHeight > 0; }).length;
  var maths = document.getElementsByTagName('math').length;
  var m = document.createElement('pre'); m.id = 'probe';
  m.textContent = 'PROBE ' + imgs.length + ' ' + ok + ' ' + maths;
  document.body.appendChild(m);
});
</script>"""


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.mark.skipif(_chromium() is None, reason="headless browser check needs Debian's 'chromium' binary "
                                                "(apt-get install chromium); none of chromium, chromium-browser, "
                                                "google-chrome is on PATH")
def test_report_opens_and_images_render_in_headless_chromium(case, tmp_path):
    # the probe script is added to a copy: the report itself stays script-free
    html = case["path"].read_text().replace("</body>", _PROBE + "</body>")
    page = tmp_path / "probe.html"
    page.write_text(html)
    cmd = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=20000",
           "--dump-dom", page.as_uri()]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    m = re.search(r"PROBE (\d+) (\d+) (\d+)", run.stdout)
    assert m, "the page did not finish loading in Chromium: " + run.stderr[-2000:]
    n_img, n_ok, n_math = map(int, m.groups())
    expected = sum(1 for t, _ in _tags(case["path"]) if t == "img")
    assert n_img == expected and n_ok == n_img, f"{n_ok} of {n_img} images rendered"
    assert n_math >= 2 * len(case["model"].model.states)
    shot = tmp_path / "shot.png"
    run = subprocess.run([_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1200,2400",
                          f"--screenshot={shot}", case["path"].as_uri()], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and shot.exists(), run.stderr[-2000:]
    assert mpimg.imread(shot)[..., :3].std() > 0.05   # the page painted something, not a blank canvas


# -- untrusted input -----------------------------------------------------------------------------
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.binary(max_size=300), suffix=st.sampled_from([".toml", ".json", ".txt", ""]))
def test_cli_report_on_arbitrary_files_exits_2_without_crashing(tmp_path, capsys, raw, suffix):
    f = tmp_path / f"spec{suffix}"
    f.write_bytes(raw)
    assert cli_main(["report", str(f), "--out", str(tmp_path / "r")]) == 2
    assert "kinetics: error:" in capsys.readouterr().err
