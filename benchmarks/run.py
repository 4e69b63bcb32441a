"""Benchmark kinetics against peer ODE solvers on the shared ``cart_bench`` model.

Usage (from the repository root, in a venv with kinetics and the peers installed,
e.g. ``.venv-bench`` made by ``make bench`` / ``benchmarks/install_peers.sh``)::

    python -m benchmarks.run --out benchmarks/RESULTS.md [--quick]
    python benchmarks/run.py --out benchmarks/RESULTS.md

Everything runs side by side in one process, following the protocol of
``shared/bench/README.md``: mild and stiff variants of the model, 50 output
times, rtol 1e-6, atol 1e-9, batches of 10,000 parameter sets drawn as
``value * exp(0.3 z)`` (seeded).

Stages:

1. **Accuracy gate.** Every method's B-cell output (state ``xB`` times 100) is
   compared with a scipy Radau rtol 1e-12 / atol 1e-14 reference; a method is
   timed only when its max relative difference is below 1e-3.
2. **Single solves**, median us/solve, all methods timed *interleaved* (round
   robin, several rounds) so that load from other work on the machine hits all of
   them alike: kinetics ``auto`` / ``dopri5`` / ``rodas5p`` through
   ``CompiledModel.simulate`` (Python API) and at kernel level (the compiled
   ``simulate_kernel`` called from a numba loop, no Python per solve); scipy
   ``solve_ivp`` LSODA and BDF and ``odeint`` (numba right-hand side and
   Jacobian); numbalsoda ``lsoda`` called from a numba loop (and, for reference,
   from Python); SUNDIALS CVODE through scikit-sundae.
3. **Batches** of 10,000 sets: kinetics ``simulate_batch`` (``auto``, numba
   ``prange``) against a numbalsoda ``prange`` loop, wall time per solve.
4. **Report**: ratios against the targets (scipy LSODA / kinetics >= 100x,
   numbalsoda / kinetics >= 2x) and where kinetics spends its time (steps,
   rejections, right-hand-side evaluations, Jacobians, us per step).

Exit status: 0 when every kinetics method passes the accuracy gate and every
kinetics solve succeeds, 1 otherwise (missed speed targets are reported, not
errors).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numba as nb
import numpy as np
import scipy
from numba import njit

import kinetics
from benchmarks import compile_time, peers

FloatArray = peers.FloatArray
ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = Path(__file__).resolve().parent / "RESULTS.md"

#: Accuracy gate: max relative difference of the B-cell output vs the Radau reference.
ACC_GATE = 1e-3
#: Targets from the issue: speed-up of kinetics over scipy LSODA and over numbalsoda.
TARGET_LSODA = 100.0
TARGET_NUMBALSODA = 2.0
#: kinetics methods benchmarked.
KIN_METHODS = ("auto", "dopri5", "rodas5p")
MAX_STEPS = 100_000

_T0 = time.perf_counter()


def log(msg: str) -> None:
    """Print a progress line with the elapsed time."""
    print(f"[bench {time.perf_counter() - _T0:6.1f}s] {msg}", flush=True)


# --------------------------------------------------------------------------
# numba loops: time solves without any Python per solve
# --------------------------------------------------------------------------

@njit
def _repeat_kernel(kernel, n, args):  # type: ignore[no-untyped-def]
    """Call kinetics' compiled ``simulate_kernel(*args)`` ``n`` times (kernel passed first-class)."""
    for _ in range(n):
        kernel(*args)


if peers.HAS_NUMBALSODA:
    _nbl_solve = peers._numbalsoda_solve  # njit: copies y0/params, calls lsoda, returns (usol, ok)

    @njit
    def _repeat_numbalsoda(funcptr, n, params, y0, times, rtol, atol):  # type: ignore[no-untyped-def]
        """Solve with numbalsoda ``n`` times from numba; returns a checksum and all-succeeded flag."""
        acc = 0.0
        ok = True
        for _ in range(n):
            usol, success = _nbl_solve(funcptr, params, y0, times, rtol, atol)
            acc += usol[-1, 4]
            ok = ok and success
        return acc, ok


# --------------------------------------------------------------------------
# Cases and timing
# --------------------------------------------------------------------------

