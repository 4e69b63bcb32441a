"""Reading model files (TOML) into :class:`~kinetics.model.Model`.

The file is parsed with :mod:`tomllib`; every math string goes through the
safe parser of :mod:`kinetics.model._expr`. Errors name the file, the entry and
the problem.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping
from pathlib import Path

import sympy as sp

from kinetics.errors import ModelError, ModelFileError, did_you_mean
from kinetics.model._expr import parse_expression
from kinetics.model._model import TIME, DoseTarget, Model, Output, Parameter, State, _check_name

__all__ = ["read_model_file", "parse_model_text", "MAX_MODEL_FILE_BYTES"]

#: Largest model file accepted (bytes).
MAX_MODEL_FILE_BYTES = 1_000_000

_TOP_KEYS = {"name", "description", "time_unit", "references", "switches", "parameters", "states",
             "odes", "outputs", "doses", "metadata"}
_PARAM_KEYS = {"value", "unit", "lower", "upper", "description", "source", "confidence"}
_STATE_KEYS = {"initial", "unit", "description", "nonnegative"}
_OUTPUT_KEYS = {"expression", "unit", "description"}
_DOSE_KEYS = {"state", "scale", "unit", "description"}


def read_model_file(path: str | Path) -> Model:
    """Read and validate a model file.

    Raises
    ------
    ModelFileError
        If the file is missing, unreadable, not TOML, or any entry is invalid;
        the message starts with the file path and names the entry.
    """
    p = Path(path)
    try:
        size = p.stat().st_size
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the path
        raise ModelFileError(f"{p}: cannot read model file ({getattr(exc, 'strerror', None) or exc})") from None
    if size > MAX_MODEL_FILE_BYTES:
        raise ModelFileError(f"{p}: model file is {size} bytes (at most {MAX_MODEL_FILE_BYTES})")
    try:
        text = p.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ModelFileError(f"{p}: not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise ModelFileError(f"{p}: cannot read model file ({exc.strerror or exc})") from None
    return parse_model_text(text, source=str(p))


def parse_model_text(text: str, source: str = "<string>") -> Model:
    """Parse model-file TOML text; ``source`` names it in error messages."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ModelFileError(f"{source}: TOML syntax error: {exc}") from None
    except ValueError as exc:  # e.g. an integer over 4300 digits (Python's int-to-str limit)
        raise ModelFileError(f"{source}: TOML value cannot be read: {exc}") from None
    except RecursionError:
        raise ModelFileError(f"{source}: TOML nested too deeply") from None
    try:
        return _model_from_doc(doc, source)
    except ModelFileError:
        raise
    except ModelError as exc:
        raise ModelFileError(str(exc)) from None


def _model_from_doc(doc: Mapping[str, object], src: str) -> Model:
    _check_keys(doc, _TOP_KEYS, src, "top level")
    name = _string(doc.get("name"), src, "name", required=True)
    pars_tbl = _table(doc, "parameters", src)
    states_tbl = _table(doc, "states", src, required=True)
    odes_tbl = _table(doc, "odes", src, required=True)
    outputs_tbl = _table(doc, "outputs", src)
    doses_tbl = _table(doc, "doses", src)
    for key, kind, tbl in (("parameters", "parameter", pars_tbl), ("states", "state", states_tbl),
                           ("outputs", "output", outputs_tbl), ("doses", "dose", doses_tbl)):
        for n in tbl:
            _check_name(kind, n, f"{src}: [{key}] {n}")

    parameters = tuple(_parameter(n, v, src) for n, v in pars_tbl.items())
    par_syms = {p.name: p.symbol for p in parameters}
    dup = set(par_syms) & set(states_tbl)
    if dup:
        n = sorted(dup)[0]
        raise ModelFileError(f"{src}: [states] {n}: duplicate name '{n}' (used as parameter and as state)")
    st_syms = {n: sp.Symbol(n, real=True) for n in states_tbl}
    all_syms = {**par_syms, **st_syms, "t": TIME}

    for n in states_tbl:
        if n not in odes_tbl:
            raise ModelFileError(f"{src}: [states] {n} has no ODE in [odes]")
    for n in odes_tbl:
        if n not in states_tbl:
            raise ModelFileError(f"{src}: [odes] {n} is not a declared state{did_you_mean(n, states_tbl)}")

    states = tuple(_state(n, v, par_syms, src) for n, v in states_tbl.items())
    odes = tuple(parse_expression(odes_tbl[n], all_syms, f"{src}: [odes] {n}") for n in states_tbl)
    outputs = tuple(_output(n, v, all_syms, src) for n, v in outputs_tbl.items())
    doses = tuple(_dose(n, v, par_syms, src) for n, v in doses_tbl.items())
    switches = doc.get("switches", [])
    if not isinstance(switches, list):
        raise ModelFileError(f"{src}: 'switches' must be a list of expressions, e.g. switches = [\"Tmax\"]")
    sw = tuple(parse_expression(s, par_syms, f"{src}: switches[{i}]") for i, s in enumerate(switches))
    refs = doc.get("references", [])
    if not isinstance(refs, list) or not all(isinstance(r, str) for r in refs):
        raise ModelFileError(f"{src}: 'references' must be a list of strings")
    meta = doc.get("metadata", {})
    if not isinstance(meta, dict):
        raise ModelFileError(f"{src}: [metadata] must be a table")
    return Model(
        name=name, parameters=parameters, states=states, odes=odes, outputs=outputs, dose_targets=doses,
        switches=sw, description=_string(doc.get("description"), src, "description"),
        time_unit=_string(doc.get("time_unit"), src, "time_unit"), source=src,
        references=tuple(refs), metadata=meta,
    )


