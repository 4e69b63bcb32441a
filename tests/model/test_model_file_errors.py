"""Bad model files: every one raises ModelFileError naming the file, the entry and the problem.

A model file is data from possibly a stranger. Each case changes one entry of the
valid BASE_MODEL (tests/model/conftest.py), so the expected message is known exactly:
the format is CONVENTIONS.md's ``<file>: [table] entry ... problem; did you mean 'x'?``.
"""

from __future__ import annotations

import builtins
import os
import subprocess

import pytest

from kinetics.errors import ModelError, ModelFileError
from kinetics.model import find_model_file, parse_model_text, read_model_file
from kinetics.model._file import MAX_MODEL_FILE_BYTES


def read_error(path) -> str:
    with pytest.raises(ModelFileError) as err:
        read_model_file(path)
    msg = str(err.value)
    assert msg.startswith(f"{path}: "), msg  # every message starts with the file
    return msg


def test_base_model_is_valid(model_text, write_model):
    m = read_model_file(write_model(model_text()))
    assert m.state_names == ("B", "C")
    assert m.parameter_names == ("k_kill", "rho", "Tmax")


def test_model_file_error_is_a_model_error_and_a_value_error():
    # CONVENTIONS.md: domain exceptions subclass the matching built-in.
    assert issubclass(ModelFileError, ModelError)
    assert issubclass(ModelFileError, ValueError)


