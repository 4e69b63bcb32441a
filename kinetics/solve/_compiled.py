"""Compiled models: a symbolic Model plus its numba kernels, with simulate / batch / sensitivities."""

from __future__ import annotations

import functools
import math
import mmap
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import numba
import numpy as np

from kinetics import codegen
from kinetics.errors import DoseError, SolverInputError, did_you_mean
from kinetics.model import Model, find_model_file, read_model_file
from kinetics.solve._types import (
    METHODS,
    BatchCrossing,
    BatchSimulation,
    Crossing,
    Dose,
    Sensitivities,
    Simulation,
    SolveStatus,
    status_message,
)

__all__ = ["CompiledModel", "compile_model", "load_model"]

_HERE = Path(__file__).resolve().parent
_NUMERICS_FILES = (_HERE / "_numerics.py", _HERE / "_rosenbrock_tableau.py")
_ENGINE_FILES = (*_NUMERICS_FILES, _HERE / "_solver_kernels.py", _HERE.parent / "codegen" / "_generate.py")
_DIRECTIONS = {"up": 1, "down": -1, "any": 0}
_METHOD_NAMES = {code: name for name, code in METHODS.items()}   # kernel code -> method name


@functools.cache
def _engine_text() -> str:
    return "\n".join(p.read_text() for p in _ENGINE_FILES)


@functools.cache
def _numerics_module() -> ModuleType:
    """The model-independent solver helpers (``_numerics.py``), imported from the cache directory, where numba
    keeps their compiled code for every model."""
    key = codegen.cache_key(*(p.read_text() for p in _NUMERICS_FILES))
    return codegen.load_module(f"engine_{key}", (_HERE / "_numerics.py").read_text)


def load_model(name_or_path: str | os.PathLike[str]) -> CompiledModel:
    """Load a library model by name (``"oral_1cmt"``) or any ``.toml`` model file, ready to simulate.

    Compilation happens on the first solve and is cached on disk
    (``$KINETICS_CACHE_DIR``), so later processes start fast.
    """
    return compile_model(read_model_file(find_model_file(name_or_path)))


def compile_model(model: Model) -> CompiledModel:
    """Wrap a symbolic :class:`~kinetics.model.Model` (e.g. from ``build_model``) for simulation."""
    return CompiledModel(model)


