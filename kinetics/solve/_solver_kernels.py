"""Numba ODE solver kernels, compiled once per model.

This file is a template: :mod:`kinetics.solve._compile` appends its text to a
model's generated equation kernels (``m_rhs``, ``m_jac``, ... from
:mod:`kinetics.codegen`) so that the model is called as a global and inlined,
and numba can cache the whole module on disk. It is not imported directly.

Methods
-------
* Tsitouras 5(4) (auto's explicit pair, Comput. Math. Appl. 62:770, 2011) and
  Dormand-Prince 5(4), each with its 4th-order dense output (E. Hairer, S.P. Norsett,
  G. Wanner, Solving ODEs I, 2nd ed., II.4-6; dense-output matrix as in scipy's RK45).
* Rodas5P, an L-stable Rosenbrock method of order 5(4) with 4th-order dense
  output (G. Steinebach, BIT 63:27, 2023), analytic Jacobian.
* ``METHOD_AUTO`` starts with Tsit5 and hands over to Rodas5P, and back, where
  that is cheaper (see STIFF_EVERY in kinetics/solve/_numerics.py).

Compilation: the model-independent helpers (kinetics/solve/_numerics.py) are compiled and cached once per
machine; of the code here, which calls the model's functions, only the entry points (``simulate_kernel``,
``simulate_batch_kernel``) are cached on disk (their cache entries hold every function they call);
caching each helper too would serialise the same code again at every level. numba compiles a helper once
per argument type, and a literal constant is a type of its own: the helpers in _numerics.py must not be
passed the model's literals (N_STATES: see ``nerr`` in integrate_segment), or each model compiles them anew.

Array layouts (numba ignores type hints)
----------------------------------------
n = N_STATES, np = N_PARAMS, M = number of sensitivity directions, L = n*(1+M).
The integrated vector ``Y[L]`` is the state ``y = Y`` followed by the
sensitivities ``s_k = Y[n*(1+k): n*(2+k)] = dy/d(theta_k)``; direction ``k`` is
parameter ``sdir[k]`` if ``sdir[k] < np``, else the initial value of state
``sdir[k] - np``. Doses: ``dose_time[nd]`` (time unit of the model),
``dose_amt[nd]`` (amount; multiplied by the target's scale), ``dose_dur[nd]``
(0 = bolus, > 0 = zero-order infusion), ``dose_tgt[nd]`` (dose-target index),
``dose_state[nd]`` (state index). Counters ``ist[8]``: accepted steps, rejected
steps, rhs evaluations, Jacobians, LU factorisations, status, method in use at the
end, event found (0/1). Floats ``fst[5]``: time of failure, time of the first hand-over
to the stiff method (nan if none), event time (nan if none), last step size, index of the
non-negative state whose rate was negative at 0 (STATUS_NEGATIVE_RATE; else -1).
"""

import math

import numpy as np
from numba import njit, prange

# The model-independent helpers and constants (tableaus, status and method codes, switching rules) are in
# kinetics/solve/_numerics.py, compiled once per machine; kinetics.solve._compiled puts
# ``from <that module> import *`` above this text.

#: The helpers' compile options (no reference counting, no wrappers: why at HOT_OPTIONS in _numerics.py).
hot_njit = njit(**HOT_OPTIONS)
hot_inline_njit = njit(forceinline=True, **HOT_OPTIONS)


# --- the integrated system: states plus optional sensitivities -----------------
# Right-hand sides and linear solves write into a row ``r`` of a 2-D stage array
# (out[r, :]) rather than into a slice: a slice is a new array view, and each view
# costs numba two atomic reference-count operations, ~1/3 of an explicit step here.
# ``sens`` is None for a plain solve -- numba then compiles a specialisation with
# every sensitivity branch removed (an untaken branch holding calls still costs
# ~70 ns per rhs evaluation) -- or the pair of work arrays ``(si, sv)``:
#   si int64:   flags[2], then the generated model's SI_PATTERN (df/dp and d2f/(dp dy) entries sorted by
#               parameter: pointers at SI_FP_PTR / SI_G_PTR, rows / A-pattern positions at SI_FP_ROW /
#               SI_G_POS), then sdir[M] at SI_DIR; flags[0] = 1 if the sensitivities take part in the
#               step-size error test, flags[1] = 1 while rate_dp is not zero (set per segment);
#   sv float64: df/dp, d2f/(dp dy), d2f/(dp dt) on their patterns (at 0, SV_G, SV_FPT), rate_dp[n, np]
#               (SV_RATE), scale_dp[max(nd,1), np] (SV_SCALE) and sw_dp[max(ns,1), np] (SV_SW), filled once
#               per solve by initial_vector, and ablk[M, A_NNZ] (SV_ABLK): the blocks d(J s_k + df/dp_k)/dy
#               of the augmented Jacobian on the A pattern, row-major.
# Two arrays rather than one per quantity: numba increments and decrements the reference count of each
# array argument at function entry and exit and around inlined calls (atomic operations, ~7 ns each); with
# 13 arrays in the tuple that was ~200 ns per right-hand side, 80 % of an oral_1cmt sensitivity solve.
@njit(inline='always', error_model='numpy')
def sens_add_fp_columns(si, sv, base, out, r):
    """out[r, n(1+k) + row_q] += sv[base + q] for the df/dp pattern entries q of direction k's parameter."""
    for k in range(si.shape[0] - SI_DIR):
        kk = si[SI_DIR + k]
        if kk < N_PARAMS:
            off = N_STATES * (1 + k)
            for q in range(si[SI_FP_PTR + kk], si[SI_FP_PTR + kk + 1]):
                out[r, off + si[SI_FP_ROW + q]] += sv[base + q]