@dataclass
class Case:
    """One method to check and time on one variant.

    ``solve()`` does one solve and returns the ``(n_times, 8)`` scaled states (raising on
    failure); ``run(n)`` does ``n`` solves, as cheaply as the method allows.
    """

    key: str
    label: str
    solve: Callable[[], FloatArray]
    run: Callable[[int], object]
    rtol: float = peers.RTOL
    err: float = math.nan
    error: str = ""          # why it is not timed (failure / above the gate / unavailable)
    block: int = 1            # solves per timed sample
    samples: list[float] = field(default_factory=list)  # seconds per solve

    @property
    def timed(self) -> bool:
        return not self.error

    @property
    def us(self) -> float:
        return float(np.median(self.samples)) * 1e6 if self.samples else math.nan

    @property
    def best(self) -> float:
        """Fastest sample, us per solve (least disturbed by other work on the machine)."""
        return float(np.min(self.samples)) * 1e6 if self.samples else math.nan

    @property
    def spread(self) -> float:
        """Interquartile range over median, percent (a noise indicator)."""
        if len(self.samples) < 4:
            return math.nan
        q1, q2, q3 = np.percentile(self.samples, [25, 50, 75])
        return float((q3 - q1) / q2 * 100.0)


def _calibrate(case: Case, block_seconds: float) -> None:
    """Pick solves per sample so that one sample lasts about ``block_seconds``."""
    n = 1
    while True:
        t0 = time.perf_counter()
        case.run(n)
        dt = time.perf_counter() - t0
        if dt >= block_seconds / 4 or n >= 1 << 20:
            break
        n *= 4
    case.block = max(1, math.ceil(n * block_seconds / max(dt, 1e-9)))


def measure(cases: list[Case], seconds_each: float, rounds: int, block_seconds: float) -> None:
    """Time the cases round robin, ``rounds`` rounds of ``seconds_each / rounds`` s each.

    Interleaving spreads slow drifts in machine load evenly over all methods, so the
    ratios stay meaningful on a shared machine. Each sample is one block of solves.
    """
    for c in cases:
        _calibrate(c, block_seconds)
    slot = seconds_each / rounds
    for _ in range(rounds):
        for c in cases:
            start = time.perf_counter()
            while True:
                t0 = time.perf_counter()
                c.run(c.block)
                t1 = time.perf_counter()
                c.samples.append((t1 - t0) / c.block)
                if t1 - start >= slot:
                    break


def rel_diff_bcells(x: FloatArray, ref: FloatArray) -> float:
    """Max relative difference of the B-cell output, NaN-safe (NaN counts as infinite)."""
    b, b_ref = x[..., peers.IB], ref[..., peers.IB]
    d = np.abs(b - b_ref) / np.abs(b_ref)
    return float(np.max(np.where(np.isnan(d), np.inf, d)))


# --------------------------------------------------------------------------
# Building the cases
# --------------------------------------------------------------------------

@dataclass
class KinSetup:
    """kinetics model and the bits needed to call its kernel directly."""

    model: kinetics.CompiledModel
    kernel: object

    def kernel_args(self, times: FloatArray, p: FloatArray, method: str) -> tuple[object, ...]:
        return self.model._kernel_arguments(times, p, None, None, peers.RTOL, peers.ATOL, method,
                                            MAX_STEPS, 0.0, None, None)


def kinetics_cases(ks: KinSetup, p: FloatArray, times: FloatArray,
                   sims: dict[str, object], kargs: dict[str, tuple[object, ...]]) -> list[Case]:
    """API and kernel-level cases for every kinetics method (fills ``sims`` / ``kargs``)."""
    m = ks.model
    out: list[Case] = []
    for meth in KIN_METHODS:
        def api_solve(meth: str = meth) -> FloatArray:
            sim = m.simulate(times, params=p, rtol=peers.RTOL, atol=peers.ATOL, method=meth)
            if not sim.success:
                raise RuntimeError(f"kinetics {meth} failed: {sim.message}")
            sims[meth] = sim
            return np.asarray(sim.states)

        def api_run(n: int, meth: str = meth) -> None:
            for _ in range(n):
                m.simulate(times, params=p, rtol=peers.RTOL, atol=peers.ATOL, method=meth)

        out.append(Case(f"kin_api_{meth}", f"kinetics {meth} (simulate, Python API)", api_solve, api_run))

        args = ks.kernel_args(times, p, meth)
        kargs[meth] = args

        def kern_solve(args: tuple[object, ...] = args, meth: str = meth) -> FloatArray:
            _repeat_kernel(ks.kernel, 1, args)
            ist = args[-2]
            if int(ist[5]) != int(kinetics.SolveStatus.SUCCESS):  # type: ignore[index]
                raise RuntimeError(f"kinetics kernel {meth} failed: status {int(ist[5])}")  # type: ignore[index]
            return np.array(args[-5])[:, :peers.N_STATES]  # type: ignore[index]

        def kern_run(n: int, args: tuple[object, ...] = args) -> None:
            _repeat_kernel(ks.kernel, n, args)

        out.append(Case(f"kin_kern_{meth}", f"kinetics {meth} (kernel, numba loop)", kern_solve, kern_run))
        if meth == "auto":  # the same kernel called from Python: numba's dispatch cost per solve
            def kern_py_run(n: int, args: tuple[object, ...] = args) -> None:
                kern = ks.kernel
                for _ in range(n):
                    kern(*args)  # type: ignore[operator]

            out.append(Case("kin_kernpy_auto", "kinetics auto (kernel, called from Python)", kern_solve,
                            kern_py_run))
    return out


