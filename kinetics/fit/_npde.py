"""Simulation-based model diagnostics: normalised prediction distribution errors (NPDE), and the
simulation of a fitted population that NPDE and visual predictive checks (:mod:`kinetics.fit._vpc`)
share.

Both simulate the fitted model on each subject's own design (its doses and observation times,
from the dataset): typical values from the fit (with the subject's covariate effects and the
problem's fixed values, read back from ``fit.individual_params`` divided by ``exp(eta)``), etas
drawn from ``N(0, fit.omega)``, residual error from ``fit.sigma`` with the fit's error model per
output, and censoring at the subject's LLOQ as in the data. Nothing here plots (see
:mod:`kinetics.plot`).

References
----------
Brendel K, Comets E, Laffont C, Laveille C, Mentre F. Metrics for external model evaluation with an
application to the population pharmacokinetics of gliclazide. Pharm Res 2006;23:2036-49,
doi:10.1007/s11095-006-9067-5.
Comets E, Brendel K, Mentre F. Computing normalised prediction distribution errors to evaluate
nonlinear mixed-effect models: the npde add-on package for R. Comput Methods Programs Biomed
2008;90:154-66, doi:10.1016/j.cmpb.2007.12.002.
Nguyen THT, Comets E, Mentre F. Extension of NPDE for evaluation of nonlinear mixed effect models in
presence of data below the quantification limit. J Pharmacokinet Pharmacodyn 2012;39:499-518,
doi:10.1007/s10928-012-9264-2.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import special, stats

from kinetics.data import CENSORED_LEFT, CENSORED_RIGHT, Dataset
from kinetics.errors import FitSpecError, did_you_mean
from kinetics.fit._likelihood import ERROR_MODELS, ErrorModel

__all__ = ["SimulationSpec", "build_simulation_spec", "infer_error_models", "NPDEResult", "NPDETests", "npde",
           "npde_tests"]

NPDE_METHOD = (
    "simulation-based NPDE (Brendel et al. 2006): per subject, K = {k} simulated replicates of its design from "
    "the fitted model; decorrelated by the inverse Cholesky factor of the empirical mean and covariance "
    "(Comets et al. 2008) on the scale the residual error is Gaussian on (log for log_additive), the moments "
    "taken from the first K/2 replicates and the observation ranked among the other K/2 decorrelated the "
    "same way (out of sample: with n observations per subject, decorrelating by the inverse of a covariance "
    "estimated from the same replicates inflates the NPDE variance by about K/(K - n - 1)); censored values by "
    "the 'cdf' method (Nguyen et al. 2012): pd drawn uniformly on [P(Y < lower end), P(Y < upper end)] of the "
    "predictive distribution and the value imputed as its quantile, simulated values beyond the LLOQ imputed "
    "the same way; pd and pde of 0 or 1 set to 1/(2K) or 1 - 1/(2K) (K of the replicates ranked against)")


# -- the fitted model as a simulation recipe ----------------------------------------------------
@dataclass(frozen=True)
class _SubjectDesign:
    id: str
    rows: slice                  # rows of fit.predictions
    solve_times: np.ndarray
    time_index: np.ndarray       # observation -> row of solve_times
    output_index: np.ndarray     # observation -> model output index
    doses: tuple
    t0: float
    typical: np.ndarray          # model parameter vector at eta = 0 (covariates and fixed values included)


@dataclass(frozen=True)
class SimulationSpec:
    """How to simulate new observations of a fitted population on the subjects' own designs.

    Row arrays (``ids``, ``times``, ``outputs``, ``dv``, ``cens``, ``limit``, ``lloq``, ``uloq``, ``pred``,
    ``lines``) are aligned with ``fit.predictions``. ``lloq`` is the limit below which a simulated value
    is censored (nan: none known for that row), ``uloq`` the upper limit (nan: none).
    """

    model: object
    subjects: tuple[_SubjectDesign, ...]
    eta_index: np.ndarray
    eta_names: tuple[str, ...]
    omega: np.ndarray
    error_models: Mapping[str, ErrorModel]
    sigmas: Mapping[str, np.ndarray]
    ids: np.ndarray
    times: np.ndarray
    outputs: np.ndarray
    dv: np.ndarray
    cens: np.ndarray
    limit: np.ndarray
    lloq: np.ndarray
    uloq: np.ndarray
    pred: np.ndarray
    lines: np.ndarray
    rtol: float = 1e-6
    atol: float = 1e-8

    @property
    def n_rows(self) -> int:
        return int(self.times.size)

    def transform(self, values: np.ndarray, rows: slice | np.ndarray = slice(None)) -> np.ndarray:
        """Values (last axis: the rows ``rows``) on the scale each output's residual error is Gaussian on
        (log for log_additive outputs)."""
        out = np.array(values, dtype=float, copy=True)
        outs = self.outputs[rows]
        for name, e in self.error_models.items():
            if e.is_log_scale:
                sel = outs == name
                out[..., sel] = e.transform(out[..., sel])
        return out

    def simulate_subject(self, k: int, n_sim: int, rng: np.random.Generator) -> tuple[np.ndarray, int]:
        """``(n_sim, n_obs)`` uncensored simulated observations of subject ``k`` (natural scale) and the
        number of replicates whose solve failed (their rows are nan). Draw order: etas, then residuals."""
        s = self.subjects[k]
        q = self.eta_index.size
        etas = rng.standard_normal((n_sim, q)) @ _sqrt_psd(self.omega).T if q else np.zeros((n_sim, 0))
        eps = rng.standard_normal((n_sim, s.time_index.size))
        params = np.tile(s.typical, (n_sim, 1))
        params[:, self.eta_index] *= np.exp(etas)
        batch = self.model.simulate_batch(s.solve_times, params=params, doses=list(s.doses), rtol=self.rtol,
                                          atol=self.atol, t0=s.t0)
        f = batch.outputs[:, s.time_index, s.output_index]
        ok = batch.status == 0
        f[~ok] = np.nan
        y = np.empty_like(f)
        outs = self.outputs[s.rows]
        for name, e in self.error_models.items():
            sel = outs == name
            if not sel.any():
                continue
            sd = self.sigmas[name]
            fs = f[:, sel]
            if e.is_log_scale:
                with np.errstate(invalid="ignore", divide="ignore"):
                    y[:, sel] = np.where(fs > 0, fs * np.exp(sd[0] * eps[:, sel]), np.nan)
            else:
                y[:, sel] = fs + np.sqrt(e.variance(fs.ravel(), sd)[0]).reshape(fs.shape) * eps[:, sel]
        return y, int(np.count_nonzero(~ok))

    def censor(self, values: np.ndarray, rows: slice | np.ndarray = slice(None)) -> tuple[np.ndarray, np.ndarray]:
        """Censor simulated values as the data are: below ``lloq`` -> the LLOQ with flag 1, above ``uloq``
        -> the limit with flag -1. Returns ``(values, cens)``."""
        lo, hi = self.lloq[rows], self.uloq[rows]
        with np.errstate(invalid="ignore"):
            below = np.isfinite(lo) & (values < lo)
            above = np.isfinite(hi) & (values > hi)
        out = np.where(below, lo, np.where(above, hi, values))
        return out, np.where(below, CENSORED_LEFT, np.where(above, CENSORED_RIGHT, 0)).astype(np.int8)


def build_simulation_spec(fit, model, data, *, error: Mapping[str, str] | None = None, rtol: float = 1e-6,
                          atol: float = 1e-8) -> SimulationSpec:
    """Rebuild a :class:`SimulationSpec` from a population fit, its model and the dataset it was fitted to.

    Parameters
    ----------
    fit
        A :class:`~kinetics.fit.PopulationFit` (from ``fit_population`` or ``evaluate_objective``).
    model
        The compiled model the fit used.
    data
        The dataset the fit used (a :class:`~kinetics.data.Dataset`, a path or a DataFrame).
    error
        Output -> error model kind, where the fit alone cannot tell (see :func:`infer_error_models`).

    Notes
    -----
    A subject's typical parameter vector is ``individual_params / exp(eta)`` on the parameters with a
    random effect and ``individual_params`` elsewhere: that is exactly the fit's typical value with
    the subject's covariate effects and the fixed values. LLOQ of a row: the LLOQ column where given;
    else the DV of a censored row; else the LLOQ of the same subject and output (the largest of its
    censored rows); else the smallest LLOQ of that output across the dataset; else none (never
    censored). The upper limit is found the same way from right-censored rows (smallest per subject,
    largest across the dataset).

    Raises
    ------
    FitSpecError
        If the data do not match the fit row for row, or the model lacks a parameter of the fit.
    """
    if not isinstance(data, Dataset):
        from kinetics.data import read_dataset
        data = read_dataset(data)
    kinds = infer_error_models(fit, error)
    bound = data.for_model(model)
    preds = fit.predictions
    _check_alignment(fit, model, bound)
    names = list(model.parameter_names)
    eta_names = tuple(c.removeprefix("eta_") for c in fit.etas.columns)
    eta_index = np.array([names.index(n) for n in eta_names], dtype=int)
    indiv = fit.individual_params
    subjects, pos = [], 0
    for s in bound.subjects:
        times, t_idx = np.unique(s.times, return_inverse=True)
        o_idx = np.array([model.output_names.index(o) for o in s.outputs], dtype=int)
        typical = indiv.loc[s.id, names].to_numpy(dtype=float).copy()
        if eta_index.size:
            typical[eta_index] /= np.exp(fit.etas.loc[s.id].to_numpy(dtype=float))
        t0 = min(float(times[0]) if times.size else 0.0, min((d.time for d in s.doses), default=0.0), 0.0)
        n = s.n_observations
        subjects.append(_SubjectDesign(id=s.id, rows=slice(pos, pos + n), solve_times=times,
                                       time_index=t_idx.astype(int), output_index=o_idx, doses=tuple(s.doses),
                                       t0=t0, typical=typical))
        pos += n
    cens = preds["CENS"].to_numpy(dtype=int)
    dv = preds["DV"].to_numpy(dtype=float)
    outputs = preds["OUTPUT"].astype(str).to_numpy()
    ids = preds["ID"].astype(str).to_numpy()
    lines = preds["LINE"].to_numpy()
    lloq_col = _lloq_column(bound, lines)
    sigmas = {o: np.array([fit.sigma[f"{o}.{p}"] for p in ERROR_MODELS[k.kind]]) for o, k in kinds.items()}
    return SimulationSpec(
        model=model, subjects=tuple(subjects), eta_index=eta_index, eta_names=eta_names,
        omega=fit.omega.to_numpy(dtype=float), error_models=kinds, sigmas=sigmas, ids=ids,
        times=preds["TIME"].to_numpy(dtype=float), outputs=outputs, dv=dv, cens=cens,
        limit=np.concatenate([s.limit for s in bound.subjects]) if bound.subjects else np.zeros(0),
        lloq=_row_limits(ids, outputs, dv, cens, CENSORED_LEFT, lloq_col),
        uloq=_row_limits(ids, outputs, dv, cens, CENSORED_RIGHT, np.full(dv.size, np.nan)),
        pred=preds["PRED"].to_numpy(dtype=float), lines=lines, rtol=rtol, atol=atol)


def infer_error_models(fit, error: Mapping[str, str] | None = None) -> dict[str, ErrorModel]:
    """The residual error model of each output of a fit.

    ``fit.error_models`` when the fit recorded them; otherwise ``<output>.add`` and ``<output>.prop`` in ``fit.sigma`` mean combined; ``.prop`` alone
    proportional. ``.add`` alone is additive or log_additive: the one whose standardised residual
    reproduces the fit's IWRES on the observed rows (to 1e-6). ``error`` (output -> kind) overrides.

    Raises
    ------
    FitSpecError
        For an unknown output or kind in ``error``, a kind that does not match the SDs in
        ``fit.sigma``, or an additive SD on an output without observed rows to tell which it is.
    """
    found: dict[str, list[str]] = {}
    for key in fit.sigma:
        out, _, par = key.rpartition(".")
        found.setdefault(out, []).append(par)
    error = dict(error or {})
    for out in error:
        if out not in found:
            raise FitSpecError(f"error: '{out}' is not an output of the fit (outputs: {', '.join(found)})"
                               f"{did_you_mean(out, found)}")
    kinds: dict[str, ErrorModel] = {}
    for out, pars in found.items():
        if out in error:
            e = ErrorModel(str(error[out]))
            if set(e.parameter_names) != set(pars):
                raise FitSpecError(f"error.{out}: a {e.kind} error model has SDs {e.parameter_names} but the fit "
                                   f"has {tuple(pars)}")
        elif getattr(fit, "error_models", None) and out in fit.error_models:
            e = ErrorModel(fit.error_models[out])   # recorded by the fit
        elif set(pars) == {"add", "prop"}:
            e = ErrorModel("combined")
        elif pars == ["prop"]:
            e = ErrorModel("proportional")
        else:
            e = ErrorModel(_additive_or_log(fit, out))
        kinds[out] = e
    return kinds


def _additive_or_log(fit, out: str) -> str:
    p = fit.predictions
    sel = (p["OUTPUT"].astype(str) == out) & (p["CENS"] == 0) & np.isfinite(p["IWRES"]) & (p["DV"] > 0) & (p["IPRED"] > 0)
    if not sel.any():
        raise FitSpecError(f"cannot tell from the fit whether the error of output '{out}' is additive or "
                           f"log_additive (no observed rows); pass error={{'{out}': 'additive'}} or 'log_additive'")
    dv, ipred, iwres = (p.loc[sel, c].to_numpy(dtype=float) for c in ("DV", "IPRED", "IWRES"))
    sd = fit.sigma[f"{out}.add"]
    miss_add = np.max(np.abs((dv - ipred) / sd - iwres) / (1 + np.abs(iwres)))
    miss_log = np.max(np.abs((np.log(dv) - np.log(ipred)) / sd - iwres) / (1 + np.abs(iwres)))
    if min(miss_add, miss_log) > 1e-6:
        raise FitSpecError(f"the IWRES of output '{out}' match neither an additive nor a log_additive error "
                           f"model; pass error={{'{out}': ...}}")
    return "additive" if miss_add <= miss_log else "log_additive"


def _check_alignment(fit, model, bound: Dataset) -> None:
    missing = [n for n in fit.individual_params.columns if n not in model.parameter_names]
    if missing or len(fit.individual_params.columns) != len(model.parameter_names):
        raise FitSpecError(f"the fit's parameters ({', '.join(map(str, fit.individual_params.columns))}) are not "
                           f"those of model '{model.name}': pass the model the fit used")
    p = fit.predictions
    ids = np.concatenate([[s.id] * s.n_observations for s in bound.subjects]) if bound.subjects else np.zeros(0)
    times = np.concatenate([s.times for s in bound.subjects]) if bound.subjects else np.zeros(0)
    outs = np.concatenate([list(s.outputs) for s in bound.subjects]) if bound.subjects else np.zeros(0)
    if ids.size != len(p):
        raise FitSpecError(f"the dataset has {ids.size} observations but the fit has {len(p)}: pass the dataset "
                           "the fit used")
    bad = np.flatnonzero((ids != p["ID"].astype(str).to_numpy()) | (times != p["TIME"].to_numpy(dtype=float))
                         | (outs != p["OUTPUT"].astype(str).to_numpy()))
    if bad.size:
        k = int(bad[0])
        raise FitSpecError(f"the dataset does not match the fit: observation {k + 1} is subject {ids[k]}, time "
                           f"{times[k]:g}, output {outs[k]} in the data but subject {p['ID'].iloc[k]}, time "
                           f"{p['TIME'].iloc[k]:g}, output {p['OUTPUT'].iloc[k]} in the fit")


def _lloq_column(data: Dataset, lines: np.ndarray) -> np.ndarray:
    t = data.table
    if "LLOQ" not in t.columns:
        return np.full(lines.size, np.nan)
    by_line = pd.Series(pd.to_numeric(t["LLOQ"], errors="coerce").to_numpy(dtype=float), index=t["LINE"].to_numpy())
    return by_line.reindex(lines).to_numpy(dtype=float)


def _row_limits(ids, outputs, dv, cens, side: int, given: np.ndarray) -> np.ndarray:
    """Per row: the given limit; else the DV of a row censored on ``side``; else the subject's limit for that
    output (the largest LLOQ, or smallest upper limit, among its censored rows); else the output's limit
    across the dataset (the smallest LLOQ, or largest upper limit); else nan (none)."""
    out = given.copy()
    flagged = cens == side
    out[flagged] = dv[flagged]
    frame = pd.DataFrame({"ID": ids, "OUTPUT": outputs, "L": out})
    left = side == CENSORED_LEFT
    per_subject = frame.groupby(["ID", "OUTPUT"])["L"].transform("max" if left else "min").to_numpy(dtype=float)
    per_output = frame.groupby("OUTPUT")["L"].transform("min" if left else "max").to_numpy(dtype=float)
    res = np.where(np.isfinite(out), out, per_subject)
    return np.where(np.isfinite(res), res, per_output)


def _sqrt_psd(a: np.ndarray) -> np.ndarray:
    """A matrix ``L`` with ``L L' = a`` (Cholesky; eigen-decomposition for a semi-definite ``a``)."""
    try:
        return np.linalg.cholesky(a)
    except np.linalg.LinAlgError:
        w, v = np.linalg.eigh(a)
        return v * np.sqrt(np.clip(w, 0.0, None))