# -- structure and values: changes given as TOML source ---------------------------------
STRUCTURE_CASES = [
    # id, changes, entry, problems
    ("state-without-ode", {"states": {"D": "0"}}, "[states] D", ["has no ODE"]),
    ("ode-for-undeclared-state", {"odes": {"Bb": '"0"'}}, "[odes] Bb", ["not a declared state", "did you mean 'B'?"]),
    ("parameter-and-state-share-name", {"parameters": {"C": "1.0"}}, "[states] C",
     ["duplicate name 'C'", "parameter and as state"]),
    ("value-above-upper", {"parameters": {"k_kill": "{ value = 20.0, upper = 10.0 }"}}, "[parameters] k_kill",
     ["value 20.0 is outside its bounds [-inf, 10.0]"]),
    ("value-below-lower", {"parameters": {"k_kill": "{ value = -1.0, lower = 0.0 }"}}, "[parameters] k_kill",
     ["outside its bounds"]),
    ("lower-above-upper", {"parameters": {"k_kill": "{ value = 1.0, lower = 5.0, upper = 2.0 }"}},
     "[parameters] k_kill", ["bounds [5.0, 2.0] are not an interval"]),
    ("value-is-text", {"parameters": {"k_kill": '{ value = "fast" }'}}, "[parameters] k_kill.value",
     ["must be a number, got 'fast'"]),
    ("bare-value-is-text", {"parameters": {"rho": '"0.1"'}}, "[parameters] rho.value", ["must be a number"]),
    ("value-is-bool", {"parameters": {"rho": "true"}}, "[parameters] rho.value", ["must be a number, got True"]),
    ("value-is-array", {"parameters": {"rho": "[0.1]"}}, "[parameters] rho.value", ["must be a number"]),
    ("value-is-nan", {"parameters": {"rho": "nan"}}, "[parameters] rho", ["value must be finite"]),
    ("value-is-inf", {"parameters": {"rho": "inf"}}, "[parameters] rho", ["value must be finite"]),
    ("lower-is-nan", {"parameters": {"rho": "{ value = 0.1, lower = nan }"}}, "[parameters] rho", ["not an interval"]),
    ("value-missing", {"parameters": {"rho": '{ unit = "1/d" }'}}, "[parameters] rho", ["missing 'value'"]),
    ("value-huge-integer", {"parameters": {"rho": "1" + "0" * 400}}, "[parameters] rho.value",
     ["beyond double precision"]),
    ("unit-not-text", {"parameters": {"rho": "{ value = 0.1, unit = 5 }"}}, "[parameters] rho.unit",
     ["must be a string"]),
    ("confidence-not-text", {"parameters": {"rho": "{ value = 0.1, confidence = 0 }"}},
     "[parameters] rho.confidence", ["must be a string"]),
    ("unknown-parameter-field", {"parameters": {"k_kill": '{ value = 0.5, uint = "1/d" }'}}, "[parameters] k_kill",
     ["unknown key 'uint'", "did you mean 'unit'?"]),
    ("unknown-state-field", {"states": {"B": '{ inital = "1" }'}}, "[states] B",
     ["unknown key 'inital'", "did you mean 'initial'?"]),
    ("unknown-top-level-key", {"": {"descripton": '"x"'}}, "top level",
     ["unknown key 'descripton'", "did you mean 'description'?"]),
    ("unknown-table", {"paramters": {"q": "1"}}, "top level", ["unknown key 'paramters'", "did you mean 'parameters'?"]),
    ("reserved-parameter-name", {"parameters": {"exp": "1.0"}}, "[parameters] exp", ["name 'exp' is reserved"]),
    ("reserved-state-name-t", {"states": {"t": "0"}, "odes": {"t": '"1"'}}, "[states] t", ["name 't' is reserved"]),
    ("invalid-name", {"parameters": {"a-b": "1.0"}}, "[parameters] a-b", ["is not a valid name"]),
    ("dunder-name", {"parameters": {"__class__": "1.0"}}, "[parameters] __class__", ["is not a valid name"]),
    ("nonnegative-not-bool", {"states": {"B": '{ initial = "1", nonnegative = "yes" }'}}, "[states] B.nonnegative",
     ["must be true or false, got 'yes'"]),
    ("initial-uses-state", {"states": {"C": '{ initial = "B" }'}}, "[states] C.initial", ["unknown symbol 'B'"]),
    ("initial-uses-t", {"states": {"C": '{ initial = "t" }'}}, "[states] C.initial", ["unknown symbol 't'"]),
    ("dose-to-unknown-state", {"doses": {"car": '{ state = "Cc" }'}}, "[doses] car",
     ["unknown state 'Cc'", "did you mean 'C'?"]),
    ("dose-state-not-text", {"doses": {"car": "{ state = 5 }"}}, "[doses] car", ["'state' must name a state"]),
    ("dose-scale-uses-state", {"doses": {"car": '{ state = "C", scale = "B" }'}}, "[doses] car.scale",
     ["unknown symbol 'B'"]),
    ("output-missing-expression", {"outputs": {"total": '{ unit = "cells" }'}}, "[outputs] total",
     ["missing 'expression'"]),
    ("output-unknown-symbol", {"outputs": {"total": '"B + Cc"'}}, "[outputs] total",
     ["unknown symbol 'Cc'", "did you mean 'C'?"]),
    ("switch-unknown-symbol", {"": {"switches": '["Tmx"]'}}, "switches[0]",
     ["unknown symbol 'Tmx'", "did you mean 'Tmax'?"]),
    ("switch-uses-t", {"": {"switches": '["t"]'}}, "switches[0]", ["unknown symbol 't'"]),
    ("switches-not-a-list", {"": {"switches": '"Tmax"'}}, "'switches' must be a list", []),
    ("references-not-strings", {"": {"references": "[1, 2]"}}, "'references' must be a list of strings", []),
    ("name-missing", {"": {"name": None}}, "missing 'name'", []),
    ("name-empty", {"": {"name": '"  "'}}, "'name' is empty", []),
    ("name-not-text", {"": {"name": "3"}}, "'name' must be a string", []),
]


@pytest.mark.parametrize(("changes", "entry", "problems"), [c[1:] for c in STRUCTURE_CASES],
                         ids=[c[0] for c in STRUCTURE_CASES])
def test_bad_entry(changes, entry, problems, model_text, write_model):
    msg = read_error(write_model(model_text(changes)))
    assert entry in msg
    for problem in problems:
        assert problem in msg


