"""Fuzzing the model layer with hypothesis.

Properties (parse_expression and read_model_file docstrings; a model file is untrusted data):
* any text gives a sympy expression or ExpressionError, never another exception, never a hang,
  never a call to code (builtins that run code are trapped while parsing);
* an accepted expression holds only offered symbols and finite real double-precision constants;
* any TOML text or any bytes give a Model or ModelFileError;
* a generated linear ODE system round-trips: names in order, and d(rhs)/d(state) equals the
  coefficient matrix it was written from.
"""

from __future__ import annotations

import ast
import builtins
import math
import os
import signal
import types
from contextlib import contextmanager

import pytest
import sympy as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kinetics.errors import ExpressionError, ModelFileError
from kinetics.model import TIME, Model, parse_expression, parse_model_text, read_model_file
from tests.model.conftest import _toml_str

SYMBOL_NAMES = ("x", "y", "k", "Tmax")
SYMS = {**{n: sp.Symbol(n, real=True) for n in SYMBOL_NAMES}, "t": TIME}
WHERE = "fuzz.toml: [odes] x"
FUZZ = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
PER_EXAMPLE_SECONDS = 5.0


# -- guards ---------------------------------------------------------------------------------
class CodeExecuted(BaseException):
    """Raised by trapped builtins; a BaseException so no `except Exception` can swallow it."""


class Hang(BaseException):
    """One example ran longer than PER_EXAMPLE_SECONDS."""


_DANGEROUS_MODULES = {"os", "posix", "subprocess", "shutil", "socket", "ctypes", "pty", "importlib",
                      "pickle", "marshal", "builtins", "runpy", "code", "webbrowser"}


@contextmanager
def guarded(seconds: float = PER_EXAMPLE_SECONDS):
    """Trap code-running builtins and stop after ``seconds`` (SIGALRM, main thread).

    Imports of ordinary modules stay allowed: sympy imports some submodules lazily, and
    importlib runs their code objects through ``exec``; those come from files on disk.
    """
    calls: list[str] = []
    real = {n: getattr(builtins, n) for n in ("__import__", "open", "eval", "exec", "compile", "breakpoint")}

    def trap(name):
        def f(*args, **kwargs):
            calls.append(f"{name}{args!r}"[:200])
            raise CodeExecuted(calls[-1])
        return f

    def guarded_import(name, *args, **kwargs):
        if name.split(".")[0] in _DANGEROUS_MODULES:
            return trap("__import__")(name)
        return real["__import__"](name, *args, **kwargs)

    def guarded_exec(source, *args, **kwargs):
        if isinstance(source, types.CodeType) and os.path.isfile(source.co_filename):  # a module import
            return real["exec"](source, *args, **kwargs)
        return trap("exec")(source)

    def guarded_compile(source, filename, mode, flags=0, *args, **kwargs):
        if not flags & ast.PyCF_ONLY_AST:  # ast.parse compiles to a tree only; that is allowed
            return trap("compile")(source)
        return real["compile"](source, filename, mode, flags, *args, **kwargs)

    def expire(*_):
        raise Hang(f"example took longer than {seconds} s")

    old_handler = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    builtins.__import__ = guarded_import
    builtins.compile = guarded_compile
    builtins.exec = guarded_exec
    for n in ("open", "eval", "breakpoint"):
        setattr(builtins, n, trap(n))
    try:
        yield calls
    finally:
        for n, f in real.items():
            setattr(builtins, n, f)
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old_handler)
    assert not calls, f"parsing called code-running builtins: {calls}"


def parse_guarded(text: object):
    """parse_expression under the guards; returns the expression or the ExpressionError."""
    with guarded():
        try:
            return parse_expression(text, SYMS, WHERE)
        except ExpressionError as exc:
            return exc


def check_expression(result) -> None:
    if isinstance(result, ExpressionError):
        assert str(result).startswith(WHERE + ": ")
        return
    assert isinstance(result, sp.Basic)
    assert result.free_symbols <= set(SYMS.values())
    assert not result.has(sp.zoo, sp.nan, sp.oo, -sp.oo, sp.I)
    for num in result.atoms(sp.Number):
        assert math.isfinite(float(num)), num


