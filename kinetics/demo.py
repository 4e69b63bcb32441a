"""``make demo``: the engine on a published CAR-T model, end to end, in well under a minute once compiled.

Stages (a progress line each): the Stein 2019 tisagenlecleucel typical profile
against its published values; 2,000 virtual patients drawn from the published
between-subject variability, solved in parallel; the time each patient's
transgene level falls below a threshold (event location); figures and CSV
tables written to ``--out``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from kinetics.solve import load_model

__all__ = ["main"]

#: Stein et al. 2019 Table 1, between-subject variance omega^2 on the log scale.
STEIN_OMEGA2 = {"foldx": 2.4, "Tmax": 0.38, "Cmax": 0.65, "alpha": 0.91, "FB": 0.80, "beta": 0.86}
#: Published typical profile (issue 3; Stein 2019 closed form at Table 1 values), copies/ug.
STEIN_PUBLISHED = {7.0: 3105.26, 14.0: 11411.53, 28.0: 1373.56, 90.0: 146.508, 365.0: 60.7445}


def _stage(i: int, n: int, text: str, t0: float) -> None:
    print(f"[{i}/{n}] {text} ({time.perf_counter() - t0:.1f} s)", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo; returns 0 when every check passed."""
    parser = argparse.ArgumentParser(prog="python -m kinetics.demo")
    parser.add_argument("--out", default="out/demo", help="output folder")
    parser.add_argument("--n", type=int, default=2000, help="virtual patients")
    parser.add_argument("--seed", type=int, default=20261126)
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    from kinetics.plot import plot_percentile_band, plot_simulation

    _stage(1, 5, "loading stein2019 and compiling (cached on disk after the first run)", t0)
    model = load_model("stein2019")
    times = np.unique(np.concatenate([np.linspace(0, 28, 113), np.linspace(28, 365, 200)]))
    sim = model.simulate(times, rtol=1e-8, atol=1e-8)

    _stage(2, 5, "typical patient vs the published profile", t0)
    check = model.simulate(sorted(STEIN_PUBLISHED), rtol=1e-10, atol=1e-10).outputs["car_qpcr"]
    rows = [(t, ref, got, got / ref - 1) for (t, ref), got in zip(sorted(STEIN_PUBLISHED.items()), check)]
    table = pd.DataFrame(rows, columns=["day", "published_copies_per_ug", "kinetics", "relative_error"])
    table.to_csv(out / "stein2019_published_check.csv", index=False)
    print(table.to_string(index=False))
    ok = bool(np.all(np.abs(table["relative_error"]) < 5e-6))
    sim.to_frame().to_csv(out / "stein2019_typical.csv", index=False)
    plot_simulation(sim, model, log=True).savefig(out / "stein2019_typical.png", dpi=120)

    _stage(3, 5, f"{args.n} virtual patients (log-normal IIV, Stein 2019 Table 1), parallel batch", t0)
    rng = np.random.default_rng(args.seed)
    base = model.parameter_vector(None)
    P = np.tile(base, (args.n, 1))
    for name, w2 in STEIN_OMEGA2.items():
        P[:, model.parameter_names.index(name)] *= np.exp(np.sqrt(w2) * rng.standard_normal(args.n))
    fb = model.parameter_names.index("FB")
    over = P[:, fb] > 1.0
    if over.any():  # FB is a fraction; say so rather than clip silently
        print(f"    {int(over.sum())} draws of FB above 1 set to 1")
        P[over, fb] = 1.0
    model.simulate_batch(times, params=P[:2])  # compiles the parallel kernel (cached), so the timing below is solving
    tic = time.perf_counter()
    batch = model.simulate_batch(times, params=P, rtol=1e-6, atol=1e-6)
    per = (time.perf_counter() - tic) / args.n * 1e6
    print(f"    {batch.summary()}; {per:.0f} us per patient")
    qpcr = batch.output("car_qpcr")
    pct = np.nanpercentile(qpcr, [5, 50, 95], axis=0)
    pd.DataFrame({"day": times, "p05": pct[0], "median": pct[1], "p95": pct[2]}).to_csv(
        out / "stein2019_population_percentiles.csv", index=False)
    plot_percentile_band(times, qpcr, label="CAR transgene", unit="copies/ug",
                         title="stein2019: virtual population, median and 5-95%").savefig(
        out / "stein2019_population.png", dpi=120)

    _stage(4, 5, "time the typical profile falls below 100 copies/ug after the peak (event location)", t0)
    cross = model.crossing_time("car_qpcr", 100.0, after=9.3, until=2000.0, direction="down", rtol=1e-10, atol=1e-10)
    print(f"    {'day %.2f' % cross.time if cross.found else 'not within 2000 days'} ({cross.message})")

    _stage(5, 5, f"done; figures and tables in {out.resolve()}", t0)
    for f in sorted(out.iterdir()):
        print(f"    {f}")
    return 0 if ok and batch.success.all() and cross.success else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
