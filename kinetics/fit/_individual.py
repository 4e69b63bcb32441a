"""Individual (per-subject) maximum-likelihood fits: multi-start, Hessian standard errors and
profile-likelihood intervals.

Each subject's ``-2 log L`` is the sum of the same M3 observation terms every population
estimator uses (:func:`kinetics.fit.observation_terms`, no ``log 2 pi``), over the structural
parameters and the residual SDs:

    OFV(x) = sum_j c_j(f_j(p(x)), V_j(f_j, sd)),   x = [log p (or p), log sd]

Optimiser: lmfit's ``bfgs`` (scipy BFGS) on the scalar OFV with its analytic gradient,

    dOFV/dx_k = sum_j (c_m,j dm_j/df_j + c_V,j dV_j/df_j) df_j/dx_k,   dOFV/dlog sd = sum_j c_V,j dV_j/dlog sd

(``df/dlog p`` from forward sensitivities). Why a scalar method and not ``least_squares``: with the
residual SDs estimated and M3 terms ``-2 log Phi(.)`` for censored rows, -2LL is not a sum of
squares; one scalar quasi-Newton method takes every error model and censoring kind through one
code path. Why BFGS and not L-BFGS-B: lmfit maps bounded parameters to unbounded internal ones
(scaling the gradient) for every scalar method, so L-BFGS-B's own bound handling is not used;
with a handful of parameters BFGS's dense inverse-Hessian update is cheap, while scipy's L-BFGS-B
core calls LAPACK every iteration, measured 4x slower per fit here (theophylline, 9 starts: 0.43 s
vs 1.6 s on a loaded 2-core machine) for the same optima. A start stops when BFGS does or its
gradient stalls at the solver's noise level ("precision loss"); convergence is then judged by the
projected relative gradient (``RELATIVE_GRADIENT_TOLERANCE``).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import lmfit
import numpy as np
import pandas as pd
from scipy import optimize
from scipy.stats import qmc

from kinetics.data import Dataset, read_dataset
from kinetics.errors import FitSpecError, did_you_mean
from kinetics.fit._likelihood import n_gaussian_terms
from kinetics.fit._problem import Problem, build_problem

__all__ = ["IndividualFit", "IndividualFits", "ProfileInterval", "fit_individual"]

_LOG_2PI = math.log(2.0 * math.pi)
CHI2_1_95 = 3.841458820694124       # scipy.stats.chi2.ppf(0.95, 1)
Z_975 = 1.959963984540054
BEST_WITHIN = 0.01                  # starts within this OFV of the best count as "reached the best"
SAMPLING_HALF_WIDTH = math.log(100.0)   # multi-start box around the initial value where a bound is infinite
RELATIVE_GRADIENT_TOLERANCE = 1e-4  # max_k |g_k| max(|x_k|, 1) / max(|OFV|, 1) at a converged optimum
TIE = 1e-6                          # optima this close in -2LL are numerically equal
DISTINCT = 0.01                     # optima further apart than this (estimation scale, max norm) are distinct
HESSIAN_STEP = 1e-4                 # central-difference step (estimation scale) for the Hessian of -2LL


@dataclass(frozen=True)
class ProfileInterval:
    """Profile-likelihood 95 % interval of one parameter: where ``-2LL`` (others re-optimised) rises
    by ``chi2_1(0.95) = 3.84`` from the optimum. ``*_open`` is True when the search reached the
    parameter's bound, its search limit, or a failing solve first; the end is then the last point
    reached and ``message`` says which. ``points`` are the evaluated (natural value, rise in -2LL)
    pairs."""

    parameter: str
    low: float
    high: float
    low_open: bool
    high_open: bool
    message: str
    points: tuple[tuple[float, float], ...] = ()

    def __str__(self) -> str:
        lo = f"{'<=' if self.low_open else ''}{self.low:.5g}"
        hi = f"{'>=' if self.high_open else ''}{self.high:.5g}"
        return f"[{lo}, {hi}]"


@dataclass(frozen=True)
class IndividualFit:
    """Maximum-likelihood fit of one subject.

    ``estimates`` are natural-scale values of the estimated parameters and residual SDs (named
    ``output.add`` / ``output.prop``); ``standard_errors`` their natural-scale SEs (delta method
    from the covariance of the estimation-scale values ``x``: the inverse observed information,
    ``(H/2)^-1`` with ``H`` the Hessian of -2LL); ``wald_ci`` 95 % Wald intervals on the estimation
    scale, back-transformed. nan SEs and intervals when the Hessian is not positive definite
    (``covariance_message`` says so). ``ofv`` is -2LL without the ``log 2 pi`` of observed values.
    """

    id: str
    success: bool
    message: str
    ofv: float
    ofv_with_constant: float
    n_observations: int
    n_censored: int
    estimates: dict[str, float]
    scale: dict[str, str]
    standard_errors: dict[str, float]
    wald_ci: dict[str, tuple[float, float]]
    profile: dict[str, ProfileInterval]
    covariance: np.ndarray | None = field(repr=False)
    hessian_eigenvalues: np.ndarray = field(repr=False)
    covariance_message: str
    n_starts: int
    n_starts_at_best: int
    start_ofvs: tuple[float, ...]
    n_evaluations: int
    other_optima: tuple[dict[str, float], ...]
    predictions: pd.DataFrame = field(repr=False)

    @property
    def ci(self) -> dict[str, tuple[float, float]]:
        """95 % intervals: profile-likelihood where computed, else Wald."""
        out = dict(self.wald_ci)
        out.update({k: (p.low, p.high) for k, p in self.profile.items()})
        return out

    def summary(self) -> str:
        lines = [f"Subject {self.id}: {'SUCCESS' if self.success else 'FAILED'}: {self.message}",
                 f"  -2LL (no 2pi constant) {self.ofv:.4f}   with constant {self.ofv_with_constant:.4f}   "
                 f"{self.n_observations} observations ({self.n_censored} censored, M3)",
                 f"  starts reaching the best -2LL (within {BEST_WITHIN}): {self.n_starts_at_best} of {self.n_starts}",
                 f"  {'parameter':<16}{'estimate':>12}{'SE':>11}{'RSE%':>8}  95% CI"]
        for name, v in self.estimates.items():
            se = self.standard_errors[name]
            rse = 100 * se / abs(v) if np.isfinite(se) and v != 0 else np.nan
            if name in self.profile:
                ci = f"{self.profile[name]} (profile)"
            else:
                lo, hi = self.wald_ci[name]
                ci = f"[{lo:.4g}, {hi:.4g}]" if np.isfinite(lo) else "-"
            se_text = f"{se:.4g}" if np.isfinite(se) else "-"
            rse_text = f"{rse:.1f}" if np.isfinite(rse) else "-"
            lines.append(f"  {name:<16}{v:>12.5g}{se_text:>11}{rse_text:>8}  {ci}")
        lines.append(f"  covariance: {self.covariance_message}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"<IndividualFit {self.id}: -2LL {self.ofv:.4f}, {'success' if self.success else 'FAILED'}>"

    def to_dict(self) -> dict:
        """Plain JSON-serialisable dictionary."""
        return {
            "id": self.id, "success": self.success, "message": self.message, "ofv": self.ofv,
            "ofv_with_constant": self.ofv_with_constant, "n_observations": self.n_observations,
            "n_censored": self.n_censored, "estimates": self.estimates, "scale": self.scale,
            "standard_errors": self.standard_errors, "wald_ci": {k: list(v) for k, v in self.wald_ci.items()},
            "profile": {k: {"low": p.low, "high": p.high, "low_open": p.low_open, "high_open": p.high_open,
                            "message": p.message, "points": [list(q) for q in p.points]}
                        for k, p in self.profile.items()},
            "covariance": None if self.covariance is None else self.covariance.tolist(),
            "hessian_eigenvalues": self.hessian_eigenvalues.tolist(), "covariance_message": self.covariance_message,
            "n_starts": self.n_starts, "n_starts_at_best": self.n_starts_at_best, "start_ofvs": list(self.start_ofvs),
            "n_evaluations": self.n_evaluations, "other_optima": list(self.other_optima),
            "predictions": json.loads(self.predictions.to_json(orient="records")),
        }


@dataclass(frozen=True)
class IndividualFits:
    """Per-subject fits of one model to a dataset (``fits`` in dataset order)."""

    model_name: str
    parameters: tuple[str, ...]       # estimated quantities, in order (structural, then residual SDs)
    fits: tuple[IndividualFit, ...]
    run_time_s: float

    @property
    def success(self) -> bool:
        """True when every subject's fit succeeded."""
        return all(f.success for f in self.fits)

    def __len__(self) -> int:
        return len(self.fits)

    def __iter__(self):
        return iter(self.fits)

    def __getitem__(self, subject_id: str) -> IndividualFit:
        for f in self.fits:
            if f.id == str(subject_id):
                return f
        ids = [f.id for f in self.fits]
        raise KeyError(f"no subject '{subject_id}'{did_you_mean(str(subject_id), ids)}")

    def table(self) -> pd.DataFrame:
        """One row per subject: status, -2LL, starts at the best, each estimate with its SE and 95 % CI
        (profile where computed, else Wald)."""
        rows = []
        for f in self.fits:
            row = {"ID": f.id, "success": f.success, "ofv": f.ofv, "n_observations": f.n_observations,
                   "n_censored": f.n_censored, "n_starts_at_best": f.n_starts_at_best}
            ci = f.ci
            for n in self.parameters:
                row[n] = f.estimates[n]
                row[f"{n}_se"] = f.standard_errors[n]
                row[f"{n}_ci_low"], row[f"{n}_ci_high"] = ci[n]
            row["message"] = f.message
            rows.append(row)
        return pd.DataFrame(rows)

    def predictions(self) -> pd.DataFrame:
        """IPRED and IWRES of every subject, stacked."""
        frames = [f.predictions for f in self.fits]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    def summary(self) -> str:
        n_ok = sum(f.success for f in self.fits)
        lines = [f"Individual maximum-likelihood fits of '{self.model_name}': {n_ok} of {len(self.fits)} subjects "
                 f"succeeded, run time {self.run_time_s:.2f} s", ""]
        lines += [f.summary() + "\n" for f in self.fits]
        if self.fits:
            tab = pd.DataFrame({n: [f.estimates[n] for f in self.fits if f.success] for n in self.parameters})
            if len(tab):
                lines.append("Across successful subjects: median [min, max]")
                for n in self.parameters:
                    lines.append(f"  {n:<16}{tab[n].median():>12.5g}  [{tab[n].min():.5g}, {tab[n].max():.5g}]")
        return "\n".join(lines)

    def __repr__(self) -> str:
        n_ok = sum(f.success for f in self.fits)
        return f"<IndividualFits {self.model_name}: {n_ok}/{len(self.fits)} subjects succeeded>"

    def to_dict(self) -> dict:
        return {"method": "individual", "model": self.model_name, "parameters": list(self.parameters),
                "success": self.success, "run_time_s": self.run_time_s, "fits": [f.to_dict() for f in self.fits]}

    def to_json(self, path: str | Path | None = None) -> str:
        """JSON text of :meth:`to_dict` (non-finite numbers as null); written to ``path`` if given."""
        text = json.dumps(_finite(self.to_dict()), indent=1)
        if path is not None:
            Path(path).write_text(text)
        return text