def test_guard_traps_code_and_hangs():
    # The guard itself must work, or the properties below prove nothing.
    with pytest.raises(CodeExecuted):
        with guarded():
            __import__("os")
    with pytest.raises(CodeExecuted):
        with guarded():
            eval("1")  # noqa: S307
    with pytest.raises(CodeExecuted):
        with guarded():
            exec("1")  # noqa: S102
    with pytest.raises(Hang):
        with guarded(0.2):
            while True:
                pass


def test_warm_parse_needs_no_dangerous_builtins():
    # Exercise every parser path once under the guard (sympy's lazy imports included).
    for text in ["ifelse(t < Tmax, k*x, -x) + Piecewise((x, x > 1), (y, True))", "max(x, y, 1) + min(x, 2)",
                 "exp(-k*t)*log(x)*sqrt(y)/log10(x) + abs(x)^2 + sin(x) + tanh(y)", "x if t > 1 and x < 2 else y",
                 "2^3^2*x", "1e308*10", "log(0)", "sqrt(-1)*x", "x < sqrt(-1)"]:
        check_expression(parse_guarded(text))


# -- a. random text -------------------------------------------------------------------------
TOKENS = [
    # names: offered symbols, functions, constants, unknowns, Python internals
    "x", "y", "k", "Tmax", "t", "pi", "e", "E", "I", "oo", "zoo", "nan", "inf", "k_kil",
    "exp", "log", "ln", "log10", "sqrt", "abs", "sin", "cos", "tan", "tanh", "min", "max",
    "ifelse", "Piecewise", "True", "False", "None", "Min", "exq",
    "lambda", "import", "__import__", "__class__", "__bases__", "__subclasses__", "__globals__",
    "os", "system", "open", "eval", "exec", "getattr", "for", "in", "if", "else", "and", "or",
    "not", "is", "await", "yield", "async", "def", "class", "print", "globals", "breakpoint",
    # numbers
    "0", "1", "2", "2.5", "0.0", "1e308", "1e-400", "1e400", "10", "1000", "5000", "9" * 30,
    "1j", "0x1f", "1_000", ".5", "1.", "-1",
    # operators and punctuation
    "+", "-", "*", "/", "**", "^", "//", "%", "@", "<", "<=", ">", ">=", "==", "!=", "~", "&", "|",
    "<<", ">>", "(", ")", "[", "]", "{", "}", ",", ":", ";", ".", "'", '"', "f'", "b'", ":=", "=",
    "\\", "\n", "#", "...", "*", "**", "\t", "\x00",
]
token_text = st.lists(st.tuples(st.sampled_from(TOKENS), st.sampled_from(["", " "])), min_size=1, max_size=30).map(
    lambda parts: "".join(tok + sep for tok, sep in parts)
)


@FUZZ
@given(st.text(max_size=200))
def test_random_text_parses_or_raises_expression_error(text):
    check_expression(parse_guarded(text))


@FUZZ
@given(token_text)
def test_random_token_text_parses_or_raises_expression_error(text):
    check_expression(parse_guarded(text))


# Mostly well-formed math, so the success path and sympy's evaluation are exercised too.
leaf = st.one_of(
    st.sampled_from(["x", "y", "k", "Tmax", "t", "pi", "0", "1", "2", "0.5"]),
    st.integers(-10**30, 10**30).map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.floats(min_value=-800, max_value=800).map(lambda f: f"{f:.3g}"),
)
condition = st.tuples(leaf, st.sampled_from(["<", "<=", ">", ">=", "==", "!="]), leaf).map(" ".join)


def _compound(children):
    return st.one_of(
        st.tuples(children, st.sampled_from(["+", "-", "*", "/", "**", "^"]), children).map(
            lambda p: f"({p[0]} {p[1]} {p[2]})"),
        st.tuples(st.sampled_from(["exp", "log", "ln", "log10", "sqrt", "abs", "sin", "cos", "tan", "tanh",
                                   "sinh", "cosh"]), children).map(lambda p: f"{p[0]}({p[1]})"),
        st.tuples(st.sampled_from(["min", "max"]), st.lists(children, min_size=2, max_size=3)).map(
            lambda p: f"{p[0]}({', '.join(p[1])})"),
        st.tuples(condition, children, children).map(lambda p: f"ifelse({p[0]}, {p[1]}, {p[2]})"),
        st.tuples(children, condition, children).map(lambda p: f"({p[0]} if {p[1]} else {p[2]})"),
        st.tuples(children, condition, children).map(lambda p: f"Piecewise(({p[0]}, {p[1]}), ({p[2]}, True))"),
        children.map(lambda c: f"-{c}"),
    )