@pytest.mark.parametrize(("text", "problem"), [
    ('name = "m"\nodes = "x"\n[states]\nx = 0\n', "[odes] must be a table, got str"),
    ('name = "m"\nparameters = 3\n[states]\nx = 0\n[odes]\nx = "0"\n', "[parameters] must be a table, got int"),
    ('name = "m"\n[states]\n[odes]\n', "[states] is empty"),
    ('name = "m"\n[odes]\nx = "0"\n', "missing [states] table"),
    ('name = "m"\n[states]\nx = 0\n', "missing [odes] table"),
], ids=["odes-not-a-table", "parameters-not-a-table", "states-empty", "states-missing", "odes-missing"])
def test_bad_table(text, problem, write_model):
    assert problem in read_error(write_model(text))


# -- expressions: code instead of math, and numerical traps ------------------------------
EXPRESSION_CASES = [
    ("unknown-symbol", "-k_kil*C*B", ["unknown symbol 'k_kil'", "did you mean 'k_kill'?"]),
    ("syntax-error", "-k_kill*(C*B", ["syntax error"]),
    ("import-os-system", "__import__('os').system('echo pwned')", ["only plain calls"]),
    ("dunder-class", "().__class__", ["is not allowed"]),
    ("subclasses-walk", "().__class__.__bases__[0].__subclasses__()", ["only plain calls"]),
    ("lambda", "lambda: 1", ["is not allowed"]),
    ("open-file", "open('x')", ["unknown function 'open'"]),
    ("eval", "eval('1')", ["unknown function 'eval'"]),
    ("attribute", "B.real", ["is not allowed"]),
    ("subscript", "B[0]", ["is not allowed"]),
    ("f-string", "f'{B}'", ["is not allowed"]),
    ("walrus", "(q := 1)", ["is not allowed"]),
    ("list-comprehension", "[B for B in C]", ["is not allowed"]),
    ("generator", "sum(B for B in C)", ["unknown function 'sum'"]),
    ("string", "'B'", ["not a number"]),
    ("bytes", "b'B'", ["not a number"]),
    ("keyword-argument", "exp(x=1)", ["keyword arguments are not allowed"]),
    ("unknown-function", "exq(B)", ["unknown function 'exq'", "did you mean 'exp'?"]),
    ("condition-as-value", "B < 1", ["a condition is used where a number is expected"]),
    ("piecewise-without-otherwise", "Piecewise((B, t < Tmax))", ["last Piecewise condition must be True"]),
    ("t-compared-with-state", "ifelse(t < C, B, 0)", ["must compare t with an expression of parameters"]),
    ("t-times-parameter", "ifelse(k_kill*t < 1, B, 0)", ["must compare t with an expression of parameters"]),
    ("t-nonlinear", "ifelse(exp(t) < Tmax, B, 0)", ["must compare t with an expression of parameters"]),
    ("huge-constant-power", "10**10**10", ["constant power cannot be evaluated"]),
    ("huge-exponent", "B**5000", ["exponent larger than 1000"]),
    ("division-by-literal-zero", "B/0", ["division by zero"]),
    ("log-of-zero", "log(0)*B", ["not a finite real number"]),
    ("sqrt-of-negative", "sqrt(-1)*B", ["not a finite real number"]),
    ("overflowing-literal", "1e400*B", ["not finite"]),
    ("100k-characters", "B" + "+B" * 50_000, ["100001 characters long"]),
    ("2000-nested-parentheses", "(" * 2000 + "B" + ")" * 2000, ["syntax error"]),
    ("5000-unary-minus", "-" * 5000 + "B", ["too deeply nested"]),
    ("nul-character", "B\x00", ["NUL character"]),
    ("empty", "", ["expression is empty"]),
]


@pytest.mark.parametrize(("expr", "problems"), [c[1:] for c in EXPRESSION_CASES],
                         ids=[c[0] for c in EXPRESSION_CASES])
def test_bad_expression(expr, problems, model_text, toml_str, write_model):
    msg = read_error(write_model(model_text({"odes": {"B": toml_str(expr)}})))
    assert "[odes] B" in msg
    for problem in problems:
        assert problem in msg


@pytest.mark.parametrize("value", ["true", "[1, 2]", '{ expression = "B" }'], ids=["bool", "array", "table"])
def test_ode_that_is_not_an_expression(value, model_text, write_model):
    msg = read_error(write_model(model_text({"odes": {"B": value}})))
    assert "[odes] B" in msg and "expected a math expression" in msg