def _rng(seed: int | np.random.Generator) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


# -- NPDE ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class NPDETests:
    """Tests of NPDE against N(0, 1) (Brendel et al. 2006; the npde package's parametric tests):
    Student t-test of mean 0, Fisher test of variance 1 (``(n - 1) s^2 ~ chi2(n - 1)``), Shapiro-Wilk
    normality (D'Agostino-Pearson above 5000 values), and a global p-value: 3 x the smallest, capped at 1."""

    n: int
    mean: float
    variance: float
    skewness: float
    kurtosis: float   # excess kurtosis
    p_mean: float
    p_variance: float
    p_normality: float
    normality_test: str
    p_global: float

    def summary(self) -> str:
        return (f"NPDE (n = {self.n}): mean {self.mean:.3f} (t-test p = {self.p_mean:.3g}), variance "
                f"{self.variance:.3f} (Fisher test p = {self.p_variance:.3g}), skewness {self.skewness:.3f}, "
                f"excess kurtosis {self.kurtosis:.3f}, {self.normality_test} p = {self.p_normality:.3g}; "
                f"global p = {self.p_global:.3g} (Bonferroni)")


def npde_tests(values: Sequence[float] | np.ndarray) -> NPDETests:
    """Test NPDE values (nan left out) against N(0, 1); see :class:`NPDETests`.

    Raises
    ------
    ValueError
        With fewer than 3 finite values.
    """
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    n = x.size
    if n < 3:
        raise ValueError(f"npde_tests needs at least 3 finite values, got {n}")
    var = float(np.var(x, ddof=1))
    p_mean = float(stats.ttest_1samp(x, 0.0).pvalue)
    cdf = stats.chi2.cdf((n - 1) * var, n - 1)
    p_var = float(min(1.0, 2 * min(cdf, 1 - cdf)))
    if n <= 5000:
        name, p_norm = "Shapiro-Wilk", float(stats.shapiro(x).pvalue)
    else:   # scipy's Shapiro-Wilk p-value is not accurate above 5000 values
        name, p_norm = "D'Agostino-Pearson", float(stats.normaltest(x).pvalue)
    return NPDETests(n=n, mean=float(x.mean()), variance=var, skewness=float(stats.skew(x)),
                     kurtosis=float(stats.kurtosis(x)), p_mean=p_mean, p_variance=p_var, p_normality=p_norm,
                     normality_test=name, p_global=float(min(1.0, 3 * min(p_mean, p_var, p_norm))))


