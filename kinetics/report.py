"""The analysis a modeller hands in: one self-contained HTML report of a population fit, with CSV tables.

:func:`run_analyses` computes what the report shows beyond the fit (NPDE, VPC, B-cell recovery per
patient and for a new patient, dose sweep, tornado, Sobol' indices, exposure metrics), each stage
seeded from one ``seed``; :func:`write_report` writes ``report.html`` (figures embedded as base64
PNG, equations as MathML, no external resources: it opens offline and can be mailed as one file)
and the CSV tables to a folder. ``kinetics report SPEC`` runs a fit specification and then both.

Sections: model (equations rendered from the model file, parameter table with units and sources),
data (subjects, observations per output, fraction censored, exposure metrics), estimates (table,
random effects, covariance health), diagnostics (individual fits, goodness of fit, NPDE, VPC,
random effects), predictions (B-cell recovery per patient vs observed, new-patient distribution),
dose sensitivity (dose sweep, power-model slopes, tornado, Sobol'), and reproducibility (software
versions, seeds, settings, timings).
"""

from __future__ import annotations

import base64
import dataclasses
import html
import io
import math
import platform
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from kinetics.errors import KineticsError

__all__ = ["REPORT_SECTIONS", "ReportAnalyses", "ReportResults", "run_analyses", "software_versions", "write_report"]

#: The section ids of the report, in order (each is an ``<section id=...>`` of the HTML).
REPORT_SECTIONS = ("model", "data", "estimates", "diagnostics", "predictions", "sensitivity", "software")
_STAGES = ("npde", "vpc", "recovery", "new_patient", "dose_sweep", "tornado", "sobol", "nca")


@dataclass(frozen=True)
class ReportAnalyses:
    """What :func:`run_analyses` computes, and how much (0 skips a simulation-based stage).

    Attributes
    ----------
    npde_sims
        Simulated replicates per subject for the NPDE (K/2 must exceed a subject's number of observations).
    vpc_sims
        Simulated replicates of the dataset for the VPC.
    recovery_output, recovery_threshold
        The B-cell output and the recovery level (its unit); the recovery stages are skipped when the
        model has no such output.
    recovery_draws
        Draws of each patient's etas from their conditional distribution, for the prediction interval.
    new_patients
        Simulated new patients for the recovery distribution (at ``doses``).
    doses
        Dose target -> amount of one bolus at time 0 for the new patient, the tornado and the Sobol'
        analysis; None: the median total dose per target in the data.
    sweep_factors, sweep_patients
        Dose sweep: every combination of ``doses`` x each factor per target, with that many virtual patients.
    sweep_outcomes
        Names in :data:`kinetics.analysis.OUTCOMES`; None: those of the default dose sweep whose outputs
        the model has (else Cmax and AUC0-28 of the model's first output).
    sensitivity_outcome
        Outcome of the tornado and the Sobol' analysis; None: ``recovery_time`` when the model has the
        recovery output, else the first sweep outcome.
    sobol_base
        Sobol' base samples N (a power of 2; N (d + 2) solves).
    nca_outputs
        Outputs for the exposure metrics; None: the outputs that read a dosed state directly (else all).
    """

    npde_sims: int = 300
    vpc_sims: int = 100
    recovery_output: str = "bcells"
    recovery_threshold: float = 1.0
    recovery_draws: int = 100
    new_patients: int = 300
    doses: Mapping[str, float] | None = None
    sweep_factors: tuple[float, ...] = (0.5, 1.0, 2.0)
    sweep_patients: int = 60
    sweep_outcomes: tuple[str, ...] | None = None
    sensitivity_outcome: str | None = None
    sobol_base: int = 64
    nca_outputs: tuple[str, ...] | None = None


@dataclass(frozen=True)
class ReportResults:
    """What :func:`run_analyses` computed (None where a stage was skipped; ``notes`` say why)."""

    analyses: ReportAnalyses
    seed: int
    seeds: Mapping[str, int]
    doses: Mapping[str, float]
    npde: object | None = None
    vpc: object | None = None
    patient_recovery: pd.DataFrame | None = None
    observed_recovery: pd.DataFrame | None = None
    new_patient: object | None = None
    dose_sweep: object | None = None
    power_models: pd.DataFrame | None = None
    tornado: pd.DataFrame | None = None
    sobol: object | None = None
    nca: Mapping[str, pd.DataFrame] = field(default_factory=dict)
    timings: Mapping[str, float] = field(default_factory=dict)
    notes: tuple[str, ...] = ()