@njit(inline='always', error_model='numpy')
def sens_rhs(t, tc, Y, p, sens, out, r):
    """out[r, n:] = J s_k + df/dp_k (+ infusion-rate derivative) for each direction k.

    Inlined into the stage loops (as a call it made an oral_1cmt sensitivity solve 40 % slower); the
    generated m_sens_rhs it calls is not (see kinetics.codegen)."""
    si, sv = sens
    M = si.shape[0] - SI_DIR
    m_sens_rhs(t, tc, Y, p, M, out, r, sv)
    sens_add_fp_columns(si, sv, 0, out, r)
    if si[1] != 0:
        for k in range(M):
            kk = si[SI_DIR + k]
            if kk < N_PARAMS:
                off = N_STATES * (1 + k)
                for i in range(N_STATES):
                    out[r, off + i] += sv[SV_RATE + i * N_PARAMS + kk]


@njit(inline='always', error_model='numpy')
def sys_rhs(t, tc, Y, p, rate, out, r):
    """out[r, :n] = dy/dt; rate[n] is the infusion input. With sensitivities, the caller follows with
    ``if sens is not None: sens_rhs(...)`` in its own body, not here: numba drops a ``sens is None``
    branch before inlining only where ``sens`` is an argument of the function being compiled; inside
    an inlined helper the branch goes later, after the inlined sensitivity code has been processed,
    which cost plain solves 40 % more cold compile time (10-state model, measured)."""
    m_rhs(t, tc, Y, p, out, r)  # writes out[r, :n]
    for i in range(rate.shape[0]):  # rate is empty when the solve has no infusion
        out[r, i] += rate[i]


@hot_njit
def sys_rhs_call(t, tc, Y, p, rate, out, sens):
    """The integrated system's right-hand side into row 0 of ``out``, as an ordinary call for places off
    the step loop (each inlined copy costs compile time; a row argument is not taken because numba
    would compile one version per literal row number)."""
    sys_rhs(t, tc, Y, p, rate, out, 0)
    if sens is not None:
        sens_rhs(t, tc, Y, p, sens, out, 0)


@hot_njit
def sens_jac(t, tc, Y, p, sens):
    """ablk[k] = d(J s_k + df/dp_k)/dy, the sub-diagonal blocks of the augmented Jacobian (A pattern)."""
    si, sv = sens
    M = si.shape[0] - SI_DIR
    m_sens_jac(t, tc, Y, p, M, sv)
    for k in range(M):
        kk = si[SI_DIR + k]
        if kk < N_PARAMS:
            ab = SV_ABLK + A_NNZ * k
            for q in range(si[SI_G_PTR + kk], si[SI_G_PTR + kk + 1]):
                sv[ab + si[SI_G_POS + q]] += sv[SV_G + q]


@hot_njit
def sys_dfdt(t, tc, Y, p, out, sens):
    """out[0, :] = dF/dt of the integrated system (only called for non-autonomous models)."""
    m_dfdt(t, tc, Y, p, out[0])
    if sens is not None:
        si, sv = sens
        m_sens_dfdt(t, tc, Y, p, si.shape[0] - SI_DIR, out, sv)
        sens_add_fp_columns(si, sv, SV_FPT, out, 0)


@njit(inline='always', error_model='numpy')
def w_solve(lu, piv, sparse, b, r, off):
    """Solve W x = b[r, off:off+n] in place with the factors of m_w_factor (sparse) or lu_factor."""
    if sparse:
        m_w_solve(lu, b, r, off)
    else:
        lu_solve(lu, piv, b, r, off)


@hot_njit
def sens_solve(lu, piv, sparse, b, r, sens):
    """Block forward substitution for the sensitivity rows of the block lower-triangular W_aug:
    W x_k = b_k + A_k x_0, each with the factors of W (the one LU serves every direction)."""
    si, sv = sens
    M = si.shape[0] - SI_DIR
    m_sens_solve_add(sv, b, r, M)
    for k in range(M):
        # direct calls: an inlined wrapper would rebind the arrays, and numba then keeps reference-count
        # operations around each call
        if sparse:
            m_w_solve(lu, b, r, N_STATES * (1 + k))
        else:
            lu_solve(lu, piv, b, r, N_STATES * (1 + k))


@njit(inline='always', error_model='numpy')
def sys_solve(lu, piv, sparse, b, r, sens):
    """Solve (I/(h gamma) - J_aug) x = b[r, :] in place."""
    w_solve(lu, piv, sparse, b, r, 0)
    if sens is not None:
        sens_solve(lu, piv, sparse, b, r, sens)