@dataclass(frozen=True)
class NPDEResult:
    """NPDE of a fit. ``table`` is aligned with ``fit.predictions``: ``ID, TIME, OUTPUT, DV, CENS, LINE,
    PRED, EPRED`` (mean of the simulated values), ``PD`` (prediction discrepancy), ``NPD``
    (``Phi^-1(PD)``, not decorrelated), ``NPDE`` and ``DV_IMPUTED`` (the DV, or for a censored row its
    imputed value)."""

    table: pd.DataFrame
    n_sim: int
    seed: int | None
    method: str
    n_failed: int     # simulated replicates whose solve failed (left out)
    notes: tuple[str, ...] = ()

    def tests(self, output: str | None = None) -> NPDETests:
        """:func:`npde_tests` on all NPDE, or on one output's."""
        t = self.table if output is None else self.table[self.table["OUTPUT"] == output]
        if output is not None and not len(t):
            outs = list(dict.fromkeys(self.table["OUTPUT"]))
            raise ValueError(f"output '{output}' is not in the NPDE table (outputs: {', '.join(outs)})"
                             f"{did_you_mean(output, outs)}")
        return npde_tests(t["NPDE"].to_numpy())

    def summary(self) -> str:
        lines = [f"NPDE from {self.n_sim} simulations (seed {self.seed}); {self.n_failed} failed replicates left out",
                 self.tests().summary()]
        return "\n".join(lines + list(self.notes))


