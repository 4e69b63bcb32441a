"""Fit specification files: every mistake is a FitSpecError naming the file and the entry; fuzzed.

Properties (read_fit_spec docstring; a spec file is untrusted input): any bytes, any text, any
TOML-ish token soup and any structure give a FitSpec or a FitSpecError, never another exception,
never a hang; an accepted spec only names parameters and outputs that the model has.
"""

from __future__ import annotations

import math
import signal
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kinetics.errors import FitSpecError
from kinetics.fit import FitSpec, IndividualFits, read_fit_spec, run_fit_spec
from kinetics.fit._saem import SaemOptions
from kinetics.fit._spec import FIT_METHODS, fit_spec_from_dict
from kinetics.model import find_model_file, read_model_file
from tests.references import shared_data

REPO = Path(__file__).resolve().parents[2]
FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                         HealthCheck.function_scoped_fixture])
PER_EXAMPLE_SECONDS = 5.0
ORAL = read_model_file(find_model_file("oral_1cmt"))
ORAL_PARAMS = {p.name for p in ORAL.parameters}


class Hang(BaseException):
    """One example ran longer than PER_EXAMPLE_SECONDS."""


@contextmanager
def deadline(seconds: float = PER_EXAMPLE_SECONDS):
    def expire(*_):
        raise Hang(f"example took longer than {seconds} s")

    old = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def test_deadline_guard_works():
    with pytest.raises(Hang):
        with deadline(0.2):
            while True:
                pass


# -- helpers --------------------------------------------------------------------------------------
def _q(s: str) -> str:
    """A TOML basic string holding ``s`` exactly."""
    out = []
    for ch in s:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)
    if isinstance(v, str):
        return _q(v)
    if isinstance(v, list):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    return "{ " + ", ".join(f"{_q(k)} = {_value(x)}" for k, x in v.items()) + " }"


def to_toml(doc: dict) -> str:
    """Top-level scalars first, then one [table] per dict value (nested dicts as inline tables)."""
    lines = [f"{_q(k)} = {_value(v)}" for k, v in doc.items() if not isinstance(v, dict)]
    for k, v in doc.items():
        if isinstance(v, dict):
            lines.append(f"[{_q(k)}]")
            lines += [f"{_q(kk)} = {_value(vv)}" for kk, vv in v.items()]
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def data_file(tmp_path_factory) -> Path:
    f = tmp_path_factory.mktemp("specdata") / "data.csv"
    f.write_text("ID,TIME,DV,EVID,AMT,CMT\n1,0,.,1,320,depot\n1,1,5.2,0,.,.\n1,4,4.1,0,.,.\n")
    return f


def base(data: Path, method: str = "focei") -> dict:
    doc = {"model": "oral_1cmt", "data": str(data), "method": method,
           "estimate": {"ka": 1.5, "CL": 2.7, "V": 31.0}, "error": {"conc": {"kind": "additive", "add": 0.7}}}
    if method != "individual":
        doc["random_effects"] = {"ka": 0.6, "CL": 0.3}
    return doc


def read(tmp_path: Path, doc_or_text, name: str = "spec.toml") -> FitSpec:
    path = tmp_path / name
    if isinstance(doc_or_text, bytes):
        path.write_bytes(doc_or_text)
    else:
        path.write_text(doc_or_text if isinstance(doc_or_text, str) else to_toml(doc_or_text), encoding="utf-8")
    return read_fit_spec(path)


def check(result) -> None:
    """The fuzz property: a FitSpec consistent with its model, or a FitSpecError naming the file."""
    if isinstance(result, FitSpecError):   # its message was checked where it was caught
        return
    assert isinstance(result, FitSpec)
    assert result.method in FIT_METHODS and result.estimate and result.error
    model = read_model_file(result.model_file)
    names = {p.name for p in model.parameters}
    assert set(result.estimate) <= names and set(result.random_effects or {}) <= names
    assert set(result.error) <= {o.name for o in model.outputs}
    assert all(math.isfinite(v) for v in result.estimate.values())


def attempt(tmp_path: Path, doc_or_text):
    with deadline():
        try:
            return read(tmp_path, doc_or_text)
        except FitSpecError as exc:
            assert str(exc).startswith(str(tmp_path / "spec.toml") + ": "), str(exc)
            return exc


