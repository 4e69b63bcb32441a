"""Global sensitivity: Sobol' first-order and total indices (Saltelli sampling, bootstrap confidence
intervals) and Morris screening, of a model outcome or of any vectorised function.

Sampling and estimation are SALib's (Herman & Usher 2017, doi:10.21105/joss.00097): the Saltelli
design on a scrambled Sobol' sequence (``SALib.sample.sobol``), the Saltelli et al. 2010 estimator of
S1 and the Jansen 1999 estimator of ST (``SALib.analyze.sobol``), Morris trajectories and mu*, sigma
(``SALib.sample.morris``, ``SALib.analyze.morris``). SALib samples the unit hypercube; each input is
mapped to its distribution here by the inverse CDF, so uniform, log-uniform and log-normal inputs
(the last from a fitted omega) share one design. Model runs go through
:func:`~kinetics.analysis.evaluate_outcome` (the batch solver where the outcome allows), in chunks.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from scipy.special import ndtri   # standard normal quantile (scipy.stats is slow to import)

from kinetics.analysis._local import DOSE_PREFIX, _bounds_items, _check_target, _param_index, omega_sds
from kinetics.analysis._outcomes import (
    _resolve_outcome,
    dose_total,
    evaluate_outcome,
    outcome_name,
    scaled_doses,
)
from kinetics.errors import SolverInputError
from kinetics.solve import CompiledModel, Dose

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = ["DISTRIBUTION_KINDS", "MorrisResult", "ParameterDistribution", "SobolResult", "morris_screening",
           "parameter_distributions", "sobol_indices"]

#: Input distributions: "uniform" (a = low, b = high), "log-uniform" (a = low > 0, b = high) and
#: "log-normal" (a = median, b = SD of the log, i.e. omega as an SD).
DISTRIBUTION_KINDS = ("uniform", "log-uniform", "log-normal")

# Model runs above this many show a progress bar when progress=None.
_PROGRESS_FROM = 20_000


@dataclass(frozen=True)
class ParameterDistribution:
    """The distribution of one input of a global sensitivity analysis.

    Attributes
    ----------
    kind
        One of :data:`DISTRIBUTION_KINDS`.
    a, b
        ``uniform``/``log-uniform``: low and high bounds; ``log-normal``: median and SD of the log
        (the value is ``a * exp(b * Z)``, Z standard normal; b = omega as an SD).
    """

    kind: str
    a: float
    b: float

    def __post_init__(self) -> None:
        if self.kind not in DISTRIBUTION_KINDS:
            raise SolverInputError(f"distribution kind must be one of {', '.join(DISTRIBUTION_KINDS)}, "
                                   f"got {self.kind!r}")
        for n in ("a", "b"):
            v = getattr(self, n)
            if isinstance(v, bool) or not isinstance(v, (int, float, np.floating, np.integer)) or not math.isfinite(v):
                raise SolverInputError(f"{self.kind} distribution: {n} must be a finite number, got {v!r}")
            object.__setattr__(self, n, float(v))
        if self.kind == "uniform" and not self.a < self.b:
            raise SolverInputError(f"uniform distribution needs low < high, got ({self.a:g}, {self.b:g})")
        if self.kind == "log-uniform" and not 0 < self.a < self.b:
            raise SolverInputError(f"log-uniform distribution needs 0 < low < high, got ({self.a:g}, {self.b:g})")
        if self.kind == "log-normal" and not (self.a > 0 and self.b > 0):
            raise SolverInputError(f"log-normal distribution needs median > 0 and omega > 0, "
                                   f"got ({self.a:g}, {self.b:g})")

    def ppf(self, u: np.ndarray) -> np.ndarray:
        """Inverse CDF: values at probabilities ``u`` in (0, 1)."""
        u = np.asarray(u, dtype=float)
        if self.kind == "uniform":
            return self.a + (self.b - self.a) * u
        if self.kind == "log-uniform":
            return np.exp(math.log(self.a) + (math.log(self.b) - math.log(self.a)) * u)
        return self.a * np.exp(self.b * ndtri(np.clip(u, 1e-12, 1 - 1e-12)))

    def contains(self, x: float) -> bool:
        """Whether ``x`` is in the support."""
        return self.a <= x <= self.b if self.kind != "log-normal" else x > 0

    def describe(self) -> str:
        """The distribution in words."""
        if self.kind == "log-normal":
            return f"log-normal, median {self.a:.6g}, omega (SD of log) {self.b:.4g}"
        return f"{self.kind} on [{self.a:.6g}, {self.b:.6g}]"


@dataclass(frozen=True)
class SobolResult:
    """Sobol' indices with bootstrap confidence intervals.

    Attributes
    ----------
    names
        Inputs, in the order of the arrays.
    S1, S1_conf, ST, ST_conf
        First-order and total indices and the half-widths of their ``conf_level`` intervals
        (normal approximation with the bootstrap SD, as SALib reports them).
    S2, S2_conf
        Second-order indices (upper triangle, nan elsewhere) when asked for, else None.
    n_base, n_evaluations
        Base samples N and function evaluations N (d + 2), or N (2d + 2) with S2.
    conf_level, num_resamples
        Interval level and bootstrap resamples.
    distributions
        Each input's distribution in words.
    outcome
        What was analysed.
    method
        Design and estimators in words.
    notes
        Anything a reader should know (e.g. a constant output).
    """

    names: tuple[str, ...]
    S1: np.ndarray
    S1_conf: np.ndarray
    ST: np.ndarray
    ST_conf: np.ndarray
    S2: np.ndarray | None
    S2_conf: np.ndarray | None
    n_base: int
    n_evaluations: int
    conf_level: float
    num_resamples: int
    distributions: tuple[str, ...]
    outcome: str
    method: str
    notes: tuple[str, ...] = ()

    def to_frame(self) -> pd.DataFrame:
        """One row per input, largest ST first: ``parameter``, ``S1``, ``S1_low``, ``S1_high``, ``ST``,
        ``ST_low``, ``ST_high``, ``distribution``."""
        import pandas as pd

        df = pd.DataFrame({"parameter": list(self.names), "S1": self.S1, "S1_low": self.S1 - self.S1_conf,
                           "S1_high": self.S1 + self.S1_conf, "ST": self.ST, "ST_low": self.ST - self.ST_conf,
                           "ST_high": self.ST + self.ST_conf, "distribution": list(self.distributions)})
        df = df.sort_values("ST", ascending=False, kind="stable").reset_index(drop=True)
        df.attrs["outcome"] = self.outcome
        return df

    def ranking(self) -> list[str]:
        """Inputs ordered by total index, most influential first."""
        return [self.names[i] for i in np.argsort(-self.ST, kind="stable")]

    def summary(self) -> str:
        """A table for people."""
        lines = [f"Sobol' indices of {self.outcome}: N = {self.n_base} base samples, {self.n_evaluations} evaluations,"
                 f" {100 * self.conf_level:g} % bootstrap intervals ({self.num_resamples} resamples)",
                 f"  {self.method}", f"  {'input':<18}{'S1':>9}{'+-':>8}{'ST':>9}{'+-':>8}  distribution"]
        for i in np.argsort(-self.ST, kind="stable"):
            lines.append(f"  {self.names[i]:<18}{self.S1[i]:>9.4f}{self.S1_conf[i]:>8.4f}{self.ST[i]:>9.4f}"
                         f"{self.ST_conf[i]:>8.4f}  {self.distributions[i]}")
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)

    def __repr__(self) -> str:
        top = ", ".join(f"{n} {st:.3f}" for n, st in zip(self.ranking()[:3], np.sort(self.ST)[::-1][:3]))
        return f"<SobolResult {self.outcome}: N={self.n_base}, top ST: {top}>"


@dataclass(frozen=True)
class MorrisResult:
    """Morris elementary-effect screening.

    Attributes
    ----------
    names
        Inputs.
    mu, mu_star, sigma
        Mean, mean absolute value and SD of each input's elementary effects, per unit of the
        input's scaled range (the [0, 1] grid the trajectories move on; see ``method``).
    mu_star_conf
        Half-width of the bootstrap ``conf_level`` interval of mu*.
    n_trajectories, num_levels, n_evaluations
        Design size.
    distributions, outcome, method, notes
        As in :class:`SobolResult`.
    """

    names: tuple[str, ...]
    mu: np.ndarray
    mu_star: np.ndarray
    sigma: np.ndarray
    mu_star_conf: np.ndarray
    n_trajectories: int
    num_levels: int
    n_evaluations: int
    conf_level: float
    distributions: tuple[str, ...]
    outcome: str
    method: str
    notes: tuple[str, ...] = ()

    def to_frame(self) -> pd.DataFrame:
        """One row per input, largest mu* first."""
        import pandas as pd

        df = pd.DataFrame({"parameter": list(self.names), "mu": self.mu, "mu_star": self.mu_star,
                           "mu_star_conf": self.mu_star_conf, "sigma": self.sigma,
                           "distribution": list(self.distributions)})
        df = df.sort_values("mu_star", ascending=False, kind="stable").reset_index(drop=True)
        df.attrs["outcome"] = self.outcome
        return df

    def ranking(self) -> list[str]:
        """Inputs ordered by mu*, most influential first."""
        return [self.names[i] for i in np.argsort(-self.mu_star, kind="stable")]

    def summary(self) -> str:
        """A table for people."""
        lines = [f"Morris screening of {self.outcome}: {self.n_trajectories} trajectories, {self.num_levels} levels, "
                 f"{self.n_evaluations} evaluations", f"  {self.method}",
                 f"  {'input':<18}{'mu*':>11}{'+-':>10}{'mu':>11}{'sigma':>11}  distribution"]
        for i in np.argsort(-self.mu_star, kind="stable"):
            lines.append(f"  {self.names[i]:<18}{self.mu_star[i]:>11.4g}{self.mu_star_conf[i]:>10.3g}"
                         f"{self.mu[i]:>11.4g}{self.sigma[i]:>11.4g}  {self.distributions[i]}")
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"<MorrisResult {self.outcome}: {self.n_trajectories} trajectories, top mu*: {self.ranking()[:3]}>"


# -- distributions --------------------------------------------------------------------------------------
def parameter_distributions(model: CompiledModel | None = None, *, params: Mapping[str, float] | None = None,
                            bounds: Mapping[str, tuple[float, float]] | None = None,
                            log_bounds: Mapping[str, tuple[float, float]] | None = None, omega=None,
                            doses: Sequence[Dose] | None = None) -> dict[str, ParameterDistribution]:
    """Input distributions from bounds (uniform), log bounds (log-uniform) or omega (log-normal).

    Parameters
    ----------
    model
        The model whose parameters are named (None for a plain function: then no name checks and
        ``omega`` needs ``params`` for the medians).
    params
        Values the inputs are held at otherwise, and the medians of the log-normal inputs.
    bounds, log_bounds
        Mapping name -> (low, high): uniform, or uniform in the log (log-uniform). For a model a range
        must contain the parameter's value (``params`` or the model file's): a range that excludes it
        is almost always a unit or typing slip. ``"dose:<target>"`` names a total dose amount.
    omega
        A :class:`~kinetics.fit.PopulationFit` or a mapping name -> variance of the log-normal eta
        (omega, as ``fit_population``'s ``random_effects``; the model files' ``iiv`` are SDs: square
        them): log-normal around the typical value (the fit's ``theta``, then ``params``, then
        the model's value). Correlations in a full omega are ignored (the indices assume independent
        inputs).
    doses
        The schedule whose totals ``"dose:<target>"`` ranges refer to.

    Returns
    -------
    dict
        Name -> :class:`ParameterDistribution`, in the order given (omega, bounds, log_bounds).

    Raises
    ------
    SolverInputError
        Unknown names, a name given twice, bad or empty ranges, a range excluding the value.
    """
    dists: dict[str, ParameterDistribution] = {}
    base = dict(params or {})
    if omega is not None:
        sds, typical = omega_sds(omega)
        base = {**typical, **base}
        for k, s in sds.items():
            if s <= 0:
                raise SolverInputError(f"omega['{k}'] is {s * s:g}: a log-normal input needs omega > 0 (leave it out to "
                                       "hold it fixed)")
            if model is not None:
                v = model.parameter_vector(base)[_param_index(model, k, "omega")]
            elif k in base:
                v = float(base[k])
            else:
                raise SolverInputError(f"omega['{k}'] needs a median: pass params={{'{k}': value}}")
            if not v > 0:
                raise SolverInputError(f"omega['{k}']: a log-normal input needs a positive value, got {v:g}")
            dists[k] = ParameterDistribution("log-normal", v, s)
    for kind, rng in (("uniform", bounds), ("log-uniform", log_bounds)):
        where = "bounds" if kind == "uniform" else "log_bounds"
        for k, (lo, hi) in _bounds_items(rng or {}, where):
            if k in dists:
                raise SolverInputError(f"'{k}' is given twice (omega, bounds, log_bounds); give it once")
            d = ParameterDistribution(kind, lo, hi)
            if model is not None:
                if k.startswith(DOSE_PREFIX):
                    _check_target(model, doses, k[len(DOSE_PREFIX):], where)
                    v = dose_total(doses, k[len(DOSE_PREFIX):])
                else:
                    v = model.parameter_vector(base)[_param_index(model, k, where)]
                if not d.contains(v):
                    raise SolverInputError(f"{where}['{k}'] = ({lo:g}, {hi:g}) excludes its value {v:g}; widen the "
                                           f"range, or set params={{'{k}': ...}} if the value is what is wrong")
            dists[k] = d
    if not dists:
        raise SolverInputError("no inputs: give bounds=, log_bounds=, omega= or distributions=")
    return dists


# -- Sobol ---------------------------------------------------------------------------------------------
def sobol_indices(target: CompiledModel | Callable[[np.ndarray], np.ndarray], *,
                  outcome: str | Callable[..., float] | None = None, doses: Sequence[Dose] | None = None,
                  params: Mapping[str, float] | None = None, bounds: Mapping[str, tuple[float, float]] | None = None,
                  log_bounds: Mapping[str, tuple[float, float]] | None = None, omega=None,
                  distributions: Mapping[str, ParameterDistribution] | None = None, n_base: int = 1024,
                  second_order: bool = False, num_resamples: int = 200, conf_level: float = 0.95,
                  rng: int | np.random.Generator | None = None, chunk_size: int | None = None,
                  progress: bool | None = None) -> SobolResult:
    """Sobol' first-order and total indices of a model outcome or of a vectorised function.

    Parameters
    ----------
    target
        A compiled model (with ``outcome``), or a function ``f(X) -> y`` of an ``(n, d)`` array whose
        columns are the inputs in the order of the distributions, returning ``(n,)`` values.
    outcome
        For a model: a name in :data:`~kinetics.analysis.OUTCOMES`, one of those functions (or a
        ``functools.partial`` with options), or any ``f(model, params, doses) -> float``.
    doses
        The dose schedule of every model run (``"dose:<target>"`` inputs scale it).
    params
        Values of the parameters that do not vary (and medians of omega inputs).
    bounds, log_bounds, omega, distributions
        The inputs: uniform, log-uniform, log-normal from a fit or SDs (see
        :func:`parameter_distributions`), or a ready mapping name -> :class:`ParameterDistribution`.
    n_base
        Base sample size N, a power of 2 (the Sobol' sequence's balance); N (d + 2) evaluations, or
        N (2d + 2) with ``second_order``.
    second_order
        Also estimate S2 (Saltelli 2002).
    num_resamples, conf_level
        Bootstrap resamples and level of the confidence intervals.
    rng
        Seed or ``numpy.random.Generator``: scrambling of the sequence and bootstrap.
    chunk_size
        Evaluations per call of the function / batch solve (default: all for a function; for a model
        sized by :func:`~kinetics.analysis.evaluate_outcome`).
    progress
        Progress bar; None shows one for model runs of more than 20,000 evaluations (for a function
        only when True).

    Returns
    -------
    SobolResult

    Raises
    ------
    SolverInputError
        Bad inputs (see :func:`parameter_distributions`), ``n_base`` not a power of 2, a function that
        returns the wrong shape or non-finite values, model runs that fail.

    Notes
    -----
    With A, B the two base matrices and A_B^i = A with column i from B (Saltelli et al. 2010, Table 2):
    V_i = mean(f(B) (f(A_B^i) - f(A))) (their estimator b) and V_Ti = mean((f(A) - f(A_B^i))^2) / 2
    (Jansen 1999, their f); S1 = V_i / V, ST = V_Ti / V with V the variance of f(A), f(B). These are
    SALib's estimators; the output is standardised first, which leaves the indices unchanged.

    References
    ----------
    Saltelli A et al. Comput Phys Commun 2010;181:259-270, doi:10.1016/j.cpc.2009.09.018.
    Jansen MJW. Comput Phys Commun 1999;117:35-43, doi:10.1016/S0010-4655(98)00154-4.
    Herman J, Usher W. J Open Source Softw 2017;2:97, doi:10.21105/joss.00097 (SALib).

    Examples
    --------
    >>> import numpy as np
    >>> from kinetics.analysis import sobol_indices
    >>> r = sobol_indices(lambda X: X[:, 0] + 2 * X[:, 1], bounds={"x1": (0, 1), "x2": (0, 1)},
    ...                   n_base=1024, rng=1)
    >>> [round(float(s), 1) for s in r.S1]   # exact: 1/5 and 4/5 of the variance
    [0.2, 0.8]
    """
    from SALib.analyze import sobol as sobol_analyze
    from SALib.sample import sobol as sobol_sample

    n_base = _check_int(n_base, "n_base", 2)
    if n_base & (n_base - 1):
        raise SolverInputError(f"n_base must be a power of 2 (the Sobol' sequence is balanced only then), got "
                               f"{n_base}; e.g. {1 << (n_base.bit_length() - 1)} or {1 << n_base.bit_length()}")
    num_resamples = _check_int(num_resamples, "num_resamples", 2)
    _check_conf(conf_level)
    dists, func, what = _setup(target, outcome, doses, params, bounds, log_bounds, omega, distributions, chunk_size,
                               progress)
    names = list(dists)
    gen = _generator(rng)
    problem = {"num_vars": len(names), "names": names, "bounds": [[0.0, 1.0]] * len(names)}
    U = sobol_sample.sample(problem, n_base, calc_second_order=second_order, scramble=True,
                            seed=int(gen.integers(1, 2**31 - 1)))
    X = _transform(U, dists)
    y = func(X)
    notes: list[str] = []
    d = len(names)
    if np.ptp(y) == 0:
        notes.append(f"the output is constant ({y[0]:.6g}) over the sample: every index is 0")
        z = np.zeros(d)
        s2 = np.full((d, d), np.nan) if second_order else None
        return SobolResult(tuple(names), _ro(z), _ro(z.copy()), _ro(z.copy()), _ro(z.copy()), s2, s2, n_base, y.size,
                           conf_level, num_resamples, tuple(v.describe() for v in dists.values()), what, _METHOD,
                           tuple(notes))
    S = sobol_analyze.analyze(problem, y, calc_second_order=second_order, num_resamples=num_resamples,
                              conf_level=conf_level, seed=int(gen.integers(1, 2**31 - 1)))
    S2 = S2c = None
    if second_order:
        S2, S2c = _ro(np.array(S["S2"], dtype=float)), _ro(np.array(S["S2_conf"], dtype=float))
    return SobolResult(tuple(names), _ro(np.array(S["S1"], dtype=float)), _ro(np.array(S["S1_conf"], dtype=float)),
                       _ro(np.array(S["ST"], dtype=float)), _ro(np.array(S["ST_conf"], dtype=float)), S2, S2c, n_base,
                       int(y.size), float(conf_level), num_resamples, tuple(v.describe() for v in dists.values()), what,
                       _METHOD + (" ; S2 by Saltelli 2002" if second_order else ""), tuple(notes))


_METHOD = ("Saltelli design on a scrambled Sobol' sequence; S1 by Saltelli et al. 2010, ST by Jansen 1999; "
           "bootstrap intervals (normal approximation) [SALib]")


# -- Morris ------------------------------------------------------------------------------------------------
def morris_screening(target: CompiledModel | Callable[[np.ndarray], np.ndarray], *,
                     outcome: str | Callable[..., float] | None = None, doses: Sequence[Dose] | None = None,
                     params: Mapping[str, float] | None = None, bounds: Mapping[str, tuple[float, float]] | None = None,
                     log_bounds: Mapping[str, tuple[float, float]] | None = None, omega=None,
                     distributions: Mapping[str, ParameterDistribution] | None = None, n_trajectories: int = 20,
                     num_levels: int = 4, optimal_trajectories: int | None = None,
                     quantiles: tuple[float, float] = (0.05, 0.95), num_resamples: int = 200,
                     conf_level: float = 0.95, rng: int | np.random.Generator | None = None,
                     chunk_size: int | None = None, progress: bool | None = None) -> MorrisResult:
    """Morris screening: mean absolute elementary effect mu* and its spread sigma per input.

    Parameters
    ----------
    target, outcome, doses, params, bounds, log_bounds, omega, distributions
        As for :func:`sobol_indices`.
    n_trajectories
        Trajectories r; r (d + 1) evaluations.
    num_levels
        Levels p of the grid (even; the step is p / (2 (p - 1)) of the range).
    optimal_trajectories
        Pick this many of ``n_trajectories`` for spread (Campolongo et al. 2007), or None.
    quantiles
        For log-normal inputs (unbounded), the grid spans these quantiles (default 5th-95th
        percentile, the omega ranges of :func:`~kinetics.analysis.tornado`); bounded inputs span their
        bounds.
    num_resamples, conf_level, rng, chunk_size, progress
        As for :func:`sobol_indices`.

    Returns
    -------
    MorrisResult

    Notes
    -----
    The trajectories move on the grid {0, 1/(p-1), ..., 1} of each input's scaled range (mapped to
    values by the inverse CDF: linear for uniform, in the log for log-uniform, quantiles for
    log-normal), so an elementary effect is (f(x + Delta e_i) - f(x)) / Delta with Delta in that
    scale and mu*, sigma compare inputs of different units. For a linear function of a uniform input,
    f = b x on [lo, hi], every effect is b (hi - lo): mu* = |b| (hi - lo), sigma = 0.

    References
    ----------
    Morris MD. Technometrics 1991;33:161-174, doi:10.1080/00401706.1991.10484804.
    Campolongo F, Cariboni J, Saltelli A. Environ Model Softw 2007;22:1509-1518,
    doi:10.1016/j.envsoft.2006.10.004.
    """
    from SALib.analyze import morris as morris_analyze
    from SALib.sample import morris as morris_sample

    n_trajectories = _check_int(n_trajectories, "n_trajectories", 2)
    num_levels = _check_int(num_levels, "num_levels", 2)
    if num_levels % 2:
        raise SolverInputError(f"num_levels must be even (Morris's balanced design), got {num_levels}")
    if optimal_trajectories is not None:
        optimal_trajectories = _check_int(optimal_trajectories, "optimal_trajectories", 2)
        if optimal_trajectories >= n_trajectories:
            raise SolverInputError(f"optimal_trajectories ({optimal_trajectories}) must be fewer than n_trajectories "
                                   f"({n_trajectories})")
    num_resamples = _check_int(num_resamples, "num_resamples", 2)
    _check_conf(conf_level)
    try:
        qlo, qhi = (float(q) for q in quantiles)
    except (TypeError, ValueError):
        raise SolverInputError(f"quantiles must be a pair (low, high), got {quantiles!r}") from None
    if not 0 < qlo < qhi < 1:
        raise SolverInputError(f"quantiles must satisfy 0 < low < high < 1, got {quantiles!r}")
    dists, func, what = _setup(target, outcome, doses, params, bounds, log_bounds, omega, distributions, chunk_size,
                               progress)
    names = list(dists)
    gen = _generator(rng)
    problem = {"num_vars": len(names), "names": names, "bounds": [[0.0, 1.0]] * len(names)}
    U = morris_sample.sample(problem, n_trajectories, num_levels=num_levels,
                             optimal_trajectories=optimal_trajectories, seed=int(gen.integers(1, 2**31 - 1)))
    Uq = U.copy()
    for j, dist in enumerate(dists.values()):
        if dist.kind == "log-normal":
            Uq[:, j] = qlo + (qhi - qlo) * U[:, j]
    y = func(_transform(Uq, dists))
    S = morris_analyze.analyze(problem, U, y, num_resamples=num_resamples, conf_level=conf_level,
                               num_levels=num_levels, seed=int(gen.integers(1, 2**31 - 1)))
    r = optimal_trajectories or n_trajectories
    method = (f"Morris elementary effects on a {num_levels}-level grid of each input's scaled range (log-normal "
              f"inputs: quantiles {qlo:g}-{qhi:g}); mu* = mean |EE|, sigma = SD of EE; bootstrap interval of mu* "
              "[SALib]")
    return MorrisResult(tuple(names), _ro(np.array(S["mu"], dtype=float)), _ro(np.array(S["mu_star"], dtype=float)),
                        _ro(np.array(S["sigma"], dtype=float)), _ro(np.array(S["mu_star_conf"], dtype=float)), r,
                        num_levels, int(y.size), float(conf_level), tuple(v.describe() for v in dists.values()), what,
                        method)


# -- shared setup --------------------------------------------------------------------------------------------
def _setup(target, outcome, doses, params, bounds, log_bounds, omega, distributions, chunk_size, progress):
    """(distributions, f(X) -> y with checks, name of what is analysed)."""
    is_model = isinstance(target, CompiledModel)
    if not is_model and not callable(target):
        raise SolverInputError(f"target must be a compiled model or a function of an (n, d) array, got {target!r}")
    if is_model and outcome is None:
        raise SolverInputError("a model needs outcome= (a name in OUTCOMES or a function)")
    if not is_model and (outcome is not None or doses):
        raise SolverInputError("outcome= and doses= apply to a model; a function target takes the inputs directly")
    if distributions is not None:
        if any(x is not None for x in (bounds, log_bounds, omega)):
            raise SolverInputError("give either distributions= or bounds=/log_bounds=/omega=, not both")
        if not isinstance(distributions, Mapping) or not distributions:
            raise SolverInputError("distributions must be a non-empty mapping name -> ParameterDistribution")
        dists = {}
        for k, v in distributions.items():
            if not isinstance(v, ParameterDistribution):
                raise SolverInputError(f"distributions['{k}'] must be a ParameterDistribution, got {type(v).__name__}")
            if is_model and not str(k).startswith(DOSE_PREFIX):
                _param_index(target, str(k), "distributions")
            dists[str(k)] = v
    else:
        dists = parameter_distributions(target if is_model else None, params=params, bounds=bounds,
                                        log_bounds=log_bounds, omega=omega, doses=doses)
    if chunk_size is not None:
        chunk_size = _check_int(chunk_size, "chunk_size", 1)
    names = list(dists)
    if is_model:
        _, opts = _resolve_outcome(outcome)   # checks the name early
        base_params = dict(params or {})
        if omega is not None:
            base_params = {**omega_sds(omega)[1], **base_params}
        base = target.parameter_vector(base_params)
        cols = [(k, target.parameter_names.index(k)) for k in names if not k.startswith(DOSE_PREFIX)]
        dose_cols = [(j, k[len(DOSE_PREFIX):]) for j, k in enumerate(names) if k.startswith(DOSE_PREFIX)]
        for _, g in dose_cols:
            _check_target(target, doses, g, "inputs")
        what = outcome_name(outcome)

        def run(X: np.ndarray) -> np.ndarray:
            P = np.tile(base, (X.shape[0], 1))
            for k, i in cols:
                P[:, i] = X[:, names.index(k)]
            if dose_cols:
                schedules = []
                for row in X:
                    s = list(doses or ())
                    for j, g in dose_cols:
                        s = scaled_doses(s, g, row[j] / dose_total(doses, g))
                    schedules.append(s)
            else:
                schedules = list(doses or ())
            show = (X.shape[0] > _PROGRESS_FROM) if progress is None else bool(progress)
            y = evaluate_outcome(outcome, target, P, schedules, chunk_size=chunk_size, progress=show)
            bad = np.flatnonzero(~np.isfinite(y))
            if bad.size:
                i = int(bad[0])
                raise SolverInputError(f"{bad.size} of {y.size} model runs gave no value of {what} (failed solve); the "
                                       f"first at {dict(zip(names, map(float, X[i])))}; narrow the input ranges")
            return y
    else:
        what = getattr(target, "__name__", "function")

        def run(X: np.ndarray) -> np.ndarray:
            n = X.shape[0]
            step = chunk_size or n
            show = bool(progress)   # a plain function is usually cheap: a bar only when asked
            bar = None
            if show:
                from tqdm.auto import tqdm
                bar = tqdm(total=n, desc=what, unit="eval")
            parts = []
            try:
                for s in range(0, n, step):
                    parts.append(_call(target, X[s:s + step], what))
                    if bar is not None:
                        bar.update(min(step, n - s))
            finally:
                if bar is not None:
                    bar.close()
            return np.concatenate(parts)
    return dists, run, what


def _call(f, X: np.ndarray, what: str) -> np.ndarray:
    y = np.asarray(f(X), dtype=float)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.shape != (X.shape[0],):
        raise SolverInputError(f"{what} returned shape {y.shape} for an input of shape {X.shape}; expected "
                               f"({X.shape[0]},): one value per row")
    bad = np.flatnonzero(~np.isfinite(y))
    if bad.size:
        raise SolverInputError(f"{what} returned {bad.size} non-finite value(s); the first for input row "
                               f"{X[bad[0]].tolist()}")
    return y


def _transform(U: np.ndarray, dists: Mapping[str, ParameterDistribution]) -> np.ndarray:
    return np.column_stack([d.ppf(U[:, j]) for j, d in enumerate(dists.values())])


def _generator(rng) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None or (isinstance(rng, (int, np.integer)) and not isinstance(rng, bool)):
        return np.random.default_rng(rng)
    raise SolverInputError(f"rng must be an int seed, a numpy.random.Generator or None, got {rng!r}")


def _check_int(v, name: str, minimum: int) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < minimum:
        raise SolverInputError(f"{name} must be an integer >= {minimum}, got {v!r}")
    return int(v)


def _check_conf(conf_level) -> None:
    if not (isinstance(conf_level, (int, float)) and 0 < conf_level < 1):
        raise SolverInputError(f"conf_level must be in (0, 1), got {conf_level!r}")


def _ro(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a
