"""The symbolic model: a frozen, validated description of an ODE system.

A :class:`Model` holds sympy expressions for the right-hand sides, initial
values, outputs, dose scalings and time switches. It is produced by
:func:`kinetics.model.read_model_file` or :func:`build_model`, and consumed by
code generation. It knows nothing of solvers.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property

import sympy as sp

from kinetics.errors import ModelError, did_you_mean
from kinetics.model._expr import RESERVED_NAMES, parse_expression

__all__ = ["Parameter", "State", "Output", "DoseTarget", "Model", "build_model", "TIME"]

#: The time symbol used in every model (unit: the model's ``time_unit``).
TIME = sp.Symbol("t", real=True)
_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")


def _symbol(name: str) -> sp.Symbol:
    return sp.Symbol(name, real=True)


@dataclass(frozen=True)
class Parameter:
    """A model parameter.

    ``value`` is the default (typical) value in ``unit``; ``lower``/``upper`` are
    inclusive bounds used by estimators and checked against ``value``.
    """

    name: str
    value: float
    unit: str = ""
    lower: float = -math.inf
    upper: float = math.inf
    description: str = ""
    source: str = ""

    @property
    def symbol(self) -> sp.Symbol:
        """The sympy symbol of this parameter."""
        return _symbol(self.name)


@dataclass(frozen=True)
class State:
    """A state variable with its initial value (an expression of parameters).

    ``nonnegative``: the state is an amount or a count that cannot fall below 0 (the solver keeps it
    there: see :mod:`kinetics.solve`).
    """

    name: str
    initial: sp.Expr
    unit: str = ""
    description: str = ""
    nonnegative: bool = False

    @property
    def symbol(self) -> sp.Symbol:
        """The sympy symbol of this state."""
        return _symbol(self.name)


@dataclass(frozen=True)
class Output:
    """A named observation: an expression of states, parameters and ``t``."""

    name: str
    expression: sp.Expr
    unit: str = ""
    description: str = ""


@dataclass(frozen=True)
class DoseTarget:
    """Where a named dose goes: ``state += amount * scale`` (``scale`` in parameters)."""

    name: str
    state: str
    scale: sp.Expr = sp.Integer(1)
    unit: str = ""
    description: str = ""


@dataclass(frozen=True)
class Model:
    """A validated symbolic ODE model.

    Attributes
    ----------
    odes
        Right-hand sides d(state)/dt, one per state, in state order; in units of
        state unit per ``time_unit``.
    switches
        Times (expressions of parameters) where the right-hand side may be
        discontinuous; the solver stops and restarts there. Includes those
        declared in the file and those implied by conditions such as ``t < Tmax``.
    """

    name: str
    parameters: tuple[Parameter, ...]
    states: tuple[State, ...]
    odes: tuple[sp.Expr, ...]
    outputs: tuple[Output, ...] = ()
    dose_targets: tuple[DoseTarget, ...] = ()
    switches: tuple[sp.Expr, ...] = ()
    description: str = ""
    time_unit: str = ""
    source: str = "<python>"
    references: tuple[str, ...] = ()
    metadata: Mapping[str, object] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        _validate(self)
        implied = _implied_switches(self)
        merged = _unique_exprs(tuple(self.switches) + implied)
        object.__setattr__(self, "switches", merged)

    # -- names -------------------------------------------------------------
    @cached_property
    def parameter_names(self) -> tuple[str, ...]:
        """Parameter names in array order."""
        return tuple(p.name for p in self.parameters)

    @cached_property
    def state_names(self) -> tuple[str, ...]:
        """State names in array order."""
        return tuple(s.name for s in self.states)

    @cached_property
    def output_names(self) -> tuple[str, ...]:
        """Output names in array order."""
        return tuple(o.name for o in self.outputs)

    @cached_property
    def dose_target_names(self) -> tuple[str, ...]:
        """Dose target names in array order."""
        return tuple(d.name for d in self.dose_targets)

    @property
    def defaults(self) -> dict[str, float]:
        """Default parameter values by name."""
        return {p.name: p.value for p in self.parameters}

    def __repr__(self) -> str:
        return (f"Model({self.name!r}: {len(self.states)} states, {len(self.parameters)} parameters, "
                f"outputs {list(self.output_names)}, doses {list(self.dose_target_names)})")

    def equations(self) -> list[str]:
        """The ODEs as human-readable strings ``d<state>/dt = ...``."""
        return [f"d{s.name}/dt = {sp.sstr(e)}" for s, e in zip(self.states, self.odes)]


# -- validation ------------------------------------------------------------
def _check_name(kind: str, name: str, where: str) -> None:
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ModelError(f"{where}: {kind} name {name!r} is not a valid name (letters, digits, '_'; "
                         "starting with a letter; at most 64 characters)")
    if name in RESERVED_NAMES:
        raise ModelError(f"{where}: {kind} name '{name}' is reserved (a function or constant name)")


def _validate(m: Model) -> None:
    where = m.source
    if not isinstance(m.name, str) or not m.name:
        raise ModelError(f"{where}: the model needs a non-empty 'name'")
    if not m.states:
        raise ModelError(f"{where}: the model has no states")
    seen: dict[str, str] = {}
    for kind, names in (("parameter", m.parameter_names), ("state", m.state_names)):
        for n in names:
            _check_name(kind, n, where)
            if n in seen:
                raise ModelError(f"{where}: duplicate name '{n}' (used as {seen[n]} and as {kind})")
            seen[n] = kind
    for kind, names in (("output", m.output_names), ("dose", m.dose_target_names)):
        if len(set(names)) != len(names):
            dup = next(n for n in names if names.count(n) > 1)
            raise ModelError(f"{where}: duplicate {kind} name '{dup}'")
        for n in names:
            _check_name(kind, n, where)
    if len(m.odes) != len(m.states):
        raise ModelError(f"{where}: {len(m.states)} states but {len(m.odes)} ODEs")
    for p in m.parameters:
        _check_parameter(p, where)
    pars = {p.symbol for p in m.parameters}
    sts = {s.symbol for s in m.states}
    for s, ode in zip(m.states, m.odes):
        _check_symbols(ode, pars | sts | {TIME}, f"{where}: [odes] {s.name}", m)
    for s in m.states:
        _check_symbols(s.initial, pars, f"{where}: [states] {s.name}.initial", m)
    for o in m.outputs:
        _check_symbols(o.expression, pars | sts | {TIME}, f"{where}: [outputs] {o.name}", m)
    for d in m.dose_targets:
        if d.state not in m.state_names:
            raise ModelError(f"{where}: [doses] {d.name} targets unknown state '{d.state}'"
                             f"{did_you_mean(d.state, m.state_names)}")
        _check_symbols(d.scale, pars, f"{where}: [doses] {d.name}.scale", m)
    for sw in m.switches:
        _check_symbols(sw, pars, f"{where}: switches", m)


def _check_parameter(p: Parameter, where: str) -> None:
    loc = f"{where}: [parameters] {p.name}"
    for attr in ("value", "lower", "upper"):
        v = getattr(p, attr)
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ModelError(f"{loc}: {attr} must be a number, got {v!r}")
    if not math.isfinite(p.value):
        raise ModelError(f"{loc}: value must be finite, got {p.value!r}")
    if math.isnan(p.lower) or math.isnan(p.upper) or p.lower > p.upper:
        raise ModelError(f"{loc}: bounds [{p.lower}, {p.upper}] are not an interval (lower must be <= upper)")
    if not (p.lower <= p.value <= p.upper):
        raise ModelError(f"{loc}: value {p.value!r} is outside its bounds [{p.lower}, {p.upper}]")


def _check_symbols(expr: sp.Basic, allowed: set[sp.Symbol], where: str, m: Model) -> None:
    if not isinstance(expr, sp.Basic):
        raise ModelError(f"{where}: expected a sympy expression, got {type(expr).__name__}")
    extra = expr.free_symbols - allowed
    if extra:
        name = sorted(str(s) for s in extra)[0]
        names = [str(s) for s in allowed]
        kind = ("a state or t" if name in m.state_names or name == "t" else "an undeclared symbol")
        raise ModelError(f"{where} uses {kind} '{name}' where only "
                         f"{'parameters' if TIME not in allowed else 'parameters, states and t'} are allowed"
                         f"{did_you_mean(name, names)}")


def _implied_switches(m: Model) -> tuple[sp.Expr, ...]:
    """Switch times implied by conditions on t in the ODEs (``t < Tmax`` -> ``Tmax``)."""
    pars = {p.symbol for p in m.parameters}
    found: list[sp.Expr] = []
    for s, ode in zip(m.states, m.odes):
        for rel in ode.atoms(sp.core.relational.Relational):
            if TIME not in rel.free_symbols:
                continue
            # lhs - rhs must be c*t + rest, c a nonzero constant, rest free of t and states.
            # Read off with a derivative, not expand/simplify, which blow up on inputs such
            # as 't < (a+b+c)**60' (a model file may come from a stranger).
            diff = rel.lhs - rel.rhs
            coeff = sp.diff(diff, TIME)
            rest = diff - coeff * TIME
            ok = (coeff.is_number and not coeff.is_zero and TIME not in rest.free_symbols
                  and rest.free_symbols <= pars)
            if not ok:
                raise ModelError(f"{m.source}: [odes] {s.name}: condition '{rel}' must compare t with an "
                                 "expression of parameters only (it becomes a switch time where the "
                                 "solver restarts); state-dependent conditions must not involve t")
            # No nsimplify: it would move 't < 1.4142135623731' to sqrt(2), off the real jump.
            found.append(-rest / coeff)
    return tuple(found)


def _same_expr(a: sp.Expr, b: sp.Expr) -> bool:
    if a == b:
        return True
    if a.free_symbols != b.free_symbols:
        return False
    d = a - b  # cheap: catches 0.3 vs 3/10 and 1.0*Tmax vs Tmax without simplify
    return d == 0 or (d.is_Number and bool(d.is_zero))


def _unique_exprs(exprs: tuple[sp.Expr, ...]) -> tuple[sp.Expr, ...]:
    # No sympy.simplify here: it is slow per pair, and pairs are quadratic in the number of switches.
    out: list[sp.Expr] = []
    for e in exprs:
        e = sp.sympify(e)
        if not any(_same_expr(e, o) for o in out):
            out.append(e)
    return tuple(out)


# -- building from Python ---------------------------------------------------
def build_model(
    name: str,
    parameters: Mapping[str, float | Parameter | Mapping[str, object]],
    states: Mapping[str, object],
    odes: Mapping[str, object],
    outputs: Mapping[str, object] | None = None,
    doses: Mapping[str, object] | None = None,
    switches: tuple[object, ...] = (),
    description: str = "",
    time_unit: str = "",
    nonnegative: Sequence[str] | bool = (),
) -> Model:
    """Build a :class:`Model` from Python values, sympy expressions or math strings.

    Parameters
    ----------
    parameters
        name -> value, :class:`Parameter`, or a dict of Parameter fields.
    states
        name -> initial value (number, string or sympy expression of parameters).
    odes
        state name -> right-hand side (string or sympy expression in the symbols
        ``sympy.Symbol(name, real=True)`` and :data:`TIME`).
    outputs
        output name -> expression.
    doses
        dose name -> state name, or a dict with ``state`` and optional ``scale``.
    nonnegative
        Names of states that cannot fall below 0 (amounts, cell counts), or True for every state.

    Examples
    --------
    >>> m = build_model("decay", {"k": 0.5}, {"x": 1.0}, {"x": "-k*x"}, outputs={"x_obs": "x"})
    >>> m.state_names
    ('x',)
    """
    where = "<python>"
    pars = tuple(_as_parameter(n, v, where) for n, v in parameters.items())
    par_syms = {p.name: p.symbol for p in pars}
    st_syms = {n: _symbol(n) for n in states}
    all_syms = {**par_syms, **st_syms, "t": TIME}
    missing = [n for n in states if n not in odes]
    if missing:
        raise ModelError(f"{where}: state '{missing[0]}' has no ODE")
    unknown = [n for n in odes if n not in states]
    if unknown:
        raise ModelError(f"{where}: ODE for unknown state '{unknown[0]}'{did_you_mean(unknown[0], states)}")
    nonneg = set(states) if nonnegative is True else set(nonnegative or ())
    bad = sorted(nonneg - set(states))
    if bad:
        raise ModelError(f"{where}: nonnegative names unknown state '{bad[0]}'{did_you_mean(bad[0], states)}")
    st = tuple(State(n, _as_expr(v, par_syms, f"{where}: states {n}"), nonnegative=n in nonneg)
               for n, v in states.items())
    ode = tuple(_as_expr(odes[n], all_syms, f"{where}: odes {n}") for n in states)
    outs = tuple(Output(n, _as_expr(v, all_syms, f"{where}: outputs {n}")) for n, v in (outputs or {}).items())
    dts = []
    for n, v in (doses or {}).items():
        if isinstance(v, str):
            spec: dict[str, object] = {"state": v}
        elif isinstance(v, Mapping) and isinstance(v.get("state"), str):
            spec = dict(v)
        else:
            raise ModelError(f"{where}: dose '{n}' must be a state name or a dict with 'state' "
                             f"(and optional 'scale', 'unit', 'description'), got {v!r}")
        for k in spec:
            if k not in _DOSE_FIELDS:
                raise ModelError(f"{where}: dose '{n}': unknown field '{k}'{did_you_mean(str(k), _DOSE_FIELDS)}")
        scale = _as_expr(spec.get("scale", 1), par_syms, f"{where}: doses {n}.scale")
        dts.append(DoseTarget(n, str(spec["state"]), scale, unit=str(spec.get("unit", "")),
                              description=str(spec.get("description", ""))))
    sws = tuple(_as_expr(s, par_syms, f"{where}: switches") for s in switches)
    return Model(name=name, parameters=pars, states=st, odes=ode, outputs=outs, dose_targets=tuple(dts),
                 switches=sws, description=description, time_unit=time_unit)


_PARAMETER_FIELDS = ("value", "unit", "lower", "upper", "description", "source")
_DOSE_FIELDS = ("state", "scale", "unit", "description")


def _as_parameter(name: str, v: object, where: str) -> Parameter:
    if isinstance(v, Parameter):
        if v.name != name:
            raise ModelError(f"{where}: parameter '{name}' is given a Parameter named '{v.name}'")
        return v
    if isinstance(v, Mapping):
        for k in v:
            if k not in _PARAMETER_FIELDS:
                raise ModelError(f"{where}: parameter '{name}': unknown field '{k}'"
                                 f"{did_you_mean(str(k), _PARAMETER_FIELDS)}")
        if "value" not in v:
            raise ModelError(f"{where}: parameter '{name}': missing 'value'")
        return Parameter(name=name, **v)  # type: ignore[arg-type]
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ModelError(f"{where}: parameter '{name}' value must be a number, got {v!r}")
    return Parameter(name=name, value=float(v))


def _as_expr(v: object, symbols: Mapping[str, sp.Symbol], where: str) -> sp.Expr:
    if isinstance(v, sp.Basic):
        # sympy.Symbol('k') and Symbol('k', real=True) are different symbols; take the model's by name.
        return v.xreplace({s: symbols[s.name] for s in v.free_symbols
                           if isinstance(s, sp.Symbol) and s.name in symbols})
    return parse_expression(v, symbols, where)