# -- the shipped spec and a good one ------------------------------------------------------------
def test_shipped_theophylline_spec_reads():
    if not (REPO / "fits" / "../../shared/data/theoph_nonmem.csv").resolve().is_file():
        pytest.skip("the shipped spec reads ../shared/data/theoph_nonmem.csv, not present here")
    spec = read_fit_spec(REPO / "fits" / "theophylline_focei.toml")
    assert spec.model == "oral_1cmt" and spec.method == "focei"
    assert dict(spec.estimate) == {"ka": 1.57, "CL": 2.72, "V": 31.5}        # the issue's example
    assert dict(spec.random_effects) == {"ka": 0.6, "CL": 0.3, "V": 0.1}
    assert dict(spec.error["conc"]) == {"kind": "additive", "add": 0.7}
    assert spec.data.name == "theoph_nonmem.csv" and spec.data.parent.name == "data"


def test_good_spec_is_frozen_and_read_only(tmp_path, data_file):
    spec = read(tmp_path, base(data_file))
    assert spec.data == data_file and spec.model_file.name == "oral_1cmt.toml"
    with pytest.raises(AttributeError):
        spec.method = "fo"
    with pytest.raises(TypeError):
        spec.estimate["ka"] = 3.0


def test_model_path_relative_to_the_spec(tmp_path, data_file):
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "mine.toml").write_text(find_model_file("oral_1cmt").read_text())
    spec = read(tmp_path, {**base(data_file), "model": "models/mine.toml"})
    assert spec.model_file == tmp_path / "models" / "mine.toml"


def test_saem_options_become_saem_options(tmp_path, data_file):
    doc = {**base(data_file, "saem"), "options": {"saem": {"n_burn": 50, "seed": 4, "annealing": 0.9}}}
    spec = read(tmp_path, doc)
    assert spec.options["saem"] == SaemOptions(n_burn=50, seed=4, annealing=0.9)


# -- each error names the file and the entry ------------------------------------------------------
def _with(doc: dict, **changes) -> dict:
    doc = {k: (dict(v) if isinstance(v, dict) else v) for k, v in doc.items()}
    for key, value in changes.items():
        section, _, entry = key.partition("__")
        if entry:
            doc.setdefault(section, {})
            if value is None:
                doc[section].pop(entry, None)
            else:
                doc[section][entry] = value
        elif value is None:
            doc.pop(section, None)
        else:
            doc[section] = value
    return doc


BAD = {
    "unknown-key": (dict(modle="x"), r"unknown entry 'modle'; did you mean 'model'"),
    "missing-model": (dict(model=None), r"missing required entry 'model'"),
    "model-type": (dict(model=3), r"model: expected a string, got int 3"),
    "unknown-library-model": (dict(model="oral_1cmtt"), r"no library model named 'oral_1cmtt'; did you mean 'oral_1cmt'"),
    "model-file-missing": (dict(model="nope/m.toml"), r"model: model file not found: .*nope/m.toml"),
    "data-missing": (dict(data="missing.csv"), r"data: file not found: .*missing.csv"),
    "method": (dict(method="foci"), r"method: 'foci' is not one of .*; did you mean 'focei'"),
    "estimate-name": (dict(estimate__Cl=2.0), r"\[estimate\] 'Cl' is not a parameter of model 'oral_1cmt'; did you "
                                              r"mean 'CL'"),
    "estimate-type": (dict(estimate__ka="1.5"), r"\[estimate\] ka: expected a number, got str '1.5'"),
    "estimate-bool": (dict(estimate__ka=True), r"\[estimate\] ka: expected a number, got bool"),
    "estimate-nan": (dict(estimate__ka=float("nan")), r"\[estimate\] ka: expected a finite number"),
    "estimate-bounds": (dict(estimate__ka=80.0), r"\[estimate\] ka = 80 is outside its bounds \[0, 50\]"),
    "estimate-zero": (dict(estimate__ka=0.0), r"\[estimate\] ka = 0 must be > 0"),
    "estimate-empty": (dict(estimate={}), r"\[estimate\] is empty"),
    "estimate-not-table": (dict(estimate=[1, 2]), r"\[estimate\] must be a table"),
    "omega-name": (dict(random_effects__kaa=0.5), r"\[random_effects\] 'kaa' .*did you mean 'ka'"),
    "omega-zero": (dict(random_effects__ka=0.0), r"\[random_effects\] ka = 0: an initial omega variance must be > 0"),
    "error-output": (dict(error={"cnoc": "additive"}), r"\[error\] 'cnoc' is not an output .*did you mean 'conc'"),
    "error-kind": (dict(error={"conc": {"kind": "additve"}}), r"unknown error model 'additve'.*did you mean 'additive'"),
    "error-kind-missing": (dict(error={"conc": {"add": 0.5}}), r"\[error\] conc: 'kind' must be one of"),
    "error-param": (dict(error={"conc": {"kind": "additive", "prop": 0.1}}),
                    r"\[error\] conc: 'prop' is not a parameter of the additive error model"),
    "error-sd": (dict(error={"conc": {"kind": "additive", "add": -1}}), r"\[error\] conc.add = -1: an initial SD"),
    "error-empty": (dict(error={}), r"\[error\] is empty"),
    "fixed-both": (dict(fixed={"CL": 2.0}), r"\[fixed\] CL: both estimated and fixed"),
    "fixed-sd-population": (dict(fixed={"conc.add": 0.5}), r"\[fixed\] 'conc.add' is not a parameter"),
    "covariate-parameter": (dict(covariates={"F": {"WT": "power"}}), r"\[covariates\] 'F' must be an estimated"),
    "covariate-kind": (dict(covariates={"CL": {"WT": "powr"}}), r"kind must be 'power' or 'categorical'.*did you mean "
                                                                  r"'power'"),
    "covariate-key": (dict(covariates={"CL": {"WT": {"kind": "power", "ref": 70}}}), r"unknown key 'ref'"),
    "option-name": (dict(options={"max_iteration": 5}), r"\[options\] 'max_iteration' .*did you mean 'max_iterations'"),
    "option-wrong-method": (dict(options={"n_starts": 5}), r"'n_starts' is not an option of method 'focei' \(it applies "
                                                           r"to individual fits\)"),
    "option-type": (dict(options={"max_iterations": 2.5}), r"\[options\] max_iterations: expected an integer"),
    "option-covariance": (dict(options={"covariance": "sandwhich"}), r"did you mean 'sandwich'"),
    "option-rtol": (dict(options={"rtol": 2.0}), r"\[options\] rtol = 2: must be in \(0, 1\)"),
    "saem-options-for-focei": (dict(options={"saem": {"n_burn": 5}}), r"'saem' is not an option of method 'focei'"),
}