@dataclass(frozen=True, eq=False)
class CompiledModel:
    """A model ready to simulate. Kernels are generated and compiled lazily, once.

    Examples
    --------
    >>> import kinetics
    >>> m = kinetics.load_model("oral_1cmt")
    >>> sim = m.simulate([1.0, 2.0], doses=[kinetics.Dose(0.0, 320.0, "depot")])
    >>> sim.success
    True
    """

    model: Model
    _cache: dict[object, object] = field(default_factory=dict, repr=False)

    # -- names and defaults ---------------------------------------------------
    @property
    def name(self) -> str:
        """Model name."""
        return self.model.name

    @property
    def parameter_names(self) -> tuple[str, ...]:
        """Parameter names, in the order of parameter arrays."""
        return self.model.parameter_names

    @property
    def state_names(self) -> tuple[str, ...]:
        """State names, in the order of state arrays."""
        return self.model.state_names

    @property
    def output_names(self) -> tuple[str, ...]:
        """Output names, in the order of output arrays."""
        return self.model.output_names

    @property
    def dose_target_names(self) -> tuple[str, ...]:
        """Names a :class:`Dose` may target."""
        return self.model.dose_target_names

    @property
    def defaults(self) -> dict[str, float]:
        """Default parameter values from the model file."""
        return self.model.defaults

    def __repr__(self) -> str:
        return f"CompiledModel({self.model!r})"

    # -- kernels -----------------------------------------------------------------
    @property
    def kernels(self) -> ModuleType:
        """The generated numba module (generated and imported on first use)."""
        mod = self._cache.get("module")
        if mod is None:
            numerics = _numerics_module()
            key = codegen.cache_key(codegen.model_fingerprint(self.model), _engine_text())
            mod = codegen.load_module(key, lambda: codegen.generate_model_source(self.model)
                                      + f"\n\nfrom {numerics.__name__} import *  # noqa: F403\n\n"
                                      + (_HERE / "_solver_kernels.py").read_text())
            self._cache["module"] = mod
        return mod  # type: ignore[return-value]

    # -- argument checking -------------------------------------------------------------
    @property
    def _lookup(self) -> _Lookup:
        """Index tables built once per model (keeps per-solve Python overhead small)."""
        lk = self._cache.get("lookup")
        if lk is None:
            m = self.model
            lk = _Lookup(
                defaults=np.array([p.value for p in m.parameters], dtype=float),
                param_index={n: i for i, n in enumerate(m.parameter_names)},
                target_index={n: i for i, n in enumerate(m.dose_target_names)},
                target_state={d.name: m.state_names.index(d.state) for d in m.dose_targets},
                n_states=len(m.states), n_outputs=len(m.outputs),
            )
            self._cache["lookup"] = lk
        return lk  # type: ignore[return-value]

    def parameter_vector(self, params: Mapping[str, float] | Sequence[float] | np.ndarray | None) -> np.ndarray:
        """Full parameter array from defaults and overrides (a dict by name or a full array)."""
        lk = self._lookup
        p = lk.defaults.copy()
        if params is None:
            return p
        if isinstance(params, Mapping):
            for k, v in params.items():
                i = lk.param_index.get(k)
                if i is None:
                    raise SolverInputError(f"unknown parameter '{k}' for model '{self.name}'"
                                           f"{did_you_mean(k, self.parameter_names)}")
                try:
                    p[i] = float(v)  # type: ignore[arg-type]
                except (TypeError, ValueError):
                    raise SolverInputError(f"parameter '{k}' must be a number, got {v!r}") from None
        else:
            arr = np.asarray(params, dtype=float)
            if arr.shape != p.shape:
                raise SolverInputError(f"params array has shape {arr.shape}; expected ({len(p)},) in the order "
                                       f"{list(self.parameter_names)}")
            p = arr.copy()
        if not np.isfinite(p).all():
            i = int(np.flatnonzero(~np.isfinite(p))[0])
            raise SolverInputError(f"parameter '{self.parameter_names[i]}' is not finite ({p[i]!r})")
        return p

    def _times(self, times: Sequence[float] | np.ndarray, t0: float) -> np.ndarray:
        t = np.atleast_1d(np.asarray(times, dtype=float))
        # fast path: finite ends, t[0] >= t0 and non-decreasing steps (a nan anywhere fails a comparison)
        if (t.ndim == 1 and t.size and t[0] >= t0 and math.isfinite(t[-1])
                and (t.size == 1 or bool((np.diff(t) >= 0).all()))):
            return t
        if t.ndim != 1:
            raise SolverInputError(f"times must be one-dimensional, got shape {t.shape}")
        if not np.isfinite(t).all():
            raise SolverInputError(f"times must be finite; entry {int(np.flatnonzero(~np.isfinite(t))[0])} is {t[~np.isfinite(t)][0]!r}")
        if t.size and t[0] < t0:
            raise SolverInputError(f"times must be >= t0={t0}; got {t[0]!r} (negative times are not allowed)")
        if t.size > 1 and (t[1:] < t[:-1]).any():
            i = int(np.flatnonzero(np.diff(t) < 0)[0])
            raise SolverInputError(f"times must be sorted (non-decreasing); times[{i + 1}]={t[i + 1]!r} < "
                                   f"times[{i}]={t[i]!r}")
        return t

    def _dose_arrays(self, doses: Sequence[Dose] | None, t0: float) -> tuple[np.ndarray, ...]:
        if not doses:
            return _NO_DOSES
        lk = self._lookup
        targets = self.dose_target_names
        for i, d in enumerate(doses):
            if not isinstance(d, Dose):
                raise DoseError(f"doses[{i}] must be a kinetics.Dose, got {type(d).__name__}")
            if d.target not in lk.target_index:
                raise DoseError(f"doses[{i}]: unknown dose target '{d.target}'{did_you_mean(d.target, targets)} "
                                f"(model '{self.name}' accepts: {', '.join(targets) or 'none'})")
            if d.time < t0:
                raise DoseError(f"doses[{i}]: time {d.time} is before the start of the solve t0={t0}")
        return (np.array([d.time for d in doses], dtype=float), np.array([d.amount for d in doses], dtype=float),
                np.array([d.duration for d in doses], dtype=float),
                np.array([lk.target_index[d.target] for d in doses], dtype=np.int64),
                np.array([lk.target_state[d.target] for d in doses], dtype=np.int64))

    def _tolerances(self, rtol: float, atol: float | Sequence[float], max_steps: int,
                    method: str) -> tuple[float, np.ndarray, int, int]:
        key = None
        if type(atol) in (int, float) and type(rtol) in (int, float) and type(max_steps) is int:
            key = ("tolerances", type(rtol), rtol, type(atol), atol, max_steps, method)
            known = self._cache.get(key)
            if known is not None:
                return known  # type: ignore[return-value]
        checked = self._check_tolerances(rtol, atol, max_steps, method)
        if key is not None:
            if len(self._cache) > 256:   # many different tolerances: forget them
                for k in [k for k in self._cache if isinstance(k, tuple) and k[0] == "tolerances"]:
                    del self._cache[k]
            self._cache[key] = checked
        return checked

    def _check_tolerances(self, rtol: float, atol: float | Sequence[float], max_steps: int,
                          method: str) -> tuple[float, np.ndarray, int, int]:
        if not (isinstance(rtol, (int, float)) and math.isfinite(rtol) and rtol > 0):
            raise SolverInputError(f"rtol must be a positive finite number, got {rtol!r}")
        n = self._lookup.n_states
        a = np.full(n, float(atol)) if isinstance(atol, (int, float)) else np.asarray(atol, dtype=float)
        if a.shape != (n,) or not (np.isfinite(a) & (a > 0)).all():
            raise SolverInputError(f"atol must be a positive number or one per state "
                                   f"({len(self.state_names)}), got {atol!r}")
        if isinstance(max_steps, bool) or not isinstance(max_steps, (int, np.integer)) or max_steps < 1:
            raise SolverInputError(f"max_steps must be a positive integer, got {max_steps!r}")
        if method not in METHODS:
            raise SolverInputError(f"unknown method '{method}'{did_you_mean(str(method), METHODS)} "
                                   f"(choose from {', '.join(METHODS)})")
        return float(rtol), a, int(max_steps), METHODS[method]

    def _initial_override(self, initial_states: Mapping[str, float] | None) -> np.ndarray:
        if not initial_states:
            none = self._cache.get("no_override")   # all nan; the kernel only reads it
            if none is None:
                none = self._cache["no_override"] = np.full(self._lookup.n_states, np.nan)
            return none  # type: ignore[return-value]
        y0 = np.full(self._lookup.n_states, np.nan)
        for k, v in (initial_states or {}).items():
            if k not in self.state_names:
                raise SolverInputError(f"unknown state '{k}' in initial_states{did_you_mean(k, self.state_names)}")
            if not math.isfinite(float(v)):
                raise SolverInputError(f"initial value of '{k}' must be finite, got {v!r}")
            y0[self.state_names.index(k)] = float(v)
        return y0

    def _wrt(self, wrt: Sequence[str] | None) -> tuple[tuple[str, ...], np.ndarray]:
        names = tuple(self.parameter_names) if wrt is None else tuple(wrt)
        idx = []
        for w in names:
            if w in self.parameter_names:
                idx.append(self.parameter_names.index(w))
            elif isinstance(w, str) and w.startswith("init:") and w[5:] in self.state_names:
                idx.append(len(self.parameter_names) + self.state_names.index(w[5:]))
            else:
                cands = list(self.parameter_names) + [f"init:{s}" for s in self.state_names]
                raise SolverInputError(f"cannot take sensitivities with respect to {w!r}{did_you_mean(str(w), cands)}"
                                       " (use parameter names or 'init:<state>')")
        return names, np.array(idx, dtype=np.int64)

    # -- solving -----------------------------------------------------------------
    def _kernel_arguments(self, times: np.ndarray, p: np.ndarray, doses: Sequence[Dose] | None,
                          sdir: np.ndarray | None, rtol: float, atol: float | Sequence[float], method: str,
                          max_steps: int, t0: float, initial_states: Mapping[str, float] | None,
                          event: tuple[int, float, int, float, float] | None, *,
                          sensitivity_error_control: bool = True) -> tuple[object, ...]:
        """Checked arguments of ``kernels.simulate_kernel`` (the output arrays are the last five).

        Benchmarks call the kernel with these directly, to time solves without Python overhead.
        """
        r, a, ms, mcode = self._tolerances(rtol, atol, max_steps, method)
        if not isinstance(sensitivity_error_control, (bool, np.bool_)):
            raise SolverInputError(f"sensitivity_error_control must be True or False, got "
                                   f"{sensitivity_error_control!r}")
        d = self._dose_arrays(doses, t0)
        y0 = self._initial_override(initial_states)
        n, no, npar = len(self.state_names), len(self.output_names), len(p)
        M = 0 if sdir is None else len(sdir)
        ev_out, ev_level, ev_dir, ev_after, until = event if event else (-1, 0.0, 0, 0.0, 0.0)
        t_end = max(float(times[-1]) if times.size else t0, until, t0)
        sens = None if sdir is None else self._sensitivity_work(sdir, sensitivity_error_control)
        outputs = (np.empty((times.size, n * (1 + M))), np.empty((times.size, max(no, 1))),
                   np.empty((times.size, max(no, 1), M)), np.zeros(8, dtype=np.int64), np.zeros(5))
        return (p, y0, sens, times, float(t0), t_end, *d, r, a, mcode, ms, ev_out, ev_level, ev_dir, ev_after,
                *self._work(n * (1 + M), len(d[0])), *outputs)

    def _work(self, n_components: int, n_doses: int, n_rows: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The kernel's scratch arrays (float, int) for one solve, or ``n_rows`` rows of them for a batch."""
        key = ("work", n_components, n_doses)
        lengths = self._cache.get(key)
        if lengths is None:
            lengths = self._cache[key] = self.kernels.work_lengths(n_components, n_doses)
        nf, ni = lengths  # type: ignore[misc]
        shape = () if n_rows is None else (n_rows,)
        return np.empty((*shape, nf)), np.empty((*shape, ni), dtype=np.int64)

    def _batch_work(self, n_sets: int, n_doses: int) -> tuple[np.ndarray, ...]:
        """Scratch rows for simulate_batch_kernel (a few contiguous runs of sets per thread, each with its own
        row) and the no-override initial values."""
        rows = max(1, min(n_sets, 8 * numba.get_num_threads()))
        return (*self._work(len(self.state_names), n_doses, rows), self._initial_override(None))

    def _sensitivity_work(self, sdir: np.ndarray, error_control: bool) -> tuple[np.ndarray, np.ndarray]:
        """The kernel's sensitivity work arrays ``(si, sv)`` (layout: "the integrated system" in
        _solver_kernels.py; offsets from the generated module)."""
        k = self.kernels
        si = np.concatenate([[1 if error_control else 0, 0], k.SI_PATTERN, sdir]).astype(np.int64)
        sv = np.zeros(k.SV_ABLK + len(sdir) * k.A_NNZ)
        return si, sv

    def _run(self, *args: object, **kw: object) -> tuple[np.ndarray, ...]:
        """Run the kernel; returns (Yout, O, dO, ist, fst)."""
        kargs = self._kernel_arguments(*args, **kw)  # type: ignore[arg-type]
        self.kernels.simulate_kernel(*kargs)
        return kargs[-5:]  # type: ignore[return-value]

    def _message(self, status: SolveStatus, fst: np.ndarray, max_steps: int) -> str:
        """The status sentence of one solve from its kernel float results ``fst``."""
        return status_message(status, fst, max_steps, self.model.time_unit, self.state_names)

    def _simulation(self, times: np.ndarray, Yout: np.ndarray, O: np.ndarray, ist: np.ndarray, fst: np.ndarray,
                    max_steps: int, method: str) -> Simulation:
        n = len(self.state_names)
        status = SolveStatus(int(ist[5]))
        by_output = _ro(O[:, :len(self.output_names)].T.copy())   # rows: contiguous per output, read-only views
        outputs = {name: by_output[i] for i, name in enumerate(self.output_names)}
        states = Yout if Yout.shape[1] == n else Yout[:, :n].copy()    # fresh from this solve: no copy needed
        return Simulation(
            times=_ro(times.copy()), states=_ro(states), outputs=outputs, state_names=self.state_names,
            status=status, message=self._message(status, fst, max_steps),
            n_steps=int(ist[0]), n_rejected=int(ist[1]), n_rhs=int(ist[2]), n_jacobians=int(ist[3]),
            stiff_from=float(fst[1]), method=method, method_at_end=_METHOD_NAMES.get(int(ist[6]), ""),
        )

    def simulate(self, times: Sequence[float] | np.ndarray, params: Mapping[str, float] | np.ndarray | None = None,
                 doses: Sequence[Dose] | None = None, *, rtol: float = 1e-6, atol: float | Sequence[float] = 1e-9,
                 method: str = "auto", max_steps: int = 100_000, t0: float = 0.0,
                 initial_states: Mapping[str, float] | None = None) -> Simulation:
        """Solve the model and return states and outputs at ``times``.

        Parameters
        ----------
        times
            Output times (model time unit), sorted, >= ``t0``; any grid. At a dose
            time the value after the dose is reported.
        params
            Overrides by name (others keep file values), or a full array in
            :attr:`parameter_names` order.
        doses
            :class:`Dose` events (bolus or zero-order infusion).
        rtol, atol
            Relative and absolute tolerances (``atol`` scalar or one per state).
        method
            ``"auto"`` (explicit Dormand-Prince, hands over to Rodas5P when stiffness
            is detected), ``"dopri5"`` or ``"rodas5p"``.
        initial_states
            Override initial values of some states (by name).

        Returns
        -------
        Simulation
            Never raises for a failed solve: check ``success`` / ``message``.
        """
        t = self._times(times, t0)
        p = self.parameter_vector(params)
        Yout, O, _, ist, fst = self._run(t, p, doses, None, rtol, atol, method, max_steps, t0, initial_states, None)
        return self._simulation(t, Yout, O, ist, fst, max_steps, method)

    def sensitivities(self, times: Sequence[float] | np.ndarray,
                      params: Mapping[str, float] | np.ndarray | None = None, doses: Sequence[Dose] | None = None,
                      *, wrt: Sequence[str] | None = None, rtol: float = 1e-6, atol: float | Sequence[float] = 1e-9,
                      method: str = "auto", max_steps: int = 100_000, t0: float = 0.0,
                      initial_states: Mapping[str, float] | None = None,
                      sensitivity_error_control: bool = True) -> Sensitivities:
        """Forward sensitivities d outputs / d theta at ``times``: array ``(n_times, n_outputs, n_wrt)``.

        ``wrt`` defaults to every parameter; ``"init:<state>"`` names an initial
        value. Sensitivities are integrated with the states (the same method and steps,
        the augmented system's exact Jacobian in the stiff method), and carried across
        doses and parameter-dependent switch times exactly.

        ``sensitivity_error_control`` (default True): the sensitivities take part in the
        step-size error test with the states' ``rtol``/``atol``. False lets the states alone
        choose the steps (CVODES' default, ``errconS = SUNFALSE``): the sensitivities are
        integrated with the same method and steps, their error is not tested, and the solve
        takes the plain solve's steps (1.25-2.2x fewer on dual_car_sle; 4.5 instead of 6.7 ms
        with 9 directions). Measured on dual_car_sle at rtol 1e-6, largest error as a fraction
        of each sensitivity's range: 4e-6 ("auto") and 2e-5 ("rodas5p") without, 1e-6 and
        2e-6 with error control; the outputs then have the plain solve's accuracy, not the
        somewhat better one the extra steps give (docs/ENGINE.md).
        """
        t = self._times(times, t0)
        p = self.parameter_vector(params)
        names, sdir = self._wrt(wrt)
        Yout, O, dO, ist, fst = self._run(t, p, doses, sdir, rtol, atol, method, max_steps, t0, initial_states, None,
                                          sensitivity_error_control=sensitivity_error_control)
        sim = self._simulation(t, Yout, O, ist, fst, max_steps, method)
        n, M = len(self.state_names), len(sdir)
        ds = Yout[:, n:].reshape(t.size, M, n).transpose(0, 2, 1).copy()
        no = len(self.output_names)
        return Sensitivities(simulation=sim, wrt=names, outputs=_ro(dO[:, :no, :].copy()), states=_ro(ds),
                             output_names=self.output_names)

    def repeated_solver(self, times: Sequence[float] | np.ndarray, doses: Sequence[Dose] | None = None, *,
                        wrt: Sequence[str] | None = (), rtol: float = 1e-6, atol: float | Sequence[float] = 1e-9,
                        method: str = "auto", max_steps: int = 100_000, t0: float = 0.0,
                        sensitivity_error_control: bool = True) -> RepeatedSolver:
        """A solver for one fixed time grid and dose schedule, called many times with new parameters.

        Estimators solve the same subject thousands of times; this checks the arguments once and
        keeps the kernel's work arrays, so a call costs little more than the integration itself.
        ``wrt=()`` solves without sensitivities; ``sensitivity_error_control`` as in
        :meth:`sensitivities`.
        """
        t = self._times(times, t0)
        names, sdir = self._wrt(wrt) if wrt else ((), None)
        args = list(self._kernel_arguments(t, self._lookup.defaults.copy(), doses, sdir, rtol, atol, method,
                                           max_steps, t0, None, None,
                                           sensitivity_error_control=sensitivity_error_control))
        return RepeatedSolver(self, t, names, args, max_steps)

    def repeated_batch_solver(self, times: Sequence[float] | np.ndarray,
                              doses: Sequence[Dose] | Sequence[Sequence[Dose]] | None, n_sets: int, *,
                              rtol: float = 1e-6, atol: float | Sequence[float] = 1e-9, method: str = "auto",
                              max_steps: int = 100_000, t0: float = 0.0) -> RepeatedBatchSolver:
        """Batch solves (numba threads) of ``n_sets`` parameter sets on one grid, called many times.

        ``doses`` is one schedule for all sets or one per set; arguments are checked once.
        """
        t = self._times(times, t0)
        r, a, ms, mcode = self._tolerances(rtol, atol, max_steps, method)
        table = self._dose_table(doses, n_sets, t0)
        return RepeatedBatchSolver(self, t, n_sets, (r, a, mcode, ms), table, float(t0))

    def crossing_time(self, output: str, level: float, *, after: float = 0.0, until: float,
                      direction: str = "any", params: Mapping[str, float] | np.ndarray | None = None,
                      doses: Sequence[Dose] | None = None, rtol: float = 1e-6, atol: float | Sequence[float] = 1e-9,
                      method: str = "auto", max_steps: int = 100_000, t0: float = 0.0,
                      initial_states: Mapping[str, float] | None = None) -> Crossing:
        """First time in ``(after, until]`` at which ``output`` crosses ``level``.

        Located by root finding on the solver's dense output (not a grid search); each step's
        dense output is scanned in four pieces, so a level crossed and crossed back within one
        step is found unless both crossings fall in the same quarter of the step.
        ``direction`` is ``"up"``, ``"down"`` or ``"any"``. A dose that carries the
        output across the level counts as a crossing at the dose time.
        """
        if output not in self.output_names:
            raise SolverInputError(f"unknown output '{output}'{did_you_mean(output, self.output_names)}")
        if direction not in _DIRECTIONS:
            raise SolverInputError(f"direction must be one of {list(_DIRECTIONS)}, got {direction!r}")
        if not (math.isfinite(level) and math.isfinite(after) and math.isfinite(until)):
            raise SolverInputError("level, after and until must be finite")
        if not t0 <= after < until:
            raise SolverInputError(f"need t0 <= after < until, got t0={t0}, after={after}, until={until}")
        p = self.parameter_vector(params)
        event = (self.output_names.index(output), float(level), _DIRECTIONS[direction], float(after), float(until))
        _, _, _, ist, fst = self._run(np.zeros(0), p, doses, None, rtol, atol, method, max_steps, t0, initial_states,
                                      event)
        status = SolveStatus(int(ist[5]))
        return Crossing(output=output, level=float(level), time=float(fst[2]), found=bool(ist[7]), status=status,
                        message=self._message(status, fst, max_steps))

    def simulate_batch(self, times: Sequence[float] | np.ndarray,
                       params: np.ndarray | Mapping[str, np.ndarray | float] | None = None,
                       doses: Sequence[Dose] | Sequence[Sequence[Dose]] | None = None, *, n_sets: int | None = None,
                       rtol: float = 1e-6, atol: float | Sequence[float] = 1e-9, method: str = "auto",
                       max_steps: int = 100_000, t0: float = 0.0) -> BatchSimulation:
        """Solve many parameter sets in parallel (numba threads).

        Parameters
        ----------
        times
            One output grid for every set (1-D), or one grid per set: ``(n_sets, n_times)``, each row
            sorted (model time unit).
        params
            ``(n_sets, n_params)`` array in :attr:`parameter_names` order, or a dict
            name -> array of length n_sets (or scalar); unnamed parameters keep defaults.
        doses
            One schedule for every set, or a list of ``n_sets`` schedules.

        Returns
        -------
        BatchSimulation
            Per-set status; one bad set never stops the others. ``times`` is as given (1-D or 2-D).
        """
        P = self._parameter_matrix(params, n_sets)
        ns = P.shape[0]
        T = self._batch_times(times, ns, t0)
        t_end = np.maximum(T[:, -1] if T.shape[1] else np.full(T.shape[0], t0), t0)
        t_end = np.ascontiguousarray(np.broadcast_to(t_end, (ns,)))
        Yout, O, ist, fst = self._run_batch(P, T, t0, t_end, doses, rtol, atol, method, max_steps, None)
        status = ist[:, 5].copy()
        ms = max_steps
        ok_msg = self._message(SolveStatus.SUCCESS, np.full(5, np.nan), ms)
        msgs = [ok_msg] * ns
        for i in np.flatnonzero(status):
            msgs[i] = self._message(SolveStatus(int(status[i])), fst[i], ms)
        shown = T[0].copy() if np.ndim(times) <= 1 else T.copy()
        return BatchSimulation(times=_ro(shown), states=_ro(Yout), outputs=_ro(O[:, :, :len(self.output_names)]),
                               output_names=self.output_names, state_names=self.state_names, status=_ro(status),
                               t_fail=_ro(fst[:, 0].copy()), n_steps=_ro(ist[:, 0].copy()), messages=tuple(msgs))

    def crossing_times(self, output: str, level: float | Sequence[float] | np.ndarray, *,
                       after: float | Sequence[float] | np.ndarray = 0.0, until: float, direction: str = "any",
                       params: np.ndarray | Mapping[str, np.ndarray | float] | None = None,
                       doses: Sequence[Dose] | Sequence[Sequence[Dose]] | None = None, n_sets: int | None = None,
                       rtol: float = 1e-6, atol: float | Sequence[float] = 1e-9, method: str = "auto",
                       max_steps: int = 100_000, t0: float = 0.0) -> BatchCrossing:
        """:meth:`crossing_time` for many parameter sets in parallel (numba threads).

        ``level`` and ``after`` are one value for every set or one per set; each solve stops at its
        crossing. Returns a :class:`BatchCrossing`: per set the time (nan where none was found before
        ``until``), whether one was found, and the solve status.
        """
        if output not in self.output_names:
            raise SolverInputError(f"unknown output '{output}'{did_you_mean(output, self.output_names)}")
        if direction not in _DIRECTIONS:
            raise SolverInputError(f"direction must be one of {list(_DIRECTIONS)}, got {direction!r}")
        P = self._parameter_matrix(params, n_sets)
        ns = P.shape[0]
        lv = _per_set(level, ns, "level")
        af = _per_set(after, ns, "after")
        if not math.isfinite(until):
            raise SolverInputError(f"until must be finite, got {until!r}")
        bad = np.flatnonzero(~((t0 <= af) & (af < until)))
        if bad.size:
            raise SolverInputError(f"need t0 <= after < until; set {int(bad[0])} has t0={t0}, after={af[bad[0]]}, "
                                   f"until={until}")
        event = (self.output_names.index(output), lv, _DIRECTIONS[direction], af)
        _, _, ist, fst = self._run_batch(P, np.zeros((1, 0)), t0, np.full(ns, float(until)), doses, rtol, atol,
                                         method, max_steps, event)
        status = ist[:, 5].copy()
        msgs = tuple(self._message(SolveStatus(int(c)), fst[i], max_steps)
                     for i, c in enumerate(status))
        return BatchCrossing(output=output, level=_ro(lv), time=_ro(fst[:, 2].copy()), found=_ro(ist[:, 7] == 1),
                             status=_ro(status), messages=msgs)

    def _batch_times(self, times: Sequence[float] | np.ndarray, ns: int, t0: float) -> np.ndarray:
        """Output grids as (1, n_times) for one shared grid or (n_sets, n_times), each row checked."""
        arr = np.asarray(times, dtype=float) if not isinstance(times, np.ndarray) else times.astype(float, copy=False)
        if arr.ndim <= 1:
            return np.ascontiguousarray(self._times(arr, t0)[None, :])
        if arr.ndim != 2 or arr.shape[0] != ns:
            raise SolverInputError(f"per-set times must have shape (n_sets, n_times) = ({ns}, n); got {arr.shape}")
        for i in range(ns):
            try:
                self._times(arr[i], t0)
            except SolverInputError as exc:
                raise SolverInputError(f"times of set {i}: {exc}") from None
        return np.ascontiguousarray(arr)

    def _run_batch(self, P: np.ndarray, T: np.ndarray, t0: float, t_end: np.ndarray, doses, rtol, atol, method,
                   max_steps, event) -> tuple[np.ndarray, ...]:
        """Run the batch kernel; ``event`` None or (output index, levels (n_sets,), direction, after (n_sets,))."""
        ns = P.shape[0]
        r, a, ms, mcode = self._tolerances(rtol, atol, max_steps, method)
        dose_table = self._dose_table(doses, ns, t0)
        n, no = len(self.state_names), len(self.output_names)
        nt = T.shape[1]
        Yout = _empty_large((ns, nt, n))
        O = _empty_large((ns, nt, max(no, 1)))
        dO = np.empty((ns, nt, max(no, 1), 0))
        ist = np.zeros((ns, 8), dtype=np.int64)
        fst = np.zeros((ns, 5))
        ev_out, ev_level, ev_dir, ev_after = event if event is not None else (-1, np.zeros(ns), 0, np.zeros(ns))
        self.kernels.simulate_batch_kernel(P, T, float(t0), t_end, *dose_table, r, a, mcode, ms, ev_out, ev_level,
                                           ev_dir, ev_after, *self._batch_work(ns, dose_table[0].shape[1]), Yout, O,
                                           dO, ist, fst)
        return Yout, O, ist, fst

    def _parameter_matrix(self, params: np.ndarray | Mapping[str, np.ndarray | float] | None,
                          n_sets: int | None) -> np.ndarray:
        base = self.parameter_vector(None)
        if params is None or isinstance(params, Mapping):
            sizes = {np.size(v) for v in (params or {}).values() if np.ndim(v) > 0}
            if len(sizes) > 1:
                raise SolverInputError(f"parameter arrays in the dict have different lengths {sorted(sizes)}")
            ns = n_sets if n_sets is not None else (sizes.pop() if sizes else 1)
            P = np.tile(base, (ns, 1))
            for k, v in (params or {}).items():
                if k not in self.parameter_names:
                    raise SolverInputError(f"unknown parameter '{k}'{did_you_mean(k, self.parameter_names)}")
                col = np.asarray(v, dtype=float)
                if col.ndim > 1 or (col.ndim == 1 and col.size != ns):
                    raise SolverInputError(f"parameter '{k}' has {col.size} values; expected {ns}")
                P[:, self.parameter_names.index(k)] = col
        else:
            P = np.array(params, dtype=float)
            if P.ndim != 2 or P.shape[1] != base.size:
                raise SolverInputError(f"params array has shape {P.shape}; expected (n_sets, {base.size}) with "
                                       f"columns {list(self.parameter_names)}")
        bad = ~np.isfinite(P)
        if bad.any():
            s, k = np.argwhere(bad)[0]
            raise SolverInputError(f"parameter '{self.parameter_names[k]}' of set {s} is not finite ({P[s, k]!r})")
        return np.ascontiguousarray(P)

    def _dose_table(self, doses: Sequence[Dose] | Sequence[Sequence[Dose]] | None, ns: int,
                    t0: float) -> tuple[np.ndarray, ...]:
        """Batch dose arrays (n_sets, max_doses) for time, amount, duration, target, state, plus n_doses (n_sets,).

        One schedule shared by every set (or none) is checked once and repeated.
        """
        if not doses or all(isinstance(d, Dose) for d in doses):
            one = self._dose_arrays(doses, t0)  # type: ignore[arg-type]
            width = max(1, len(one[0]))
            cols = tuple(np.ascontiguousarray(np.broadcast_to(np.pad(x, (0, width - len(x))), (ns, width)))
                         for x in one)
            return (*cols, np.full(ns, len(one[0]), dtype=np.int64))
        if len(doses) != ns:
            raise DoseError(f"doses has {len(doses)} schedules; expected one per parameter set ({ns})")
        arrays = [self._dose_arrays(list(s), t0) for s in doses]  # type: ignore[arg-type]
        nd = np.array([len(x[0]) for x in arrays], dtype=np.int64)
        width = max(1, int(nd.max()) if ns else 1)
        cols = []
        for i, dtype in enumerate((float, float, float, np.int64, np.int64)):
            col = np.zeros((ns, width), dtype=dtype)
            for k, x in enumerate(arrays):
                col[k, :len(x[i])] = x[i]
            cols.append(col)
        return (*cols, nd)


class RepeatedSolver:
    """Solves one time grid and dose schedule for changing parameters (see :meth:`CompiledModel.repeated_solver`).

    ``solver(params)`` returns ``(outputs, d_outputs, message)``: outputs ``(n_times, n_outputs)``,
    d outputs / d wrt ``(n_times, n_outputs, n_wrt)`` (None without ``wrt``) and "" on success or the
    failure message (then outputs hold nan from the failure on). Arrays are fresh copies.
    """

    def __init__(self, model: CompiledModel, times: np.ndarray, wrt: tuple[str, ...], args: list, max_steps: int):
        self.model, self.times, self.wrt, self._args, self._max_steps = model, times, wrt, args, max_steps
        self._n_out = len(model.output_names)
        self._kernel = model.kernels.simulate_kernel

    def __call__(self, params: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, str]:
        a = self._args
        p = np.asarray(params, dtype=float)
        if p.shape != a[0].shape:
            raise SolverInputError(f"params must have {a[0].size} values, got shape {p.shape}")
        a[0] = p
        sens = a[2]  # its work arrays are rewritten by every solve (rate_dp and flags at each segment start)
        a[-2].fill(0)
        a[-1].fill(0.0)
        self._kernel(*a)
        ist, fst = a[-2], a[-1]
        status = SolveStatus(int(ist[5]))
        msg = "" if status is SolveStatus.SUCCESS else self.model._message(status, fst, self._max_steps)
        out = a[-4][:, :self._n_out].copy()
        d_out = a[-3][:, :self._n_out, :].copy() if sens is not None else None
        return out, d_out, msg


class RepeatedBatchSolver:
    """Solves many parameter sets on one grid for changing parameters (see
    :meth:`CompiledModel.repeated_batch_solver`).

    ``solver(P)`` with ``P`` of shape ``(n_sets, n_params)`` returns ``(outputs, ok)``: outputs
    ``(n_sets, n_times, n_outputs)`` (a fresh array; nan after a failure) and a boolean mask of sets
    that solved; :meth:`message` says why set ``i`` failed.
    """

    def __init__(self, model: CompiledModel, times: np.ndarray, n_sets: int, tol: tuple, dose_table: tuple,
                 t0: float) -> None:
        self.model, self.times, self.n_sets = model, times, n_sets
        self._tol, self._doses, self._t0 = tol, dose_table, t0
        n, no = len(model.state_names), len(model.output_names)
        self._n_out = no
        self._yout = np.empty((n_sets, times.size, n))
        self._out = np.empty((n_sets, times.size, max(no, 1)))
        self._dout = np.empty((n_sets, times.size, max(no, 1), 0))
        self._ist = np.zeros((n_sets, 8), dtype=np.int64)
        self._fst = np.zeros((n_sets, 5))
        self._grid = np.ascontiguousarray(times[None, :])
        self._t_end = np.full(n_sets, max(float(times[-1]) if times.size else t0, t0))
        self._no_event = np.zeros(n_sets)
        self._work = model._batch_work(n_sets, dose_table[0].shape[1])
        self._kernel = model.kernels.simulate_batch_kernel

    def __call__(self, params: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        p = np.ascontiguousarray(params, dtype=float)
        if p.shape != (self.n_sets, len(self.model.parameter_names)):
            raise SolverInputError(f"params must have shape ({self.n_sets}, {len(self.model.parameter_names)}), "
                                   f"got {p.shape}")
        r, a, mcode, ms = self._tol
        self._ist.fill(0)
        self._fst.fill(0.0)
        self._kernel(p, self._grid, self._t0, self._t_end, *self._doses, r, a, mcode, ms, -1, self._no_event, 0,
                     self._no_event, *self._work, self._yout, self._out, self._dout, self._ist, self._fst)
        return self._out[:, :, :self._n_out].copy(), self._ist[:, 5] == 0

    def message(self, i: int) -> str:
        status = SolveStatus(int(self._ist[i, 5]))
        return self.model._message(status, self._fst[i], self._tol[3])


@dataclass(frozen=True)
class _Lookup:
    defaults: np.ndarray
    param_index: dict[str, int]
    target_index: dict[str, int]
    target_state: dict[str, int]
    n_states: int
    n_outputs: int


# empty, so never written; kept writable because numba compiles read-only arrays as a separate type
_NO_DOSES = (np.zeros(0), np.zeros(0), np.zeros(0), np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))


def _per_set(value: float | Sequence[float] | np.ndarray, ns: int, name: str) -> np.ndarray:
    """One finite value per set from a scalar or a length-``ns`` sequence."""
    try:
        v = np.array(np.broadcast_to(np.asarray(value, dtype=float), (ns,)))
    except (TypeError, ValueError):
        raise SolverInputError(f"{name} must be a number or one number per set ({ns}), got {value!r}") from None
    bad = np.flatnonzero(~np.isfinite(v))
    if bad.size:
        raise SolverInputError(f"{name} of set {int(bad[0])} is not finite ({v[bad[0]]!r})")
    return v


def _ro(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a


#: Result arrays above this size are mapped with transparent huge pages where the system offers them.
_HUGE_PAGE_FROM_BYTES = 8 << 20
_HUGE_PAGE_BYTES = 2 << 20


def _empty_large(shape: tuple[int, ...]) -> np.ndarray:
    """``np.empty(shape)`` of float64; a large one is backed by huge pages (Linux madvise), since a batch's
    first writes to fresh memory otherwise fault once per 4 KiB page: ~30 % of a 10,000-set cart_bench batch
    (40 MB of results) was page faults."""
    nbytes = int(np.prod(shape)) * 8
    if nbytes < _HUGE_PAGE_FROM_BYTES or not hasattr(mmap, "MADV_HUGEPAGE"):
        return np.empty(shape)
    buf = mmap.mmap(-1, nbytes + _HUGE_PAGE_BYTES)
    try:
        buf.madvise(mmap.MADV_HUGEPAGE)
    except OSError:  # a kernel without transparent huge pages: ordinary pages
        pass
    start = -np.frombuffer(buf, dtype=np.uint8, count=1).ctypes.data % _HUGE_PAGE_BYTES   # align to 2 MiB
    return np.frombuffer(buf, dtype=np.float64, count=nbytes // 8, offset=start).reshape(shape)