@hot_njit
def keep_nonnegative(Y, atol, sens):
    """Hold the states declared non-negative (NONNEGATIVE, from the model) at or above 0.

    A value in [-atol, 0) is within the step's accepted error and is set to 0 (with its
    sensitivities: the bound is active); below -atol the step must be redone smaller: returns the index
    of that state (else -1). Without this, a cell count decaying below atol can turn negative and a term
    such as growth x count then drives it away from 0 (the solution blows up: cd19_sle at ~day 800 for
    some patients).
    """
    n = atol.shape[0]
    for q in range(NONNEGATIVE.shape[0]):
        i = NONNEGATIVE[q]
        if Y[i] < 0.0:
            if Y[i] < -atol[i]:
                return i
            Y[i] = 0.0
            if sens is not None:
                for b in range(1, Y.shape[0] // n):
                    Y[b * n + i] = 0.0
    return -1


@njit(inline='always', error_model='numpy')
def state_length(Y, sens):
    """Length of the integrated vector: a compile-time constant (N_STATES) for plain solves, so their
    per-component loops have a fixed trip count and unroll; n (1 + M) with M sensitivity directions."""
    if sens is None:
        return N_STATES
    return Y.shape[0]


@njit(inline='always', error_model='numpy')
def error_length(L, sens):
    """How many leading components of the integrated vector take part in the error test: all of them,
    or only the states when the sensitivities are excluded (``flags[0] == 0``, CVODES' errconS=False)."""
    if sens is None:
        return L
    if sens[0][0] != 0:
        return L
    return N_STATES


@hot_njit
def initial_step(t, tc, Y, p, rate, f0, f1, y1, rtol, atol, hmax, ist, sens):
    """Hairer's starting step-size heuristic (Solving ODEs I, II.4)."""
    L = Y.shape[0]
    Le = error_length(L, sens)  # the norms below measure only what the error test measures
    sys_rhs_call(t, tc, Y, p, rate, f0, sens)
    ist[2] += 1
    n = atol.shape[0]
    d0 = 0.0
    d1 = 0.0
    for i in range(Le):
        sc = atol[i % n] + rtol * abs(Y[i])
        d0 += (Y[i] / sc) ** 2
        d1 += (f0[0, i] / sc) ** 2
    d0 = math.sqrt(d0 / Le)
    d1 = math.sqrt(d1 / Le)
    if d0 < 1e-5 or d1 < 1e-5:
        h0 = 1e-6
    else:
        h0 = 0.01 * d0 / d1
    h0 = min(h0, hmax)
    for i in range(L):
        y1[i] = Y[i] + h0 * f0[0, i]
    sys_rhs_call(t + h0, tc, y1, p, rate, f1, sens)
    ist[2] += 1
    d2 = 0.0
    for i in range(Le):
        sc = atol[i % n] + rtol * abs(Y[i])
        d2 += ((f1[0, i] - f0[0, i]) / sc) ** 2
    d2 = math.sqrt(d2 / Le) / h0
    dm = max(d1, d2)
    if not math.isfinite(dm):
        return h0 * 1e-3
    if dm <= 1e-15:
        h1 = max(1e-6, h0 * 1e-3)
    else:
        h1 = (0.01 / dm) ** 0.2
    return min(100.0 * h0, h1, hmax)


# --- one step of each method --------------------------------------------------------
@hot_inline_njit
def erk_step(t, tc, h, Y, p, rate, K, ynew, ystage, A, C, sens):
    """One step of a 7-stage FSAL explicit pair (DP5 or Tsit5: tableau A, nodes C); K[0] must hold f(t, Y) on
    entry; K[6] = f(t+h, ynew) on exit. (A loop over stages, not written out: each written-out stage would
    inline the model's right-hand side again and cost compile time for no measurable speed.)
    """
    L = state_length(Y, sens)
    for s in range(1, 7):
        out = ynew if s == 6 else ystage
        for i in range(L):
            acc = 0.0
            for j in range(s):
                acc += A[s, j] * K[j, i]
            out[i] = Y[i] + h * acc
        sys_rhs(t + C[s] * h, tc, out, p, rate, K, s)
        if sens is not None:
            sens_rhs(t + C[s] * h, tc, out, p, sens, K, s)


@hot_njit
def dominant_rate_fd(t, tc, Y, p, rate, f_y, pv, u, fbuf):
    """|lambda| of the state Jacobian's dominant mode, by one power iteration from the unit vector pv (updated
    in place) with J pv ~ (f(Y + d pv) - f(Y)) / d; f_y[0] holds f(t, Y). Units 1/time."""
    n = N_STATES
    yy = 0.0
    for i in range(n):
        yy += Y[i] * Y[i]
    d = 1.4901161193847656e-08 * max(math.sqrt(yy), 1e-8)   # sqrt(eps) relative perturbation
    for i in range(n):
        u[i] = Y[i] + d * pv[i]
    sys_rhs_call(t, tc, u, p, rate, fbuf, None)
    for i in range(n):
        pv[i] = (fbuf[0, i] - f_y[0, i]) / d
    return normalise_power_vector(pv)


@hot_njit
def error_alignment(ew, pv, Y, rtol, atol):
    """cos^2 of the angle between the explicit pair's last error estimate ew[0, :n] and the dominant mode pv,
    with the error test's weights 1 / (atol + rtol |y|) at the step's end Y: near 1 when the step's error is
    the stiff mode's alone."""
    n = N_STATES
    ee = 0.0
    vv = 0.0
    ev = 0.0
    for i in range(n):
        w = 1.0 / (atol[i] + rtol * abs(Y[i]))
        e = ew[0, i] * w
        v = pv[i] * w
        ee += e * e
        vv += v * v
        ev += e * v
    if not (ee > 0.0 and vv > 0.0):
        return 0.0
    return ev * ev / (ee * vv)


@hot_njit
def dominant_rate_exact(jw, pv, w):
    """As :func:`dominant_rate_fd`, with the Jacobian jw at hand (w: n scratch). Here, not with the
    model-independent helpers: it runs after every Rodas5P step of method auto, and the model's constant
    N_STATES lets the n x n product unroll (2-3 % of a cart_bench stiff solve)."""
    n = N_STATES
    for i in range(n):
        acc = 0.0
        for j in range(n):
            acc += jw[i, j] * pv[j]
        w[i] = acc
    for i in range(n):
        pv[i] = w[i]
    return normalise_power_vector(pv)


@hot_njit
def rodas_step(t, tc, h, Y, p, rate, Kr, ynew, u, dT, jw, wmat, piv, ist, sens):
    """One Rodas5P step (stages in Kr[s]); returns False if the W matrix is singular."""
    n = N_STATES
    L = Y.shape[0]
    m_jac(t, tc, Y, p, jw)
    if sens is not None:
        sens_jac(t, tc, Y, p, sens)
    ist[3] += 1
    if not AUTONOMOUS:
        sys_dfdt(t, tc, Y, p, dT, sens)
    inv_hg = 1.0 / (h * R_GAMMA)
    for i in range(n):
        for j in range(n):
            wmat[i, j] = -jw[i, j]
        wmat[i, i] += inv_hg
    ist[4] += 1
    # straight-line LU on the Jacobian's sparsity pattern; dense partial pivoting if a pivot is too small
    sparse = m_w_factor(wmat)
    if not sparse:
        for i in range(n):
            for j in range(n):
                wmat[i, j] = -jw[i, j]
            wmat[i, i] += inv_hg
        if lu_factor(wmat, piv) != 0:
            return False
    inv_h = 1.0 / h
    for s in range(RS):
        # stage loops run over components innermost (contiguous rows of Kr: vectorised)
        for i in range(L):
            u[i] = Y[i]
        for j in range(s):
            a = R_A[s, j]
            for i in range(L):
                u[i] += a * Kr[j, i]
        sys_rhs(t + R_CN[s] * h, tc, u, p, rate, Kr, s)  # f(u) into row s, then add the C terms
        if sens is not None:
            sens_rhs(t + R_CN[s] * h, tc, u, p, sens, Kr, s)
        ist[2] += 1
        for j in range(s):
            c = R_C[s, j] * inv_h
            for i in range(L):
                Kr[s, i] += c * Kr[j, i]
        if not AUTONOMOUS:
            dh = R_D[s] * h
            for i in range(L):
                Kr[s, i] += dh * dT[0, i]
        sys_solve(wmat, piv, sparse, Kr, s, sens)
    for i in range(L):
        ynew[i] = u[i] + Kr[RS - 1, i]
    return True


@hot_njit
def event_value(t, Yv, p, ev_out, ev_level, obuf):
    m_out(t, Yv, p, obuf)
    return obuf[ev_out] - ev_level


@hot_njit
def locate_event(method, t, h, Y0, Y1, K, Kr, p, ev_out, ev_level, ev_dir, th_a, g_a, th_b, g_b, ybuf, obuf):
    """Illinois regula falsi on the dense output between theta a and b; returns the time."""
    side = 0
    for _ in range(200):
        if (th_b - th_a) * abs(h) <= 4.0 * MACHINE_EPS * max(1.0, abs(t + h)):
            break
        th = th_a - g_a * (th_b - th_a) / (g_b - g_a) if g_b != g_a else 0.5 * (th_a + th_b)
        if not (th_a < th < th_b):
            th = 0.5 * (th_a + th_b)
        dense_eval(method, th, h, Y0, Y1, K, Kr, ybuf)
        g = event_value(t + th * h, ybuf, p, ev_out, ev_level, obuf)
        if crosses(g_a, g, ev_dir) or (g == 0.0):
            th_b = th
            g_b = g
            if side == -1:
                g_a *= 0.5
            side = -1
        else:
            th_a = th
            g_a = g
            if side == 1:
                g_b *= 0.5
            side = 1
    return t + th_b * h


# --- integrate one segment without discontinuities -------------------------------------
@hot_njit
def integrate_segment(ta, tb, tc, Y, p, rate, h, rtol, atol, max_steps, times, io, Yout, ev_out, ev_level, ev_dir,
                      ev_after, ev_g, K, Kr, ew, ynew, u, dT, jw, wmat, piv, ybuf, obuf, pv, ist, fst, sens):
    """Advance Y from ta to tb, storing outputs at times[io:] < tb. Returns (io, h).

    ``ev_g[0]`` carries the event function's last value (nan before ``ev_after``).
    On failure ist[5] is set and the function returns early. With method auto (fst[3] < 0) the
    explicit pair and Rodas5P take over from each other as described at STIFF_EVERY (_numerics.py); ``pv``
    carries the power iteration's vector from step to step.
    """
    L = state_length(Y, sens)
    # np.int64: a plain solve's length is the literal N_STATES, and err_norm (compiled once for all models)
    # would otherwise be compiled again for each model's literal
    nerr = np.int64(error_length(L, sens))
    t = ta
    nt = times.shape[0]
    reject = False
    fsal = False
    auto = fst[3] < 0.0
    n_explicit = 0        # accepted explicit steps in this segment
    wait = STIFF_BACKOFF  # explicit steps before the next trial of the stiff method may be made
    backoff = STIFF_BACKOFF
    wait_aligned = 0      # the same for trials made on the alignment test (STIFF_TRIGGER_ALIGNED)
    backoff_aligned = STIFF_BACKOFF
    trial_aligned = False
    trial = False         # this step is Rodas5P's trial
    h_explicit = 0.0      # the explicit pair's own proposal for the trial step
    t_trial = 0.0
    trial_steps = 0       # accepted steps of the trial
    # why the last attempts failed: STATUS_SUCCESS (error test only), STATUS_NONFINITE or STATUS_SINGULAR
    fail_status = STATUS_SUCCESS
    while t < tb:
        if ist[0] + ist[1] >= max_steps:
            ist[5] = STATUS_MAX_STEPS
            fst[0] = t
            return io, h
        # the step must still move t in floating point; the floor keeps h > 0 at t = 0
        hmin = max(16.0 * MACHINE_EPS * abs(t), 1e-280)
        if h < hmin:
            ist[5] = fail_status if fail_status != STATUS_SUCCESS else STATUS_STEP_UNDERFLOW
            fst[0] = t
            return io, h
        last = False
        if t + h >= tb or t + 1.01 * h >= tb:
            hs = tb - t
            last = True
        else:
            hs = h
        method = ist[6]
        if method == METHOD_RODAS5P:
            ok = rodas_step(t, tc, hs, Y, p, rate, Kr, ynew, u, dT, jw, wmat, piv, ist, sens)
            if not ok:
                err = math.inf
                fail_status = STATUS_SINGULAR
            else:
                err = err_norm(Kr, RS - 1, Y, ynew, rtol, atol, nerr)  # Rodas5P's error estimate is its last stage
        else:
            if not fsal:
                sys_rhs_call(t, tc, Y, p, rate, K, sens)
                ist[2] += 1
                fsal = True
            # one inlined step whatever the pair: only the tableau differs
            if method == METHOD_TSIT5:
                tab_a, tab_c, tab_e = TS_A, TS_C, TS_E
            else:
                tab_a, tab_c, tab_e = DP_A, DP_C, DP_E
            erk_step(t, tc, hs, Y, p, rate, K, ynew, u, tab_a, tab_c, sens)
            erk_error(hs, K, tab_e, ew)
            ist[2] += 6
            err = err_norm(ew, 0, Y, ynew, rtol, atol, nerr)
        if not math.isfinite(err):
            ist[1] += 1
            if trial:
                # the trial failed: the explicit pair takes the step it proposed
                trial = False
                h = h_explicit
                wait, backoff, wait_aligned, backoff_aligned = decline_trial(
                    ist, trial_aligned, wait, backoff, wait_aligned, backoff_aligned)
                continue
            if fail_status != STATUS_SINGULAR:
                fail_status = STATUS_NONFINITE
            h = 0.25 * hs
            reject = True
            continue
        fail_status = STATUS_SUCCESS
        below = keep_nonnegative(ynew, atol, sens) if err <= 1.0 else -1
        if below >= 0:
            # a state declared non-negative fell below -atol: rejected like a failed error test, with a
            # smaller step (CVODE's inequality constraints) -- unless it starts the step at 0 with a negative
            # rate, which no step size cures: the equations contradict the declaration
            if Y[below] == 0.0:
                sys_rhs_call(t, tc, Y, p, rate, K, sens)
                if K[0, below] < 0.0:
                    ist[5] = STATUS_NEGATIVE_RATE
                    fst[0] = t
                    fst[4] = below
                    return io, h
            ist[1] += 1
            h = 0.5 * hs
            reject = True
            continue
        if err <= 1.0:
            # accepted
            ist[0] += 1
            tn = t + hs
            # outputs strictly inside (t, tb) covered by this step
            while io < nt and times[io] <= tn and times[io] < tb:
                if times[io] == tn:
                    for i in range(L):
                        Yout[io, i] = ynew[i]
                else:
                    # straight into the output row (a view: free, nothing here counts references)
                    dense_eval(method, (times[io] - t) / hs, hs, Y, ynew, K, Kr, Yout[io])
                io += 1
            # event detection
            if ev_out >= 0 and tn > ev_after:
                g1 = event_value(tn, ynew, p, ev_out, ev_level, obuf)
                if math.isnan(ev_g[0]):
                    # first step past ev_after: start from the value at ev_after
                    th0 = (ev_after - t) / hs
                    dense_eval(method, th0, hs, Y, ynew, K, Kr, ybuf)
                    g0 = event_value(ev_after, ybuf, p, ev_out, ev_level, obuf)
                    tha = th0
                else:
                    g0 = ev_g[0]
                    tha = 0.0
                # scan the step's dense output in EVENT_SUBSTEPS pieces, in order, so that a level crossed
                # and crossed back within one step is found too (the interpolation points of
                # DifferentialEquations.jl's continuous callbacks)
                th_a, g_a = tha, g0
                for m in range(1, EVENT_SUBSTEPS + 1):
                    if m < EVENT_SUBSTEPS:
                        th_b = tha + (1.0 - tha) * m / EVENT_SUBSTEPS
                        dense_eval(method, th_b, hs, Y, ynew, K, Kr, ybuf)
                        g_b = event_value(t + th_b * hs, ybuf, p, ev_out, ev_level, obuf)
                    else:
                        th_b, g_b = 1.0, g1
                    if crosses(g_a, g_b, ev_dir):
                        fst[2] = locate_event(method, t, hs, Y, ynew, K, Kr, p, ev_out, ev_level, ev_dir, th_a,
                                              g_a, th_b, g_b, ybuf, obuf)
                        ist[7] = 1
                        for i in range(L):
                            Y[i] = ynew[i]
                        return io, h
                    th_a, g_a = th_b, g_b
                ev_g[0] = g1
            for i in range(L):
                if not math.isfinite(ynew[i]):
                    ist[5] = STATUS_NONFINITE
                    fst[0] = tn
                    return io, h
                Y[i] = ynew[i]
            if sens is not None:
                flush_negligible(Y, atol)
            t = tb if last else tn
            if method == METHOD_RODAS5P:
                # both methods: I controller with exponent 1/(embedded order + 1) = 1/5
                fac = min(6.0, max(0.2, inv_fifth_root(err) * 0.9)) if err > 0.0 else 6.0
                if reject:
                    fac = min(1.0, fac)
                hnew = hs * fac
                fsal = False   # K[0] no longer holds f(t, Y) for the explicit pair
                if trial:
                    trial_steps += 1
                    if hnew >= STIFF_COST_RATIO * h_explicit:
                        trial = False
                        if math.isnan(fst[1]):
                            fst[1] = t_trial
                        backoff = STIFF_BACKOFF
                        backoff_aligned = STIFF_BACKOFF
                    elif trial_steps >= STIFF_TRIAL_STEPS or hnew < STIFF_TRIAL_MIN_GAIN * h_explicit:
                        # not worth its cost (or, after its first step, not on course to be)
                        trial = False
                        hnew = h_explicit
                        wait, backoff, wait_aligned, backoff_aligned = decline_trial(
                            ist, trial_aligned, wait, backoff, wait_aligned, backoff_aligned)
                elif auto:
                    if hnew * dominant_rate_exact(jw, pv, u) < STIFF_RELEASE:
                        ist[6] = AUTO_EXPLICIT
                        wait = STIFF_BACKOFF
            else:
                for i in range(L):
                    K[0, i] = K[6, i]
                # I controller, as scipy's RK45 (Hairer's PI variant, err^0.17/errold^0.04,
                # took ~7 % more steps on the CAR-T benchmark and one more power per step)
                fac = max(0.2, min(5.0, 0.9 * inv_fifth_root(err))) if err > 0.0 else 5.0
                hnew = hs * fac
                if reject:
                    hnew = min(hnew, hs)
                if auto:
                    n_explicit += 1
                    wait -= 1
                    wait_aligned -= 1
                    # (a hand-over cannot pay for its trial within the segment's last few steps)
                    if wait <= 0 and n_explicit % STIFF_EVERY == 0 and tb - t > STIFF_TRIAL_STEPS * hnew:
                        ist[2] += 1
                        lam = dominant_rate_fd(t, tc, Y, p, rate, K, pv, u, Kr)   # Kr is free here
                        trial_aligned = (hnew * lam <= STIFF_TRIGGER and wait_aligned <= 0
                                         and hnew * lam > STIFF_TRIGGER_ALIGNED
                                         and error_alignment(ew, pv, Y, rtol, atol) >= STIFF_ALIGNMENT)
                        if hnew * lam > STIFF_TRIGGER or trial_aligned:
                            # the next step is Rodas5P's trial, at the explicit pair's own step size
                            trial = True
                            trial_steps = 0
                            h_explicit = hnew
                            t_trial = t
                            ist[6] = METHOD_RODAS5P
            reject = False
            # a clipped last step says nothing about the natural step size
            if not last or hnew < h:
                h = hnew
        else:
            ist[1] += 1
            if method == METHOD_RODAS5P:
                fac = max(0.2, inv_fifth_root(err) * 0.9)
            else:
                fac = max(0.2, 0.9 * inv_fifth_root(err))
            h = hs * fac
            reject = True
            if trial:
                # the trial failed its error test: the explicit pair takes the step it proposed
                trial = False
                h = h_explicit
                reject = False
                wait, backoff, wait_aligned, backoff_aligned = decline_trial(
                    ist, trial_aligned, wait, backoff, wait_aligned, backoff_aligned)
    if trial:
        # a trial proposed by the segment's last step: the next segment starts with the explicit pair
        ist[6] = AUTO_EXPLICIT
    return io, h


# --- the whole solve: segments, doses, switches ----------------------------------------
@hot_njit
def sens_segment_start(b, ta, tc, tc_prev, Y, p, rate, rate_prev, sw, dose_time, dose_amt, dose_dur,
                       dose_tgt, dose_state, tb, fminus, fplus, sens):
    """At a segment start: sensitivity jumps at parameter-dependent switches, and d(infusion rate)/dp.

    The jump is s+ = s- + (f- - f+) d(tau)/dp, with f evaluated on each side of the switch tau.
    """
    if sens is None:
        return
    n = N_STATES
    si, sv = sens
    M = si.shape[0] - SI_DIR
    if b > 0:
        for w in range(N_SWITCHES):
            if sw[w] == ta:
                sys_rhs_call(ta, tc_prev, Y, p, rate_prev, fminus, None)
                sys_rhs_call(ta, tc, Y, p, rate, fplus, None)
                for k in range(M):
                    kk = si[SI_DIR + k]
                    if kk < N_PARAMS:
                        dtau = sv[SV_SW + w * N_PARAMS + kk]
                        if dtau != 0.0:
                            off = n * (1 + k)
                            for i in range(n):
                                Y[off + i] += (fminus[0, i] - fplus[0, i]) * dtau
    for i in range(n * N_PARAMS):
        sv[SV_RATE + i] = 0.0
    si[1] = 0
    for d in range(dose_time.shape[0]):
        if dose_dur[d] > 0.0 and dose_time[d] <= tc < dose_time[d] + dose_dur[d] and tb > ta:
            for k in range(N_PARAMS):
                v = dose_amt[d] * sv[SV_SCALE + dose_tgt[d] * N_PARAMS + k] / dose_dur[d]
                sv[SV_RATE + dose_state[d] * N_PARAMS + k] += v
                if v != 0.0:
                    si[1] = 1


@hot_njit
def sens_bolus(Y, amount, state, target, sens):
    """Sensitivity jump of a bolus: d(amount * scale)/dp for parameter directions."""
    if sens is None:
        return
    si, sv = sens
    for k in range(si.shape[0] - SI_DIR):
        kk = si[SI_DIR + k]
        if kk < N_PARAMS:
            Y[N_STATES * (1 + k) + state] += amount * sv[SV_SCALE + target * N_PARAMS + kk]


#: Scratch space of initial_vector and outputs_from_states (one after the other, so shared).
SCRATCH_LENGTH = max((max(N_DOSE_TARGETS, 1) + max(N_SWITCHES, 1) + N_STATES) * N_PARAMS,
                     N_STATES + max(N_OUTPUTS, 1) * (1 + N_STATES + N_PARAMS))


def work_lengths(n_components, n_doses):
    """Lengths (float, int) of simulate_kernel's work arrays for an integrated vector of ``n_components``
    (N_STATES x (1 + sensitivity directions)) and ``n_doses`` doses. Plain Python, for the callers."""
    n = N_STATES
    floats = ((15 + RS) * n_components + 2 * n * n + max(N_OUTPUTS, 1) + 1 + max(N_DOSE_TARGETS, 1)
              + max(N_SWITCHES, 1) + 2 + N_SWITCHES + 2 * n_doses + 3 * n + SCRATCH_LENGTH)
    return floats, n


@njit(cache=True, error_model='numpy', _nrt=False, no_cfunc_wrapper=True)
def simulate_kernel(p, y0_override, sens, times, t0, t_end, dose_time, dose_amt, dose_dur, dose_tgt, dose_state,
                    rtol, atol, method, max_steps, ev_out, ev_level, ev_dir, ev_after, work, iwork, Yout, O, dO,
                    ist, fst):
    """Initial vector, solve from t0 to t_end, outputs: Yout[i] = Y(times[i]), O[i] = outputs.

    Values are right-continuous at doses; rows from a failure on are nan.
    ``y0_override[i]`` replaces the model's initial value of state i unless nan.
    ``sens`` is None or the sensitivity work tuple (see "the integrated system"
    above); then dO[i, o, k] = d output_o / d theta_k. ist/fst: see the module
    docstring; ``method`` METHOD_AUTO starts with Tsit5 and may hand over. ``work`` and ``iwork`` are
    scratch arrays of at least :func:`work_lengths` (the caller allocates them: nothing here allocates or
    counts references, so threads of a batch share no counters).
    One function rather than several: every extra level of numba calls re-optimises
    the whole inlined solver in LLVM, about 1 s of compile time each.
    """
    n = N_STATES
    L = Yout.shape[1]
    Yout[:, :] = math.nan
    O[:, :] = math.nan
    dO[:, :, :] = math.nan
    # scratch arrays, carved from work (views; work's layout is work_lengths')
    no = max(N_OUTPUTS, 1)
    o = 0
    Y = work[o:o + L]
    o += L
    K = work[o:o + 7 * L].reshape((7, L))
    o += 7 * L
    Kr = work[o:o + RS * L].reshape((RS, L))
    o += RS * L
    ew = work[o:o + L].reshape((1, L))  # the explicit pair's error estimate
    o += L
    ynew = work[o:o + L]
    o += L
    u = work[o:o + L]
    o += L
    f0 = work[o:o + L].reshape((1, L))  # right-hand sides for the initial step size and the switch jumps
    o += L
    f1 = work[o:o + L].reshape((1, L))
    o += L
    dT = work[o:o + L].reshape((1, L))
    o += L
    ybuf = work[o:o + L]
    o += L
    jw = work[o:o + n * n].reshape((n, n))
    o += n * n
    wmat = work[o:o + n * n].reshape((n, n))
    o += n * n
    obuf = work[o:o + no]
    o += no
    ev_g = work[o:o + 1]
    o += 1
    scale = work[o:o + max(N_DOSE_TARGETS, 1)]
    o += max(N_DOSE_TARGETS, 1)
    sw = work[o:o + max(N_SWITCHES, 1)]
    o += max(N_SWITCHES, 1)
    nd = dose_time.shape[0]
    bp = work[o:o + 2 + N_SWITCHES + 2 * nd]
    o += 2 + N_SWITCHES + 2 * nd
    n_inf = 0
    for d in range(nd):
        if dose_dur[d] > 0.0:
            n_inf += 1
    nr = n if n_inf > 0 else 0
    rate = work[o:o + nr]
    o += n
    rate_prev = work[o:o + nr]
    o += n
    pv = work[o:o + n]   # the stiffness test's power-iteration vector
    o += n
    if o + SCRATCH_LENGTH > work.shape[0] or iwork.shape[0] < n:
        raise ValueError("simulate_kernel: work arrays shorter than work_lengths()")
    scratch = work[o:]
    piv = iwork[:n]
    for i in range(L):
        Y[i] = 0.0
        dT[0, i] = 0.0
    reset_power_vector(pv)
    for i in range(nr):
        rate[i] = 0.0
        rate_prev[i] = 0.0
    ev_g[0] = math.nan
    initial_vector(p, sens, Y, scratch)
    for i in range(n):
        if not math.isnan(y0_override[i]):
            Y[i] = y0_override[i]
            zero_parameter_sensitivity(Y, i, sens)
    nt = times.shape[0]
    for i in range(8):
        ist[i] = 0
    fst[0] = math.nan
    fst[1] = math.nan
    fst[2] = math.nan
    fst[4] = -1.0
    if method == METHOD_AUTO:
        ist[6] = AUTO_EXPLICIT
        fst[3] = -1.0
    else:
        ist[6] = method
        fst[3] = 1.0
    m_dose_scale(p, scale)
    m_switch(p, sw)
    for i in range(L):
        if not math.isfinite(Y[i]):
            ist[5] = STATUS_NONFINITE
            fst[0] = t0
            return
    # breakpoints: t0, t_end, switches, dose starts, infusion ends
    nb = 0
    bp[nb] = t0
    nb += 1
    bp[nb] = t_end
    nb += 1
    for i in range(N_SWITCHES):
        if t0 < sw[i] < t_end:
            bp[nb] = sw[i]
            nb += 1
    for d in range(nd):
        if t0 < dose_time[d] < t_end:
            bp[nb] = dose_time[d]
            nb += 1
        te = dose_time[d] + dose_dur[d]
        if dose_dur[d] > 0.0 and t0 < te < t_end:
            bp[nb] = te
            nb += 1
    nb = sort_unique(bp, nb)
    io = 0
    h = -1.0
    tc_prev = t0
    for b in range(nb):
        ta = bp[b]
        tb = bp[b + 1] if b + 1 < nb else ta
        tc = 0.5 * (ta + tb) if tb > ta else ta
        # infusion rates active on (ta, tb)
        for i in range(rate.shape[0]):
            rate_prev[i] = rate[i]
            rate[i] = 0.0
        for d in range(nd):
            if dose_dur[d] > 0.0 and dose_time[d] <= tc < dose_time[d] + dose_dur[d] and tb > ta:
                rate[dose_state[d]] += dose_amt[d] * scale[dose_tgt[d]] / dose_dur[d]
        sens_segment_start(b, ta, tc, tc_prev, Y, p, rate, rate_prev, sw, dose_time, dose_amt,
                           dose_dur, dose_tgt, dose_state, tb, f0, f1, sens)
        # bolus doses at ta
        jumped = False
        for d in range(nd):
            if dose_dur[d] == 0.0 and dose_time[d] == ta:
                Y[dose_state[d]] += dose_amt[d] * scale[dose_tgt[d]]
                sens_bolus(Y, dose_amt[d], dose_state[d], dose_tgt[d], sens)
                jumped = True
        # event: a dose may carry an output across the level
        if ev_out >= 0 and ta >= ev_after:
            gj = event_value(ta, Y, p, ev_out, ev_level, obuf)
            if not math.isnan(ev_g[0]) and crosses(ev_g[0], gj, ev_dir):
                fst[2] = ta
                ist[7] = 1
                break
            ev_g[0] = gj
        while io < nt and times[io] <= ta:
            for i in range(L):
                Yout[io, i] = Y[i]
            io += 1
        if tb <= ta:
            break
        hmax = tb - ta
        if h <= 0.0 or jumped:
            h = initial_step(ta, tc, Y, p, rate, f0, f1, ybuf, rtol, atol, hmax, ist, sens)
        io, h = integrate_segment(ta, tb, tc, Y, p, rate, h, rtol, atol, max_steps, times, io, Yout, ev_out,
                                  ev_level, ev_dir, ev_after, ev_g, K, Kr, ew, ynew, u, dT, jw, wmat, piv,
                                  ybuf, obuf, pv, ist, fst, sens)
        if ist[5] != STATUS_SUCCESS or ist[7] == 1:
            break
        tc_prev = tc
    fst[3] = h
    nvalid = 0
    while nvalid < times.shape[0] and not math.isnan(Yout[nvalid, 0]):
        nvalid += 1
    outputs_from_states(times, Yout, p, sens, O, dO, nvalid, scratch)


@hot_njit
def initial_vector(p, sens, Y0, scratch):
    """Y0[:n] = initial states; sensitivity blocks = d y0 / d theta_k; dose-scale and switch derivatives.
    ``scratch``: work space (work_lengths)."""
    n = N_STATES
    m_init(p, Y0)
    if sens is not None:
        si, sv = sens
        nd = max(N_DOSE_TARGETS, 1)
        ns = max(N_SWITCHES, 1)
        tmp = scratch[:nd * N_PARAMS].reshape((nd, N_PARAMS))
        m_dose_scale_dp(p, tmp)
        for i in range(nd):
            for k in range(N_PARAMS):
                sv[SV_SCALE + i * N_PARAMS + k] = tmp[i, k]
        tmp = scratch[nd * N_PARAMS:(nd + ns) * N_PARAMS].reshape((ns, N_PARAMS))
        m_switch_dp(p, tmp)
        for i in range(ns):
            for k in range(N_PARAMS):
                sv[SV_SW + i * N_PARAMS + k] = tmp[i, k]
        idp = scratch[(nd + ns) * N_PARAMS:(nd + ns + n) * N_PARAMS].reshape((n, N_PARAMS))
        m_init_dp(p, idp)
        for k in range(si.shape[0] - SI_DIR):
            off = n * (1 + k)
            kk = si[SI_DIR + k]
            for i in range(n):
                if kk < N_PARAMS:
                    Y0[off + i] = idp[i, kk]
                else:
                    Y0[off + i] = 1.0 if (kk - N_PARAMS) == i else 0.0


@hot_njit
def outputs_from_states(times, Yout, p, sens, O, dO, nvalid, scratch):
    """O[i, :] = outputs at times[i]; dO[i, o, k] = d output_o / d theta_k (if sdir non-empty).
    ``scratch``: work space (work_lengths)."""
    n = N_STATES
    no = max(N_OUTPUTS, 1)
    yrow = scratch[:n]
    orow = scratch[n:n + no]
    ody = scratch[n + no:n + no + no * n].reshape((no, n))
    odp = scratch[n + no + no * n:n + no + no * n + no * N_PARAMS].reshape((no, N_PARAMS))
    for i in range(nvalid):
        for j in range(n):  # private copies, no views of the (possibly shared) output arrays
            yrow[j] = Yout[i, j]
        m_out(times[i], yrow, p, orow)
        for o in range(N_OUTPUTS):
            O[i, o] = orow[o]
        if sens is not None:
            si = sens[0]
            M = si.shape[0] - SI_DIR
            m_out_dy(times[i], yrow, p, ody)
            m_out_dp(times[i], yrow, p, odp)
            for o in range(N_OUTPUTS):
                for k in range(M):
                    off = n * (1 + k)
                    acc = 0.0
                    for j in range(n):
                        acc += ody[o, j] * Yout[i, off + j]
                    kk = si[SI_DIR + k]
                    if kk < N_PARAMS:
                        acc += odp[o, kk]
                    dO[i, o, k] = acc


@hot_njit
def zero_parameter_sensitivity(Y0, i, sens):
    """A given initial value of state i does not depend on parameters."""
    if sens is not None:
        si = sens[0]
        for k in range(si.shape[0] - SI_DIR):
            if si[SI_DIR + k] < N_PARAMS:
                Y0[N_STATES * (1 + k) + i] = 0.0


@njit(cache=True, parallel=True, _nrt=False, no_cfunc_wrapper=True)
def simulate_batch_kernel(P, times, t0, t_end, dose_time, dose_amt, dose_dur, dose_tgt, dose_state, n_doses,
                          rtol, atol, method, max_steps, ev_out, ev_level, ev_dir, ev_after, work, iwork, y0keep,
                          Yout, O, dO, ist, fst):
    """simulate_kernel over rows of P (n_sets, np); dose arrays are (n_sets, max_doses) with n_doses[s] used.

    ``times`` is (1, n_times), one grid for every set, or (n_sets, n_times), a grid per set; ``t_end``,
    ``ev_level`` and ``ev_after`` are (n_sets,): each set's end time and event level and start.
    ``work`` (n_chunks, work_lengths[0]) and ``iwork`` (n_chunks, work_lengths[1]): the sets are solved in
    n_chunks contiguous runs, each with its own work row. ``y0keep``: N_STATES nans (no overrides).
    """
    nsets = P.shape[0]
    nch = work.shape[0]
    grid_stride = 0 if times.shape[0] == 1 else 1   # row s * stride of times; 0: one shared grid
    for c in prange(nch):
        for s in range(c * nsets // nch, (c + 1) * nsets // nch):
            nd = n_doses[s]
            simulate_kernel(P[s], y0keep, None, times[s * grid_stride], t0, t_end[s], dose_time[s, :nd],
                            dose_amt[s, :nd], dose_dur[s, :nd], dose_tgt[s, :nd], dose_state[s, :nd], rtol, atol,
                            method, max_steps, ev_out, ev_level[s], ev_dir, ev_after[s], work[c], iwork[c], Yout[s],
                            O[s], dO[s], ist[s], fst[s])