@pytest.mark.parametrize("changes,match", BAD.values(), ids=BAD.keys())
def test_each_mistake_is_named(tmp_path, data_file, changes, match):
    with pytest.raises(FitSpecError, match=match) as exc:
        read(tmp_path, _with(base(data_file), **changes))
    assert str(exc.value).startswith(f"{tmp_path / 'spec.toml'}: ")


BAD_INDIVIDUAL = {
    "random-effects": (dict(random_effects={"ka": 0.5}), r"\[random_effects\] is not used by method 'individual'"),
    "covariates": (dict(covariates={"CL": {"WT": "power"}}), r"\[covariates\] is not used by method 'individual'"),
    "profile-name": (dict(options={"profile": ["Cl"]}), r"\[options\] profile: 'Cl' .*did you mean 'CL'"),
    "profile-type": (dict(options={"profile": "CL"}), r"\[options\] profile: expected a list of names"),
    "starts-negative": (dict(options={"n_starts": -1}), r"\[options\] n_starts = -1: must be >= 0"),
    "population-option": (dict(options={"covariance": "r"}), r"'covariance' is not an option of method 'individual' "
                                                              r"\(it applies to population fits\)"),
    "fixed-sd-zero": (dict(fixed={"conc.add": 0.0}), r"\[fixed\] conc.add = 0: a residual SD must be > 0"),
}


@pytest.mark.parametrize("changes,match", BAD_INDIVIDUAL.values(), ids=BAD_INDIVIDUAL.keys())
def test_each_mistake_is_named_individual(tmp_path, data_file, changes, match):
    with pytest.raises(FitSpecError, match=match):
        read(tmp_path, _with(base(data_file, "individual"), **changes))


@pytest.mark.parametrize("content,match", [
    (b"\xff\xfe model", r"not UTF-8 text"),
    ("model = \n", r"not valid TOML"),
    ("[estimate]\nka = 1\n[estimate]\n", r"not valid TOML"),
], ids=["bytes", "syntax", "duplicate-table"])
def test_unreadable_files(tmp_path, content, match):
    with pytest.raises(FitSpecError, match=match):
        read(tmp_path, content)


def test_missing_spec_file(tmp_path):
    with pytest.raises(FitSpecError, match=r"missing.toml: fit specification not found"):
        read_fit_spec(tmp_path / "missing.toml")


def test_problems_found_when_running_name_the_spec(tmp_path, data_file):
    # covariate columns are checked against the data when the fit runs; the error still names the spec
    spec = read(tmp_path, _with(base(data_file), covariates={"CL": {"WTT": "power"}}))
    with pytest.raises(FitSpecError, match=rf"^{tmp_path / 'spec.toml'}: covariates: 'WTT' is not a column"):
        run_fit_spec(spec, progress=False)