def peer_cases(p: FloatArray, y0: FloatArray, times: FloatArray) -> tuple[list[Case], list[str]]:
    """Cases for the available peers, and lines naming the unavailable ones."""
    out: list[Case] = []
    missing = [f"{pkg}: {why}" for pkg, why in peers.PEER_UNAVAILABLE_REASON.items()]
    for name in ("scipy_lsoda", "scipy_bdf", "scipy_odeint"):
        fn = peers.SOLVERS[name]

        def solve(fn: peers.SolveFn = fn) -> FloatArray:
            return fn(p, y0, times, peers.RTOL, peers.ATOL)

        def run(n: int, fn: peers.SolveFn = fn) -> None:
            for _ in range(n):
                fn(p, y0, times, peers.RTOL, peers.ATOL)

        out.append(Case(name, peers.LABELS[name], solve, run))
    if peers.HAS_NUMBALSODA:
        addr = peers.NUMBALSODA_RHS_ADDRESS

        def nbl_solve() -> FloatArray:
            return peers.solve_numbalsoda(p, y0, times)

        def nbl_run(n: int) -> None:
            _, ok = _repeat_numbalsoda(addr, n, p, y0, times, peers.RTOL, peers.ATOL)
            if not ok:
                raise RuntimeError("numbalsoda failed")

        def nbl_py_run(n: int) -> None:
            for _ in range(n):
                peers.solve_numbalsoda(p, y0, times)

        out.append(Case("numbalsoda", "numbalsoda LSODA (cfunc, numba loop)", nbl_solve, nbl_run))
        out.append(Case("numbalsoda_py", "numbalsoda LSODA (cfunc, called from Python)", nbl_solve, nbl_py_run))
    if peers.HAS_SKSUNDAE:
        for rtol, key, suffix in ((peers.RTOL, "cvode", ""), (peers.RTOL / 10, "cvode_tight", ", rtol 1e-7")):
            def cv_solve(rtol: float = rtol) -> FloatArray:
                return peers.solve_sksundae_cvode(p, y0, times, rtol, peers.ATOL)

            def cv_run(n: int, rtol: float = rtol) -> None:
                for _ in range(n):
                    peers.solve_sksundae_cvode(p, y0, times, rtol, peers.ATOL)

            out.append(Case(key, peers.LABELS["sksundae_cvode"] + suffix, cv_solve, cv_run, rtol=rtol))
    return out, missing


# --------------------------------------------------------------------------
# Variant runs
# --------------------------------------------------------------------------

@dataclass
class BatchResult:
    n_sets: int
    threads: int
    kin_us: float
    nbl_us: float
    kin_walls: list[float]
    nbl_walls: list[float]
    kin_failed: int
    nbl_failed: int
    kin_mean_steps: float
    kin_max_steps: int
    agree_max: float
    agree_p99: float
    agree_median: float
    n_disagree: int
    worst: list[tuple[int, float, float]]   # (set, kinetics err vs Radau, numbalsoda err vs Radau)
    batch_vs_single: float
    kin_single_us: float = math.nan   # single-solve kernel-level time on the central set (for parallel gain)
    nbl_single_us: float = math.nan


@dataclass
class VariantResult:
    name: str
    cases: dict[str, Case]
    sims: dict[str, object]
    batch: BatchResult | None = None