def _finite(obj):
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if isinstance(obj, (np.integer, np.bool_)):
        return obj.item()
    return obj


# -- the objective of one subject -------------------------------------------------------------
class _SubjectObjective:
    """-2LL of subject ``i`` and its gradient in ``x = [theta (log or linear), log sd]``; remembers the
    last evaluation (lmfit asks for the value and the gradient at the same point separately)."""

    def __init__(self, problem: Problem, i: int) -> None:
        self.problem, self.i = problem, i
        self.n_evaluations = 0
        self._key: bytes | None = None
        self._val: tuple[float, np.ndarray | None, str] = (np.inf, None, "")

    def __call__(self, x: np.ndarray) -> tuple[float, np.ndarray | None, str]:
        x = np.asarray(x, dtype=float)
        key = x.tobytes()
        if key != self._key:
            self._val = self._evaluate(x)
            self._key = key
            self.n_evaluations += 1
        return self._val

    def _evaluate(self, x: np.ndarray) -> tuple[float, np.ndarray | None, str]:
        pb, i = self.problem, self.i
        if not np.all(np.isfinite(x)):
            return np.inf, None, "non-finite parameter values"
        with np.errstate(over="ignore"):
            theta, beta, _, sigmas = pb.split(x)
        params = pb.individual_params(i, theta, beta, np.zeros(0))
        f, jac, msg = pb.predict(i, params, pb.estimate)
        if msg:
            return np.inf, None, msg
        with np.errstate(all="ignore"):   # extreme trial points (an SD near 0) must give inf, not warnings
            t, dm, dv, dv_dsd = pb.terms(i, f, sigmas)
        ofv = float(np.sum(t.c))
        if not np.isfinite(ofv):
            bad = np.flatnonzero(~np.isfinite(t.c))
            line = int(pb.subjects[i].data.lines[bad[0]])
            return np.inf, None, (f"-2LL is not finite (first at data line {line}: prediction {f[bad[0]]:.4g}, "
                                  "a zero residual variance or a non-positive prediction on a log-scale output)")
        dfdx = jac.copy()
        for k, lg in enumerate(pb.log_scale):
            if not lg:   # predict gives d f / d log p = p d f / d p; linear-scale parameters need d f / d p
                dfdx[:, k] = jac[:, k] / theta[k] if theta[k] != 0 else _fd_column(pb, i, theta, beta, k)
        with np.errstate(all="ignore"):
            grad = np.concatenate([(t.c_m * dm + t.c_v * dv) @ dfdx, t.c_v @ dv_dsd])
        if not np.all(np.isfinite(grad)):
            return np.inf, None, "gradient of -2LL is not finite"
        return ofv, grad, ""