# -- analyses -----------------------------------------------------------------------------------
def _stage_seeds(seed: int) -> dict[str, int]:
    """Independent seeds per stage from one seed (numpy SeedSequence), so stages can be rerun alone."""
    state = np.random.SeedSequence(int(seed)).generate_state(len(_STAGES))
    return {name: int(s) for name, s in zip(_STAGES, state)}


def _default_doses(data, model) -> dict[str, float]:
    totals: dict[str, list[float]] = {}
    for s in data.subjects:
        per: dict[str, float] = {}
        for d in s.doses:
            per[d.target] = per.get(d.target, 0.0) + float(d.amount)
        for t, a in per.items():
            totals.setdefault(t, []).append(a)
    return {t: float(np.median(v)) for t, v in totals.items() if t in model.dose_target_names}


def _nca_outputs(model, data, names: Sequence[str] | None) -> list[str]:
    measured = data.output_names()
    if names is not None:
        return [o for o in names if o in measured]
    dosed = {d.state for d in model.model.dose_targets}
    direct = [o.name for o in model.model.outputs if o.name in measured
              and {str(s) for s in o.expression.free_symbols} & dosed]
    return direct or list(measured)


def run_analyses(fit, model, data, analyses: ReportAnalyses | None = None, *, seed: int = 0,
                 progress: Callable[[str], None] | None = None) -> ReportResults:
    """Compute the report's analyses of a population fit.

    Parameters
    ----------
    fit, model, data
        A :class:`~kinetics.fit.PopulationFit`, its compiled model and the dataset it was fitted to.
    analyses
        What to compute (default :class:`ReportAnalyses`).
    seed
        One seed; each stage gets its own from it (``ReportResults.seeds``).
    progress
        Called with a line before each stage (e.g. ``print``).

    Returns
    -------
    ReportResults
        A stage that cannot run on this model or data (no B-cell output, a solve that fails) is
        skipped with a note instead of stopping the report.
    """
    from kinetics.analysis import (default_sweep_outcomes, dose_sweep, nca_table, observed_recovery_intervals,
                                   predict_patient_recovery, recovery_distribution, sobol_indices, tornado)
    from kinetics.fit import npde, vpc_data
    from kinetics.solve import Dose

    a = analyses or ReportAnalyses()
    seeds = _stage_seeds(seed)
    doses = dict(a.doses) if a.doses is not None else _default_doses(data, model)
    schedule = [Dose(0.0, amount, target) for target, amount in doses.items() if amount > 0]
    notes: list[str] = []
    timings: dict[str, float] = {}
    out: dict[str, object] = {}
    say = progress or (lambda _line: None)
    has_recovery = a.recovery_output in model.output_names

    def stage(name: str, text: str, func: Callable[[], object]) -> object:
        say(text)
        tic = time.perf_counter()
        try:
            return func()
        except (KineticsError, ValueError, np.linalg.LinAlgError) as exc:
            notes.append(f"{name}: skipped ({type(exc).__name__}: {exc})")
            return None
        finally:
            timings[name] = timings.get(name, 0.0) + time.perf_counter() - tic

    if a.npde_sims > 0:
        out["npde"] = stage("npde", f"NPDE ({a.npde_sims} simulations per subject)",
                            lambda: npde(fit, model, data, n_sim=a.npde_sims, seed=seeds["npde"]))
    if a.vpc_sims > 0:
        out["vpc"] = stage("vpc", f"VPC ({a.vpc_sims} simulated trials)",
                           lambda: vpc_data(fit, model, data, n_sim=a.vpc_sims, seed=seeds["vpc"]))
    if has_recovery:
        out["observed_recovery"] = observed_recovery_intervals(data, output=a.recovery_output,
                                                               threshold=a.recovery_threshold)
        out["patient_recovery"] = stage(
            "recovery", f"B-cell recovery of each patient ({a.recovery_draws} draws each)",
            lambda: predict_patient_recovery(fit, model, data, threshold=a.recovery_threshold,
                                             output=a.recovery_output, n_draws=a.recovery_draws,
                                             seed=seeds["recovery"]))
        if a.new_patients > 0 and schedule:
            out["new_patient"] = stage(
                "new_patient", f"recovery distribution of a new patient ({a.new_patients} simulated)",
                lambda: recovery_distribution(model, schedule, fit=fit, n_patients=a.new_patients,
                                              threshold=a.recovery_threshold, output=a.recovery_output,
                                              seed=seeds["new_patient"]))
    else:
        notes.append(f"recovery: skipped (the model has no output '{a.recovery_output}')")
    outcomes = ({n: n for n in a.sweep_outcomes} if a.sweep_outcomes is not None
                else default_sweep_outcomes(model))
    if a.sweep_patients > 0 and doses and outcomes:
        grid = {t: sorted({v * f for f in a.sweep_factors}) for t, v in doses.items()}
        sweep = stage("dose_sweep", f"dose sweep ({' x '.join(str(len(g)) for g in grid.values())} dose levels x "
                                    f"{a.sweep_patients} virtual patients, {len(outcomes)} outcomes)",
                      lambda: dose_sweep(model, grid, outcomes=outcomes, fit=fit, n_patients=a.sweep_patients,
                                         seed=seeds["dose_sweep"]))
        out["dose_sweep"] = sweep
        if sweep is not None:
            power, power_notes = sweep.power_models()
            out["power_models"] = power if len(power) else None
            notes.extend(power_notes)
    sens = a.sensitivity_outcome or ("recovery_time" if has_recovery and "recovery_time" in outcomes
                                     else next(iter(outcomes), None))
    sens_spec = outcomes.get(sens, sens) if sens is not None else None
    if sens_spec is not None and len(fit.omega):
        ranges = {f"dose:{t}": (v * min(a.sweep_factors), v * max(a.sweep_factors)) for t, v in doses.items()
                  if v > 0 and min(a.sweep_factors) <= 1 <= max(a.sweep_factors)}
        span = f"{min(a.sweep_factors):g}..{max(a.sweep_factors):g}"
        tor = stage("tornado", f"tornado of {sens} (omega ranges, dose x {span})",
                    lambda: tornado(model, sens_spec, ranges or None, omega=fit, doses=schedule))
        if tor is not None:
            tor.attrs["outcome"] = sens
        out["tornado"] = tor
        if a.sobol_base > 0:
            out["sobol"] = stage("sobol", f"Sobol' indices of {sens} (N = {a.sobol_base})",
                                 lambda: sobol_indices(model, outcome=sens_spec, omega=fit, doses=schedule,
                                                       n_base=a.sobol_base, rng=seeds["sobol"], progress=False))
    nca: dict[str, pd.DataFrame] = {}
    for o in _nca_outputs(model, data, a.nca_outputs):
        t = stage("nca", f"exposure metrics (NCA) of {o}", lambda o=o: nca_table(data, o))
        if t is not None:
            nca[o] = t
    return ReportResults(analyses=a, seed=int(seed), seeds=seeds, doses=doses, nca=nca, timings=timings,
                         notes=tuple(notes), **out)


