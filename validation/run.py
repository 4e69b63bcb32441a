"""Run the validation cases and write ``validation/REPORT.md``.

Usage (from the repository root)::

    python -m validation.run [--filter SUBSTRING] [--report PATH]
    python validation/run.py [--filter SUBSTRING]

Every module in ``validation/cases/`` exposes ``CASES``. Each case is run, a line
is printed as it finishes, and the report lists every quantity with its
reference, achieved value, error, tolerance, source and verdict. The exit code
is 1 if any case fails (2 if the filter matches nothing).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import importlib
import os
import platform
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from validation.framework import Case, SolveFailed, compared, pointwise_errors

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CASES_DIR = HERE / "cases"
DEFAULT_REPORT = HERE / "REPORT.md"


@dataclass(frozen=True)
class Row:
    """One line of the report: one quantity of one case (its worst entry for a grid)."""

    case: str
    quantity: str
    reference: float
    achieved: float
    error: float
    tolerance: float
    kind: str
    source: str
    passed: bool | None  # None: shown for information, does not count (below the case's floor)


@dataclass(frozen=True)
class Outcome:
    """Everything the run learned about one case."""

    case: Case
    rows: tuple[Row, ...]
    seconds: float
    message: str  # why it failed before any comparison ("" if it got that far)

    @property
    def passed(self) -> bool:
        """No error, no failing quantity, and at least one quantity counted (a vacuous case fails)."""
        counted = [r.passed for r in self.rows if r.passed is not None]
        return not self.message and bool(counted) and all(counted)


def discover(cases_dir: Path = CASES_DIR) -> tuple[list[Case], list[str]]:
    """Import every case module; return the cases and one message per module that failed to load."""
    cases: list[Case] = []
    problems: list[str] = []
    for path in sorted(cases_dir.glob("*.py")):
        if path.name.startswith("_"):
            continue
        modname = f"validation.cases.{path.stem}"
        try:
            mod = importlib.import_module(modname)
            found = list(mod.CASES)
        except Exception as exc:  # a broken case module is a failure to report, not a crash
            problems.append(f"{modname}: cannot load ({type(exc).__name__}: {exc})")
            continue
        for c in found:
            if not isinstance(c, Case):
                problems.append(f"{modname}: CASES holds {type(c).__name__}, not validation.framework.Case")
            else:
                cases.append(c)
    seen: set[str] = set()
    for c in cases:
        if c.name in seen:
            problems.append(f"duplicate case name {c.name!r}")
        seen.add(c.name)
    return cases, problems


def _label(case: Case, quantity: str, idx: int, size: int) -> str:
    if size <= 1:
        return quantity
    grid = case.grid_for(quantity)
    where = f"t={grid[idx]:g}" if grid is not None and len(grid) == size else f"entry {idx}"
    return f"{quantity} at {where} (worst of {size})"


def evaluate(case: Case) -> Outcome:
    """Compute the reference and the achieved values and compare them, quantity by quantity."""
    t0 = time.perf_counter()
    try:
        reference = case.reference()
    except Exception as exc:
        return Outcome(case, (), time.perf_counter() - t0,
                       f"reference could not be computed: {type(exc).__name__}: {exc}")
    message = ""
    try:
        achieved_raw = case.compute()
    except SolveFailed as exc:
        achieved_raw, message = {}, str(exc)
    except Exception as exc:
        achieved_raw = {}
        message = f"{type(exc).__name__}: {exc}\n" + traceback.format_exc(limit=4)
    seconds = time.perf_counter() - t0

    rows = []
    for q, ref in reference.items():
        got = np.atleast_1d(np.asarray(achieved_raw.get(q, np.full(ref.shape, np.nan)), dtype=float))
        if got.shape != ref.shape:
            message = message or f"quantity {q!r}: achieved shape {got.shape} != reference shape {ref.shape}"
            got = np.full(ref.shape, np.nan)
        err = pointwise_errors(case.kind, got, ref)
        mask = compared(case.kind, ref, case.floor)
        if mask.any():
            idx = int(np.flatnonzero(mask)[np.argmax(err[mask])])
            passed: bool | None = bool(np.all(err[mask] <= case.tolerance))
        else:
            idx = int(np.argmax(err))
            passed = None
        rows.append(Row(case=case.name, quantity=_label(case, q, idx, ref.size), reference=float(ref[idx]),
                        achieved=float(got[idx]), error=float(err[idx]), tolerance=case.tolerance,
                        kind=case.kind, source=case.source, passed=passed))
    if not message and (missing := sorted(set(achieved_raw) - set(reference))):
        message = f"achieved quantities without a reference: {missing}"
    return Outcome(case, tuple(rows), seconds, message)


def _progress(i: int, n: int, out: Outcome) -> str:
    counted = [r for r in out.rows if r.passed is not None]
    worst = max(counted, key=lambda r: r.error / r.tolerance, default=None)
    detail = (f"worst {worst.error:.2e} vs tol {worst.tolerance:.0e} ({worst.kind})" if worst and not out.message
              else out.message.splitlines()[0] if out.message else "no compared quantity")
    return f"[{i:>{len(str(n))}}/{n}] {'PASS' if out.passed else 'FAIL'}  {out.case.name:<38} {detail}  ({out.seconds:.2f} s)"


# --- report -------------------------------------------------------------------------------
def _version(mod: str) -> str:
    try:
        return getattr(importlib.import_module(mod), "__version__", "?")
    except Exception:
        return "not installed"


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _git() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return head + (" (with uncommitted changes)" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _num(x: float) -> str:
    return "nan" if np.isnan(x) else f"{x:.13g}"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def format_report(outcomes: list[Outcome], problems: list[str], seconds: float, filter_text: str | None) -> str:
    n_ok = sum(o.passed for o in outcomes)
    n_fail = len(outcomes) - n_ok + len(problems)
    sources: dict[str, int] = {}
    for o in outcomes:
        sources.setdefault(o.case.source, len(sources) + 1)
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    lines = [
        "# Validation report",
        "",
        f"Written by `python -m validation.run` on {now}"
        + (f", cases filtered by `{filter_text}`" if filter_text else "") + ".",
        "",
        f"**{n_ok} of {len(outcomes)} cases passed"
        + (f", {n_fail} failed" if n_fail else "") + f".** Runtime {seconds:.1f} s (includes numba compilation "
        "of any model not yet in the on-disk cache).",
        "",
        "Every expected value comes from outside the project (published reference solutions, closed forms, "
        "an independent matrix exponential); sources are listed below. Tolerances are those the case states; "
        "for a grid quantity the row shows its worst point. Errors: *relative* = |achieved - reference| / "
        "|reference|; *relative-to-peak* = |achieved - reference| / max|reference| over the grid; "
        "*absolute* = |achieved - reference|.",
        "",
        "## Environment",
        "",
        "| | |",
        "|---|---|",
        f"| date | {now} |",
        f"| machine | {platform.platform()}, {platform.machine()}, {_cpu()}, {os.cpu_count()} CPUs |",
        f"| python | {platform.python_version()} ({platform.python_implementation()}) |",
        f"| numpy | {_version('numpy')} |",
        f"| numba | {_version('numba')} |",
        f"| scipy | {_version('scipy')} |",
        f"| sympy | {_version('sympy')} |",
        f"| kinetics | {_version('kinetics')}, git {_git()} |",
        "",
        "## Results",
        "",
        "| Case | Quantity | Reference | Achieved | Error | Tolerance | Source | Result |",
        "|---|---|---:|---:|---:|---|---|---|",
    ]
    for o in outcomes:
        for r in o.rows:
            if r.passed is None:
                verdict = "not counted (\\|ref\\| <= floor)"
            else:
                verdict = "**FAIL**" if r.passed is False or o.message else "PASS"
            lines.append(f"| {_cell(r.case)} | {_cell(r.quantity)} | {_num(r.reference)} | {_num(r.achieved)} | "
                         f"{r.error:.2e} | {r.tolerance:.0e} {r.kind} | [{sources[r.source]}] | {verdict} |")
        if not o.rows:
            lines.append(f"| {_cell(o.case.name)} | (none) | | | | {o.case.tolerance:.0e} {o.case.kind} | "
                         f"[{sources[o.case.source]}] | **FAIL** |")
    failed = [o for o in outcomes if o.message]
    if failed or problems:
        lines += ["", "## Failures", ""]
        lines += [f"- `{o.case.name}`: {_cell(o.message.strip().splitlines()[0])}" for o in failed]
        lines += [f"- {_cell(p)}" for p in problems]
    lines += ["", "## Case setups", ""]
    seen: set[tuple[str, str]] = set()
    for o in outcomes:
        key = (o.case.name.split("[")[0], o.case.setup)
        if o.case.setup and key not in seen:
            seen.add(key)
            methods = [x.case.name[len(key[0]):] for x in outcomes
                       if x.case.name.split("[")[0] == key[0] and x.case.setup == key[1]]
            floor = (f"; components with \\|reference\\| <= {o.case.floor:g} not counted"
                     if o.case.floor > 0 else "")
            lines.append(f"- **{key[0]}** {' '.join(methods)}: {_cell(o.case.setup)}{floor}")
    lines += ["", "## Sources", ""]
    lines += [f"{i}. {_cell(s)}" for s, i in sources.items()]
    lines += ["", "## Timing", "", "| Case | Seconds |", "|---|---:|"]
    lines += [f"| {_cell(o.case.name)} | {o.seconds:.2f} |" for o in outcomes]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m validation.run", description=__doc__.splitlines()[0])
    parser.add_argument("--filter", metavar="SUBSTRING", help="run only cases whose name contains SUBSTRING")
    parser.add_argument("--report", metavar="PATH", type=Path, default=DEFAULT_REPORT,
                        help=f"where to write the Markdown report (default {DEFAULT_REPORT.relative_to(ROOT)})")
    args = parser.parse_args(argv)

    start = time.perf_counter()
    cases, problems = discover()
    for p in problems:
        print(f"ERROR {p}", flush=True)
    if args.filter:
        cases = [c for c in cases if args.filter in c.name]
        if not cases:
            print(f"no case name contains {args.filter!r}", file=sys.stderr)
            return 2
    outcomes = []
    for i, case in enumerate(cases, 1):
        out = evaluate(case)
        outcomes.append(out)
        print(_progress(i, len(cases), out), flush=True)
    seconds = time.perf_counter() - start
    args.report.write_text(format_report(outcomes, problems, seconds, args.filter))
    n_ok = sum(o.passed for o in outcomes)
    print(f"{n_ok}/{len(outcomes)} cases passed in {seconds:.1f} s; report: {args.report}", flush=True)
    return 0 if n_ok == len(outcomes) and not problems else 1


if __name__ == "__main__":
    sys.exit(main())