def npde(fit, model, data, *, n_sim: int = 1000, seed: int | np.random.Generator = 0,
         error: Mapping[str, str] | None = None, rtol: float = 1e-6, atol: float = 1e-8) -> NPDEResult:
    """Normalised prediction distribution errors of a population fit.

    Parameters
    ----------
    fit, model, data
        The fit, the compiled model and the dataset it was fitted to (see :func:`build_simulation_spec`).
    n_sim
        Simulated replicates per subject (K; Comets et al. 2008 recommend 1000 or more); half estimate
        the moments used to decorrelate, so K/2 must exceed the largest number of observations of a
        subject (well above it: the decorrelation is as good as the covariance estimate).
    seed
        Seed or ``numpy.random.Generator``; the same seed gives the same result.
    error
        Error model kinds, where the fit alone cannot tell.

    Returns
    -------
    NPDEResult
        Under a correct model NPDE are independent N(0, 1); ``result.tests()`` tests it.

    Notes
    -----
    For subject i with observations ``y_i`` and K simulated vectors ``y_ik``: ``pd_ij = (1/K) sum_k
    1(y_ikj < y_ij)``; the simulated vectors give the mean ``E_i`` and covariance ``V_i = L L'``;
    decorrelated ``y*_i = L^-1 (y_i - E_i)`` and likewise every ``y*_ik``; ``pde_ij = (1/K) sum_k
    1(y*_ikj < y*_ij)`` and ``npde_ij = Phi^-1(pde_ij)``. Here ``E_i`` and ``V_i`` come from the first
    K/2 replicates and the ranks from the other K/2 (Comets et al. use all K for both; for a subject
    with n observations the inverse of a covariance estimated from K replicates is biased up by
    about K/(K - n - 1) (the mean of an inverse Wishart matrix), which inflates the NPDE variance by
    as much: x1.4 for 88 observations and K = 300). The method is stated in ``result.method``.
    """
    if not (isinstance(n_sim, (int, np.integer)) and n_sim >= 20):
        raise FitSpecError(f"n_sim must be an integer >= 20, got {n_sim!r}")
    spec = build_simulation_spec(fit, model, data, error=error, rtol=rtol, atol=atol)
    rng = _rng(seed)
    n = spec.n_rows
    cols = {k: np.full(n, np.nan) for k in ("EPRED", "PD", "NPDE", "DV_IMPUTED")}
    n_failed, notes = 0, []
    for k, s in enumerate(spec.subjects):
        if s.time_index.size == 0:
            continue
        y, failed = spec.simulate_subject(k, n_sim, rng)
        n_failed += failed
        y = y[np.all(np.isfinite(y), axis=1)]
        if y.shape[0] < 20:
            notes.append(f"subject {s.id}: only {y.shape[0]} of {n_sim} replicates solved; no NPDE")
            continue
        res = _subject_npde(spec, s.rows, y, rng)
        fallback = res.pop("fallback")
        for key, v in res.items():
            cols[key][s.rows] = v
        if fallback:
            notes.append(f"subject {s.id}: simulated covariance not positive definite ({s.time_index.size} "
                         f"observations, {y.shape[0] // 2} replicates for the moments); decorrelated by its symmetric "
                         "pseudo-inverse square root: increase n_sim")
    p = fit.predictions
    table = pd.DataFrame({"ID": p["ID"].to_numpy(), "TIME": p["TIME"].to_numpy(), "OUTPUT": p["OUTPUT"].to_numpy(),
                          "DV": p["DV"].to_numpy(), "CENS": p["CENS"].to_numpy(), "LINE": p["LINE"].to_numpy(),
                          "PRED": p["PRED"].to_numpy(), "EPRED": cols["EPRED"], "PD": cols["PD"],
                          "NPD": special.ndtri(cols["PD"]), "NPDE": cols["NPDE"], "DV_IMPUTED": cols["DV_IMPUTED"]})
    return NPDEResult(table=table, n_sim=int(n_sim), seed=seed if isinstance(seed, (int, np.integer)) else None,
                      method=NPDE_METHOD.format(k=n_sim), n_failed=n_failed, notes=tuple(notes))


