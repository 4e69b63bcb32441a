"""parse_expression: what model-file math means, and what it refuses.

Expected values are sympy expressions written by hand from the Python operator
precedence table (https://docs.python.org/3/reference/expressions.html#operator-precedence),
with ``^`` read as ``**`` as in NONMEM (Fortran ``**``) and Monolix/Mlxtran ``^``:
right-associative and binding tighter than unary minus.
"""

from __future__ import annotations

import math

import pytest
import sympy as sp

from kinetics.errors import ExpressionError, ModelError
from kinetics.model import FUNCTIONS, TIME, parse_expression

x, y, k, k_kill, Tmax, Tlag = sp.symbols("x y k k_kill Tmax Tlag", real=True)
t = TIME
WHERE = "m.toml: [odes] x"


def parse(text, syms):
    return parse_expression(text, syms, WHERE)


# -- arithmetic and powers --------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("k*x + y", k * x + y),
        ("x - y - k", x - y - k),  # left-associative
        ("x / y / k", x / (y * k)),  # left-associative
        ("-x + +y", -x + y),
        ("(x + y) * k", k * (x + y)),
        ("1/2*x", sp.Rational(1, 2) * x),  # integer division stays exact
        ("x**2", x**2),
        ("x^2", x**2),
        ("x^2 + 1", x**2 + 1),  # not x^(2+1): ^ is a power, not Python's XOR
        ("k*x^2", k * x**2),  # not (k*x)^2
        ("x^2*k", k * x**2),
        ("-x^2", -(x**2)),  # power binds tighter than unary minus
        ("x^y^2", x ** (y**2)),  # right-associative
        ("x^-1", 1 / x),
        ("x^(1/2)", sp.sqrt(x)),
        ("x**0.5", x ** sp.Float(0.5)),
        ("2.5e-3*x", sp.Float(2.5e-3) * x),
        ("t", t),
        ("pi*x", sp.pi * x),
        ("exp(-k*t)", sp.exp(-k * t)),
        ("log(x) + ln(y)", sp.log(x) + sp.log(y)),
        ("log10(x)", sp.log(x) / sp.log(10)),
        ("sqrt(x)", sp.sqrt(x)),
        ("abs(x)", sp.Abs(x)),
        ("sin(x) + cos(x) + tan(x)", sp.sin(x) + sp.cos(x) + sp.tan(x)),
        ("sinh(x) + cosh(x) + tanh(x)", sp.sinh(x) + sp.cosh(x) + sp.tanh(x)),
        ("min(x, y)", sp.Min(x, y)),
        ("max(x, y, k)", sp.Max(x, y, k)),
        ("max(0, x - k)", sp.Max(0, x - k)),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_arithmetic_and_functions(text, expected, syms):
    assert parse(text, syms) == expected


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("2^3", 8.0),
        ("2^3^2", 512.0),  # 2^(3^2), right-associative
        ("-2^2", -4.0),
        ("2^-1", 0.5),
        ("10**-400", 0.0),  # underflows to 0 like a double
    ],
    ids=["2^3", "2^3^2", "-2^2", "2^-1", "10**-400"],
)
def test_constant_powers_are_folded_in_double_precision(text, value, syms):
    # _expr._binop folds numeric powers with float ** float so that 10**10**10 cannot
    # make sympy build an exact integer; the value is a double, hence float equality.
    result = parse(text, syms)
    assert result.is_number
    assert float(result) == value


@pytest.mark.parametrize(("value", "expected"), [(3, sp.Integer(3)), (0.25, sp.Float(0.25)), (-1.5, sp.Float(-1.5))],
                         ids=["int", "float", "negative"])
def test_plain_numbers_are_accepted(value, expected, syms):
    # TOML gives ints and floats for `x = 3`; they are read as the number itself.
    assert parse(value, syms) == expected


def test_every_whitelisted_function_parses(syms):
    for name, (_, nmin, _) in FUNCTIONS.items():
        args = ", ".join(["x"] * nmin)
        assert parse(f"{name}({args})", syms).free_symbols == {x}, name