# -- writing ------------------------------------------------------------------------------------
def write_report(fit, model, data, out_dir: str | Path, *, analyses: ReportAnalyses | None = None,
                 results: ReportResults | None = None, seed: int = 0, title: str | None = None,
                 spec_path: str | Path | None = None, figures_dir: str | Path | None = None,
                 progress: Callable[[str], None] | None = None, dpi: int = 80) -> Path:
    """Write ``report.html`` and the CSV tables of a population fit to ``out_dir``.

    Parameters
    ----------
    fit, model, data
        A :class:`~kinetics.fit.PopulationFit`, its compiled model and the dataset it was fitted to.
    out_dir
        Folder (created if needed).
    analyses, results
        What to compute (:class:`ReportAnalyses`), or what :func:`run_analyses` already computed.
    seed
        Seed of :func:`run_analyses` (when ``results`` is not given); stated in the report.
    title, spec_path
        Report title, and the fit specification it came from (stated in the report).
    figures_dir
        Also write each figure as a PNG file there.
    progress
        Called with a line per stage.
    dpi
        Resolution of the embedded figures.

    Returns
    -------
    pathlib.Path
        The HTML file. Tables written next to it: ``estimates.csv``, ``predictions.csv``, ``etas.csv``
        and, where computed, ``recovery_patients.csv``, ``recovery_new_patient.csv``, ``dose_sweep.csv``,
        ``dose_sweep_values.csv``, ``power_models.csv``, ``tornado.csv``, ``sobol.csv``, ``nca.csv``,
        ``npde.csv``, ``vpc.csv``.
    """
    say = progress or (lambda _line: None)
    tic = time.perf_counter()
    if results is None:
        results = run_analyses(fit, model, data, analyses, seed=seed, progress=progress)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fig_dir = Path(figures_dir) if figures_dir is not None else None
    if fig_dir is not None:
        fig_dir.mkdir(parents=True, exist_ok=True)
    say("writing tables")
    tables = _write_tables(fit, results, out)
    say("drawing figures")
    figures = _Figures(dpi, fig_dir)
    body = [_model_section(model, fit), _data_section(data, model, results, figures),
            _estimates_section(fit, figures), _diagnostics_section(fit, model, data, results, figures),
            _predictions_section(results, model, figures), _sensitivity_section(results, model, figures),
            _software_section(fit, results, spec_path, tables, time.perf_counter() - tic)]
    heading = title or f"Population analysis: {model.name}"
    page = _PAGE.format(title=html.escape(heading), css=_CSS, nav=_nav(), body="\n".join(body),
                        subtitle=html.escape(f"{fit.n_subjects} subjects, {fit.n_observations} observations; "
                                             f"{_method(fit)}; {'converged' if fit.success else 'NOT converged'}"))
    path = out / "report.html"
    path.write_text(page, encoding="utf-8")
    return path