def _fd_column(pb: Problem, i: int, theta, beta, k: int, h: float = 1e-7) -> np.ndarray:
    """d f / d theta_k by central differences at theta_k = 0 (where d f / d log p carries no information)."""
    cols = []
    for s in (h, -h):
        th = theta.copy()
        th[k] += s
        f, _, msg = pb.predict(i, pb.individual_params(i, th, beta, np.zeros(0)))
        cols.append(f if not msg else np.full(f.size, np.nan))
    return (cols[0] - cols[1]) / (2 * h)


# -- one local optimisation with lmfit ------------------------------------------------------------
def _local_fit(obj: _SubjectObjective, x0: np.ndarray, vary: np.ndarray, lower: np.ndarray, upper: np.ndarray,
               max_restarts: int = 3) -> tuple[np.ndarray, float, bool, str]:
    """BFGS (through lmfit) from ``x0``; restarted from its end point (fresh curvature estimate) while the
    projected relative gradient is above tolerance and the objective still improves."""
    x = np.clip(np.asarray(x0, dtype=float), lower, upper)
    f = obj(x)[0]
    message = ""
    for _ in range(max_restarts + 1):
        params = lmfit.Parameters()
        for k, v in enumerate(x):
            params.add(f"p{k}", value=float(v), min=float(lower[k]), max=float(upper[k]), vary=bool(vary[k]))

        def value(p, _n=x.size):
            return obj(np.array([p[f"p{k}"].value for k in range(_n)]))[0]

        def gradient(p, _n=x.size):
            g = obj(np.array([p[f"p{k}"].value for k in range(_n)]))[1]
            return (g if g is not None else np.zeros(_n))[vary]

        mini = lmfit.Minimizer(value, params, nan_policy="propagate", calc_covar=False)
        res = mini.minimize(method="bfgs", jac=gradient, options={"maxiter": 1000, "gtol": 1e-8})
        x_new = np.array([res.params[f"p{k}"].value for k in range(x.size)])
        f_new, g_new, _ = obj(x_new)
        message = str(res.message)
        if not f_new <= f:        # no progress (or a non-finite end point): keep the previous point
            break
        improved = f - f_new
        x, f = x_new, f_new
        if _relative_gradient(x, g_new, f, vary, lower, upper) < RELATIVE_GRADIENT_TOLERANCE or improved < 1e-12:
            break
    g = obj(x)[1]
    converged = bool(np.isfinite(f)) and _relative_gradient(x, g, f, vary, lower, upper) < RELATIVE_GRADIENT_TOLERANCE
    return x, f, converged, message


