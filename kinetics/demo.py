"""``make demo``: the main job on the bundled virtual lupus trial, end to end, with a progress line per stage.

Stages: (1) engine check: the Stein 2019 tisagenlecleucel typical profile against its published
values and 2,000 virtual patients solved in parallel; (2) read the virtual CD19 + BCMA co-infusion
trial (fits/data/virtual_trial.csv); (3) fit ``dual_car_sle`` to all patients by SAEM with M3
censoring (the shipped spec fits/virtual_trial_saem.toml); (4) compare the estimates with the truth
saved with the trial; (5-10) check the fit (NPDE, VPC), predict each patient's B-cell recovery and a
new patient's, run a dose sweep of both products, tornado and Sobol' indices, exposure metrics;
(11) write the self-contained report (HTML + CSV) to ``--out`` and print where it is.

``python -m kinetics.demo --quick`` runs the same pipeline with fewer SAEM iterations and simulations
(a smoke test, not a result).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import numpy as np
import pandas as pd

from kinetics.report import ReportAnalyses, run_analyses, write_report
from kinetics.solve import load_model

__all__ = ["DemoResult", "main", "run_demo", "truth_comparison", "DEMO_ANALYSES", "QUICK_ANALYSES"]

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "fits" / "virtual_trial_saem.toml"
TRUTH = ROOT / "fits" / "data" / "virtual_trial_truth.csv"

#: Stein et al. 2019 Table 1, between-subject variance omega^2 on the log scale.
STEIN_OMEGA2 = {"foldx": 2.4, "Tmax": 0.38, "Cmax": 0.65, "alpha": 0.91, "FB": 0.80, "beta": 0.86}
#: Published typical profile (issue 3; Stein 2019 closed form at Table 1 values), copies/ug.
STEIN_PUBLISHED = {7.0: 3105.26, 14.0: 11411.53, 28.0: 1373.56, 90.0: 146.508, 365.0: 60.7445}

#: The demo's analyses: NPDE K = 300 (K/2 = 150 above the 88 observations of a patient), a 3 x 3 dose
#: grid (0.5, 1, 2 x the median dose of each product) with 60 virtual patients.
DEMO_ANALYSES = ReportAnalyses(npde_sims=300, vpc_sims=100, recovery_draws=100, new_patients=500,
                               sweep_patients=60, sobol_base=64)
#: The smoke-test configuration (``--quick``).
QUICK_ANALYSES = ReportAnalyses(npde_sims=200, vpc_sims=20, recovery_draws=20, new_patients=50, sweep_patients=8,
                                sweep_factors=(0.5, 2.0), sobol_base=8)


@dataclass(frozen=True)
class DemoResult:
    """What the demo produced: the fit, the truth comparison, the report path, stage timings (s), and
    whether every check passed."""

    fit: object
    truth: pd.DataFrame
    report: Path
    timings: dict[str, float]
    ok: bool
    messages: tuple[str, ...] = ()


def truth_comparison(fit, truth_csv: str | Path = TRUTH) -> pd.DataFrame:
    """Estimates against the truth saved with the virtual trial: per estimated parameter with a random
    effect, the typical value against the geometric mean of the 15 simulated patients' values, and
    omega^2 against the variance of their logs (the sample that was simulated, the target a fit of
    15 patients can reach), with the eta shrinkage (above 0.3: the design does not identify it)."""
    truth = pd.read_csv(truth_csv)
    rows = []
    for name, est in fit.theta.items():
        if name not in truth.columns:
            continue
        logs = np.log(truth[name].to_numpy(dtype=float))
        om = float(fit.omega.loc[name, name]) if name in fit.omega.index else float("nan")
        rows.append({"parameter": name, "estimate": est, "truth_geometric_mean": float(np.exp(logs.mean())),
                     "ratio": est / float(np.exp(logs.mean())), "omega2": om, "truth_log_variance": float(logs.var()),
                     "omega2_ratio": om / float(logs.var()), "shrinkage": fit.eta_shrinkage.get(name, float("nan"))})
    return pd.DataFrame(rows)


def _stein_check(out: Path, n: int, seed: int) -> tuple[bool, str]:
    from kinetics.plot import plot_simulation

    model = load_model("stein2019")
    check = model.simulate(sorted(STEIN_PUBLISHED), rtol=1e-10, atol=1e-10).outputs["car_qpcr"]
    rel = np.array([got / ref - 1 for (_, ref), got in zip(sorted(STEIN_PUBLISHED.items()), check)])
    pd.DataFrame({"day": sorted(STEIN_PUBLISHED), "published_copies_per_ug": [STEIN_PUBLISHED[t] for t in
                                                                             sorted(STEIN_PUBLISHED)],
                  "kinetics": check, "relative_error": rel}).to_csv(out / "stein2019_published_check.csv", index=False)
    times = np.unique(np.concatenate([np.linspace(0, 28, 113), np.linspace(28, 365, 200)]))
    plot_simulation(model.simulate(times, rtol=1e-8, atol=1e-8), model, log=True).savefig(
        out / "stein2019_typical.png", dpi=80)
    rng = np.random.default_rng(seed)
    P = np.tile(model.parameter_vector(None), (n, 1))
    for name, w2 in STEIN_OMEGA2.items():
        P[:, model.parameter_names.index(name)] *= np.exp(np.sqrt(w2) * rng.standard_normal(n))
    fb = model.parameter_names.index("FB")
    P[:, fb] = np.minimum(P[:, fb], 1.0)   # FB is a fraction (said in the line below)
    model.simulate_batch(times, params=P[:2])   # compiles the parallel kernel (cached), so the timing is solving
    tic = time.perf_counter()
    batch = model.simulate_batch(times, params=P, rtol=1e-6, atol=1e-6)
    per = (time.perf_counter() - tic) / n * 1e6
    ok = bool(np.all(np.abs(rel) < 5e-6)) and bool(batch.success.all())
    return ok, (f"typical profile vs published: max relative error {np.max(np.abs(rel)):.1e}; {n} virtual patients "
                f"(FB capped at 1), {int(batch.success.sum())} solved, {per:.0f} us per patient")


def run_demo(out: str | Path = "out/demo", *, seed: int = 20261126, analyses: ReportAnalyses = DEMO_ANALYSES,
             saem_iterations: tuple[int, int] | None = None, stein: bool = True, n_stein: int = 2000,
             echo=print) -> DemoResult:
    """Run the demo pipeline, writing to ``out``; ``echo`` gets one line per stage.

    Parameters
    ----------
    saem_iterations
        ``(n_burn, n_smooth)`` overriding the spec's SAEM iterations (``--quick``); None keeps the spec's.
    analyses
        The report's analyses (:data:`DEMO_ANALYSES`, or :data:`QUICK_ANALYSES` for a smoke test).
    stein
        Run the Stein 2019 engine check first.
    """
    from kinetics.data import read_dataset
    from kinetics.fit import read_fit_spec, run_fit_spec

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    messages: list[str] = []
    n_stages = 4 + (1 if stein else 0)
    k = 0
    last = [t0, ""]

    def stage(text: str) -> None:
        nonlocal k
        now = time.perf_counter()
        if last[1]:
            timings[last[1]] = now - last[0]
        k += 1
        last[:] = [now, text.split(":")[0]]
        echo(f"[{k}/{n_stages}] {text} ({now - t0:.1f} s)")

    ok = True
    if stein:
        stage("engine check: stein2019 typical profile and a virtual population (compiles on first run)")
        good, msg = _stein_check(out, n_stein, seed)
        echo(f"    {msg}")
        ok &= good
    stage("read the virtual trial and its fit specification")
    spec = read_fit_spec(SPEC)
    if saem_iterations is not None:
        saem = dataclasses.replace(spec.options["saem"], n_burn=int(saem_iterations[0]),
                                   n_smooth=int(saem_iterations[1]))
        spec = dataclasses.replace(spec, options=MappingProxyType({**spec.options, "saem": saem}))
    model = load_model(spec.model_file)
    data = read_dataset(spec.data)
    echo(f"    {spec.data.relative_to(ROOT) if spec.data.is_relative_to(ROOT) else spec.data}: "
         f"{len(data.subjects)} patients, {data.n_observations} observations; model {model.name} "
         f"({len(model.state_names)} states, {len(model.parameter_names)} parameters)")
    o = spec.options["saem"]
    stage(f"fit: {model.name} by SAEM ({o.n_burn} + {o.n_smooth} iterations, M3 censoring; compiles on first run)")
    fit = run_fit_spec(spec, progress=False)
    echo(f"    {'converged' if fit.success else 'NOT CONVERGED'}: OFV {fit.ofv:.2f}; {fit.message}")
    ok &= bool(fit.success)
    truth = truth_comparison(fit)
    truth.to_csv(out / "truth_comparison.csv", index=False)
    for r in truth.itertuples(index=False):
        echo(f"    {r.parameter:<8} estimate {r.estimate:9.4g}  truth {r.truth_geometric_mean:9.4g}  "
             f"ratio {r.ratio:5.2f}"
             f"  | omega^2 {r.omega2:7.3g} vs {r.truth_log_variance:7.3g}  shrinkage {100 * r.shrinkage:4.0f} %")
    stage("check, predict and sensitivity")

    def sub(line: str) -> None:
        echo(f"    - {line} ({time.perf_counter() - t0:.1f} s)")

    results = run_analyses(fit, model, data, analyses, seed=seed, progress=sub)
    for note in results.notes:
        echo(f"    note: {note}")
        messages.append(note)
    if results.npde is not None:
        t = results.npde.tests()
        echo(f"    NPDE mean {t.mean:.3f}, variance {t.variance:.3f}, global p {t.p_global:.3g}")
    if results.patient_recovery is not None:
        rec = results.patient_recovery
        echo(f"    B-cell recovery predicted for {len(rec)} patients: median {np.nanmedian(rec['time']):.0f} d "
             f"(range {np.nanmin(rec['time']):.0f}-{np.nanmax(rec['time']):.0f} d)")
    stage("write the report (figures embedded)")
    path = write_report(fit, model, data, out, results=results, seed=seed, spec_path=SPEC.relative_to(ROOT),
                        title="Virtual lupus CD19 + BCMA co-infusion trial: dual_car_sle by SAEM",
                        figures_dir=out / "figures", progress=sub)
    timings[last[1]] = time.perf_counter() - last[0]
    timings.update({f"  {n}": v for n, v in results.timings.items()})
    echo(f"done in {time.perf_counter() - t0:.1f} s; stage timings:")
    for name, v in timings.items():
        echo(f"    {name:<50} {v:7.1f} s")
    echo(f"report: {path.resolve()}")
    return DemoResult(fit=fit, truth=truth, report=path, timings=timings, ok=ok, messages=tuple(messages))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo; returns 0 when every check passed."""
    parser = argparse.ArgumentParser(prog="python -m kinetics.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="out/demo", help="output folder (default out/demo)")
    parser.add_argument("--seed", type=int, default=20261126, help="seed of the analyses and the engine check")
    parser.add_argument("--quick", action="store_true", help="fewer SAEM iterations and simulations (smoke test)")
    parser.add_argument("--no-engine-check", action="store_true", help="skip the stein2019 stage")
    args = parser.parse_args(argv)
    res = run_demo(args.out, seed=args.seed, analyses=QUICK_ANALYSES if args.quick else DEMO_ANALYSES,
                   saem_iterations=(15, 15) if args.quick else None, stein=not args.no_engine_check)
    return 0 if res.ok else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