class _Figures:
    """Renders figures to base64 PNG ``<img>`` tags (and optional files); a figure that fails to draw
    becomes a note in the report instead of stopping it."""

    def __init__(self, dpi: int, folder: Path | None):
        self.dpi, self.folder, self.count = dpi, folder, 0

    def img(self, name: str, make: Callable[[], object], caption: str = "") -> str:
        try:
            fig = make()
        except (KineticsError, ValueError) as exc:
            return f'<p class="note">Figure {html.escape(name)} not drawn: {html.escape(str(exc))}</p>'
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=self.dpi)
        png = buf.getvalue()
        if self.folder is not None:
            (self.folder / f"{name}.png").write_bytes(png)
        self.count += 1
        data = base64.b64encode(png).decode("ascii")
        cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
        return (f'<figure id="fig-{html.escape(name)}"><img alt="{html.escape(name)}" '
                f'src="data:image/png;base64,{data}">{cap}</figure>')


def _method(fit) -> str:
    from kinetics.fit._results import METHOD_LABELS

    return METHOD_LABELS.get(fit.method, fit.method)


def _write_tables(fit, r: ReportResults, out: Path) -> list[str]:
    written: dict[str, pd.DataFrame] = {
        "estimates.csv": fit.estimates,
        "predictions.csv": fit.predictions,
        "etas.csv": fit.etas.join(fit.individual_params).reset_index(),
    }
    if r.patient_recovery is not None:
        rec = r.patient_recovery.copy()
        if r.observed_recovery is not None:
            obs = r.observed_recovery.rename(columns={"left": "observed_left", "right": "observed_right",
                                                      "status": "observed_status"})
            rec = rec.assign(ID=rec["ID"].astype(str)).merge(obs.assign(ID=obs["ID"].astype(str)), on="ID", how="left")
        written["recovery_patients.csv"] = rec
    if r.new_patient is not None:
        q, p, failed = _recovery_stats(r.new_patient)
        written["recovery_new_patient.csv"] = pd.DataFrame(
            [{"statistic": f"quantile {k:g}", "value": v} for k, v in q.items()]
            + [{"statistic": f"P(recovered by day {k:g})", "value": v} for k, v in p.items()]
            + [{"statistic": "failed solves (left out)", "value": failed}])
    if r.dose_sweep is not None:
        written["dose_sweep.csv"] = r.dose_sweep.summary
        written["dose_sweep_values.csv"] = r.dose_sweep.values
    if r.power_models is not None:
        written["power_models.csv"] = r.power_models
    if r.tornado is not None:
        written["tornado.csv"] = r.tornado
    if r.sobol is not None:
        written["sobol.csv"] = r.sobol.to_frame()
    if r.nca:
        written["nca.csv"] = pd.concat([t.assign(output=o) for o, t in r.nca.items()], ignore_index=True)
    if r.npde is not None:
        written["npde.csv"] = r.npde.table
    if r.vpc is not None:
        written["vpc.csv"] = r.vpc.table
    for name, df in written.items():
        df.to_csv(out / name, index=False)
    return list(written)


# -- sections -----------------------------------------------------------------------------------
def _esc(x) -> str:
    return html.escape(str(x))


def _table(df: pd.DataFrame, float_format: str = "{:.4g}") -> str:
    def fmt(v):
        if isinstance(v, (float, np.floating)):
            return "" if math.isnan(v) else float_format.format(v)
        return str(v)

    head = "".join(f"<th>{_esc(c)}</th>" for c in df.columns)
    rows = "".join("<tr>" + "".join(f"<td>{_esc(fmt(v))}</td>" for v in row) + "</tr>"
                   for row in df.itertuples(index=False))
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table></div>'


