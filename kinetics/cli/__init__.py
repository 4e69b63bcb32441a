"""The ``kinetics`` command: list library models, simulate a model, run a fit specification, and the
analyses (exposure metrics, B-cell recovery, dose sweeps, sensitivity; in ``kinetics.cli._analysis``).

Examples
--------
kinetics models
kinetics simulate oral_1cmt --dose 0:320:depot --until 24 --csv conc.csv --plot conc.png
kinetics fit fits/theophylline_focei.toml --out results/theoph
kinetics report fits/theophylline_focei.toml --out results/theoph_report
kinetics nca ../shared/data/theoph_nonmem.csv --out results/nca
kinetics recovery cd19_sle --dose 0:6e7:car19 --days 90,180,365 --out results/recovery
kinetics dose-sweep dual_car_sle --doses car19=1e7,3e7,6e7,1e8,2e8 --doses carbcma=1e7,3e7,6e7,1e8,2e8 \
    --grid one-at-a-time --reference car19=6e7 --reference carbcma=6e7 --out results/sweep
kinetics sensitivity cd19_sle --dose 0:6e7:car19 --outcome recovery_time --method sobol --out results/sobol
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from kinetics.errors import KineticsError
from kinetics.fit import read_fit_spec, run_fit_spec
from kinetics.model import find_model_file, library_names, read_model_file
from kinetics.solve import Dose, load_model

__all__ = ["main"]


def _parse_set(text: str) -> tuple[str, float]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"--set expects NAME=VALUE, got {text!r}")
    try:
        return name.strip(), float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--set {name}: value {value!r} is not a number") from None


def _parse_dose(text: str) -> Dose:
    parts = text.split(":")
    if len(parts) not in (3, 4):
        raise argparse.ArgumentTypeError(f"--dose expects TIME:AMOUNT:TARGET[:DURATION], got {text!r}")
    try:
        time, amount = float(parts[0]), float(parts[1])
        duration = float(parts[3]) if len(parts) == 4 else 0.0
    except ValueError:
        raise argparse.ArgumentTypeError(f"--dose {text!r}: time, amount and duration must be numbers") from None
    try:
        return Dose(time=time, amount=amount, target=parts[2], duration=duration)
    except KineticsError as exc:
        raise argparse.ArgumentTypeError(f"--dose {text!r}: {exc}") from None


def _cmd_models(_: argparse.Namespace) -> int:
    rows = []
    for name in library_names():
        m = read_model_file(find_model_file(name))
        source = m.references[0] if m.references else ""
        rows.append((name, str(len(m.states)), m.description, source))
    header = ("name", "states", "description", "source")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(3)]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)) + "  " + header[3])
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[3])
    return 0


def _cmd_simulate(args: argparse.Namespace) -> int:
    model = load_model(args.model)
    times = np.linspace(args.start, args.until, args.points)
    params = dict(args.set or [])
    sim = model.simulate(times, params=params, doses=args.dose or [], rtol=args.rtol, atol=args.atol,
                         method=args.method)
    print(sim.summary(), file=sys.stderr)
    frame = sim.to_frame()
    if args.csv:
        Path(args.csv).parent.mkdir(parents=True, exist_ok=True)
        frame.to_csv(args.csv, index=False)
        print(f"wrote {args.csv}", file=sys.stderr)
    if args.plot:
        from kinetics.plot import plot_simulation

        fig = plot_simulation(sim, model, log=args.log)
        Path(args.plot).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(args.plot, dpi=120)
        print(f"wrote {args.plot}", file=sys.stderr)
    if not args.csv and not args.plot:
        print(frame.to_string(index=False))
    return 0 if sim.success else 3


def _cmd_fit(args: argparse.Namespace) -> int:
    spec = read_fit_spec(args.spec)
    print(f"fitting '{spec.model}' to {spec.data} by {spec.method} ({spec.path})", flush=True)
    fit = run_fit_spec(spec, progress=True)
    print(fit.summary())
    try:
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            fit.to_json(args.json)
            print(f"wrote {args.json}", file=sys.stderr)
        if args.out:
            out = Path(args.out)
            out.mkdir(parents=True, exist_ok=True)
            fit.to_json(out / "fit.json")
            if spec.method == "individual":
                fit.predictions().to_csv(out / "predictions.csv", index=False)
                fit.table().to_csv(out / "estimates.csv", index=False)
                written = ("fit.json", "predictions.csv", "estimates.csv")
            else:
                fit.predictions.to_csv(out / "predictions.csv", index=False)
                fit.etas.join(fit.individual_params).to_csv(out / "etas.csv")
                written = ("fit.json", "predictions.csv", "etas.csv")
            print(f"wrote {', '.join(str(out / w) for w in written)}", file=sys.stderr)
    except OSError as exc:
        print(f"kinetics: error: cannot write results: {exc}", file=sys.stderr)
        return 2
    if not fit.success:
        failed = ([f"subject {f.id}: {f.message}" for f in fit.fits if not f.success] if spec.method == "individual"
                  else [fit.message])
        print("kinetics: the fit did not converge: " + "; ".join(failed), file=sys.stderr)
        return 3
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    # A fit JSON holds the estimates but not the data it was fitted to, and no PopulationFit can be rebuilt
    # from it; the report needs both, so it takes the specification and runs the fit (the honest route).
    path = Path(args.spec)
    if path.suffix.lower() == ".json":
        print(f"kinetics: error: {path}: a fit JSON does not record its data or model file; pass the fit "
              "specification (.toml) that produced it: kinetics report SPEC --out DIR (the fit is rerun)",
              file=sys.stderr)
        return 2
    from kinetics.data import read_dataset
    from kinetics.report import ReportAnalyses, write_report

    spec = read_fit_spec(path)
    if spec.method == "individual":
        print(f"kinetics: error: {path}: the report is for population fits; method 'individual' has none "
              "(use kinetics fit --out)", file=sys.stderr)
        return 2
    print(f"fitting '{spec.model}' to {spec.data} by {spec.method} ({spec.path})", flush=True)
    fit = run_fit_spec(spec, progress=False)
    print(fit.summary())
    analyses = ReportAnalyses(npde_sims=args.npde_sims, vpc_sims=args.vpc_sims, sweep_patients=args.sweep_patients,
                              sobol_base=args.sobol_base)
    try:
        report = write_report(fit, load_model(spec.model_file), read_dataset(spec.data), args.out,
                              analyses=analyses, seed=args.seed, spec_path=spec.path,
                              progress=lambda line: print(f"  {line}", flush=True))
    except OSError as exc:
        print(f"kinetics: error: cannot write the report: {exc}", file=sys.stderr)
        return 2
    print(f"report: {report.resolve()}")
    if not fit.success:
        print(f"kinetics: the fit did not converge: {fit.message}", file=sys.stderr)
        return 3
    return 0


def _count(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if not 0 <= n <= 1_000_000:
        raise argparse.ArgumentTypeError(f"expected 0..1000000, got {n}")
    return n


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``kinetics`` command."""
    parser = argparse.ArgumentParser(prog="kinetics",
                                     description="CAR-T kinetics models: list, simulate, fit, report, analyse.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("models", help="list the model library").set_defaults(func=_cmd_models)
    sim = sub.add_parser("simulate", help="simulate a model (library name or .toml path)")
    sim.add_argument("model")
    sim.add_argument("--set", action="append", type=_parse_set, metavar="NAME=VALUE", help="override a parameter")
    sim.add_argument("--dose", action="append", type=_parse_dose, metavar="TIME:AMOUNT:TARGET[:DURATION]")
    sim.add_argument("--until", type=float, default=28.0, help="last output time (model time unit)")
    sim.add_argument("--start", type=float, default=0.0, help="first output time")
    sim.add_argument("--points", type=int, default=201, help="number of output times")
    sim.add_argument("--rtol", type=float, default=1e-6)
    sim.add_argument("--atol", type=float, default=1e-9)
    sim.add_argument("--method", default="auto", choices=["auto", "dopri5", "rodas5p"])
    sim.add_argument("--csv", help="write states and outputs to this CSV file")
    sim.add_argument("--plot", help="write a figure of the outputs to this PNG file")
    sim.add_argument("--log", action="store_true", help="log-scale y axes in the figure")
    sim.set_defaults(func=_cmd_simulate)
    fit = sub.add_parser("fit", help="run a fit specification (fits/*.toml): population or individual fits")
    fit.add_argument("spec", help="fit specification file (TOML; see fits/README.md)")
    fit.add_argument("--json", metavar="PATH", help="write the full result as JSON")
    fit.add_argument("--out", metavar="DIR",
                     help="write fit.json, predictions.csv and etas.csv (population) or estimates.csv (individual)")
    fit.set_defaults(func=_cmd_fit)
    rep = sub.add_parser("report", help="run a population fit specification and write a self-contained HTML "
                                        "report with CSV tables")
    rep.add_argument("spec", metavar="SPEC",
                     help="population fit specification (TOML); a fit JSON is refused: it does not record its data")
    rep.add_argument("--out", default="out/report", metavar="DIR", help="output folder (default out/report)")
    rep.add_argument("--seed", type=int, default=0, help="seed of the simulation-based analyses")
    rep.add_argument("--npde-sims", type=_count, default=300, help="NPDE replicates per subject (0 skips)")
    rep.add_argument("--vpc-sims", type=_count, default=100, help="VPC replicates (0 skips)")
    rep.add_argument("--sweep-patients", type=_count, default=60, help="virtual patients per dose level (0 skips)")
    rep.add_argument("--sobol-base", type=_count, default=64, help="Sobol' base samples, a power of 2 (0 skips)")
    rep.set_defaults(func=_cmd_report)
    from kinetics.cli._analysis import add_analysis_commands  # here: it imports this module's helpers

    add_analysis_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (2 for bad input, 3 for a failed solve or a fit that did
    not converge)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except KineticsError as exc:
        print(f"kinetics: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