def test_nothing_is_executed(model_text, toml_str, write_model, monkeypatch, tmp_path):
    """Payloads that would run code must fail without calling anything dangerous."""
    marker = tmp_path / "pwned"

    def trap(*args, **kwargs):
        raise AssertionError(f"model file executed code: {args!r}")

    payloads = [
        f"__import__('os').system('touch {marker}')",
        f"open('{marker}', 'w')",
        f"exec(\"open('{marker}', 'w')\")",
        f"eval(\"__import__('os').system('touch {marker}')\")",
        "().__class__.__bases__[0].__subclasses__()",
        f"[c for c in ().__class__.__base__.__subclasses__() if c.__name__ == 'Popen'][0]('touch {marker}')",
    ]
    for name in ("system", "popen", "execv", "execve", "remove"):
        monkeypatch.setattr(os, name, trap)
    monkeypatch.setattr(subprocess, "Popen", trap)
    for name in ("eval", "exec"):
        monkeypatch.setattr(builtins, name, trap)
    for i, payload in enumerate(payloads):
        path = write_model(model_text({"odes": {"B": toml_str(payload)}}), f"payload{i}.toml")
        msg = read_error(path)
        assert "[odes] B" in msg
    assert not marker.exists()


# -- the file itself ----------------------------------------------------------------------
def test_duplicate_key_in_one_table_is_a_toml_error_naming_the_file(model_text, write_model):
    # TOML forbids defining a key twice (toml.io/en/v1.0.0#keys); tomllib reports line and column.
    text = model_text().replace('[odes]\n', '[odes]\nB = "0"\n')
    msg = read_error(write_model(text))
    assert "TOML syntax error" in msg
    assert "line" in msg


def test_raw_nul_byte_in_file(model_text, write_model):
    text = model_text().replace('"-k_kill*C*B"', '"-k_kill*C*B\x00"')
    msg = read_error(write_model(text))
    assert "TOML syntax error" in msg


def test_non_utf8_bytes(model_text, write_model):
    data = model_text().encode().replace(b'"cd19"', b'"cd\xff19"')
    msg = read_error(write_model(data))
    assert "not UTF-8 text" in msg


def test_integer_beyond_python_digit_limit(model_text, write_model):
    # tomllib raises a plain ValueError above sys.get_int_max_str_digits() (4300 by default).
    msg = read_error(write_model(model_text({"parameters": {"rho": "9" * 5000}})))
    assert "TOML value cannot be read" in msg


def test_deeply_nested_toml(model_text, write_model):
    msg = read_error(write_model(model_text() + "deep = " + "[" * 100_000 + "]" * 100_000 + "\n"))
    assert "TOML" in msg


def test_oversized_file(write_model):
    msg = read_error(write_model(b"#" * (MAX_MODEL_FILE_BYTES + 1)))
    assert f"at most {MAX_MODEL_FILE_BYTES}" in msg


def test_missing_file(tmp_path):
    msg = read_error(tmp_path / "nope.toml")
    assert "cannot read model file" in msg


def test_directory_instead_of_file(tmp_path):
    assert "cannot read model file" in read_error(tmp_path)


def test_nul_byte_in_path(tmp_path):
    with pytest.raises(ModelFileError, match="cannot read model file"):
        read_model_file(str(tmp_path / "a\x00b.toml"))


def test_unknown_library_name_suggests_a_close_one(monkeypatch):
    monkeypatch.delenv("KINETICS_MODEL_PATH", raising=False)
    with pytest.raises(ModelFileError, match="no library model named 'oral_1cm'; did you mean 'oral_1cmt'?"):
        find_model_file("oral_1cm")


def test_missing_path_to_toml(tmp_path):
    with pytest.raises(ModelFileError, match="model file not found"):
        find_model_file(tmp_path / "nope.toml")


def test_parse_model_text_names_its_source(model_text):
    with pytest.raises(ModelFileError, match=r"^inline\.toml: \[odes\] B"):
        parse_model_text(model_text({"odes": {"B": '"k_kil"'}}), source="inline.toml")