def _relative_gradient(x, g, f, vary, lower, upper) -> float:
    """max |projected gradient_k| max(|x_k|, 1) / max(|f|, 1) over varied parameters (a component pushing
    against an active bound counts as zero)."""
    if g is None or not np.all(np.isfinite(g)):
        return np.inf
    pg = np.where(((x <= lower) & (g > 0)) | ((x >= upper) & (g < 0)) | ~vary, 0.0, g)
    return float(np.max(np.abs(pg) * np.maximum(np.abs(x), 1.0), initial=0.0) / max(abs(f), 1.0))


# -- the Hessian and standard errors ---------------------------------------------------------------
def _hessian(obj: _SubjectObjective, x: np.ndarray, vary: np.ndarray) -> np.ndarray | None:
    """Hessian of -2LL over the varied components by central differences of the analytic gradient."""
    idx = np.flatnonzero(vary)
    h = np.empty((idx.size, idx.size))
    for col, k in enumerate(idx):
        e = np.zeros_like(x)
        e[k] = HESSIAN_STEP * max(1.0, abs(x[k]))
        gp, gm = obj(x + e)[1], obj(x - e)[1]
        if gp is None or gm is None:
            return None
        h[:, col] = (gp[idx] - gm[idx]) / (2 * e[k])
    return 0.5 * (h + h.T)


def covariance_from_hessian(hess: np.ndarray | None) -> tuple[np.ndarray | None, np.ndarray, str]:
    """Covariance ``(H/2)^-1`` of the estimates from the Hessian ``H`` of -2LL, its eigenvalues, and a message.

    A Hessian that is not positive definite gives no covariance (and nan standard errors); it is
    reported, never modified.
    """
    if hess is None:
        return None, np.zeros(0), "Hessian could not be computed (a solve failed next to the optimum); no standard errors"
    ev = np.linalg.eigvalsh(hess) if hess.size else np.zeros(0)
    if hess.size and not np.all(np.isfinite(hess)):
        return None, ev, "Hessian has non-finite entries; no standard errors"
    if ev.size and ev[0] <= 0:
        return None, ev, (f"Hessian of -2LL is not positive definite (smallest eigenvalue {ev[0]:.3g}, largest "
                          f"{ev[-1]:.3g}): a parameter is not identifiable from this subject's data; no standard errors")
    cov = np.linalg.inv(0.5 * hess) if hess.size else np.zeros((0, 0))
    cond = ev[-1] / ev[0] if ev.size else 1.0
    return 0.5 * (cov + cov.T), ev, f"from the observed information (Hessian/2), condition number {cond:.3g}"