# -- conditionals -------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text",
    ["ifelse(t < Tmax, k, 0)", "k if t < Tmax else 0", "Piecewise((k, t < Tmax), (0, True))"],
    ids=["ifelse", "if-else", "Piecewise"],
)
def test_three_spellings_of_a_conditional_agree(text, syms):
    assert parse(text, syms) == sp.Piecewise((k, sp.Lt(t, Tmax)), (0, True))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ifelse(t > Tlag and t <= Tmax, k, 0)", sp.Piecewise((k, sp.And(t > Tlag, t <= Tmax)), (0, True))),
        ("ifelse(t < Tlag or t >= Tmax, 0, k)", sp.Piecewise((0, sp.Or(t < Tlag, t >= Tmax)), (k, True))),
        ("ifelse(not t < Tmax, 0, k)", sp.Piecewise((0, t >= Tmax), (k, True))),
        ("ifelse(Tlag < t < Tmax, k, 0)", sp.Piecewise((k, sp.And(Tlag < t, t < Tmax)), (0, True))),
        ("ifelse(x == y, 1, 0)", sp.Piecewise((1, sp.Eq(x, y)), (0, True))),
        ("ifelse(x != y, 1, 0)", sp.Piecewise((1, sp.Ne(x, y)), (0, True))),
        ("Piecewise((x, t < Tlag), (y, t < Tmax), (k, True))",
         sp.Piecewise((x, t < Tlag), (y, t < Tmax), (k, True))),
        ("ifelse(x > 1, x, ifelse(y > 1, y, 0))",  # kept nested; sympy.piecewise_fold would flatten it
         sp.Piecewise((x, x > 1), (sp.Piecewise((y, y > 1), (0, True)), True))),
        ("ifelse(1 < 2, x, y)", x),  # a constant condition is decided at once
    ],
    ids=["and", "or", "not", "chained", "eq", "ne", "three-pieces", "nested", "constant"],
)
def test_conditions(text, expected, syms):
    assert parse(text, syms) == expected


# -- refusals: each raises ExpressionError naming the place and the problem -----------------
@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("k_kil*x", "unknown symbol 'k_kil'; did you mean 'k_kill'?"),
        ("exq(x)", "unknown function 'exq'; did you mean 'exp'?"),
        ("Min(x, y)", "unknown function 'Min'"),
        ("x < 1", "a condition is used where a number is expected"),
        ("not x", "a condition is used where a number is expected"),
        ("ifelse(x, 1, 2)", "expected a condition"),
        ("ifelse(t < Tmax, 1)", "ifelse takes exactly 3 arguments"),
        ("Piecewise((k, t < Tmax))", "last Piecewise condition must be True"),
        ("Piecewise((1, x < 1), 2)", "Piecewise takes (value, condition) pairs"),
        ("Piecewise()", "at least one (value, condition) pair"),
        ("exp", "function 'exp' used without arguments"),
        ("min(x)", "'min' takes at least 2 argument(s), got 1"),
        ("sqrt(x, y)", "'sqrt' takes 1 argument(s), got 2"),
        ("exp(*x)", "starred arguments"),
        ("exp(x=1)", "keyword arguments are not allowed"),
        ("x % y", "not allowed"),
        ("x // y", "not allowed"),
        ("x @ y", "not allowed"),
        ("~x", "not allowed"),
        ("x +", "syntax error"),
        ("", "expression is empty"),
        ("   ", "expression is empty"),
        ("True", "not a number"),
        ("1j", "not a number"),
        ("'abc'", "not a number"),
        ("x/0", "division by zero"),
        ("x/(y - y)", "division by zero"),
        ("x/0.0", "division by zero"),
        ("x/1e-400", "division by zero"),  # 1e-400 is 0.0 as a double
        ("log(0)", "not a finite real number"),
        ("x + tan(pi/2)", "not a finite real number"),
        ("sqrt(-1)", "not a finite real number"),
        ("(-8)**(1/3)", "not a finite real number"),
        ("1e400", "not finite"),
        ("1e308*10", "overflows double precision"),
        ("x*1e308*1e308", "overflows double precision"),
        ("exp(1000)", "overflows double precision"),
        ("exp(x)*exp(700)*exp(700)", "overflows double precision"),
        ("10**10**10", "constant power cannot be evaluated"),
        ("x**5000", "exponent larger than 1000"),
        ("x**-2000", "exponent larger than 1000"),
        ("(x**1000)**1000", "exponent larger than 1000"),
        ("x**exp(1000)", "overflows double precision"),
    ],
    ids=lambda v: v[:40] if isinstance(v, str) and v.strip() else repr(v),
)
def test_refusals(text, problem, syms):
    with pytest.raises(ExpressionError) as err:
        parse(text, syms)
    msg = str(err.value)
    assert msg.startswith(WHERE + ": ")
    assert problem in msg


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        # sympy raises TypeError/ValueError for these; they must surface as ExpressionError.
        ("ifelse(x < sqrt(-1), 1, 2)", "not a finite real number"),
        ("ifelse(x < log(0), 1, 2)", "not a finite real number"),
        ("max(x, sqrt(-1))", "not a finite real number"),
        ("min(1, log(0))", "not a finite real number"),
        ("x**sqrt(-1)", "not a finite real number"),
        ("x**log(0)", "not a finite real number"),
        ("Piecewise((1, x > sqrt(-1)), (2, True))", "not a finite real number"),
    ],
    ids=lambda v: v[:40] if isinstance(v, str) else "",
)
def test_sympy_exceptions_become_expression_errors(text, problem, syms):
    with pytest.raises(ExpressionError) as err:
        parse(text, syms)
    assert problem in str(err.value)