def _section(sid: str, title: str, parts: Sequence[str]) -> str:
    return f'<section id="{sid}"><h2>{_esc(title)}</h2>\n' + "\n".join(parts) + "\n</section>"


def _mathml(expr) -> str:
    from sympy.printing.mathml import mathml

    # products of multi-letter names (kmax_19 * E19) are unreadable when juxtaposed: show a centred dot
    return mathml(expr, printer="presentation").replace("<mo>&InvisibleTimes;</mo>", "<mo>&#x22C5;</mo>")


def _equation(lhs: str, expr) -> str:
    try:
        rhs = _mathml(expr)
    except Exception:  # noqa: BLE001 - the printer is not ours; fall back to text rather than lose the report
        return f"<code>{_esc(lhs)} = {_esc(expr)}</code>"
    return f'<math display="block">{lhs}<mo>=</mo>{rhs}</math>'


def _ddt(state: str) -> str:
    import sympy as sp

    name = _mathml(sp.Symbol(state))
    return f"<mfrac><mrow><mi>d</mi>{name}</mrow><mrow><mi>d</mi><mi>t</mi></mrow></mfrac>"


def _model_section(model, fit) -> str:
    import sympy as sp

    m = model.model
    parts = [f"<p><b>{_esc(m.name)}</b>: {_esc(m.description)}</p>",
             f"<p>Time unit: {_esc(m.time_unit or '-')}; model file: <code>{_esc(m.source)}</code></p>"]
    if m.references:
        parts.append("<details><summary>References</summary><ul>" +
                     "".join(f"<li>{_esc(r)}</li>" for r in m.references) + "</ul></details>")
    rows = []
    for st, ode in zip(m.states, m.odes):
        rows.append(f"<tr><td>{_esc(st.name)}</td><td>{_equation(_ddt(st.name), ode)}</td>"
                    f"<td>{_equation(_mathml(sp.Symbol(st.name)) + '<mo>(</mo><mn>0</mn><mo>)</mo>', st.initial)}</td>"
                    f"<td>{_esc(st.unit)}</td><td>{_esc(st.description)}</td></tr>")
    parts.append("<h3>Differential equations</h3><div class=\"scroll\"><table class=\"eq\"><thead><tr><th>state</th>"
                 "<th>equation</th><th>initial value</th><th>unit</th><th>meaning</th></tr></thead><tbody>"
                 + "".join(rows) + "</tbody></table></div>")
    if m.outputs:
        rows = [f"<tr><td>{_esc(o.name)}</td><td>{_equation(_mathml(sp.Symbol(o.name)), o.expression)}</td>"
                f"<td>{_esc(o.unit)}</td><td>{_esc(o.description)}</td></tr>" for o in m.outputs]
        parts.append("<h3>Outputs (observation equations)</h3><div class=\"scroll\"><table class=\"eq\"><thead><tr>"
                     "<th>output</th><th>equation</th><th>unit</th><th>meaning</th></tr></thead><tbody>"
                     + "".join(rows) + "</tbody></table></div>")
    if m.dose_targets:
        rows = [f"<tr><td>{_esc(d.name)}</td><td>{_esc(d.state)}</td><td>{_esc(d.scale)}</td><td>{_esc(d.unit)}</td>"
                f"<td>{_esc(d.description)}</td></tr>" for d in m.dose_targets]
        parts.append("<h3>Dose targets</h3><table><thead><tr><th>target</th><th>state</th><th>scale</th>"
                     "<th>unit</th><th>meaning</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>")
    text = "\n".join([f"d{st.name}/dt = {ode}" for st, ode in zip(m.states, m.odes)]
                     + [f"{o.name} = {o.expression}" for o in m.outputs])
    parts.append(f"<details><summary>Equations as text</summary><pre>{_esc(text)}</pre></details>")
    cv = fit.omega_cv_percent if len(fit.omega) else {}
    prow = []
    for p in m.parameters:
        est = fit.theta.get(p.name)
        prow.append({"parameter": p.name, "value in the model file": p.value,
                     "estimate": est if est is not None else "fixed",
                     "BSV CV %": f"{cv[p.name]:.1f}" if p.name in cv else "",
                     "unit": p.unit, "bounds": f"[{p.lower:g}, {p.upper:g}]", "meaning": p.description,
                     "source": p.source})
    parts.append("<h3>Parameters</h3>" + _table(pd.DataFrame(prow)))
    return _section("model", "Model", parts)


