"""build_model from Python values, and the Model it returns."""

from __future__ import annotations

import dataclasses
import math

import pytest
import sympy as sp

from kinetics.errors import ModelError
from kinetics.model import TIME, Model, Parameter, build_model, parse_model_text

ka, CL, V, F = sp.symbols("ka CL V F", real=True)
depot, central = sp.symbols("depot central", real=True)


def oral(**changes) -> Model:
    """The oral model; dict arguments update its tables (a value of None deletes the entry)."""
    # One-compartment oral model (Gibaldi & Perrier, Pharmacokinetics, 2nd ed., 1982):
    # d depot/dt = -ka*depot, d central/dt = ka*depot - CL/V*central.
    args = dict(
        name="oral",
        parameters={"ka": 1.5, "CL": {"value": 2.75, "unit": "L/h", "lower": 0.0}, "V": Parameter("V", 31.9, "L")},
        states={"depot": 0, "central": "0"},
        odes={"depot": "-ka*depot", "central": "ka*depot - CL/V*central"},
        outputs={"conc": "central/V"},
        doses={"oral": {"state": "depot", "scale": "F"}, "iv": "central"},
        description="oral 1-cmt",
        time_unit="h",
    )
    args["parameters"] = {**args["parameters"], "F": {"value": 1.0, "lower": 0.0, "upper": 1.0}}
    for key, value in changes.items():
        if isinstance(value, dict):
            merged = {**args[key], **value}
            args[key] = {n: v for n, v in merged.items() if v is not None}
        else:
            args[key] = value
    return build_model(**args)


def test_names_in_declaration_order():
    m = oral()
    assert m.parameter_names == ("ka", "CL", "V", "F")
    assert m.state_names == ("depot", "central")
    assert m.output_names == ("conc",)
    assert m.dose_target_names == ("oral", "iv")
    assert m.name == "oral" and m.time_unit == "h" and m.description == "oral 1-cmt"
    assert m.source == "<python>"


def test_defaults_and_parameter_fields():
    m = oral()
    assert m.defaults == {"ka": 1.5, "CL": 2.75, "V": 31.9, "F": 1.0}
    cl = m.parameters[1]
    assert (cl.unit, cl.lower, cl.upper) == ("L/h", 0.0, math.inf)
    assert m.parameters[0].lower == -math.inf  # a bare number has no bounds


def test_odes_outputs_and_doses_are_the_sympy_expressions():
    m = oral()
    assert m.odes == (-ka * depot, ka * depot - CL / V * central)
    assert m.outputs[0].expression == central / V
    assert m.states[0].initial == 0 and m.states[1].initial == 0
    assert [(d.state, d.scale) for d in m.dose_targets] == [("depot", F), ("central", 1)]
    assert m.equations() == ["ddepot/dt = -depot*ka", "dcentral/dt = -CL*central/V + depot*ka"]


def test_sympy_expressions_are_accepted_with_or_without_real_symbols():
    # Symbol('k') and Symbol('k', real=True) differ in sympy; build_model maps them by name.
    k_plain, x_plain, t_plain = sp.symbols("k x t")
    m = build_model("decay", {"k": 0.5}, {"x": 1.0}, {"x": -k_plain * x_plain * sp.exp(-t_plain)})
    k, x = sp.symbols("k x", real=True)
    assert m.odes == (-k * x * sp.exp(-TIME),)
    m2 = build_model("decay", {"k": 0.5}, {"x": 1.0}, {"x": -k * x})
    assert m2.odes == (-k * x,)


def test_initial_values_are_expressions_of_parameters():
    m = build_model("m", {"x0": 2.0, "k": 1.0}, {"x": "x0/2"}, {"x": "-k*x"})
    assert m.states[0].initial == sp.Symbol("x0", real=True) / 2


def test_python_and_file_models_agree(model_text):
    # The same model from a file and from Python has the same symbolic content.
    f = parse_model_text(model_text(), "m.toml")
    p = build_model(
        "cd19",
        {"k_kill": {"value": 0.5, "lower": 0.0, "upper": 10.0}, "rho": 0.1, "Tmax": {"value": 14.0, "lower": 0.0}},
        {"B": "1", "C": 0},
        {"B": "-k_kill*C*B", "C": "ifelse(t < Tmax, rho*C, -rho*C)"},
        outputs={"total": "B + C"},
        doses={"car": "C"},
    )
    assert p.odes == f.odes
    assert p.switches == f.switches
    assert [s.initial for s in p.states] == [s.initial for s in f.states]
    assert p.defaults == f.defaults


def test_model_is_frozen():
    m = oral()
    with pytest.raises(dataclasses.FrozenInstanceError):
        m.name = "other"  # type: ignore[misc]
    assert dataclasses.replace(m, name="other").name == "other"