math_text = st.recursive(leaf, _compound, max_leaves=25)


@FUZZ
@given(math_text)
def test_generated_math_parses_or_raises_expression_error(text):
    check_expression(parse_guarded(text))


# -- b. random TOML documents and bytes ------------------------------------------------------
toml_str = _toml_str  # one TOML string quoter, shared with the fixtures


def toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return repr(v) if math.isfinite(v) else ("nan" if math.isnan(v) else ("inf" if v > 0 else "-inf"))
    if isinstance(v, str):
        return toml_str(v)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(e) for e in v) + "]"
    return "{ " + ", ".join(f"{toml_str(k)} = {toml_value(e)}" for k, e in v.items()) + " }"


def toml_document(doc: dict) -> str:
    """Top-level scalars and arrays first, then one [table] per dict value (inner dicts inline)."""
    lines = [f"{toml_str(k)} = {toml_value(v)}" for k, v in doc.items() if not isinstance(v, dict)]
    for k, v in doc.items():
        if isinstance(v, dict):
            lines.append(f"[{toml_str(k)}]")
            lines += [f"{toml_str(ek)} = {toml_value(ev)}" for ek, ev in v.items()]
    return "\n".join(lines) + "\n"


names = st.one_of(st.sampled_from(["x", "y", "k", "Tmax", "B", "C", "t", "exp", "k_kill", "a-b", ""]),
                  st.text(max_size=8))
expr_strings = st.one_of(math_text, token_text, st.sampled_from(["x", "-k*x", "k*y - x", "0", "B", "x^2"]))
scalars = st.one_of(
    st.integers(-(2**70), 2**70), st.floats(), st.booleans(), st.text(max_size=12), expr_strings,
)
values = st.recursive(scalars, lambda c: st.one_of(st.lists(c, max_size=3), st.dictionaries(names, c, max_size=3)),
                      max_leaves=8)
field_names = st.one_of(st.sampled_from(["value", "unit", "lower", "upper", "description", "source", "confidence",
                                         "initial", "expression", "state", "scale", "uint"]), names)
entry = st.one_of(scalars, expr_strings, st.dictionaries(field_names, scalars, max_size=4))
table = st.dictionaries(names, entry, max_size=4)
documents = st.fixed_dictionaries(
    {"name": st.one_of(st.just("m"), scalars)},
    optional={
        "parameters": table, "states": table, "odes": st.dictionaries(names, st.one_of(expr_strings, scalars),
                                                                         max_size=4),
        "outputs": table, "doses": table, "switches": st.one_of(st.lists(expr_strings, max_size=3), values),
        "references": values, "metadata": values, "description": scalars, "time_unit": scalars,
        "extra": values,
    },
)


# Near-valid models: names from small pools so that states, ODEs and symbols usually match,
# which carries the documents past the table checks into expression parsing and validation.
par_pool = st.sampled_from(["k", "Tmax"])
state_pool = st.sampled_from(["x", "y"])
par_entry = st.one_of(
    st.floats(-10, 10), st.integers(-5, 5),
    st.fixed_dictionaries({"value": st.floats(0, 10)},
                          optional={"lower": st.floats(-1, 5), "upper": st.floats(0, 20), "unit": st.just("1/d"),
                                    "confidence": st.sampled_from(["high", "low"]), "uint": st.just("1/d")}),
    scalars,
)
state_entry = st.one_of(st.just(0), st.floats(0, 10), math_text,
                        st.fixed_dictionaries({}, optional={"initial": st.one_of(math_text, st.floats(0, 1)),
                                                            "unit": st.just("cells")}))