def test_run_individual_spec(tmp_path):
    theoph = shared_data("theoph_nonmem.csv")
    doc = _with(base(theoph, "individual"), options={"n_starts": 0, "profile": ["CL"]})
    fits = run_fit_spec(read(tmp_path, doc), progress=False)
    assert isinstance(fits, IndividualFits) and len(fits) == 12 and fits.success
    assert set(fits["1"].profile) == {"CL"}


# -- fuzzing ---------------------------------------------------------------------------------------
@FUZZ
@given(st.binary(max_size=300))
def test_random_bytes(tmp_path, data):
    check(attempt(tmp_path, data))


@FUZZ
@given(st.text(max_size=300))
def test_random_text(tmp_path, text):
    check(attempt(tmp_path, text))


TOKENS = ["model", "data", "method", "estimate", "random_effects", "fixed", "error", "covariates", "options",
          "description", "ka", "CL", "V", "F", "conc", "kind", "add", "prop", "WT", "power", "n_starts", "profile",
          "saem", "n_burn", '"oral_1cmt"', '"focei"', '"individual"', '"saem"', '"additive"', '"log_additive"',
          '"power"', '"../x.csv"', '"models/../oral_1cmt.toml"', '"/"', '""', "=", "[", "]", "[[", "]]", "{", "}", ",",
          ".", "1.5", "0", "-1", "1e400", "nan", "inf", "true", "1979-05-27", "0x1f", '"""', "'", "#", "\n", " ", "\t",
          "\x00", "é", "[estimate]", "[error]", "[options]", "[options.saem]"]
token_text = st.lists(st.sampled_from(TOKENS), max_size=60).map("".join)


@FUZZ
@given(token_text)
def test_token_soup(tmp_path, text):
    check(attempt(tmp_path, text))


scalar = st.one_of(st.booleans(), st.integers(-10**20, 10**20), st.floats(), st.text(max_size=20),
                   st.sampled_from(["oral_1cmt", "stein2019", "additive", "power", "categorical", "focei", "saem",
                                    "individual", "conc", "CL", "ka", "sandwich", "none"]))
value = st.recursive(scalar, lambda kids: st.one_of(st.lists(kids, max_size=4),
                                                    st.dictionaries(st.text(max_size=8), kids, max_size=4)),
                     max_leaves=12)
name = st.one_of(st.sampled_from(sorted(ORAL_PARAMS) + ["Cl", "kaa", "conc", "conc.add", "kind", "add", "prop",
                                                          "n_starts", "seed", "profile", "covariance", "rtol", "saem",
                                                          "max_iterations", "WT"]), st.text(max_size=10))
section = st.sampled_from(["model", "data", "method", "description", "estimate", "random_effects", "fixed", "error",
                           "covariates", "options", "extra"])


@st.composite
def mutated(draw, data: Path):
    """A valid spec with a few entries replaced, added or deleted."""
    doc = base(data, draw(st.sampled_from(FIT_METHODS)))
    for _ in range(draw(st.integers(0, 4))):
        sec = draw(section)
        what = draw(st.sampled_from(["replace", "entry", "delete"]))
        if what == "delete":
            doc.pop(sec, None)
        elif what == "replace" or not isinstance(doc.get(sec), dict):
            doc[sec] = draw(value)
        else:
            doc[sec][draw(name)] = draw(value)
    return doc


@FUZZ
@given(st.data())
def test_mutated_structures(tmp_path, data_file, data):
    doc = data.draw(mutated(data_file))
    check(attempt(tmp_path, to_toml(doc)))
    with deadline():   # the same structure without the TOML round trip
        try:
            check(fit_spec_from_dict(doc, tmp_path / "spec.toml"))
        except FitSpecError as exc:
            assert str(exc).startswith(f"{tmp_path / 'spec.toml'}: ")


def test_readme_format_example_reads(tmp_path, data_file):
    # fits/README.md shows the format as one TOML block: it must be a valid specification
    text = (REPO / "fits" / "README.md").read_text()
    block = text.split("```toml\n", 1)[1].split("```", 1)[0]
    block = block.replace('"../../shared/data/theoph_nonmem.csv"', f'"{data_file}"')
    spec = read(tmp_path, block)
    assert spec.method == "focei" and set(spec.random_effects) == {"ka", "CL"}
    assert dict(spec.covariates["V"]["SEX"]) == {"kind": "categorical", "reference": 0}