# -- profile likelihood ---------------------------------------------------------------------------
def _profile(obj, name: str, k: int, x_hat: np.ndarray, ofv_hat: float, se_k: float, vary, lower, upper,
             is_log: bool, max_distance: float = 30.0, max_steps: int = 30) -> ProfileInterval:
    """Profile-likelihood 95 % interval of component ``k`` of ``x``: step outwards, re-optimising the other
    components (warm-started), until -2LL rises by 3.84, then locate the crossing with Brent's method."""
    others = vary.copy()
    others[k] = False
    nat = (lambda v: float(np.exp(v))) if is_log else float
    points: list[tuple[float, float]] = []
    lowest = [0.0, x_hat[k]]

    def rise(v: float, start: np.ndarray) -> tuple[float, np.ndarray]:
        x0 = start.copy()
        x0[k] = v
        if others.any():
            x1, f1, _, _ = _local_fit(obj, x0, others, lower, upper, max_restarts=1)
        else:
            x1, f1 = x0, obj(x0)[0]
        d = f1 - ofv_hat
        points.append((nat(v), d))
        if d < lowest[0]:
            lowest[:] = [d, v]
        return d, x1

    ends, opens, notes = [], [], []
    for side, sign, bound in (("lower", -1.0, lower[k]), ("upper", 1.0, upper[k])):
        step = Z_975 * se_k if np.isfinite(se_k) and se_k > 0 else 0.1
        v_in, start = x_hat[k], x_hat.copy()
        end, is_open = v_in, True
        for _ in range(max_steps):
            v = v_in + sign * step
            if sign * (v - bound) >= 0:
                v = bound
            d, x_opt = rise(v, start)
            if not np.isfinite(d):
                notes.append(f"{side} end: a solve failed at {name} = {nat(v):.6g}; open at the last good point")
                break
            if d >= CHI2_1_95:
                def g(u, _s=start):
                    return rise(u, _s)[0] - CHI2_1_95
                try:
                    end = optimize.brentq(g, min(v_in, v), max(v_in, v), xtol=1e-6 * max(1.0, abs(v)))
                except ValueError:   # re-optimised profile no longer brackets 3.84 (solver noise): midpoint
                    end = 0.5 * (v_in + v)
                    notes.append(f"{side} end: the crossing was not bracketed on re-evaluation; midpoint of "
                                 f"[{nat(min(v_in, v)):.6g}, {nat(max(v_in, v)):.6g}]")
                is_open = False
                break
            v_in, start, end = v, x_opt, v
            if v == bound:
                notes.append(f"{side} end: -2LL rose by only {d:.3g} at the bound {name} = {nat(v):.6g}; open")
                break
            if abs(v - x_hat[k]) >= max_distance:
                notes.append(f"{side} end: -2LL rose by only {d:.3g} at {name} = {nat(v):.6g}, "
                             f"{max_distance:g} from the estimate on the estimation scale; open")
                break
            step *= 1.6
        else:
            notes.append(f"{side} end: no rise of 3.84 within {max_steps} steps; open")
        ends.append(nat(end))
        opens.append(is_open)
    msg = "profile-likelihood interval (chi2_1 0.95 = 3.84)"
    if lowest[0] < -BEST_WITHIN:
        msg = (f"profile found -2LL lower than the fit by {-lowest[0]:.4g} at {name} = {nat(lowest[1]):.6g}: the fit "
               "is not at the global optimum; this interval is unreliable")
    msg = "; ".join([msg, *notes])
    return ProfileInterval(parameter=name, low=ends[0], high=ends[1], low_open=opens[0], high_open=opens[1],
                           message=msg, points=tuple(sorted(points)))