def run_variant(name: str, p: FloatArray, y0: FloatArray, times: FloatArray, ks: KinSetup,
                seconds_each: float, rounds: int, block_seconds: float) -> VariantResult:
    """Accuracy gate and single-solve timings for one variant."""
    log(f"{name}: scipy Radau reference (rtol 1e-12, atol 1e-14)")
    ref = peers.solve_scipy_radau(p, y0, times)
    sims: dict[str, object] = {}
    kargs: dict[str, tuple[object, ...]] = {}
    kcases = kinetics_cases(ks, p, times, sims, kargs)
    pcases, _ = peer_cases(p, y0, times)
    cases = kcases + pcases
    log(f"{name}: accuracy gate, {len(cases)} methods (B cells vs Radau, max rel diff < {ACC_GATE:g})")
    for c in cases:
        try:
            x = c.solve()
            if x.shape != (times.size, peers.N_STATES):
                raise RuntimeError(f"output shape {x.shape}")
            c.err = rel_diff_bcells(x, ref)
            if not c.err < ACC_GATE:
                c.error = f"max rel diff {c.err:.1e} >= {ACC_GATE:g}"
        except Exception as exc:  # a failed solve: reported, not timed
            c.error = f"{type(exc).__name__}: {exc}"
        status = "ok" if c.timed else f"NOT TIMED ({c.error})"
        log(f"{name}:   {c.label:52s} err {c.err:8.1e}  {status}")
    # kernel-level solves must reproduce the API exactly
    for meth in KIN_METHODS:
        api, kern = sims.get(meth), kargs[meth]
        if api is not None:
            same = np.array_equal(np.asarray(api.states), np.asarray(kern[-5])[:, :peers.N_STATES])  # type: ignore[attr-defined,index]
            if not same:
                log(f"{name}:   WARNING kernel-level {meth} output differs from simulate()")
    timed = [c for c in cases if c.timed]
    log(f"{name}: timing {len(timed)} methods interleaved, {rounds} rounds, ~{seconds_each:g} s each")
    measure(timed, seconds_each, rounds, block_seconds)
    for c in timed:
        log(f"{name}:   {c.label:52s} {c.us:11,.1f} us/solve  (fastest {c.best:,.1f};"
            f" n={len(c.samples)} x {c.block}, IQR {c.spread:.0f}%)")
    return VariantResult(name, {c.key: c for c in cases}, sims)


