"""Scale benchmarks of issue 5: virtual populations, Dask overhead, a Sobol analysis and a dose sweep.

Usage (repository root)::

    python -m benchmarks.population_scale [--n 1000000] [--dask-n 1000000] [--sobol-base 8192] \
        [--sweep-patients 1000] [--parts population,dask,sobol,sweep] >> benchmarks/RESULTS.md

Reports (Markdown): ``cd19_sle`` virtual patients over one year (time per patient and the ratio to
one single solve: the parallel efficiency of the batch solver on this machine), the same run mapped
over a local Dask cluster (overhead stated), a Sobol analysis of B-cell recovery with 10 parameters,
and a ``dual_car_sle`` dose sweep (5 doses per product, 1,000 patients each). No assertions on time.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

import kinetics
from kinetics.analysis import dose_sweep, simulate_population, sobol_indices

TIMES = np.linspace(0.0, 365.0, 53)
OMEGA = {"dM_19": 0.09, "kmax_19": 0.09, "rhoH_19": 0.01, "B0": 0.09, "d_n": 0.04, "V_car": 0.09}


def single_solve_us(model, doses, n: int = 200) -> float:
    solver = model.repeated_solver(TIMES, doses, rtol=1e-6, atol=1e-9)
    p = model.parameter_vector(None)
    solver(p)
    t0 = time.perf_counter()
    for _ in range(n):
        solver(p)
    return (time.perf_counter() - t0) / n * 1e6


PARTS = ("population", "dask", "sobol", "sweep")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000, help="virtual patients (default 1,000,000)")
    ap.add_argument("--dask-n", type=int, default=1_000_000, help="virtual patients for the Dask run")
    ap.add_argument("--sobol-base", type=int, default=8192)
    ap.add_argument("--sweep-patients", type=int, default=1000)
    ap.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {', '.join(PARTS)}")
    args = ap.parse_args()
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        ap.error(f"unknown part(s) {unknown}; choose from {', '.join(PARTS)}")
    cd19 = kinetics.load_model("cd19_sle")
    doses = [kinetics.Dose(0.0, 6e7, "car19")]
    simulate_population(cd19, 100, times=TIMES, doses=doses, omega=OMEGA, seed=0)   # warm-up
    print("\n## Virtual populations at scale (`python -m benchmarks.population_scale`)\n")
    in_process = {}
    if "population" in parts or "dask" in parts:
        single = single_solve_us(cd19, doses)
        print(f"{os.cpu_count()} cores; cd19_sle, 53 output times over 365 days, rtol 1e-6; one solve {single:.0f} us."
              f"\n\n| run | patients | wall s | us per patient | single solve / per patient |\n|---|---|---|---|---|")
        if "population" in parts:
            in_process[args.n] = population_run(cd19, doses, args.n, single)
        if "dask" in parts:
            dask_run(cd19, doses, args.dask_n, in_process)
    if "sobol" in parts:
        sobol_run(cd19, doses, args.sobol_base)
    if "sweep" in parts:
        sweep_run(args.sweep_patients)


def population_run(cd19, doses, n: int, single_us: float) -> float:
    """In-process run of ``n`` patients with streaming summaries; prints a table row, returns the wall time."""
    t0 = time.perf_counter()
    pop = simulate_population(cd19, n, times=TIMES, doses=doses, omega=OMEGA, seed=1, keep=False, progress=True)
    wall = time.perf_counter() - t0
    per = wall / n * 1e6
    print(f"| in-process, streaming summaries ({pop.n_chunks} chunks, {pop.n_failed} failed) | {n:,} | "
          f"{wall:.1f} | {per:.1f} | {single_us / per:.2f} |", flush=True)
    return wall


def dask_run(cd19, doses, n: int, in_process: dict[int, float]) -> None:
    """The same run mapped over a LocalCluster (one single-threaded worker per core); overhead vs in-process."""
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        print("| Dask LocalCluster | - | - | - | distributed not installed |")
        return
    cores = os.cpu_count()
    with LocalCluster(n_workers=cores, threads_per_worker=1, host="127.0.0.1", dashboard_address=None) as cl, \
            Client(cl) as client:
        simulate_population(cd19, 1000, times=TIMES, doses=doses, omega=OMEGA, seed=0, scheduler=client)
        t0 = time.perf_counter()
        dpop = simulate_population(cd19, n, times=TIMES, doses=doses, omega=OMEGA, seed=1, keep=False,
                                   scheduler=client)
        dwall = time.perf_counter() - t0
    if n not in in_process:
        t0 = time.perf_counter()
        simulate_population(cd19, n, times=TIMES, doses=doses, omega=OMEGA, seed=1, keep=False)
        in_process[n] = time.perf_counter() - t0
    print(f"| Dask LocalCluster, {cores} workers x 1 thread ({dpop.n_chunks} chunks) | {n:,} | "
          f"{dwall:.1f} | {dwall / n * 1e6:.1f} | overhead vs in-process {dwall / in_process[n]:.2f}x |", flush=True)


def sobol_run(cd19, doses, n_base: int) -> None:
    """Sobol indices (first, total, second order) of the B-cell recovery time for 10 log-normal parameters
    (SD 0.3 each)."""
    names = ["dM_19", "kmax_19", "rhoH_19", "B0", "d_n", "V_car", "kEM_19", "dE_19", "thalf_IgG", "r_N"]
    t0 = time.perf_counter()
    res = sobol_indices(cd19, outcome="recovery_time", doses=doses, omega={n: 0.3 ** 2 for n in names}, n_base=n_base,
                        second_order=True, rng=3, progress=True)   # omega: variances (SD 0.3 on the log scale)
    swall = time.perf_counter() - t0
    runs = n_base * (2 * len(names) + 2)   # Saltelli's design with second-order indices
    print(f"\nSobol, B-cell recovery time, {len(names)} parameters, {n_base} base samples, first, total and "
          f"second-order indices ({runs:,} model runs): {swall:.1f} s ({swall / runs * 1e3:.2f} ms per run).\n")
    print(res.summary() if hasattr(res, "summary") else res, flush=True)


def sweep_run(n_patients: int) -> None:
    """dual_car_sle dose sweep: 5 doses per product, the issue's outcomes."""
    dual = kinetics.load_model("dual_car_sle")
    dual_omega = {k: sd ** 2 for k, sd in dual.model.metadata["iiv"].items()}
    levels = [{"car19": d, "carbcma": 6e7} for d in (1.5e7, 3e7, 6e7, 1.2e8, 2.4e8)]
    levels += [{"car19": 6e7, "carbcma": d} for d in (1.5e7, 3e7, 1.2e8, 2.4e8)]
    dose_sweep(dual, levels[:1], n_patients=4, omega=dual_omega)   # warm-up (compilation)
    t0 = time.perf_counter()
    sweep = dose_sweep(dual, levels, n_patients=n_patients, omega=dual_omega, seed=4)
    dsw = time.perf_counter() - t0
    print(f"\nDose sweep, dual_car_sle, 5 doses per product ({len(levels)} levels, the other product at 6e7), "
          f"{n_patients} patients each (model iiv), the {len(sweep.outcomes)} issue outcomes "
          f"({', '.join(sweep.outcomes)}): {dsw:.1f} s "
          f"({dsw / (len(levels) * n_patients) * 1e3:.2f} ms per patient and level).\n")
    print("```\n" + sweep.summary.to_string(index=False) + "\n```", flush=True)


if __name__ == "__main__":
    main()