@pytest.mark.parametrize(
    "text",
    ["sin(exp(exp(100))) + 1", "max(sin(exp(exp(100))), x)", "ifelse(sin(exp(exp(100))) < 0.5, 1, 2)",
     "abs(sin(exp(exp(100))))"],
    ids=["add", "max", "compare", "abs"],
)
def test_huge_constants_are_refused_before_sympy_evaluates_them(text, syms, time_limit):
    # sin of e**(2.7e43) needs ~1e43 bits of precision: sympy hangs on `+ 1`, Max, Lt
    # and Abs of it. The parser rejects exp(exp(100)) first (it overflows a double).
    with time_limit(5.0), pytest.raises(ExpressionError, match="exp\\(exp\\(100\\)\\)"):
        parse(text, syms)


def test_error_column_points_into_the_original_text(syms):
    # ^ is rewritten as ** before parsing; the reported column must still be in the text as typed.
    with pytest.raises(ExpressionError, match=r"unknown symbol 'q' \(column 7\)"):
        parse("x^2 + q", syms)
    with pytest.raises(ExpressionError, match=r"unknown symbol 'q' \(column 9\)"):
        parse("  x^2 + q", syms)


@pytest.mark.parametrize(("value", "kind"), [(True, "boolean"), (None, "NoneType"), ([1], "list"), ({"a": 1}, "dict")],
                         ids=["bool", "None", "list", "dict"])
def test_non_string_values_are_refused(value, kind, syms):
    with pytest.raises(ExpressionError, match=kind):
        parse(value, syms)


def test_symbols_not_offered_are_unknown(syms):
    # t is only available where the caller offers it (initial values, dose scales: parameters only).
    with pytest.raises(ExpressionError, match="unknown symbol 't'"):
        parse_expression("k*t", {"k": k}, WHERE)


def test_expression_error_is_a_model_error_and_a_value_error(syms):
    with pytest.raises(ModelError):
        parse("exq(x)", syms)
    with pytest.raises(ValueError):
        parse("exq(x)", syms)


def test_results_never_hold_non_finite_or_complex_constants(syms):
    # Docstring contract of parse_expression; exercised further by the fuzz tests.
    for text in ["exp(709)*x", "x*1e308", "min(x, 1e-320)", "exp(-1e300)*x"]:
        expr = parse(text, syms)
        assert not expr.has(sp.zoo, sp.nan, sp.oo, -sp.oo, sp.I)
        assert all(math.isfinite(float(n)) for n in expr.atoms(sp.Number))