def run_batch(name: str, centre: FloatArray, y0: FloatArray, times: FloatArray, ks: KinSetup,
              n_sets: int, seed: int, reps: int) -> BatchResult | None:
    """kinetics ``simulate_batch`` (auto) vs numbalsoda ``prange``, interleaved repeats."""
    if not peers.HAS_NUMBALSODA:
        return None
    m = ks.model
    P = peers.draw_batch(centre, n_sets, seed)
    log(f"{name}: batch of {n_sets} sets (seed {seed}); warm-up / compile")
    m.simulate_batch(times, params=P[:4], rtol=peers.RTOL, atol=peers.ATOL, method="auto")
    peers.solve_numbalsoda_batch(P[:4], y0, times)
    kin_walls, nbl_walls = [], []
    kb = nbl = None
    for _ in range(reps):
        t0 = time.perf_counter()
        kb = m.simulate_batch(times, params=P, rtol=peers.RTOL, atol=peers.ATOL, method="auto")
        kin_walls.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        nbl = peers.solve_numbalsoda_batch(P, y0, times)
        nbl_walls.append(time.perf_counter() - t0)
    assert kb is not None and nbl is not None
    kin_us = float(np.median(kin_walls)) / n_sets * 1e6
    nbl_us = float(np.median(nbl_walls)) / n_sets * 1e6
    kx = np.asarray(kb.states)
    kin_ok = np.asarray(kb.success)
    nbl_ok = ~np.isnan(nbl).any(axis=(1, 2))
    both = kin_ok & nbl_ok
    b_k, b_n = kx[both][:, :, peers.IB], nbl[both][:, :, peers.IB]
    with np.errstate(divide="ignore", invalid="ignore"):
        d = np.nanmax(np.abs(b_k - b_n) / np.abs(b_n), axis=1)
    order = np.argsort(d)[::-1]
    idx_both = np.flatnonzero(both)
    worst: list[tuple[int, float, float]] = []
    n_check = 3 if d.size else 0
    if n_check:
        log(f"{name}: Radau references for the {n_check} sets where kinetics and numbalsoda differ most")
    for j in order[:n_check]:
        k = int(idx_both[j])
        ref = peers.solve_scipy_radau(P[k], y0, times)
        worst.append((k, rel_diff_bcells(kx[k], ref), rel_diff_bcells(nbl[k], ref)))
    # batch vs single-solve consistency on a few sets
    bvs = 0.0
    for k in (0, n_sets // 2, n_sets - 1):
        s = m.simulate(times, params=P[k], rtol=peers.RTOL, atol=peers.ATOL, method="auto")
        bvs = max(bvs, rel_diff_bcells(kx[k], np.asarray(s.states)))
    steps = np.asarray(kb.n_steps)[kin_ok]
    res = BatchResult(
        n_sets=n_sets, threads=nb.get_num_threads(), kin_us=kin_us, nbl_us=nbl_us,
        kin_walls=kin_walls, nbl_walls=nbl_walls,
        kin_failed=int((~kin_ok).sum()), nbl_failed=int((~nbl_ok).sum()),
        kin_mean_steps=float(steps.mean()) if steps.size else math.nan,
        kin_max_steps=int(steps.max()) if steps.size else 0,
        agree_max=float(d.max()) if d.size else math.nan,
        agree_p99=float(np.percentile(d, 99)) if d.size else math.nan,
        agree_median=float(np.median(d)) if d.size else math.nan,
        n_disagree=int((d >= ACC_GATE).sum()), worst=worst, batch_vs_single=bvs,
    )
    log(f"{name}: batch kinetics {kin_us:.1f} us/solve, numbalsoda {nbl_us:.1f} us/solve"
        f" ({res.threads} threads); failed: kinetics {res.kin_failed}, numbalsoda {res.nbl_failed};"
        f" B-cell agreement max {res.agree_max:.1e}, {res.n_disagree} sets >= {ACC_GATE:g}")
    return res


# --------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------

def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
    except Exception:
        return ""


def machine_info() -> dict[str, str]:
    """CPU, cores, versions, date."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 0
    commit = _git("rev-parse", "--short", "HEAD")
    dirty = _git("status", "--porcelain", "--", "kinetics")
    return {
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu,
        "cores": f"{os.cpu_count()} logical, {usable} usable; numba threads {nb.get_num_threads()}",
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__, "scipy": scipy.__version__, "numba": nb.__version__,
        "numbalsoda": _version("numbalsoda"), "sksundae": _version("scikit-sundae"),
        "kinetics": f"{_version('cart-kinetics')} (git {commit or '?'}{', kinetics/ modified' if dirty else ''})",
    }


def _fmt_us(c: Case | None) -> str:
    if c is None:
        return "unavailable"
    if not c.timed:
        return "not timed"
    return f"{c.us:,.1f}" if c.us < 100 else f"{c.us:,.0f}"


def _ratio(a: float, b: float) -> float:
    return a / b if (math.isfinite(a) and math.isfinite(b) and b > 0) else math.nan


def ratio_rows(results: list[VariantResult]) -> list[tuple[str, list[float], float]]:
    """(comparison, ratio per variant, target) rows."""
    def us(v: VariantResult, key: str) -> float:
        c = v.cases.get(key)
        return c.us if c is not None and c.timed else math.nan

    def bus(v: VariantResult, which: str) -> float:
        return getattr(v.batch, which) if v.batch is not None else math.nan

    return [
        ("scipy solve_ivp LSODA / kinetics auto, kernel level",
         [_ratio(us(v, "scipy_lsoda"), us(v, "kin_kern_auto")) for v in results], TARGET_LSODA),
        ("scipy solve_ivp LSODA / kinetics auto, Python API",
         [_ratio(us(v, "scipy_lsoda"), us(v, "kin_api_auto")) for v in results], TARGET_LSODA),
        ("scipy solve_ivp LSODA (one by one) / kinetics batch",
         [_ratio(us(v, "scipy_lsoda"), bus(v, "kin_us")) for v in results], TARGET_LSODA),
        ("numbalsoda (numba loop) / kinetics auto, kernel level",
         [_ratio(us(v, "numbalsoda"), us(v, "kin_kern_auto")) for v in results], TARGET_NUMBALSODA),
        ("numbalsoda (numba loop) / kinetics auto, Python API",
         [_ratio(us(v, "numbalsoda"), us(v, "kin_api_auto")) for v in results], TARGET_NUMBALSODA),
        ("numbalsoda prange batch / kinetics simulate_batch",
         [_ratio(bus(v, "nbl_us"), bus(v, "kin_us")) for v in results], TARGET_NUMBALSODA),
        ("(info) scipy odeint / kinetics auto, kernel level",
         [_ratio(us(v, "scipy_odeint"), us(v, "kin_kern_auto")) for v in results], math.nan),
    ]


def render(info: dict[str, str], settings: dict[str, str], results: list[VariantResult],
           missing: list[str], wall: float) -> str:
    """The Markdown report."""
    L: list[str] = []
    add = L.append
    names = [v.name for v in results]
    add("# kinetics vs peer ODE solvers: `cart_bench` results")
    add("")
    add("Written by `python -m benchmarks.run` (do not edit by hand). Model and protocol:"
        " `shared/bench/README.md` (8 states, 24 parameters; 50 output times to 365 d;"
        f" rtol {peers.RTOL:g}, atol {peers.ATOL:g}; stiff variant = kill1, kill2, s_B, d_B x30).")
    add("")
    add("## Machine and versions")
    add("")
    add("| | |")
    add("|---|---|")
    for k in ("date", "cpu", "cores", "platform", "python", "numpy", "scipy", "numba", "numbalsoda",
              "sksundae", "kinetics"):
        add(f"| {k} | {info[k]} |")
    for k, v in settings.items():
        add(f"| {k} | {v} |")
    add(f"| run time | {wall:.0f} s |")
    if missing:
        add("")
        add("Peers unavailable: " + "; ".join(missing))

    add("")
    add("## Accuracy gate")
    add("")
    add(f"Max relative difference of the B-cell output (xB x 100, all 50 times) against scipy Radau"
        f" rtol 1e-12 / atol 1e-14. A method is timed only when it is below {ACC_GATE:g}.")
    add("")
    add("| method | " + " | ".join(names) + " | timed |")
    add("|---|" + "---:|" * len(names) + "---|")
    keys = list(results[0].cases)
    for key in keys:
        cs = [v.cases[key] for v in results]
        errs = " | ".join(f"{c.err:.1e}" if math.isfinite(c.err) else "failed" for c in cs)
        why = "; ".join(f"{v.name}: {c.error}" for v, c in zip(results, cs) if c.error)
        add(f"| {cs[0].label} | {errs} | {'yes' if not why else 'no (' + why + ')'} |")

    add("")
    add("## Single solve")
    add("")
    add("Median us per solve (one process, methods timed round robin so machine load hits all alike;"
        " fastest = quickest sample, least disturbed by other work;"
        " IQR = interquartile range / median of the samples, a noise indicator; ratios below use medians). Kernel level = kinetics' compiled"
        " `simulate_kernel` called from a numba loop, like numbalsoda; Python API = `CompiledModel.simulate`.")
    add("")
    add("| method | " + " | ".join(f"{n} us/solve | {n} fastest | {n} IQR" for n in names) + " |")
    add("|---|" + "---:|---:|---:|" * len(names))
    for key in keys:
        cs = [v.cases[key] for v in results]
        cells = " | ".join(f"{_fmt_us(c)} | {c.best:,.1f} | {c.spread:.0f}%" if c.timed and math.isfinite(c.spread)
                           else f"{_fmt_us(c)} | | " for c in cs)
        add(f"| {cs[0].label} | {cells} |")

    add("")
    add("## Batch")
    add("")
    if all(v.batch is None for v in results):
        add("Not run (numbalsoda unavailable).")
    else:
        b0 = next(v.batch for v in results if v.batch is not None)
        add(f"{b0.n_sets:,} parameter sets drawn as value x exp(0.3 z), wall time per solve"
            f" (median of {len(b0.kin_walls)} runs, interleaved), {b0.threads} numba threads.")
        add("")
        add("| | " + " | ".join(names) + " |")
        add("|---|" + "---:|" * len(names))

        def row(label: str, f: Callable[[BatchResult], str]) -> None:
            add(f"| {label} | " + " | ".join(f(v.batch) if v.batch else "n/a" for v in results) + " |")

        row("kinetics simulate_batch (auto), us/solve", lambda b: f"{b.kin_us:,.1f}")
        row("numbalsoda prange, us/solve", lambda b: f"{b.nbl_us:,.1f}")
        row("kinetics wall per run, s", lambda b: ", ".join(f"{w:.3f}" for w in b.kin_walls))
        row("numbalsoda wall per run, s", lambda b: ", ".join(f"{w:.3f}" for w in b.nbl_walls))
        row("parallel gain: single-solve us (numba loop) / batch us, kinetics / numbalsoda",
            lambda b: f"{b.kin_single_us / b.kin_us:.2f} / {b.nbl_single_us / b.nbl_us:.2f}")
        row("failed sets: kinetics / numbalsoda", lambda b: f"{b.kin_failed} / {b.nbl_failed}")
        row("kinetics accepted steps per set, mean / max", lambda b: f"{b.kin_mean_steps:.0f} / {b.kin_max_steps}")
        row("B cells, kinetics vs numbalsoda: median / p99 / max rel diff",
            lambda b: f"{b.agree_median:.1e} / {b.agree_p99:.1e} / {b.agree_max:.1e}")
        row(f"sets differing by >= {ACC_GATE:g}", lambda b: f"{b.n_disagree}")
        row("most-differing sets: err vs Radau, kinetics / numbalsoda",
            lambda b: "; ".join(f"#{k}: {ek:.1e} / {en:.1e}" for k, ek, en in b.worst))
        row("kinetics batch vs single solve (3 sets), max rel diff", lambda b: f"{b.batch_vs_single:.1e}")
        add("")
        add(f"Parallel gain is ideally about the thread count ({b0.threads}); it falls when other work shares"
            " the cores (see the load average above) and because the drawn sets differ from the central one.")

    add("")
    add("## Speed-up against the targets")
    add("")
    add("| comparison | " + " | ".join(names) + " | target | met |")
    add("|---|" + "---:|" * len(names) + "---:|---|")
    for label, rs, target in ratio_rows(results):
        cells = " | ".join(f"{r:,.1f}x" if math.isfinite(r) else "n/a" for r in rs)
        if math.isfinite(target):
            met = "yes" if all(math.isfinite(r) and r >= target for r in rs) else (
                "NO (" + ", ".join(n for n, r in zip(names, rs) if not (math.isfinite(r) and r >= target)) + ")")
            add(f"| {label} | {cells} | >= {target:g}x | {met} |")
        else:
            add(f"| {label} | {cells} | | |")

    add("")
    add("## Where kinetics spends its time")
    add("")
    add("Per single solve (central parameters). us/step = kernel-level time / attempted steps"
        " (accepted + rejected); API overhead = Python API time - kernel-level time.")
    add("")
    add("| variant | method | steps | rejected | RHS evals | Jacobians | stiff from t | kernel us | us/step |"
        " API us | API overhead us |")
    add("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for v in results:
        for meth in KIN_METHODS:
            sim = v.sims.get(meth)
            if sim is None:
                add(f"| {v.name} | {meth} | failed | | | | | | | | |")
                continue
            kc, ac = v.cases[f"kin_kern_{meth}"], v.cases[f"kin_api_{meth}"]
            att = sim.n_steps + sim.n_rejected  # type: ignore[attr-defined]
            sf = sim.stiff_from  # type: ignore[attr-defined]
            add(f"| {v.name} | {meth} | {sim.n_steps} | {sim.n_rejected} | {sim.n_rhs} |"  # type: ignore[attr-defined]
                f" {sim.n_jacobians} | {'-' if not math.isfinite(sf) else f'{sf:.3g}'} |"  # type: ignore[attr-defined]
                f" {kc.us:.1f} | {kc.us / att:.3f} | {ac.us:.1f} | {ac.us - kc.us:.1f} |")
    add("")
    for v in results:
        kern, kpy, api = (v.cases[k] for k in ("kin_kern_auto", "kin_kernpy_auto", "kin_api_auto"))
        if kern.timed and kpy.timed and api.timed:
            add(f"- {v.name}, auto: of the {api.us - kern.us:.1f} us Python API overhead, numba's dispatch of"
                f" `simulate_kernel` (kernel called from Python - from a numba loop) is {kpy.us - kern.us:.1f} us"
                f" and kinetics' Python wrapper (`simulate` - kernel called from Python) {api.us - kpy.us:.1f} us.")
    add("")
    return "\n".join(L)


# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------

#: Sections of RESULTS.md written by other benchmark scripts (fit_speed, population_scale): kept as they are.
KEPT_FROM = "## Estimation speed"


def kept_sections(path: Path) -> str:
    """The part of an existing report from :data:`KEPT_FROM` on ("" if none), to append after a rewrite."""
    if not path.is_file():
        return ""
    old = path.read_text()
    at = old.find(KEPT_FROM)
    return "" if at < 0 else "\n" + old[at:]


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and write the report; see the module docstring."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="report to write (Markdown)")
    ap.add_argument("--toml", type=Path, default=peers.DEFAULT_TOML, help="benchmark model file")
    ap.add_argument("--quick", action="store_true", help="shorter timings (fewer repeats), ~1 minute")
    ap.add_argument("--seconds", type=float, default=None,
                    help="timing seconds per method and variant (default 1.5, --quick 0.4)")
    ap.add_argument("--rounds", type=int, default=None, help="round-robin rounds (default 15, --quick 4)")
    ap.add_argument("--batch", type=int, default=10_000, help="parameter sets per batch (0: skip batches)")
    ap.add_argument("--batch-reps", type=int, default=None, help="timed batch runs (default 3, --quick 1)")
    ap.add_argument("--seed", type=int, default=2024, help="seed of the batch draws")
    ap.add_argument("--no-compile-time", action="store_true", help="skip the compile-time section")
    args = ap.parse_args(argv)
    seconds = args.seconds if args.seconds is not None else (0.4 if args.quick else 1.5)
    rounds = args.rounds if args.rounds is not None else (4 if args.quick else 15)
    reps = args.batch_reps if args.batch_reps is not None else (1 if args.quick else 3)
    block_seconds = 0.005

    info = machine_info()
    load0 = os.getloadavg()
    log(f"{info['cpu']}; {info['cores']}; load average {load0[0]:.2f}")
    log(f"python {info['python']}, numpy {info['numpy']}, scipy {info['scipy']}, numba {info['numba']},"
        f" numbalsoda {info['numbalsoda']}, sksundae {info['sksundae']}, kinetics {info['kinetics']}")

    _, values, y0 = peers.load_bench(args.toml)
    times = peers.protocol_times()
    log("checking the peers' hand-written equations against the model file")
    rhs_err, jac_err = peers.check_equations(args.toml, values, y0)
    if not (rhs_err < 1e-12 and jac_err < 1e-6):
        raise SystemExit(f"peers' equations disagree with {args.toml}: rhs {rhs_err:.1e}, jac {jac_err:.1e}")

    log(f"loading {args.toml} with kinetics and compiling (first time ~10 s, then cached)")
    t0 = time.perf_counter()
    m = kinetics.load_model(args.toml)
    if tuple(m.parameter_names) != peers.PARAM_NAMES or tuple(m.state_names) != peers.STATE_NAMES:
        raise SystemExit("kinetics' parameter or state order differs from benchmarks/peers.py")
    if not np.array_equal(m.parameter_vector(None), values):
        raise SystemExit("kinetics' default parameter values differ from the model file's")
    s0 = m.simulate(np.array([0.0]), params=values)
    if not np.allclose(np.asarray(s0.states)[0], y0, rtol=1e-15, atol=0):
        raise SystemExit("kinetics' initial states differ from the model file's")
    ks = KinSetup(m, m.kernels.simulate_kernel)
    args0 = ks.kernel_args(times, values, "auto")
    _repeat_kernel(ks.kernel, 1, args0)  # compile the numba loop around the kernel
    log(f"kinetics ready in {time.perf_counter() - t0:.1f} s")

    if peers.HAS_NUMBALSODA:
        log("compiling the numbalsoda loop")
        _repeat_numbalsoda(peers.NUMBALSODA_RHS_ADDRESS, 1, values, y0, times, peers.RTOL, peers.ATOL)

    _, missing = peer_cases(values, y0, times)
    results: list[VariantResult] = []
    for name, p in (("mild", values), ("stiff", peers.stiff_params(values))):
        results.append(run_variant(name, p, y0, times, ks, seconds, rounds, block_seconds))
    if args.batch > 0:
        for v, centre in zip(results, (values, peers.stiff_params(values))):
            v.batch = run_batch(v.name, centre, y0, times, ks, args.batch, args.seed, reps)
            if v.batch is not None:
                v.batch.kin_single_us = v.cases["kin_kern_auto"].us
                v.batch.nbl_single_us = v.cases["numbalsoda"].us

    load1 = os.getloadavg()
    settings = {
        "timing": f"{seconds:g} s per method and variant in {rounds} round-robin rounds"
                  f"{' (--quick)' if args.quick else ''}; batch: {reps} timed run(s) each",
        "load average (1 min) at start / end": f"{load0[0]:.2f} / {load1[0]:.2f}",
    }
    text = render(info, settings, results, missing, time.perf_counter() - _T0)
    if not args.no_compile_time:
        log("compile time: fresh processes with an empty and a filled cache")
        text = text.rstrip("\n") + "\n\n" + compile_time.section()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + kept_sections(args.out))
    print()
    print(text)
    log(f"wrote {args.out}")

    ok = True
    for v in results:
        for meth in KIN_METHODS:
            for key in (f"kin_api_{meth}", f"kin_kern_{meth}"):
                ok &= v.cases[key].timed
        if v.batch is not None:
            ok &= v.batch.kin_failed == 0
    if not ok:
        log("FAILED: a kinetics method failed or missed the accuracy gate (see the report)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