def _check_keys(tbl: Mapping[str, object], allowed: set[str], src: str, where: str) -> None:
    for k in tbl:
        if k not in allowed:
            raise ModelFileError(f"{src}: {where}: unknown key '{k}'{did_you_mean(k, allowed)} "
                                 f"(allowed: {', '.join(sorted(allowed))})")


def _table(doc: Mapping[str, object], key: str, src: str, required: bool = False) -> dict[str, object]:
    v = doc.get(key)
    if v is None:
        if required:
            raise ModelFileError(f"{src}: missing [{key}] table")
        return {}
    if not isinstance(v, dict):
        raise ModelFileError(f"{src}: [{key}] must be a table, got {type(v).__name__}")
    if required and not v:
        raise ModelFileError(f"{src}: [{key}] is empty")
    return v


def _string(v: object, src: str, where: str, required: bool = False) -> str:
    if v is None:
        if required:
            raise ModelFileError(f"{src}: missing '{where}'")
        return ""
    if not isinstance(v, str):
        raise ModelFileError(f"{src}: '{where}' must be a string, got {type(v).__name__}")
    if required and not v.strip():
        raise ModelFileError(f"{src}: '{where}' is empty")
    return v


def _entry(v: object, src: str, where: str, allowed: set[str], short_key: str | None) -> dict[str, object]:
    """An entry is an inline table, or (where ``short_key`` is given) a bare value for that key."""
    if isinstance(v, dict):
        _check_keys(v, allowed, src, where)
        return v
    if short_key is not None:
        return {short_key: v}
    raise ModelFileError(f"{src}: {where} must be a table like {{ value = 1.0, unit = \"1/d\" }}")


def _number(v: object, src: str, where: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ModelFileError(f"{src}: {where} must be a number, got {v!r}")
    try:
        return float(v)
    except OverflowError:  # TOML integers are unbounded in tomllib
        raise ModelFileError(f"{src}: {where} must be a finite number, got an integer of "
                             f"{v.bit_length()} bits (beyond double precision)") from None


def _parameter(name: str, v: object, src: str) -> Parameter:
    where = f"[parameters] {name}"
    e = _entry(v, src, where, _PARAM_KEYS, "value")
    if "value" not in e:
        raise ModelFileError(f"{src}: {where}: missing 'value'")
    value = _number(e["value"], src, f"{where}.value")
    lower = _number(e.get("lower", -math.inf), src, f"{where}.lower")
    upper = _number(e.get("upper", math.inf), src, f"{where}.upper")
    if not math.isfinite(value):
        raise ModelFileError(f"{src}: {where}: value must be finite, got {value!r}")
    if math.isnan(lower) or math.isnan(upper) or lower > upper:
        raise ModelFileError(f"{src}: {where}: bounds [{lower}, {upper}] are not an interval")
    if not lower <= value <= upper:
        raise ModelFileError(f"{src}: {where}: value {value!r} is outside its bounds [{lower}, {upper}]")
    conf = _string(e.get("confidence"), src, f"{where}.confidence")  # type-checked even if falsy
    return Parameter(
        name=name, value=value, lower=lower, upper=upper,
        unit=_string(e.get("unit"), src, f"{where}.unit"),
        description=_string(e.get("description"), src, f"{where}.description"),
        source=_string(e.get("source"), src, f"{where}.source") + (f" [confidence: {conf}]" if conf else ""),
    )


def _state(name: str, v: object, par_syms: Mapping[str, sp.Symbol], src: str) -> State:
    where = f"[states] {name}"
    e = _entry(v, src, where, _STATE_KEYS, "initial")
    init = parse_expression(e.get("initial", "0"), par_syms, f"{src}: {where}.initial")
    nonneg = e.get("nonnegative", False)
    if not isinstance(nonneg, bool):
        raise ModelFileError(f"{src}: '{where}.nonnegative' must be true or false, got {nonneg!r}")
    return State(name=name, initial=init, unit=_string(e.get("unit"), src, f"{where}.unit"),
                 description=_string(e.get("description"), src, f"{where}.description"), nonnegative=nonneg)


def _output(name: str, v: object, syms: Mapping[str, sp.Symbol], src: str) -> Output:
    where = f"[outputs] {name}"
    e = _entry(v, src, where, _OUTPUT_KEYS, "expression")
    if "expression" not in e:
        raise ModelFileError(f"{src}: {where}: missing 'expression'")
    expr = parse_expression(e["expression"], syms, f"{src}: {where}")
    return Output(name=name, expression=expr, unit=_string(e.get("unit"), src, f"{where}.unit"),
                  description=_string(e.get("description"), src, f"{where}.description"))


def _dose(name: str, v: object, par_syms: Mapping[str, sp.Symbol], src: str) -> DoseTarget:
    where = f"[doses] {name}"
    e = _entry(v, src, where, _DOSE_KEYS, "state")
    state = e.get("state")
    if not isinstance(state, str):
        raise ModelFileError(f"{src}: {where}: 'state' must name a state, got {state!r}")
    scale = parse_expression(e.get("scale", "1"), par_syms, f"{src}: {where}.scale")
    return DoseTarget(name=name, state=state, scale=scale, unit=_string(e.get("unit"), src, f"{where}.unit"),
                      description=_string(e.get("description"), src, f"{where}.description"))