@st.composite
def near_valid_documents(draw):
    states = draw(st.dictionaries(state_pool, state_entry, min_size=1, max_size=2))
    odes = {n: draw(st.one_of(math_text, st.sampled_from(["-k*x", "k*y - x", "0"]))) for n in states}
    if draw(st.integers(0, 9)) == 7:  # now and then an ODE too many or too few
        odes.pop(next(iter(odes))) if draw(st.booleans()) else odes.setdefault("z", "0")
    doc = {"name": "m", "parameters": draw(st.dictionaries(par_pool, par_entry, max_size=2)), "states": states,
           "odes": odes}
    doc.update(draw(st.fixed_dictionaries({}, optional={
        "outputs": st.dictionaries(st.sampled_from(["obs", "x"]), st.one_of(math_text, st.fixed_dictionaries(
            {"expression": math_text}))),
        "doses": st.dictionaries(st.sampled_from(["d", "x"]), st.one_of(state_pool, st.fixed_dictionaries(
            {"state": state_pool}, optional={"scale": math_text}))),
        "switches": st.lists(st.one_of(par_pool, math_text), max_size=2),
        "time_unit": st.just("d"),
    })))
    return doc


def check_model_or_error(call):
    with guarded():
        try:
            result = call()
        except ModelFileError as exc:
            assert str(exc)
            return
    assert isinstance(result, Model)


@FUZZ
@given(st.one_of(documents, near_valid_documents()))
def test_random_toml_document_gives_model_or_model_file_error(doc):
    text = toml_document(doc)
    check_model_or_error(lambda: parse_model_text(text, "fuzz.toml"))


@FUZZ
@given(st.one_of(documents, near_valid_documents()), st.data())
def test_corrupted_toml_gives_model_or_model_file_error(doc, data):
    text = toml_document(doc)
    pos = data.draw(st.integers(0, len(text)))
    junk = data.draw(st.one_of(st.text(max_size=5), st.sampled_from(["[", "]", "=", '"', "\n[odes]\n", "{", "\x00"])))
    cut = data.draw(st.integers(0, 5))
    text = text[:pos] + junk + text[pos + cut:]
    check_model_or_error(lambda: parse_model_text(text, "fuzz.toml"))


@pytest.fixture(scope="module")
def fuzz_file(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz") / "random.toml"


@FUZZ
@given(data=st.one_of(st.binary(max_size=2000), near_valid_documents().map(lambda d: toml_document(d).encode())))
def test_random_bytes_file_gives_model_or_model_file_error(fuzz_file, data):
    fuzz_file.write_bytes(data)
    check_model_or_error(lambda: read_model_file(fuzz_file))


# -- c. generated valid models round-trip -----------------------------------------------------
@st.composite
def linear_systems(draw):
    """A random linear ODE system dx_i/dt = sum_j s_ij * k_i_j * x_j with s_ij in {-1, 0, 1}."""
    n = draw(st.integers(1, 6))
    signs = draw(st.lists(st.lists(st.sampled_from([-1, 0, 1]), min_size=n, max_size=n), min_size=n, max_size=n))
    values = {}
    for i in range(n):
        for j in range(n):
            if signs[i][j]:
                values[f"k_{i}_{j}"] = draw(st.floats(0.0, 1e3))
    initial = [draw(st.floats(-1e6, 1e6)) for _ in range(n)]
    return n, signs, values, initial


@FUZZ
@given(linear_systems())
def test_generated_linear_model_round_trips(system):
    n, signs, values, initial = system
    states = [f"x{i}" for i in range(n)]
    lines = ['name = "linear"', "[parameters]"]
    lines += [f"{p} = {{ value = {v!r}, lower = 0.0 }}" for p, v in values.items()]
    lines.append("[states]")
    lines += [f"{s} = {x0!r}" for s, x0 in zip(states, initial)]
    lines.append("[odes]")
    for i, s in enumerate(states):
        terms = [f"{'+' if signs[i][j] > 0 else '-'} k_{i}_{j}*x{j}" for j in range(n) if signs[i][j]]
        lines.append(f"{s} = {toml_str(' '.join(terms) or '0')}")
    with guarded():
        m = parse_model_text("\n".join(lines) + "\n", "linear.toml")

    assert m.state_names == tuple(states)
    assert m.parameter_names == tuple(values)
    assert m.defaults == values
    assert m.switches == ()
    assert [float(s.initial) for s in m.states] == initial
    # The Jacobian of a linear system is its coefficient matrix.
    k = {p: sp.Symbol(p, real=True) for p in values}
    expected = sp.Matrix(n, n, lambda i, j: signs[i][j] * k[f"k_{i}_{j}"] if signs[i][j] else 0)
    x = [sp.Symbol(s, real=True) for s in states]
    assert sp.Matrix(m.odes).jacobian(x) == expected
