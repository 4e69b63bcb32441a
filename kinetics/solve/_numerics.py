"""Model-independent numba helpers of the ODE solvers, compiled once per machine.

Like :mod:`kinetics.solve._solver_kernels`, this file is a template, not imported directly:
:mod:`kinetics.solve._compiled` writes it to the cache directory (``$KINETICS_CACHE_DIR/engine_<hash>/``)
and imports it from there, and each model's generated module star-imports it. Its functions carry
``cache=True``, so numba compiles them once for all models: a model's first solve then compiles only
the code that calls the model's own functions (``m_rhs``, ``m_jac``, ...). A cached function's cache entry
keeps its LLVM bitcode, so callers still inline the ``forceinline`` helpers.

Constants here (status and method codes, the Butcher tableaus, the switching rules of method auto) are
the solver's; :mod:`kinetics.solve._solver_kernels` describes the methods and array layouts.
"""

import math

import numpy as np
from numba import njit

from kinetics.solve import _rosenbrock_tableau as _ros

#: Helpers that allocate nothing are compiled without numba's reference counting (``_nrt=False``): with it,
#: every array argument passed on or aliased costs an atomic increment and decrement, ~20 per step, and in a
#: parallel batch the threads contend for the counters of the arrays they share (parameters, tolerances,
#: output times). Measured on cart_bench (DOPRI5, 134 steps): 27.9 -> 23.2 us per solve.
#: No CPython or cfunc wrapper either: helpers are only called from other numba functions. The model's
#: kernels (_solver_kernels.py) use the same options, without ``cache``.
HOT_OPTIONS = {"error_model": "numpy", "no_cpython_wrapper": True, "no_cfunc_wrapper": True, "_nrt": False}
engine_njit = njit(cache=True, **HOT_OPTIONS)
engine_inline_njit = njit(cache=True, forceinline=True, **HOT_OPTIONS)

STATUS_SUCCESS = 0
STATUS_MAX_STEPS = 1
STATUS_STEP_UNDERFLOW = 2
STATUS_NONFINITE = 3
STATUS_SINGULAR = 4
STATUS_NEGATIVE_RATE = 5

METHOD_AUTO = 0
METHOD_DOPRI5 = 1
METHOD_RODAS5P = 2
METHOD_TSIT5 = 3

MACHINE_EPS = 2.220446049250313e-16

