"""Estimation speed: population fits on public and bundled data, time per subject-solve, and how the
cost scales with the number of subjects.

Usage (repository root)::

    python -m benchmarks.fit_speed [--quick] >> benchmarks/RESULTS.md

Every timing is warm (models compiled and cached, one warm-up fit first) and is the median of
``--repeats`` runs. Reported as a Markdown section; no assertion on time (CONVENTIONS.md).

Fits:

1. theophylline (``../shared/data/theoph_nonmem.csv``), one-compartment oral, log-normal IIV on
   ka, CL, V, additive error: FOCE-I with the linearised covariance, FOCE-I with the sandwich, SAEM;
2. the 15-patient virtual lupus co-infusion trial (``fits/data/virtual_trial.csv``,
   ``dual_car_sle``, 14 states, 7 outputs, 9 random effects) by SAEM;
3. scaling: the theophylline subjects replicated 1x, 2x, 4x and 8x (new IDs) by FOCE-I;
4. the cost of one subject solve, plain and with sensitivities, for both models.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import pandas as pd

import kinetics
from kinetics.data import read_dataset
from kinetics.fit import fit_population
from kinetics.fit._saem import SaemOptions

REPO = Path(__file__).resolve().parents[1]
THEOPH = next((p / "shared" / "data" / "theoph_nonmem.csv" for p in (REPO, *REPO.parents)
               if (p / "shared" / "data" / "theoph_nonmem.csv").is_file()), None)
THEOPH_SPEC = dict(estimate={"ka": np.exp(0.45), "CL": np.exp(1.0), "V": np.exp(3.45)},
                   random_effects={"ka": 0.6, "CL": 0.3, "V": 0.1}, error={"conc": {"kind": "additive", "add": 0.7}})


def timed(fn, repeats: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def theophylline_rows(model, data, repeats: int) -> list[str]:
    rows = []
    for label, kw in [("FOCE-I, linearised covariance", dict(method="focei", covariance="linearised")),
                      ("FOCE-I, sandwich covariance", dict(method="focei", covariance="sandwich")),
                      ("FOCE-I, no covariance step", dict(method="focei", covariance=None)),
                      ("SAEM 200+200, linearised covariance", dict(method="saem"))]:
        sec, fit = timed(lambda: fit_population(model, data, **THEOPH_SPEC, **kw), repeats)
        rows.append(f"| theophylline (12 subjects, 132 obs) | {label} | {sec:.2f} | {fit.ofv:.3f} | "
                    f"{fit.n_iterations} | {'yes' if fit.success else 'NO'} |")
    return rows


def lupus_rows(repeats: int, quick: bool) -> list[str]:
    spec = json.loads((REPO / "fits" / "data" / "virtual_trial.json").read_text())
    model = kinetics.load_model(spec["model"])
    data = read_dataset(REPO / "fits" / "data" / "virtual_trial.csv")
    omega = spec["random_effects"]["omega_variance"]
    typical = spec["typical_values"]
    kw = dict(estimate={k: typical[k] * 1.3 for k in omega}, random_effects={k: 2 * v for k, v in omega.items()},
              error={k: dict(v) for k, v in spec["error"].items()}, method="saem")
    rows = []
    settings = [(100, 100, 1)] if quick else [(100, 100, 1), (150, 100, 2)]
    for n_burn, n_smooth, chains in settings:
        opts = SaemOptions(n_burn=n_burn, n_smooth=n_smooth, n_chains=chains, n_prior_moves=1, n_joint_moves=1)
        sec, fit = timed(lambda: fit_population(model, data, saem=opts, **kw), repeats)
        worst = max(abs(np.log(fit.theta[k] / typical[k])) for k in omega)
        rows.append(f"| virtual lupus trial (15 subjects, 1320 obs, 14 states) | SAEM {n_burn}+{n_smooth}, {chains} "
                    f"chain(s), linearised covariance | {sec:.1f} | {fit.ofv:.2f} | {fit.n_iterations} | "
                    f"{'yes' if fit.success else 'NO'} (worst typical value off the truth by x{np.exp(worst):.2f}) |")
    return rows


def scaling_rows(model, table: pd.DataFrame, repeats: int, quick: bool) -> list[str]:
    rows = []
    for k in ((1, 2) if quick else (1, 2, 4, 8)):
        rep = pd.concat([table.assign(ID=table["ID"].astype(str) + f"_{j}") for j in range(k)], ignore_index=True)
        data = read_dataset(rep)
        sec, fit = timed(lambda: fit_population(model, data, **THEOPH_SPEC, covariance=None), repeats)
        rows.append(f"| {12 * k} | {sec:.2f} | {sec / (12 * k) * 1e3:.1f} | {fit.n_iterations} |")
    return rows


def solve_rows(model_name: str, times: np.ndarray, doses, wrt: tuple[str, ...], n: int = 200) -> str:
    model = kinetics.load_model(model_name)
    p = model.parameter_vector(None)
    out = []
    for w in ((), wrt):
        solver = model.repeated_solver(times, doses, wrt=w, rtol=1e-6, atol=1e-8)
        solver(p)
        t0 = time.perf_counter()
        for _ in range(n):
            solver(p)
        out.append((time.perf_counter() - t0) / n * 1e6)
    return f"| {model_name} | {len(times)} | {out[0]:.0f} | {len(wrt)} | {out[1]:.0f} |"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats and settings")
    ap.add_argument("--repeats", type=int, default=None)
    args = ap.parse_args()
    repeats = args.repeats or (1 if args.quick else 3)
    if THEOPH is None:
        raise SystemExit("theoph_nonmem.csv not found in ../shared/data")
    oral = kinetics.load_model("oral_1cmt")
    theoph = read_dataset(THEOPH)
    fit_population(oral, theoph, **THEOPH_SPEC, covariance=None)      # warm-up (compile / load kernels)
    print("\n## Estimation speed (`python -m benchmarks.fit_speed`)\n")
    print(f"{platform.processor() or platform.machine()}, {kinetics.__version__}; warm, median of {repeats}.\n")
    print("| data | method | wall s | OFV | iterations | converged |\n|---|---|---|---|---|---|")
    for row in theophylline_rows(oral, theoph, repeats) + lupus_rows(1, args.quick):
        print(row)
    print("\n### Scaling with subjects (theophylline replicated, FOCE-I, no covariance step)\n")
    print("| subjects | wall s | ms per subject | iterations |\n|---|---|---|---|")
    table = pd.read_csv(THEOPH)
    for row in scaling_rows(oral, table, repeats, args.quick):
        print(row)
    print("\n### One subject solve (rtol 1e-6, atol 1e-8; repeated_solver, us)\n")
    print("| model | output times | plain | sensitivities wrt | with sensitivities |\n|---|---|---|---|---|")
    print(solve_rows("oral_1cmt", np.array([0.25, 0.5, 1, 2, 3.5, 5, 7, 9, 12, 24.0]),
                     [kinetics.Dose(0.0, 320.0, "depot")], ("ka", "CL", "V")))
    subj = read_dataset(REPO / "fits" / "data" / "virtual_trial.csv").subjects[0]
    spec = json.loads((REPO / "fits" / "data" / "virtual_trial.json").read_text())
    print(solve_rows("dual_car_sle", np.unique(subj.times), list(subj.doses),
                     tuple(spec["random_effects"]["omega_variance"])))


if __name__ == "__main__":
    main()