# -- the entry point ----------------------------------------------------------------------------
def fit_individual(model, data, *, estimate: Mapping[str, float], error: Mapping,
                   fixed: Mapping[str, float] | None = None, n_starts: int = 8, seed: int = 0,
                   profile: Sequence[str] | None = None, rtol: float = 1e-8, atol: float = 1e-10,
                   progress: Callable[[int, IndividualFit], None] | bool | None = None) -> IndividualFits:
    """Maximum-likelihood fit of each subject separately.

    Parameters
    ----------
    model
        A compiled model (``kinetics.load_model``).
    data
        A :class:`~kinetics.data.Dataset`, or a path / DataFrame for ``read_dataset``.
    estimate
        Parameter name -> initial value. Bounds come from the model file (``lower``/``upper``);
        parameters positive by nature (lower bound >= 0) are estimated on the log scale.
    error
        Output -> error model, as for :func:`~kinetics.fit.fit_population` (the residual SDs are
        estimated per subject). Censored rows (CENS) use the M3 likelihood.
    fixed
        Parameter values held fixed (others keep the model file's values); a residual SD can be held
        fixed too, by its reported name (``{"conc.add": 0.5}``), e.g. a known assay error.
    n_starts
        Number of extra starting points: a scrambled Sobol design (seeded by ``seed``) over the
        structural parameters' bounds on the estimation scale; where a bound is infinite (log of
        a lower bound 0) the box ends ``log(100)`` from the initial value. The given initial values
        are always the first start; residual SDs start at their initial values. The best optimum
        is kept, and ``n_starts_at_best`` counts the starts that reached it within 0.01.
    profile
        Names (parameters or SDs such as ``"conc.add"``) to get profile-likelihood 95 % intervals for.
    rtol, atol
        Solver tolerances.
    progress
        True prints one line per subject; a callable receives (subject number, IndividualFit).

    Returns
    -------
    IndividualFits
        Per-subject :class:`IndividualFit`; a fit that fails says so in ``success`` and ``message``.

    Raises
    ------
    FitSpecError
        Unknown parameter / output / profile name, an initial value outside the model's bounds,
        a negative ``n_starts``.

    Notes
    -----
    Each start runs BFGS (lmfit) on ``x = [log p, log sd]`` with the sensitivity gradient (module
    docstring). The best start wins; starts within ``1e-6`` of it are ties, resolved in favour of
    the earliest (the given initial values first), and tied starts at different estimates are
    listed in ``other_optima`` and the message (the ka/k flip-flop of the oral model gives two
    exactly equal optima). A fit succeeds when its projected relative gradient
    ``max_k |g_k| max(|x_k|, 1) / max(|OFV|, 1)`` is below ``1e-4``.

    Standard errors: ``cov(x) = (H/2)^-1`` with ``H`` the Hessian of -2LL at the optimum (central
    differences of the analytic gradient, step ``1e-4 max(1, |x_k|)``); natural scale by the delta
    method (``SE(p) = p SE(log p)``); Wald intervals ``exp(log p +- 1.96 SE)``. Profile intervals:
    the parameter is stepped away from its estimate (first step 1.96 SE), the others re-optimised
    at each step, until -2LL rises by 3.84; Brent's method then locates the crossing (Venzon &
    Moolgavkar 1988, doi:10.2307/2347496; Raue et al. 2009, doi:10.1093/bioinformatics/btp358).

    Examples
    --------
    >>> import pandas as pd, kinetics
    >>> frame = pd.DataFrame({"ID": 1, "TIME": [0, 0.5, 1, 2, 4, 8, 12, 24],
    ...                       "DV": [".", 5.406, 7.139, 8.554, 7.383, 5.432, 3.568, 1.313],
    ...                       "EVID": [1, 0, 0, 0, 0, 0, 0, 0], "AMT": [320] + ["."] * 7,
    ...                       "CMT": ["depot"] + ["."] * 7})
    >>> fits = kinetics.fit_individual(kinetics.load_model("oral_1cmt"), frame,
    ...                                estimate={"ka": 1.0, "CL": 2.0, "V": 25.0}, error={"conc": "additive"})
    >>> fit = fits.fits[0]
    >>> fit.success, round(fit.estimates["CL"], 2)
    (True, 2.81)
    """
    t0 = time.perf_counter()
    if not isinstance(data, Dataset):
        data = read_dataset(data)
    if isinstance(n_starts, bool) or not isinstance(n_starts, (int, np.integer)) or n_starts < 0:
        raise FitSpecError(f"n_starts must be an integer >= 0, got {n_starts!r}")
    if not estimate:
        raise FitSpecError("estimate: give at least one parameter to estimate")
    fixed = dict(fixed or {})
    outputs = set(error or {})
    fixed_sd = {k: fixed.pop(k) for k in list(fixed) if k.partition(".")[0] in outputs and "." in k}
    problem = build_problem(model, data, estimate=estimate, random_effects=None, error=error, fixed=fixed,
                            rtol=rtol, atol=atol)
    names = tuple(problem.estimate) + tuple(problem.sigma_names)
    vary = np.ones(len(names), dtype=bool)
    x_init = problem.x0()
    for k, v in fixed_sd.items():
        if k not in problem.sigma_names:
            raise FitSpecError(f"fixed: '{k}' is not a residual SD of the error models "
                               f"({', '.join(problem.sigma_names)}){did_you_mean(k, problem.sigma_names)}")
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0 or not math.isfinite(v):
            raise FitSpecError(f"fixed: residual SD '{k}' must be a finite number > 0, got {v!r}")
        vary[names.index(k)] = False
        x_init[names.index(k)] = math.log(v)
    for p in profile or ():
        if p not in names:
            raise FitSpecError(f"profile: '{p}' is not an estimated quantity ({', '.join(names)}){did_you_mean(p, names)}")
    lower, upper, box = _bounds(problem)
    starts = [x_init] + _design(box, x_init, n_starts, seed)
    report = _progress(progress)
    fits = []
    for i in range(len(problem.subjects)):
        fit = _fit_subject(problem, i, names, starts, vary, lower, upper, tuple(profile or ()))
        fits.append(fit)
        if report:
            report(i + 1, fit)
    return IndividualFits(model_name=model.name, parameters=names, fits=tuple(fits),
                          run_time_s=time.perf_counter() - t0)