# --- Dormand-Prince 5(4) ----------------------------------------------------
DP_C = np.array([0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0])
DP_A = np.array([
    [0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
    [1 / 5, 0.0, 0.0, 0.0, 0.0, 0.0],
    [3 / 40, 9 / 40, 0.0, 0.0, 0.0, 0.0],
    [44 / 45, -56 / 15, 32 / 9, 0.0, 0.0, 0.0],
    [19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729, 0.0, 0.0],
    [9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656, 0.0],
    [35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84],
])
# error weights: 5th-order minus embedded 4th-order solution (Hairer's e1..e7)
DP_E = np.array([71 / 57600, 0.0, -71 / 16695, 71 / 1920, -17253 / 339200, 22 / 525, -1 / 40])
# dense output: y(t + th*h) = y + h * sum_j K_j * (P[j,0] th + P[j,1] th^2 + P[j,2] th^3 + P[j,3] th^4)
DP_P = np.array([
    [1.0, -8048581381 / 2820520608, 8663915743 / 2820520608, -12715105075 / 11282082432],
    [0.0, 0.0, 0.0, 0.0],
    [0.0, 131558114200 / 32700410799, -68118460800 / 10900136933, 87487479700 / 32700410799],
    [0.0, -1754552775 / 470086768, 14199869525 / 1410260304, -10690763975 / 1880347072],
    [0.0, 127303824393 / 49829197408, -318862633887 / 49829197408, 701980252875 / 199316789632],
    [0.0, -282668133 / 205662961, 2019193451 / 616988883, -1453857185 / 822651844],
    [0.0, 40617522 / 29380423, -110615467 / 29380423, 69997945 / 29380423],
])

# Switching between the explicit pair and Rodas5P (method "auto"), by cost rather than by a stability test alone.
# A stiff mode limits an explicit step well before h |lambda| reaches the stability boundary (DP5 3.31, Tsit5
# 3.51): on cart_bench's stiff variant the error test holds Tsit5 at h |lambda| = 2.1-3.2 for 30 days while
# Rodas5P takes 3-5x longer steps there. So: every STIFF_EVERY accepted explicit steps, |lambda| of the dominant
# mode is estimated by one power iteration on the Jacobian (one extra rhs, finite difference, warm-started from
# the previous estimate's vector); when the next step has h |lambda| > STIFF_TRIGGER, that step is taken with
# Rodas5P as a trial. The stiff method is kept if its controller then proposes a step at least STIFF_COST_RATIO
# times the explicit one (one Rodas5P step -- Jacobian, sparse LU, 8 stages with solves -- costs ~3 explicit
# steps on cart_bench: 430 vs 150 ns); otherwise the explicit pair resumes with its own step and the next trial
# waits STIFF_BACKOFF, then twice as many, accepted steps. While Rodas5P runs, the same power iteration on its
# exact Jacobian gives |lambda|; the explicit pair takes over again when it could take Rodas5P's next step with
# h |lambda| < STIFF_RELEASE, far inside its stability region (LSODA switches both ways on similar grounds:
# Petzold 1983, doi:10.1137/0904010). Hairer's estimate h ||k7 - k6|| / ||y7 - y6|| (dopri5.f) is not used: it
# read 1.1 where h |lambda| was 2.4 on cart_bench, and it fails for Tsit5 altogether (whose stages satisfy only
# the first-column simplifying assumption, so y7 - y6 keeps an O(h^2) part of the smooth solution).
STIFF_EVERY = 8
STIFF_TRIGGER = 2.0
# A trial is also made at h |lambda| > STIFF_TRIGGER_ALIGNED when the accepted step's error estimate points along
# the dominant mode (cos^2 of the angle, scaled norm, >= STIFF_ALIGNMENT): the error test, not stability, then
# holds the explicit step below the trigger (tight tolerances; Prothero-Robinson lambda = 400, rtol 1e-8: 10,209
# Tsit5 steps without this test, 590 with it). Such trials have their own backoff. 0.81 and 0.95 made trials
# that were not kept in cart_bench mild; 0.99 none.
STIFF_TRIGGER_ALIGNED = 1.0
STIFF_ALIGNMENT = 0.99
STIFF_COST_RATIO = 3.0
STIFF_RELEASE = 1.0
STIFF_BACKOFF = 16
STIFF_TRIAL_STEPS = 6
STIFF_TRIAL_MIN_GAIN = 2.0
STIFF_BACKOFF_MAX = 1024
AUTO_EXPLICIT = METHOD_TSIT5   # auto's explicit pair

# --- Tsitouras 5(4) -------------------------------------------------------------
# Ch. Tsitouras, Runge-Kutta pairs of order 5(4) satisfying only the first column simplifying assumption,
# Comput. Math. Appl. 62 (2011) 770-775, doi:10.1016/j.camwa.2011.06.002: 7 stages, FSAL, 4th-order dense
# output (the paper's interpolant, expanded in powers of theta); fewer steps than DP5 at equal accuracy
# (cart_bench at rtol 1e-6: 120 vs 136 attempted steps).
TS_C = np.array([0.0, 0.161, 0.327, 0.9, 0.9800255409045097, 1.0, 1.0])
TS_A = np.array([
    [0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
    [0.161, 0.0, 0.0, 0.0, 0.0, 0.0],
    [-0.008480655492356989, 0.335480655492357, 0.0, 0.0, 0.0, 0.0],
    [2.8971530571054935, -6.359448489975075, 4.3622954328695815, 0.0, 0.0, 0.0],
    [5.325864828439257, -11.748883564062828, 7.4955393428898365, -0.09249506636175525, 0.0, 0.0],
    [5.86145544294642, -12.92096931784711, 8.159367898576159, -0.071584973281401, -0.028269050394068383, 0.0],
    [0.09646076681806523, 0.01, 0.4798896504144996, 1.379008574103742, -3.290069515436081, 2.324710524099774],
])
TS_E = np.array([-0.00178001105222577714, -0.0008164344596567469, 0.007880878010261995, -0.1447110071732629,
                 0.5823571654525552, -0.45808210592918697, 1.0 / 66.0])
TS_P = np.array([
    [1.0, -2.763706197274826, 2.9132554618219126, -1.0530884977290216],
    [0.0, 0.1317, -0.2234, 0.1017],
    [0.0, 3.9302962368947516, -5.941033872131505, 2.490627285651253],
    [0.0, -12.411077166933676, 30.33818863028232, -16.548102889244902],
    [0.0, 37.50931341651104, -88.1789048947664, 47.37952196281928],
    [0.0, -27.896526289197286, 65.09189467479366, -34.87065786149661],
    [0.0, 1.5, -4.0, 2.5],
])

# --- Rodas5P ------------------------------------------------------------------
RS = _ros.NSTAGES
R_GAMMA = _ros.GAMMA
R_A = np.array(_ros.A)
R_C = np.array(_ros.C)
R_CN = np.array(_ros.C_NODES)
R_D = np.array(_ros.D)
R_H = np.array(_ros.H)


# --- dense linear algebra -------------------------------------------------------
@engine_njit
def lu_factor(a, piv):
    """In-place LU with partial pivoting (LAPACK getrf layout); 1 if singular."""
    n = a.shape[0]
    for k in range(n):
        imax = k
        vmax = abs(a[k, k])
        for i in range(k + 1, n):
            v = abs(a[i, k])
            if v > vmax:
                vmax = v
                imax = i
        piv[k] = imax
        if vmax == 0.0 or not math.isfinite(vmax):
            return 1
        if imax != k:
            for j in range(n):
                tmp = a[k, j]
                a[k, j] = a[imax, j]
                a[imax, j] = tmp
        inv = 1.0 / a[k, k]
        for i in range(k + 1, n):
            lik = a[i, k] * inv
            a[i, k] = lik
            if lik != 0.0:
                for j in range(k + 1, n):
                    a[i, j] -= lik * a[k, j]
    return 0


@engine_njit
def lu_solve(lu, piv, b, r, off):
    """Solve in place for b[r, off:off+n] with the factors of :func:`lu_factor`."""
    n = lu.shape[0]
    for k in range(n):
        p = piv[k]
        if p != k:
            tmp = b[r, off + k]
            b[r, off + k] = b[r, off + p]
            b[r, off + p] = tmp
    for i in range(n):
        s = b[r, off + i]
        for j in range(i):
            s -= lu[i, j] * b[r, off + j]
        b[r, off + i] = s
    for i in range(n - 1, -1, -1):
        s = b[r, off + i]
        for j in range(i + 1, n):
            s -= lu[i, j] * b[r, off + j]
        b[r, off + i] = s / lu[i, i]


# x^(-1/5) for the step-size controllers: x = m 2^e with m in [0.5, 1); m^(-1/5) by a quartic (Chebyshev
# least squares on [0.5, 1], max relative error 3.9e-5, plenty for a step-size factor) and 2^(-e/5) from
# 2^(-(e mod 5)/5) and an exponent shift. 7 ns against pow's 22 on the step's critical path (the next step
# waits for h): ~10 % of a cart_bench Tsit5 step.
_IFR_POLY = (1.5829334161835624, -1.473011138751808, 1.6599138129076323, -1.0342414946490075, 0.26443778156975756)
_IFR_POW2 = (1.0, 0.8705505632961241, 0.757858283255199, 0.6597539553864471, 0.5743491774985174)


@engine_inline_njit
def inv_fifth_root(x):
    """x ** -0.2 to 4e-5 relative, for finite x > 0."""
    m, e = math.frexp(x)
    q = e // 5
    r = e - 5 * q
    c = 1.0
    if r == 1:
        c = _IFR_POW2[1]
    elif r == 2:
        c = _IFR_POW2[2]
    elif r == 3:
        c = _IFR_POW2[3]
    elif r == 4:
        c = _IFR_POW2[4]
    pm = _IFR_POLY[0] + m * (_IFR_POLY[1] + m * (_IFR_POLY[2] + m * (_IFR_POLY[3] + m * _IFR_POLY[4])))
    return math.ldexp(pm * c, -q)


@engine_inline_njit
def err_norm(err, r, y0, y1, rtol, atol, L):
    """RMS norm of err[r, :L] / (atol + rtol*max(|y0|,|y1|)); atol has one entry per state."""
    n = atol.shape[0]
    acc = 0.0
    for b in range(L // n):
        for j in range(n):
            i = b * n + j
            sc = atol[j] + rtol * max(abs(y0[i]), abs(y1[i]))
            v = err[r, i] / sc
            acc += v * v
    return math.sqrt(acc / L)


#: A component of the integrated vector below FLUSH_BELOW * atol is set to exactly zero after each accepted
#: step of a sensitivity solve. Without this, a state that decays without bound (a cell population
#: killed to nothing) and its sensitivities sink through 1e-300 into subnormal numbers, whose arithmetic
#: is ~100x slower on x86: dual_car_sle with 9 sensitivities spent 80 % of its time there (38 ms per
#: solve; 7 ms with the flush). The error test accepts absolute errors of order atol in every step, so a
#: change 200 orders of magnitude below atol is no change to what the solve guarantees.
FLUSH_BELOW = 1e-200


@engine_njit
def flush_negligible(Y, atol):
    """Y[i] = 0 where |Y[i]| < FLUSH_BELOW * atol (atol of the state, for sensitivities too)."""
    n = atol.shape[0]
    for b in range(Y.shape[0] // n):
        for j in range(n):
            if abs(Y[b * n + j]) < FLUSH_BELOW * atol[j]:
                Y[b * n + j] = 0.0


@engine_njit
def normalise_power_vector(pv):
    """|pv| (= |J v| for the unit vector v it was computed from); pv scaled to unit length, or reset to the
    uniform unit vector if it is zero or not finite."""
    n = pv.shape[0]
    ww = 0.0
    for i in range(n):
        ww += pv[i] * pv[i]
    if not (ww > 0.0) or not math.isfinite(ww):
        reset_power_vector(pv)
        return 0.0
    norm = math.sqrt(ww)
    for i in range(n):
        pv[i] /= norm
    return norm


@engine_njit
def reset_power_vector(pv):
    """The power iteration's start: the uniform unit vector."""
    n = pv.shape[0]
    for i in range(n):
        pv[i] = 1.0 / math.sqrt(n)


@engine_njit
def decline_trial(ist, aligned, wait, backoff, wait_aligned, backoff_aligned):
    """A trial of the stiff method that is not kept: the explicit pair resumes. Returns the new (wait, backoff,
    wait_aligned, backoff_aligned): explicit steps until the next trial of the same kind (on h |lambda|
    alone, or on the alignment test if ``aligned``) may be made, and the backoff after that; the other kind's
    pair is returned as it was."""
    ist[6] = AUTO_EXPLICIT
    if aligned:
        return wait, backoff, backoff_aligned, min(2 * backoff_aligned, STIFF_BACKOFF_MAX)
    return backoff, min(2 * backoff, STIFF_BACKOFF_MAX), wait_aligned, backoff_aligned


@engine_inline_njit
def erk_error(h, K, E, ew):
    """ew[0, :] = the local error estimate h * sum_j E_j K_j of the explicit pair."""
    for i in range(ew.shape[1]):
        ew[0, i] = h * (E[0] * K[0, i] + E[1] * K[1, i] + E[2] * K[2, i] + E[3] * K[3, i] + E[4] * K[4, i]
                        + E[5] * K[5, i] + E[6] * K[6, i])


@engine_njit
def erk_dense(theta, h, Y0, K, P, out):
    """out[i] = y(t + theta h)_i for i < len(out), from the pair's dense-output weights P."""
    t2 = theta * theta
    t3 = t2 * theta
    t4 = t3 * theta
    # stage weights b_j(theta), once per output time, then one weighted sum per component
    b0 = h * (P[0, 0] * theta + P[0, 1] * t2 + P[0, 2] * t3 + P[0, 3] * t4)
    b1 = h * (P[1, 1] * t2 + P[1, 2] * t3 + P[1, 3] * t4)
    b2 = h * (P[2, 1] * t2 + P[2, 2] * t3 + P[2, 3] * t4)
    b3 = h * (P[3, 1] * t2 + P[3, 2] * t3 + P[3, 3] * t4)
    b4 = h * (P[4, 1] * t2 + P[4, 2] * t3 + P[4, 3] * t4)
    b5 = h * (P[5, 1] * t2 + P[5, 2] * t3 + P[5, 3] * t4)
    b6 = h * (P[6, 1] * t2 + P[6, 2] * t3 + P[6, 3] * t4)
    for i in range(out.shape[0]):  # P[j > 0, 0] == 0 for both pairs
        out[i] = Y0[i] + (b0 * K[0, i] + b1 * K[1, i] + b2 * K[2, i] + b3 * K[3, i] + b4 * K[4, i]
                          + b5 * K[5, i] + b6 * K[6, i])


@engine_njit
def rodas_dense(theta, Y0, Y1, Kr, out):
    """Rodas5P 4th-order continuous extension for components i < len(out)."""
    for i in range(out.shape[0]):
        k0 = 0.0
        k1 = 0.0
        k2 = 0.0
        for j in range(RS):
            k0 += R_H[0, j] * Kr[j, i]
            k1 += R_H[1, j] * Kr[j, i]
            k2 += R_H[2, j] * Kr[j, i]
        out[i] = (1.0 - theta) * Y0[i] + theta * (Y1[i] + (1.0 - theta) * (k0 + theta * (k1 + theta * k2)))


@engine_njit
def dense_eval(method, theta, h, Y0, Y1, K, Kr, out):
    """The current method's dense output at t + theta h into out (all of Y's components)."""
    if method == METHOD_RODAS5P:
        rodas_dense(theta, Y0, Y1, Kr, out)
    else:
        erk_dense(theta, h, Y0, K, TS_P if method == METHOD_TSIT5 else DP_P, out)


#: Pieces of each step's dense output scanned for a crossing (a level crossed twice within one step).
EVENT_SUBSTEPS = 4


@engine_njit
def crosses(g0, g1, ev_dir):
    """True if g goes from g0 to g1 through zero in the requested direction."""
    if ev_dir >= 0 and g0 < 0.0 and g1 >= 0.0:
        return True
    if ev_dir <= 0 and g0 > 0.0 and g1 <= 0.0:
        return True
    return False


@engine_njit
def sort_unique(a, n):
    """Sort a[:n] in place (insertion sort; n is small) and drop duplicates; returns the new length."""
    for i in range(1, n):
        v = a[i]
        j = i - 1
        while j >= 0 and a[j] > v:
            a[j + 1] = a[j]
            j -= 1
        a[j + 1] = v
    m = 0
    for i in range(n):
        if m == 0 or a[i] != a[m - 1]:
            a[m] = a[i]
            m += 1
    return m