def test_repr_names_the_parts():
    assert repr(oral()) == "Model('oral': 2 states, 4 parameters, outputs ['conc'], doses ['oral', 'iv'])"


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"odes": {"central": None}}, "state 'central' has no ODE"),
        ({"odes": {"centrl": "0"}}, "ODE for unknown state 'centrl'; did you mean 'central'?"),
        ({"parameters": {"ka": "1.5"}}, "parameter 'ka' value must be a number"),
        ({"parameters": {"ka": True}}, "parameter 'ka' value must be a number"),
        ({"parameters": {"ka": {"value": 1.0, "uper": 2.0}}}, "unknown field 'uper'; did you mean 'upper'?"),
        ({"parameters": {"ka": {"unit": "1/h"}}}, "parameter 'ka': missing 'value'"),
        ({"parameters": {"ka": Parameter("kb", 1.0)}}, "parameter 'ka' is given a Parameter named 'kb'"),
        ({"parameters": {"ka": {"value": 5.0, "upper": 1.0}}}, "[parameters] ka: value 5.0 is outside its bounds"),
        ({"parameters": {"ka": {"value": 1.0, "lower": 2.0, "upper": 0.0}}}, "are not an interval"),
        ({"parameters": {"ka": math.nan}}, "value must be finite"),
        ({"parameters": {"exp": 1.0}}, "parameter name 'exp' is reserved"),
        ({"parameters": {"1k": 1.0}}, "parameter name '1k' is not a valid name"),
        ({"states": {"t": 0}, "odes": {"t": "1"}}, "state name 't' is reserved"),
        ({"states": {"ka": 0}, "odes": {"ka": "0"}}, "duplicate name 'ka'"),
        ({"name": ""}, "needs a non-empty 'name'"),
        ({"doses": {"oral": "dpot"}}, "[doses] oral targets unknown state 'dpot'; did you mean 'depot'?"),
        ({"doses": {"oral": {"stat": "depot"}}}, "dose 'oral' must be a state name or a dict with 'state'"),
        ({"doses": {"oral": 5}}, "dose 'oral' must be a state name"),
        ({"doses": {"oral": {"state": "depot", "sacle": "F"}}}, "unknown field 'sacle'; did you mean 'scale'?"),
        ({"doses": {"oral": {"state": "depot", "scale": "depot"}}}, "unknown symbol 'depot'"),
        ({"outputs": {"conc": "centrl/V"}}, "unknown symbol 'centrl'; did you mean 'central'?"),
        ({"switches": ("depot",)}, "unknown symbol 'depot'"),
        ({"odes": {"central": sp.Symbol("q", real=True)}}, "undeclared symbol 'q'"),
    ],
    ids=["missing-ode", "unknown-ode", "value-text", "value-bool", "unknown-field", "missing-value",
         "parameter-name-mismatch", "outside-bounds", "bad-bounds", "nan", "reserved", "invalid-name",
         "state-named-t", "duplicate", "empty-name", "dose-unknown-state", "dose-no-state",
         "dose-not-a-spec", "dose-unknown-field", "dose-scale-state", "output-unknown", "switch-state",
         "sympy-undeclared"],
)
def test_build_model_errors(kwargs, problem):
    with pytest.raises(ModelError) as err:
        oral(**kwargs)
    assert problem in str(err.value)
    assert str(err.value).startswith("<python>")


def test_a_model_needs_states():
    with pytest.raises(ModelError, match="the model has no states"):
        build_model("empty", {}, {}, {})


def test_nonnegative_states_from_python_and_file(tmp_path):
    # the flag reaches the Model (and its fingerprint, so the compiled cache differs), from either route
    from kinetics.codegen import model_fingerprint
    from kinetics.errors import ModelError
    from kinetics.model import build_model, read_model_file

    m = build_model("decay", {"k": 0.5}, {"x": 1.0, "y": 0.0}, {"x": "-k*x", "y": "k*x"}, nonnegative=["x"])
    assert [s.nonnegative for s in m.states] == [True, False]
    every = build_model("decay", {"k": 0.5}, {"x": 1.0, "y": 0.0}, {"x": "-k*x", "y": "k*x"}, nonnegative=True)
    assert all(s.nonnegative for s in every.states) and model_fingerprint(every) != model_fingerprint(m)
    with pytest.raises(ModelError, match="unknown state 'xx'"):
        build_model("decay", {"k": 0.5}, {"x": 1.0}, {"x": "-k*x"}, nonnegative=["xx"])
    path = tmp_path / "m.toml"
    path.write_text('name = "m"\n[parameters]\nk = 1.0\n[states]\nx = { initial = "1", nonnegative = true }\n'
                    'y = "0"\n[odes]\nx = "-k*x"\ny = "k*x"\n')
    assert [s.nonnegative for s in read_model_file(path).states] == [True, False]