def _bounds(problem: Problem) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bounds of x (estimation scale) and the finite box the multi-start design samples."""
    params = {p.name: p for p in problem.model.model.parameters}
    lo, hi, box = [], [], []
    x0 = problem.x0()
    for k, (name, lg) in enumerate(zip(problem.estimate, problem.log_scale)):
        p = params[name]
        v = float(problem.theta0[k])
        if not p.lower <= v <= p.upper:
            raise FitSpecError(f"estimate: initial value {v:g} of '{name}' is outside its bounds "
                               f"[{p.lower:g}, {p.upper:g}] in the model file")
        if lg:
            a = math.log(p.lower) if p.lower > 0 else -np.inf
            b = math.log(p.upper) if np.isfinite(p.upper) else np.inf
            half = SAMPLING_HALF_WIDTH
        else:
            a, b = p.lower, p.upper
            half = max(10.0 * abs(v), 1.0)
        lo.append(a)
        hi.append(b)
        box.append((max(a, x0[k] - half), min(b, x0[k] + half)))
    n_sd = len(problem.sigma_names)
    return (np.array(lo + [-np.inf] * n_sd), np.array(hi + [np.inf] * n_sd), np.array(box).reshape(-1, 2))


def _design(box: np.ndarray, x_init: np.ndarray, n: int, seed: int) -> list[np.ndarray]:
    """``n`` starting points: the first ``n`` of a scrambled Sobol sequence (2^m >= n points drawn, so the
    sequence keeps its balance) scaled to ``box``; residual SDs at their initial values."""
    if n == 0 or box.shape[0] == 0:
        return []
    m = max(0, math.ceil(math.log2(n)))
    u = qmc.Sobol(d=box.shape[0], scramble=True, seed=np.random.default_rng(seed)).random_base2(m)[:n]
    pts = qmc.scale(u, box[:, 0], box[:, 1]) if np.all(box[:, 1] > box[:, 0]) else \
        box[:, 0] + u * (box[:, 1] - box[:, 0])
    out = []
    for p in pts:
        x = x_init.copy()
        x[:box.shape[0]] = p
        out.append(x)
    return out


def _fit_subject(problem: Problem, i: int, names, starts, vary, lower, upper, profile) -> IndividualFit:
    s = problem.subjects[i]
    obj = _SubjectObjective(problem, i)
    n_cens = int(np.count_nonzero(s.data.cens))
    vary = vary.copy()
    notes = []
    for e_i, out in enumerate(problem.error_outputs):   # an SD with no observations of its output is not estimable
        if not np.any(s.error_index == e_i):
            pos = problem.n_theta + sum(len(e.parameter_names) for e in problem.error_models[:e_i])
            vary[pos:pos + len(problem.error_models[e_i].parameter_names)] = False
            notes.append(f"no observations of '{out}': its residual SD is held at the initial value")
    if s.data.n_observations == 0:
        return _failed(problem, i, names, "no observations", len(starts), obj)
    results, first_msg = [], ""
    for x0 in starts:
        f0, _, msg = obj(x0)
        if not np.isfinite(f0):
            first_msg = first_msg or msg
            results.append((x0, np.inf, False, msg))
            continue
        results.append(_local_fit(obj, x0, vary, lower, upper))
    ofvs = np.array([r[1] for r in results])
    if not np.isfinite(ofvs).any():
        return _failed(problem, i, names, f"-2LL not finite at any of {len(starts)} starts: {first_msg}",
                       len(starts), obj, tuple(ofvs))
    # among numerically equal optima (mirror images such as the ka/k flip-flop) the earliest start wins,
    # so the given initial values decide between them
    best = int(np.flatnonzero(ofvs <= np.min(ofvs) + TIE)[0])
    x, ofv, converged, opt_msg = results[best]
    at_best = np.flatnonzero(ofvs <= ofv + BEST_WITHIN)
    n_best = int(at_best.size)
    others = _distinct_optima(problem, [results[j][0] for j in at_best], x)
    if others:
        notes.append(f"{len(others)} other start(s) reached the same -2LL (within {BEST_WITHIN}) at different "
                     "estimates, so the optimum is not unique (e.g. the ka/k flip-flop): "
                     + "; ".join(", ".join(f"{k}={v:.4g}" for k, v in o.items()) for o in others[:3]))
    hess = _hessian(obj, x, vary)
    cov_v, ev, cov_msg = covariance_from_hessian(hess)
    at_bound = [names[k] for k in range(x.size) if vary[k] and (x[k] <= lower[k] or x[k] >= upper[k])]
    if at_bound:
        cov_msg += f"; at a bound: {', '.join(at_bound)} (its SE and Wald interval are not meaningful)"
    cov = None
    if cov_v is not None:   # fixed components (held SDs) get nan rows and columns
        cov = np.full((x.size, x.size), np.nan)
        cov[np.ix_(vary, vary)] = cov_v
        cov.flags.writeable = False
    ev.flags.writeable = False
    se_x = np.sqrt(np.diag(cov)) if cov is not None else np.full(x.size, np.nan)
    is_log = np.array(list(problem.log_scale) + [True] * len(problem.sigma_names))
    nat = np.where(is_log, np.exp(np.where(is_log, x, 0.0)), x)
    se_nat = np.where(is_log, nat * se_x, se_x)
    lo_x, hi_x = x - Z_975 * se_x, x + Z_975 * se_x
    ci = {n: ((float(np.exp(a)), float(np.exp(b))) if lg else (float(a), float(b)))
          for n, lg, a, b in zip(names, is_log, lo_x, hi_x)}
    prof = {}
    for p in profile:
        k = names.index(p)
        if not vary[k]:
            notes.append(f"'{p}' is held fixed: no profile")
        else:
            prof[p] = _profile(obj, p, k, x, ofv, se_x[k], vary, lower, upper, bool(is_log[k]))
    rel = _relative_gradient(x, obj(x)[1], ofv, vary, lower, upper)
    dv_scale = float(np.median(np.abs(s.y))) or 1.0
    collapsed = [n for k, n in enumerate(names) if k >= problem.n_theta and vary[k] and nat[k] < 1e-6 * dv_scale]
    if collapsed and not converged:
        notes.append(f"residual SD {', '.join(collapsed)} collapsed towards 0 (-2LL is unbounded below: the data "
                     "cannot support this many parameters; fix the SD or estimate fewer parameters)")
    if converged:
        message = f"converged: relative gradient {rel:.2g} < {RELATIVE_GRADIENT_TOLERANCE:g} (BFGS: {opt_msg})"
    else:
        message = f"not converged: relative gradient {rel:.3g} >= {RELATIVE_GRADIENT_TOLERANCE:g} (BFGS: {opt_msg})"
    message = "; ".join([message, *notes])
    return IndividualFit(
        id=s.data.id, success=converged, message=message, ofv=float(ofv),
        ofv_with_constant=float(ofv + n_gaussian_terms(s.data.cens) * _LOG_2PI),
        n_observations=s.data.n_observations, n_censored=n_cens,
        estimates=dict(zip(names, map(float, nat))), scale={n: "log" if lg else "linear" for n, lg in zip(names, is_log)},
        standard_errors=dict(zip(names, map(float, se_nat))), wald_ci=ci, profile=prof, covariance=cov,
        hessian_eigenvalues=ev, covariance_message=cov_msg, n_starts=len(starts), n_starts_at_best=n_best,
        start_ofvs=tuple(map(float, ofvs)), n_evaluations=obj.n_evaluations, other_optima=tuple(others),
        predictions=_predictions(problem, i, x))


def _distinct_optima(problem: Problem, xs: list[np.ndarray], x_best: np.ndarray) -> list[dict[str, float]]:
    """Structural estimates (natural scale) of optima that differ from ``x_best`` (and from each other) by more
    than ``DISTINCT`` on the estimation scale."""
    k = problem.n_theta
    found: list[np.ndarray] = [x_best[:k]]
    out = []
    for x in xs:
        if all(np.max(np.abs(x[:k] - y)) > DISTINCT for y in found):
            found.append(x[:k])
            nat = np.where(problem.log_scale, np.exp(np.where(problem.log_scale, x[:k], 0.0)), x[:k])
            out.append(dict(zip(problem.estimate, map(float, nat))))
    return out


def _failed(problem: Problem, i: int, names, message: str, n_starts: int, obj, ofvs=()) -> IndividualFit:
    s = problem.subjects[i]
    nan = float("nan")
    return IndividualFit(
        id=s.data.id, success=False, message=message, ofv=nan, ofv_with_constant=nan,
        n_observations=s.data.n_observations, n_censored=int(np.count_nonzero(s.data.cens)),
        estimates={n: nan for n in names},
        scale={n: "log" if k >= problem.n_theta or problem.log_scale[k] else "linear" for k, n in enumerate(names)},
        standard_errors={n: nan for n in names}, wald_ci={n: (nan, nan) for n in names}, profile={},
        covariance=None, hessian_eigenvalues=np.zeros(0), covariance_message="no optimum: no covariance",
        n_starts=n_starts, n_starts_at_best=0, start_ofvs=tuple(map(float, ofvs)), n_evaluations=obj.n_evaluations,
        other_optima=(),
        predictions=_predictions(problem, i, None))


def _predictions(problem: Problem, i: int, x: np.ndarray | None) -> pd.DataFrame:
    s = problem.subjects[i]
    n = s.data.n_observations
    ipred, iwres = np.full(n, np.nan), np.full(n, np.nan)
    if x is not None and n:
        theta, beta, _, sigmas = problem.split(x)
        f, _, msg = problem.predict(i, problem.individual_params(i, theta, beta, np.zeros(0)))
        if not msg:
            ipred = f
            for e_i, (e, sd) in enumerate(zip(problem.error_models, sigmas)):
                sel = (s.error_index == e_i) & (s.data.cens == 0)
                m = e.prediction(f[sel])[0]
                iwres[sel] = (s.y[sel] - m) / np.sqrt(e.variance(f[sel], sd)[0])
    return pd.DataFrame({"ID": s.data.id, "TIME": s.data.times, "OUTPUT": list(s.data.outputs), "DV": s.data.dv,
                         "CENS": s.data.cens, "IPRED": ipred, "IWRES": iwres, "LINE": s.data.lines})


def _progress(progress) -> Callable[[int, IndividualFit], None] | None:
    if progress is True:
        return lambda k, fit: print(f"  subject {k:4d} ({fit.id}): -2LL {fit.ofv:.6f}  "
                                    f"{'ok' if fit.success else 'FAILED'}  best reached by {fit.n_starts_at_best}/"
                                    f"{fit.n_starts} starts", flush=True)
    return progress or None
