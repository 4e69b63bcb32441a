"""Fit specifications: a TOML file naming the model, the data, the method, what is estimated and
how, read into a frozen :class:`FitSpec` and run by :func:`run_fit_spec` (``kinetics fit SPEC``).

Format (``fits/README.md``)::

    model = "oral_1cmt"                            # library name, or a .toml path relative to this file
    data = "../../shared/data/theoph_nonmem.csv"   # relative to this file (or absolute)
    method = "focei"                               # focei | foce | fo | laplace | saem | individual
    description = "..."                            # optional free text
    [estimate]                                     # initial typical values (individual: initial values)
    ka = 1.57
    [random_effects]                               # initial omega variances (log-normal); not for individual
    ka = 0.6
    [fixed]                                        # optional: parameters (individual: also SDs, "conc.add")
    [error]
    conc = { kind = "additive", add = 0.7 }        # or conc = "additive"
    [covariates]                                   # optional, population methods: CL = { WT = "power" }
    [options]                                      # population: covariance, max_iterations, rtol, atol
                                                   # individual: n_starts, seed, profile, rtol, atol
    [options.saem]                                 # method saem: fields of SaemOptions (n_burn, n_smooth, seed, ...)

A spec file is untrusted input: anything wrong raises :class:`~kinetics.errors.FitSpecError` naming
the file and the entry, never another exception.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from kinetics.data import read_dataset
from kinetics.errors import FitSpecError, KineticsError, did_you_mean
from kinetics.fit._covariance import COVARIANCE_KINDS
from kinetics.fit._individual import IndividualFits, fit_individual
from kinetics.fit._likelihood import ERROR_MODELS
from kinetics.fit._population import fit_population
from kinetics.fit._results import PopulationFit
from kinetics.fit._saem import SaemOptions
from kinetics.model import find_model_file, library_names, read_model_file
from kinetics.solve import load_model

__all__ = ["FitSpec", "read_fit_spec", "run_fit_spec", "FIT_METHODS"]

FIT_METHODS = ("focei", "foce", "fo", "laplace", "saem", "individual")
_TOP_KEYS = ("model", "data", "method", "description", "estimate", "random_effects", "fixed", "error", "covariates",
             "options")
_COVARIATE_KINDS = ("power", "categorical")
# options checked here, by method family; other keywords of fit_population (e.g. SAEM settings) pass through
_POPULATION_OPTIONS = ("covariance", "max_iterations", "rtol", "atol")
_INDIVIDUAL_OPTIONS = ("n_starts", "seed", "profile", "rtol", "atol")
_CORE_ARGUMENTS = ("model", "data", "estimate", "random_effects", "error", "method", "fixed", "covariates", "progress")


@dataclass(frozen=True)
class FitSpec:
    """A checked fit specification (see :func:`read_fit_spec`). Mappings are read-only."""

    path: Path
    model: str                       # as written in the file
    model_file: Path                 # resolved model file
    data: Path                       # resolved data file
    method: str
    description: str
    estimate: Mapping[str, float]
    random_effects: Mapping[str, float] | None
    fixed: Mapping[str, float]
    error: Mapping[str, object]
    covariates: Mapping[str, Mapping[str, object]]
    options: Mapping[str, object]

    def __repr__(self) -> str:
        return f"<FitSpec {self.path.name}: {self.model} by {self.method}, data {self.data.name}>"


def read_fit_spec(path: str | os.PathLike) -> FitSpec:
    """Read and check a fit specification file (TOML).

    Checks the keys and types of every entry, that the model and data files exist, that every
    parameter / output named exists in the model (with did-you-mean suggestions), and that the
    options suit the method. Covariate columns are checked against the data when the fit runs.

    Raises
    ------
    FitSpecError
        Naming the file and the entry (``fits/x.toml: [estimate] 'Cl' is not a parameter of model
        'oral_1cmt'; did you mean 'CL'?``).
    """
    p = Path(path)
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise FitSpecError(f"{p}: fit specification not found") from None
    except OSError as exc:
        raise FitSpecError(f"{p}: cannot be read ({exc.strerror or exc})") from None
    try:
        doc = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise FitSpecError(f"{p}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except tomllib.TOMLDecodeError as exc:
        raise FitSpecError(f"{p}: not valid TOML: {exc}") from None
    return fit_spec_from_dict(doc, p)


def fit_spec_from_dict(doc: Mapping, path: str | os.PathLike) -> FitSpec:
    """Check a parsed specification (a TOML document as a dict); ``path`` locates relative files and names
    the file in messages."""
    p = Path(path)
    where = str(p)

    def fail(msg: str):
        raise FitSpecError(f"{where}: {msg}")

    if not isinstance(doc, Mapping):
        fail("the specification must be a TOML table")
    for k in doc:
        if k not in _TOP_KEYS:
            fail(f"unknown entry '{k}'{did_you_mean(str(k), _TOP_KEYS)} (allowed: {', '.join(_TOP_KEYS)})")
    for k in ("model", "data", "error", "estimate"):
        if k not in doc:
            fail(f"missing required entry '{k}'")
    model_text = _string(doc["model"], "model", fail)
    data_text = _string(doc["data"], "data", fail)
    method = _string(doc.get("method", "focei"), "method", fail)
    if method not in FIT_METHODS:
        fail(f"method: '{method}' is not one of {', '.join(FIT_METHODS)}{did_you_mean(method, FIT_METHODS)}")
    description = _string(doc.get("description", ""), "description", fail)
    model_file = _model_file(model_text, p, fail)
    model = _read_model(model_file, fail)
    data_file = _relative(data_text, p, "data", fail)
    if not _is_file(data_file):
        fail(f"data: file not found: {data_file}")

    params = [q.name for q in model.parameters]
    outputs = [o.name for o in model.outputs]
    bounds = {q.name: (q.lower, q.upper) for q in model.parameters}
    estimate = _numbers(doc["estimate"], "estimate", fail, names=params, model=model.name)
    if not estimate:
        fail("[estimate] is empty: give at least one parameter and its initial value")
    for n, v in estimate.items():
        lo, hi = bounds[n]
        if not lo <= v <= hi:
            fail(f"[estimate] {n} = {v:g} is outside its bounds [{lo:g}, {hi:g}] in model '{model.name}'")
        if lo >= 0 and not v > 0:
            fail(f"[estimate] {n} = {v:g} must be > 0 ('{n}' is positive by nature and estimated on the log scale)")
    error = _error(doc["error"], outputs, model.name, fail)
    sd_names = [f"{o}.{k}" for o, e in error.items() for k in ERROR_MODELS[e["kind"]]]
    fixed_names = params + (sd_names if method == "individual" else [])
    fixed = _numbers(doc.get("fixed", {}), "fixed", fail, names=fixed_names, model=model.name)
    for n in set(fixed) & set(sd_names):
        if not fixed[n] > 0:
            fail(f"[fixed] {n} = {fixed[n]:g}: a residual SD must be > 0")
    both = sorted(set(fixed) & set(estimate))
    if both:
        fail(f"[fixed] {', '.join(both)}: both estimated and fixed")
    random_effects = None
    if "random_effects" in doc:
        if method == "individual":
            fail("[random_effects] is not used by method 'individual' (remove it, or choose a population method)")
        random_effects = _numbers(doc["random_effects"], "random_effects", fail, names=params, model=model.name)
        for n, v in random_effects.items():
            if not v > 0:
                fail(f"[random_effects] {n} = {v:g}: an initial omega variance must be > 0")
            if bounds[n][0] < 0:
                fail(f"[random_effects] {n}: a log-normal random effect needs a parameter positive by nature "
                     f"(its lower bound is {bounds[n][0]:g})")
    covariates = _covariates(doc.get("covariates", {}), estimate, method, fail)
    options = _options(doc.get("options", {}), method, list(estimate) + sd_names, fail)
    return FitSpec(path=p, model=model_text, model_file=model_file, data=data_file, method=method,
                   description=description, estimate=MappingProxyType(estimate),
                   random_effects=None if random_effects is None else MappingProxyType(random_effects),
                   fixed=MappingProxyType(fixed), error=MappingProxyType({k: MappingProxyType(v) for k, v in error.items()}),
                   covariates=MappingProxyType({k: MappingProxyType(v) for k, v in covariates.items()}),
                   options=MappingProxyType(options))


# -- entries ------------------------------------------------------------------------------------
def _string(v, entry: str, fail) -> str:
    if not isinstance(v, str):
        fail(f"{entry}: expected a string, got {_show(v)}")
    return v


def _show(v) -> str:
    text = repr(v)
    return f"{type(v).__name__} {text if len(text) <= 60 else text[:57] + '...'}"


def _relative(text: str, spec: Path, entry: str, fail) -> Path:
    if not text or "\x00" in text:
        fail(f"{entry}: {text!r} is not a file path")
    return Path(os.path.normpath(spec.parent / text))


def _is_file(f: Path) -> bool:
    try:
        return f.is_file()
    except (OSError, ValueError):   # a name too long for the file system, or not encodable
        return False


def _model_file(text: str, spec: Path, fail) -> Path:
    is_path = text.endswith(".toml") or "/" in text or "\\" in text
    if is_path:
        f = _relative(text, spec, "model", fail)
        if not _is_file(f):
            fail(f"model: model file not found: {f}")
        return f
    if not text.isidentifier():
        fail(f"model: {text!r} is neither a library model name nor a .toml path")
    try:
        return find_model_file(text)
    except (KineticsError, OSError, ValueError):
        names = library_names()
        fail(f"model: no library model named '{text}'{did_you_mean(text, names)} (available: {', '.join(names)}; "
             "or give a .toml path relative to this file)")


_MODEL_CACHE: dict[tuple[str, int, int], object] = {}


def _read_model(f: Path, fail):
    try:
        st = f.stat()
        key = (str(f.resolve()), st.st_mtime_ns, st.st_size)
    except (OSError, RuntimeError) as exc:
        fail(f"model: cannot read {f} ({exc})")
    if key not in _MODEL_CACHE:
        try:
            _MODEL_CACHE[key] = read_model_file(f)
        except (KineticsError, OSError) as exc:
            fail(f"model: {exc}")
    return _MODEL_CACHE[key]


def _number(v, entry: str, fail) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        fail(f"{entry}: expected a number, got {_show(v)}")
    x = float(v)
    if not math.isfinite(x):
        fail(f"{entry}: expected a finite number, got {v!r}")
    return x


def _table(v, section: str, fail) -> Mapping:
    if not isinstance(v, Mapping):
        fail(f"[{section}] must be a table of name = value entries, got {_show(v)}")
    return v


def _numbers(v, section: str, fail, *, names, model: str) -> dict[str, float]:
    out = {}
    for k, x in _table(v, section, fail).items():
        if k not in names:
            fail(f"[{section}] '{k}' is not a parameter of model '{model}'{did_you_mean(k, names)}")
        out[k] = _number(x, f"[{section}] {k}", fail)
    return out


def _error(v, outputs, model: str, fail) -> dict[str, dict]:
    table = _table(v, "error", fail)
    if not table:
        fail(f"[error] is empty: give an error model per fitted output, e.g. {outputs[0] if outputs else 'y'} = "
             "\"additive\"")
    out = {}
    for name, e in table.items():
        if name not in outputs:
            fail(f"[error] '{name}' is not an output of model '{model}'{did_you_mean(name, outputs)} "
                 f"(outputs: {', '.join(outputs)})")
        entry = {"kind": e} if isinstance(e, str) else e
        if not isinstance(entry, Mapping):
            fail(f"[error] {name}: expected an error model name or a table {{ kind = ..., add = ... }}, got {_show(e)}")
        kind = entry.get("kind")
        if not isinstance(kind, str):
            fail(f"[error] {name}: 'kind' must be one of {', '.join(ERROR_MODELS)}, got "
                 f"{_show(kind) if kind is not None else 'nothing'}")
        if kind not in ERROR_MODELS:
            fail(f"[error] {name}: unknown error model '{kind}' (choose from {', '.join(ERROR_MODELS)})"
                 f"{did_you_mean(kind, ERROR_MODELS)}")
        checked = {"kind": kind}
        for k, x in entry.items():
            if k == "kind":
                continue
            if k not in ERROR_MODELS[kind]:
                fail(f"[error] {name}: '{k}' is not a parameter of the {kind} error model "
                     f"({', '.join(ERROR_MODELS[kind])}){did_you_mean(k, ERROR_MODELS[kind])}")
            checked[k] = _number(x, f"[error] {name}.{k}", fail)
            if not checked[k] > 0:
                fail(f"[error] {name}.{k} = {checked[k]:g}: an initial SD must be > 0")
        out[name] = checked
    return out


def _covariates(v, estimate, method: str, fail) -> dict[str, dict]:
    table = _table(v, "covariates", fail)
    if table and method == "individual":
        fail("[covariates] is not used by method 'individual' (covariate effects act on typical values)")
    out = {}
    for par, covs in table.items():
        if par not in estimate:
            fail(f"[covariates] '{par}' must be an estimated parameter{did_you_mean(par, list(estimate))}")
        if not isinstance(covs, Mapping) or not covs:
            fail(f"[covariates] {par}: expected a table {{ COLUMN = \"power\" | \"categorical\" }}, got {_show(covs)}")
        out[par] = {}
        for cov, how in covs.items():
            entry = {"kind": how} if isinstance(how, str) else how
            if not isinstance(entry, Mapping):
                fail(f"[covariates] {par}.{cov}: expected \"power\", \"categorical\" or a table {{ kind = ..., "
                     f"reference = ... }}, got {_show(how)}")
            for k in entry:
                if k not in ("kind", "reference"):
                    fail(f"[covariates] {par}.{cov}: unknown key '{k}'{did_you_mean(k, ('kind', 'reference'))}")
            kind = entry.get("kind")
            if kind not in _COVARIATE_KINDS:
                hint = did_you_mean(kind, _COVARIATE_KINDS) if isinstance(kind, str) else ""
                fail(f"[covariates] {par}.{cov}: kind must be 'power' or 'categorical', got {kind!r}{hint}")
            ref = entry.get("reference")
            if ref is not None:
                if kind == "power":
                    ref = _number(ref, f"[covariates] {par}.{cov}.reference", fail)
                    if not ref > 0:
                        fail(f"[covariates] {par}.{cov}.reference = {ref:g}: a power-model reference must be > 0")
                elif isinstance(ref, (dict, list)):
                    fail(f"[covariates] {par}.{cov}.reference: expected a level (number or string), got {_show(ref)}")
            out[par][cov] = {"kind": kind} if ref is None else {"kind": kind, "reference": ref}
    return out


def _options(v, method: str, quantities, fail) -> dict[str, object]:
    table = _table(v, "options", fail)
    if method == "individual":
        allowed = _INDIVIDUAL_OPTIONS
    else:
        extra = [n for n in inspect.signature(fit_population).parameters
                 if n not in _CORE_ARGUMENTS and (n != "saem" or method == "saem")]
        allowed = tuple(dict.fromkeys(_POPULATION_OPTIONS + tuple(extra)))
    out: dict[str, object] = {}
    for k, x in table.items():
        if k not in allowed:
            other = _INDIVIDUAL_OPTIONS if method != "individual" else _POPULATION_OPTIONS
            why = f" (it applies to {'individual' if method != 'individual' else 'population'} fits)" if k in other \
                else did_you_mean(k, allowed)
            fail(f"[options] '{k}' is not an option of method '{method}'{why} (options: {', '.join(allowed)})")
        where = f"[options] {k}"
        if k in ("rtol", "atol"):
            x = _number(x, where, fail)
            if not 0 < x < 1:
                fail(f"{where} = {x:g}: must be in (0, 1)")
        elif k in ("max_iterations", "n_starts", "seed"):
            if isinstance(x, bool) or not isinstance(x, int):
                fail(f"{where}: expected an integer, got {_show(x)}")
            if x < (1 if k == "max_iterations" else 0) or x > 2**31:
                fail(f"{where} = {x}: must be {'>= 1' if k == 'max_iterations' else '>= 0'} (and < 2^31)")
            if k == "n_starts" and x > 10_000:
                fail(f"{where} = {x}: at most 10000 starts")
        elif k == "covariance":
            if x not in (*COVARIANCE_KINDS, "none"):
                hint = did_you_mean(x, COVARIANCE_KINDS) if isinstance(x, str) else ""
                fail(f"{where}: must be one of {', '.join(COVARIANCE_KINDS)} or \"none\", got {x!r}{hint}")
            x = None if x == "none" else x
        elif k == "saem":
            x = _saem_options(x, fail)
        elif k == "profile":
            if not isinstance(x, list) or not all(isinstance(n, str) for n in x):
                fail(f"{where}: expected a list of names, e.g. [\"CL\", \"V\"], got {_show(x)}")
            for n in x:
                if n not in quantities:
                    fail(f"{where}: '{n}' is not an estimated quantity ({', '.join(quantities)})"
                         f"{did_you_mean(n, quantities)}")
        out[k] = x
    return out


_SAEM_LIMIT = 1_000_000   # iteration / move counts above this are typos, not plans


def _saem_options(v, fail) -> SaemOptions:
    table = _table(v, "options.saem", fail)
    fields = {f.name: f for f in dataclasses.fields(SaemOptions)}
    values = {}
    for k, x in table.items():
        if k not in fields:
            fail(f"[options.saem] '{k}' is not a SAEM option{did_you_mean(k, fields)} (options: {', '.join(fields)})")
        default = fields[k].default
        where = f"[options.saem] {k}"
        if isinstance(default, float):
            x = _number(x, where, fail)
            if not 0 < x <= 1:
                fail(f"{where} = {x:g}: must be in (0, 1]")
        else:   # counts and the seed (n_chains defaults to None: chosen by the method)
            if isinstance(x, bool) or not isinstance(x, int):
                fail(f"{where}: expected an integer, got {_show(x)}")
            low = 1 if k == "n_chains" else 0
            if not low <= x <= (2**31 if k == "seed" else _SAEM_LIMIT):
                fail(f"{where} = {x}: must be >= {low} and <= {2**31 if k == 'seed' else _SAEM_LIMIT}")
        values[k] = x
    try:
        return SaemOptions(**values)
    except (TypeError, ValueError) as exc:
        fail(f"[options.saem]: {exc}")


# -- running --------------------------------------------------------------------------------------
def run_fit_spec(spec: FitSpec | str | os.PathLike,
                 progress: Callable | bool | None = True) -> PopulationFit | IndividualFits:
    """Run a fit specification: load the model and the data, fit by the spec's method.

    Returns a :class:`~kinetics.fit.PopulationFit` (population methods) or
    :class:`~kinetics.fit.IndividualFits` (``method = "individual"``). ``progress`` is passed to the
    fit (True prints a line per iteration, or per subject).

    Raises
    ------
    FitSpecError
        For a bad specification, or a specification that does not fit the data (message prefixed
        with the spec file).
    DatasetError
        When the data file violates the event-table rules.
    """
    if not isinstance(spec, FitSpec):
        spec = read_fit_spec(spec)
    try:
        model = load_model(spec.model_file)
        data = read_dataset(spec.data)
        opts = dict(spec.options)
        error = {k: dict(v) for k, v in spec.error.items()}
        if spec.method == "individual":
            return fit_individual(model, data, estimate=dict(spec.estimate), error=error, fixed=dict(spec.fixed),
                                  progress=progress, **opts)
        return fit_population(model, data, estimate=dict(spec.estimate),
                              random_effects=None if spec.random_effects is None else dict(spec.random_effects),
                              error=error, method=spec.method, fixed=dict(spec.fixed),
                              covariates={k: dict(v) for k, v in spec.covariates.items()} or None,
                              progress=progress, **opts)
    except FitSpecError as exc:
        raise FitSpecError(f"{spec.path}: {exc}") from None