def _data_section(data, model, r: ReportResults, figures: _Figures) -> str:
    rows = []
    for o in data.output_names():
        n = cens = 0
        for s in data.subjects:
            sel = np.array([x == o for x in s.outputs], dtype=bool)
            n += int(sel.sum())
            cens += int(np.count_nonzero(s.cens[sel]))
        rows.append({"output": o, "unit": next((x.unit for x in model.model.outputs if x.name == o), ""),
                     "observations": n, "censored": cens, "fraction censored": f"{cens / n:.3f}" if n else ""})
    doses: dict[str, list[float]] = {}
    for s in data.subjects:
        for d in s.doses:
            doses.setdefault(d.target, []).append(float(d.amount))
    times = np.concatenate([s.times for s in data.subjects]) if data.subjects else np.array([0.0])
    parts = [f"<p>Source: <code>{_esc(getattr(data, 'source', ''))}</code>. <b>{len(data.subjects)} subjects</b>, "
             f"{sum(x['observations'] for x in rows)} observations, times {times.min():g} to {times.max():g} "
             f"{_esc(model.model.time_unit)}; covariates: {_esc(', '.join(data.covariate_names) or 'none')}.</p>",
             "<h3>Observations per output</h3>" + _table(pd.DataFrame(rows))]
    if doses:
        drows = [{"target": t, "doses": len(v), "min": min(v), "median": float(np.median(v)), "max": max(v)}
                 for t, v in doses.items()]
        parts.append("<h3>Doses</h3>" + _table(pd.DataFrame(drows)))
    if r.nca:
        from kinetics.plot import plot_exposure_table

        units = {x.name: x.unit for x in model.model.outputs}
        parts.append("<h3>Exposure metrics (NCA of the observed profiles)</h3>")
        parts.append(figures.img("exposure_metrics", lambda: plot_exposure_table(
            r.nca, units=units, time_unit=model.model.time_unit or "time")))
        rules = next(iter(r.nca.values())).attrs.get("rules", "")
        if rules:
            parts.append(f'<p class="note">Rules: {_esc(rules)}</p>')
    return _section("data", "Data", parts)


def _estimates_section(fit, figures: _Figures) -> str:
    from kinetics.plot import plot_parameter_table

    parts = [f"<pre>{_esc(fit.summary())}</pre>"]
    est = fit.estimates[[c for c in ("name", "natural", "se_natural", "rse_percent", "ci_low", "ci_high")
                         if c in fit.estimates.columns]]
    parts.append("<h3>Parameter table</h3>" + _table(est))
    if len(fit.omega):
        cv = fit.omega_cv_percent
        parts.append("<h3>Random effects</h3>" + _table(pd.DataFrame(
            [{"parameter": n, "omega^2": fit.omega.loc[n, n], "CV %": cv[n],
              "shrinkage %": 100 * fit.eta_shrinkage[n]} for n in fit.omega.index])))
    cov = fit.covariance
    if cov is None:
        health = "Covariance step not run: no standard errors."
    else:
        health = (f"Covariance: {cov.kind}; {cov.message}. Condition number {cov.condition_number:.3g}; "
                  f"information/R positive definite: {cov.r_positive_definite}"
                  + ("" if cov.s is None else f"; S positive definite: {cov.s_positive_definite}")
                  + f"; usable: {cov.success}.")
    parts.append(f'<h3>Covariance health</h3><p class="{"ok" if cov is not None and cov.success else "warn"}">'
                 f"{_esc(health)}</p>")
    parts.append(figures.img("parameters", lambda: plot_parameter_table(fit)))
    return _section("estimates", "Estimates", parts)


def _diagnostics_section(fit, model, data, r: ReportResults, figures: _Figures) -> str:
    from kinetics.plot import (plot_eta_covariates, plot_eta_distributions, plot_goodness_of_fit,
                               plot_individual_fits, plot_npde, plot_vpc)

    outs = list(dict.fromkeys(fit.predictions["OUTPUT"].astype(str)))
    parts = ["<h3>Individual fits</h3>",
             figures.img("individual_fits", lambda: plot_individual_fits(fit, model=model, data=data))]
    parts.append("<h3>Goodness of fit</h3>")
    if len(outs) == 1:
        parts.append(figures.img("goodness_of_fit", lambda: plot_goodness_of_fit(fit)))
    else:
        for o in outs:
            parts.append(figures.img(f"goodness_of_fit_{o}", lambda o=o: plot_goodness_of_fit(fit, output=o)))
    if r.npde is not None:
        tests = r.npde.tests()
        parts.append("<h3>NPDE</h3>" + figures.img("npde", lambda: plot_npde(r.npde)))
        parts.append(f"<p>NPDE over all outputs: mean {tests.mean:.3f} (p {tests.p_mean:.3g}), variance "
                     f"{tests.variance:.3f} (p {tests.p_variance:.3g}), {_esc(tests.normality_test)} p "
                     f"{tests.p_normality:.3g}, global p {tests.p_global:.3g}.</p>")
    if r.vpc is not None:
        parts.append("<h3>Visual predictive check</h3>" + figures.img("vpc", lambda: plot_vpc(r.vpc)))
    if len(fit.omega):
        parts.append("<h3>Random effects</h3>" + figures.img("eta_distributions", lambda: plot_eta_distributions(fit)))
        if data.covariate_names:
            parts.append(figures.img("eta_covariates", lambda: plot_eta_covariates(fit, data)))
    return _section("diagnostics", "Diagnostics", parts)