def _subject_npde(spec: SimulationSpec, rows: slice, y: np.ndarray, rng: np.random.Generator) -> dict:
    """NPDE of one subject from its simulated replicates ``y`` (K, n_obs), natural scale."""
    k_sim = y.shape[0]
    dv, cens, limit = spec.dv[rows], spec.cens[rows], spec.limit[rows]
    lloq, uloq = spec.lloq[rows], spec.uloq[rows]
    z = spec.transform(y, rows)
    z_sorted = np.sort(z, axis=0)
    lo = np.where(cens == CENSORED_LEFT, limit, np.where(cens == CENSORED_RIGHT, dv, np.nan))
    hi = np.where(cens == CENSORED_LEFT, dv, np.where(cens == CENSORED_RIGHT, limit, np.nan))
    with np.errstate(invalid="ignore"):
        pd_obs = np.mean(y < dv, axis=0)
        p_lo, p_hi = np.mean(y < lo, axis=0), np.where(np.isposinf(hi), 1.0, np.mean(y < hi, axis=0))
    censored = cens != 0
    pd_obs = np.where(censored, p_lo + (p_hi - p_lo) * rng.uniform(size=dv.size), pd_obs)
    z_obs = spec.transform(dv, rows)
    z_obs = np.where(censored, _quantile(z_sorted, pd_obs), z_obs)
    # simulated values beyond the LLOQ / ULOQ are imputed like the observed ones (Nguyen et al. 2012)
    zc = z.copy()
    with np.errstate(invalid="ignore"):
        below = np.isfinite(lloq) & (y < lloq)
        above = np.isfinite(uloq) & (y > uloq)
    if below.any() or above.any():
        p_loq = np.mean(below, axis=0)
        p_uloq = np.mean(y <= np.where(np.isfinite(uloq), uloq, np.inf), axis=0)
        u = rng.uniform(size=z.shape)
        imp_lo = _quantile_matrix(z_sorted, u * p_loq)
        imp_hi = _quantile_matrix(z_sorted, p_uloq + u * (1 - p_uloq))
        zc = np.where(below, imp_lo, np.where(above, imp_hi, zc))
    # moments from one half, ranks among the other: observation and reference replicates are then
    # exchangeable under the model whatever the noise in the estimated covariance
    half = k_sim // 2
    moments, reference = zc[:half], zc[half:]
    mean = moments.mean(axis=0)
    cov = np.cov(moments, rowvar=False).reshape(dv.size, dv.size)
    fallback = False
    try:
        chol = np.linalg.cholesky(cov)
        dec_ref = np.linalg.solve(chol, (reference - mean).T).T
        dec_obs = np.linalg.solve(chol, z_obs - mean)
    except np.linalg.LinAlgError:
        w, v = np.linalg.eigh(cov)
        inv_sqrt = (v / np.sqrt(np.clip(w, w.max() * 1e-12, None))) @ v.T
        dec_ref, dec_obs, fallback = (reference - mean) @ inv_sqrt, inv_sqrt @ (z_obs - mean), True
    pde = np.mean(dec_ref < dec_obs, axis=0)
    k_ref = reference.shape[0]
    imputed = np.where(censored, _untransform(spec, rows, z_obs), dv)
    return {"EPRED": y.mean(axis=0), "PD": np.clip(pd_obs, 0.5 / k_sim, 1 - 0.5 / k_sim),
            "NPDE": special.ndtri(np.clip(pde, 0.5 / k_ref, 1 - 0.5 / k_ref)), "DV_IMPUTED": imputed,
            "fallback": fallback}


