"""Switch times: where the right-hand side may jump, found from conditions on t.

Expected switch times are solved by hand from the condition (c*t + r = 0 -> t = -r/c).
"""

from __future__ import annotations

import time

import pytest
import sympy as sp

from kinetics.errors import ModelError, ModelFileError
from kinetics.model import build_model, parse_model_text

Tmax, Tlag, k = sp.symbols("Tmax Tlag k", real=True)
PARS = {"Tmax": 14.0, "Tlag": 2.0, "k": 0.5}


def switches(ode: str, explicit: tuple[str, ...] = ()) -> tuple[sp.Expr, ...]:
    return build_model("m", PARS, {"x": 1.0}, {"x": ode}, switches=explicit).switches


@pytest.mark.parametrize(
    ("ode", "expected"),
    [
        ("ifelse(t < Tmax, k*x, -k*x)", (Tmax,)),
        ("k*x if t <= Tmax else 0", (Tmax,)),
        ("Piecewise((k*x, t > Tmax), (0, True))", (Tmax,)),
        ("ifelse(t - Tlag > 0, k*x, 0)", (Tlag,)),
        ("ifelse(Tmax > t, k*x, 0)", (Tmax,)),
        ("ifelse(2*t < Tmax, k*x, 0)", (Tmax / 2,)),
        ("ifelse(t/2 > Tlag, k*x, 0)", (2 * Tlag,)),
        ("ifelse(-(t - Tlag) < 0, k*x, 0)", (Tlag,)),
        ("ifelse(t < Tlag + Tmax, k*x, 0)", (Tlag + Tmax,)),
        ("ifelse(t < 5, k*x, 0)", (sp.Integer(5),)),
        ("ifelse(t == Tmax, 0, k*x)", (Tmax,)),
        ("ifelse(t > Tlag and t < Tmax, k*x, 0)", (Tlag, Tmax)),
        ("ifelse(t < Tmax, k*x, 0) + ifelse(t < Tmax, x, 0)", (Tmax,)),  # same time once
        ("ifelse(x > 1, k*x, 0)", ()),  # a state condition is not a time switch
        ("-k*x", ()),
    ],
    ids=["lt", "ifexp-le", "piecewise-gt", "t-minus-Tlag", "reversed", "2t", "t/2", "negated", "sum", "number",
         "eq", "window", "repeated", "state-condition", "none"],
)
def test_implied_switches(ode, expected):
    found = switches(ode)
    assert set(found) == set(expected) and len(found) == len(expected)


def test_explicit_switch_merges_with_implied_without_duplicates():
    assert switches("ifelse(t < Tmax, k*x, 0)", ("Tmax",)) == (Tmax,)


def test_explicit_switches_come_first_then_implied():
    assert switches("ifelse(t < Tmax, k*x, 0)", ("Tlag", "Tmax")) == (Tlag, Tmax)
    assert switches("ifelse(t < Tmax, k*x, 0)", ("Tlag",)) == (Tlag, Tmax)


@pytest.mark.parametrize(("explicit", "ode"), [("1/10", "ifelse(t < 0.1, x, 0)"), ("0.3", "ifelse(t < 3/10, x, 0)"),
                                               ("1.0*Tmax", "ifelse(t < Tmax, x, 0)")],
                         ids=["rational-vs-float", "float-vs-rational", "float-coefficient"])
def test_equal_switches_written_differently_merge(explicit, ode):
    assert len(switches(ode, (explicit,))) == 1


def test_switch_time_is_the_threshold_as_written():
    # Regression: sympy.nsimplify turned 1.4142135623731 into sqrt(2) and
    # 0.333333333333333 into 1/3, moving the switch off the real jump.
    for threshold in ("1.4142135623731", "0.333333333333333"):
        (sw,) = switches(f"ifelse(t < {threshold}, x, 0)")
        assert float(sw) == float(threshold)


@pytest.mark.parametrize(
    "ode",
    ["ifelse(t < x, k, 0)", "ifelse(k*t < 1, k, 0)", "ifelse(exp(t) < Tmax, k, 0)", "ifelse(t*t < Tmax, k, 0)",
     "ifelse((t - Tlag)*(t - Tmax) > 0, k, 0)", "ifelse(t + x > Tmax, k, 0)"],
    ids=["state", "parameter-coefficient", "exp", "square", "product", "t-plus-state"],
)
def test_conditions_on_t_must_be_linear_in_t_with_parameters(ode):
    with pytest.raises(ModelError, match=r"\[odes\] x: condition .* must compare t with an expression of parameters"):
        switches(ode)


def test_switch_file_syntax(model_text):
    m = parse_model_text(model_text({"": {"switches": '["Tmax", "Tmax/2"]'}}), "m.toml")
    assert m.switches == (Tmax, Tmax / 2)


def test_switch_may_not_use_states(model_text):
    with pytest.raises(ModelFileError, match=r"m\.toml: switches\[0\]: unknown symbol 'B'"):
        parse_model_text(model_text({"": {"switches": '["B"]'}}), "m.toml")


def test_adversarial_switches_stay_fast(time_limit):
    # Regression: sympy.expand/simplify on 't < (a+b+c)**60' took ~13 s, and the pairwise
    # simplify() dedupe of 200 distinct switches took minutes (quadratic simplify calls).
    pars = {"a": 1.0, "b": 1.0, "c": 1.0}
    with time_limit(5.0):
        t0 = time.perf_counter()
        m = build_model("m", pars, {"x": 0}, {"x": "ifelse(t < (a+b+c)**60, 1, 0)"})
        assert len(m.switches) == 1
        many = {f"k{i}": 1.0 for i in range(300)}
        m = build_model("m", many, {"x": 0}, {"x": "x"}, switches=tuple(many))
        assert len(m.switches) == 300
        assert time.perf_counter() - t0 < 5.0