def _predictions_section(r: ReportResults, model, figures: _Figures) -> str:
    from kinetics.plot import plot_recovery_comparison, plot_recovery_distribution

    unit = model.model.time_unit or "time"
    parts = []
    a = r.analyses
    if r.patient_recovery is None and r.new_patient is None:
        parts.append('<p class="note">No recovery predictions (see the notes below).</p>')
    if r.patient_recovery is not None:
        parts.append(f"<h3>Each patient's {_esc(a.recovery_output)} recovery (to {a.recovery_threshold:g})</h3>")
        parts.append(figures.img("recovery_patients", lambda: plot_recovery_comparison(
            r.patient_recovery, r.observed_recovery, distribution=r.new_patient, time_unit=unit)))
        tab = r.patient_recovery.copy()
        if r.observed_recovery is not None:
            o = r.observed_recovery
            tab = tab.assign(ID=tab["ID"].astype(str)).merge(
                o.assign(ID=o["ID"].astype(str)).rename(columns={"left": "observed after", "right": "observed by",
                                                                 "status": "observed"}), on="ID", how="left")
        parts.append(_table(tab.rename(columns={"time": "predicted", "low": "interval low", "high": "interval high"})))
        parts.append(f'<p class="note">Predicted: at the individual (EBE) parameters; interval: {a.recovery_draws} '
                     "draws of the etas from their conditional distribution given the patient's data. Observed: "
                     "between the last visit below and the first visit at or above the threshold.</p>")
    if r.new_patient is not None:
        d = r.new_patient
        dose_text = ", ".join(f"{t} {v:.3g}" for t, v in r.doses.items())
        parts.append(f"<h3>A new patient at {_esc(dose_text)}</h3>")
        parts.append(figures.img("recovery_new_patient", lambda: plot_recovery_distribution(d, time_unit=unit)))
        q, p, failed = _recovery_stats(d)
        parts.append("<p>Recovery time quantiles: " + ", ".join(f"{100 * k:g} %: {v:.1f}" for k, v in q.items())
                     + f" {_esc(unit)}. " + "; ".join(f"P(recovered by {k:g}) = {v:.2f}" for k, v in p.items())
                     + f". Rule: {_esc(d.rule)}. {failed} of {len(d.times)} failed solves left out. "
                     "Between-subject variability and parameter uncertainty "
                     "(the fit's covariance) included.</p>")
    return _section("predictions", "Predictions", parts)


def _recovery_stats(d) -> tuple[dict[float, float], dict[float, float], int]:
    """Quantiles and P(recovered by day) of a recovery distribution with failed solves (nan) left out
    (``RecoveryDistribution.quantiles`` would turn nan with a single failed solve)."""
    t = np.asarray(d.times, dtype=float)
    ok = t[np.isfinite(t)]
    if not ok.size:
        return {}, {}, int(t.size)
    q = {x: float(np.quantile(ok, x)) for x in (0.05, 0.25, 0.5, 0.75, 0.95)}
    p = {x: float(np.mean(ok <= x)) for x in (90.0, 180.0, 365.0)}
    return q, p, int(t.size - ok.size)