def _untransform(spec: SimulationSpec, rows: slice, z: np.ndarray) -> np.ndarray:
    outs = spec.outputs[rows]
    log = np.array([spec.error_models[o].is_log_scale for o in outs], dtype=bool)
    return np.where(log, np.exp(z), z)


def _quantile(z_sorted: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Per column j, the empirical quantile p_j of sorted samples (linear interpolation)."""
    k = z_sorted.shape[0]
    pos = np.clip(np.nan_to_num(p, nan=0.5), 0.0, 1.0) * (k - 1)
    i0 = np.floor(pos).astype(int)
    i1 = np.minimum(i0 + 1, k - 1)
    cols = np.arange(z_sorted.shape[1])
    w = pos - i0
    return z_sorted[i0, cols] * (1 - w) + z_sorted[i1, cols] * w


def _quantile_matrix(z_sorted: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Quantiles ``p`` (m, n) of each column of sorted samples (K, n)."""
    k = z_sorted.shape[0]
    pos = np.clip(p, 0.0, 1.0) * (k - 1)
    i0 = np.floor(pos).astype(int)
    i1 = np.minimum(i0 + 1, k - 1)
    cols = np.broadcast_to(np.arange(z_sorted.shape[1]), p.shape)
    w = pos - i0
    return z_sorted[i0, cols] * (1 - w) + z_sorted[i1, cols] * w