def _sensitivity_section(r: ReportResults, model, figures: _Figures) -> str:
    from kinetics.plot import plot_dose_sweep, plot_sobol, plot_tornado

    parts = []
    if r.dose_sweep is not None:
        s = r.dose_sweep
        parts.append("<h3>Dose sweep</h3>" + figures.img("dose_sweep", lambda: plot_dose_sweep(s)))
        summary = s.summary.copy()
        parts.append("<details><summary>Percentiles per dose level</summary>" + _table(summary) + "</details>")
        if r.power_models is not None:
            parts.append("<h4>Dose proportionality (power model log y = a + b log dose, within patients)</h4>"
                         + _table(r.power_models))
    if r.tornado is not None:
        name = r.tornado.attrs.get("outcome", "outcome")
        parts.append(f"<h3>Tornado: {_esc(name)}</h3>" + figures.img("tornado", lambda: plot_tornado(r.tornado)))
        parts.append("<details><summary>Tornado table</summary>" + _table(r.tornado) + "</details>")
    if r.sobol is not None:
        parts.append(f"<h3>Sobol' indices: {_esc(r.sobol.outcome)}</h3>"
                     + figures.img("sobol", lambda: plot_sobol(r.sobol)))
        parts.append(f"<pre>{_esc(r.sobol.summary())}</pre>")
    if not parts:
        parts.append('<p class="note">No sensitivity analyses (see the notes below).</p>')
    return _section("sensitivity", "Dose sensitivity", parts)


def software_versions() -> dict[str, str]:
    """Versions of Python and the packages the numbers depend on."""
    import importlib.metadata as md

    import kinetics

    out = {"python": platform.python_version(), "platform": platform.platform(), "kinetics": kinetics.__version__}
    for pkg in ("numpy", "scipy", "numba", "pandas", "sympy", "matplotlib", "SALib"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def _software_section(fit, r: ReportResults, spec_path, tables: list[str], seconds: float) -> str:
    versions = software_versions()
    parts = [_table(pd.DataFrame({"software": list(versions), "version": list(versions.values())}))]
    settings = {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in dataclasses.asdict(r.analyses).items()}
    parts.append(f"<p><b>Seed {r.seed}</b> (stage seeds from numpy SeedSequence: "
                 f"{_esc(', '.join(f'{k} {v}' for k, v in r.seeds.items()))}).</p>")
    parts.append(f"<p>Settings: <code>{_esc(settings)}</code>; doses of the new patient, tornado and Sobol': "
                 f"<code>{_esc(dict(r.doses))}</code>.</p>")
    if spec_path is not None:
        parts.append(f"<p>Fit specification: <code>{_esc(spec_path)}</code> (rerun: <code>kinetics report "
                     f"{_esc(spec_path)} --seed {r.seed}</code>).</p>")
    parts.append(f"<p>Fit: {_esc(_method(fit))}, {fit.n_iterations} iterations, {fit.run_time_s:.1f} s. Analyses: "
                 + _esc(", ".join(f"{k} {v:.1f} s" for k, v in r.timings.items()) or "none")
                 + f". Report writing {seconds:.1f} s. Command: <code>{_esc(' '.join(sys.argv))}</code></p>")
    parts.append(f"<p>Tables written next to this file: {_esc(', '.join(tables))}.</p>")
    if r.notes:
        parts.append("<h3>Notes</h3><ul>" + "".join(f"<li>{_esc(n)}</li>" for n in r.notes) + "</ul>")
    return _section("software", "Reproducibility", parts)


def _nav() -> str:
    names = {"model": "Model", "data": "Data", "estimates": "Estimates", "diagnostics": "Diagnostics",
             "predictions": "Predictions", "sensitivity": "Dose sensitivity", "software": "Reproducibility"}
    return " · ".join(f'<a href="#{s}">{names[s]}</a>' for s in REPORT_SECTIONS)


_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0 auto; max-width: 1200px;
       padding: 0 1.2em 3em; color: #222; line-height: 1.4; }
header { border-bottom: 2px solid #345; margin-bottom: 1em; }
nav { font-size: 0.95em; margin: 0.4em 0 0.8em; }
h2 { border-bottom: 1px solid #bbb; margin-top: 2em; }
table { border-collapse: collapse; font-size: 0.82em; margin: 0.5em 0; }
th, td { border: 1px solid #ccc; padding: 2px 6px; text-align: left; vertical-align: top; }
th { background: #eee; }
table.eq td { vertical-align: middle; }
.scroll { overflow-x: auto; }
figure { margin: 1em 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #ddd; }
pre { background: #f6f6f6; padding: 0.6em; overflow-x: auto; font-size: 0.8em; }
.note { color: #555; font-size: 0.9em; }
.warn { color: #a40; font-weight: bold; }
.ok { color: #262; }
math { font-size: 1.05em; }
"""

_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>{css}</style>
</head>
<body>
<header><h1>{title}</h1><p>{subtitle}</p><nav>{nav}</nav></header>
{body}
</body>
</html>
"""
