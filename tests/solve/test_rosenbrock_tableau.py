"""Verification of the Rodas5P tableau in kinetics/solve/_rosenbrock_tableau.py.

A reference step is implemented here in plain numpy (dense J, np.linalg.solve)
directly from the algorithm stated in the tableau module's docstring, and the
following documented properties are checked:

* Steinebach, BIT Numer. Math. 63:27 (2023), doi:10.1007/s10543-023-00967-x:
  Rodas5P has order 5, an embedded solution of order 4, a dense output of
  order 4, and is L-stable / stiffly accurate.
* Rosenbrock order conditions (Hairer & Wanner, Solving ODEs II, Sec. IV.7):
  sum_j b_j Phi_j(t) = 1/gamma(t) for every rooted tree t with |t| <= p.
"""

import importlib.util
import itertools
import pathlib

import numpy as np
import pytest

try:
    from kinetics.solve import _rosenbrock_tableau as tab
except ImportError:  # package not importable from this cwd: load by path
    _path = (pathlib.Path(__file__).resolve().parents[2]
             / "kinetics" / "solve" / "_rosenbrock_tableau.py")
    _spec = importlib.util.spec_from_file_location("_rosenbrock_tableau", _path)
    tab = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(tab)


S = tab.NSTAGES
GAMMA = tab.GAMMA
A = np.array(tab.A, dtype=float)
CC = np.array(tab.C, dtype=float)
CN = np.array(tab.C_NODES, dtype=float)
D = np.array(tab.D, dtype=float)
H = np.array(tab.H, dtype=float)


# --------------------------------------------------------------------------
# Reference one-step implementation (plain numpy)
# --------------------------------------------------------------------------
def rodas_step(f, jac, dfdt, t, y, h):
    """One step; returns (y1, yhat, K) with K = H @ k (3 x n)."""
    n = y.size
    W = np.eye(n) / (h * GAMMA) - jac(t, y)
    dT = dfdt(t, y)
    k = np.zeros((S, n))
    u = y
    for i in range(S):
        u = y + A[i, :i] @ k[:i]
        r = f(t + CN[i] * h, u) + (CC[i, :i] / h) @ k[:i] + D[i] * h * dT
        k[i] = np.linalg.solve(W, r)
    y1 = u + k[S - 1]
    yhat = u  # = y1 - k[S-1]
    return y1, yhat, H @ k


def dense(theta, y0, y1, K):
    return (1.0 - theta) * y0 + theta * (
        y1 + (1.0 - theta) * (K[0] + theta * (K[1] + theta * K[2])))


def slope(hs, errs):
    return np.polyfit(np.log(hs), np.log(errs), 1)[0]


# --------------------------------------------------------------------------
# Non-stiff, nonlinear, non-autonomous test problem with closed-form solution
# (manufactured solution): y' = F(y) + g(t), F(y) = (-y0*y1, y0 - y1^2),
# g(t) = u'(t) - F(u(t)) with exact solution
#   u(t) = (1 + 0.5 sin 2t,  exp(-t) + 0.3 cos t).
# --------------------------------------------------------------------------
def u_exact(t):
    return np.array([1.0 + 0.5 * np.sin(2 * t), np.exp(-t) + 0.3 * np.cos(t)])


def du_exact(t):
    return np.array([np.cos(2 * t), -np.exp(-t) - 0.3 * np.sin(t)])


def d2u_exact(t):
    return np.array([-2.0 * np.sin(2 * t), np.exp(-t) - 0.3 * np.cos(t)])


def F(y):
    return np.array([-y[0] * y[1], y[0] - y[1] ** 2])


def JF(y):
    return np.array([[-y[1], -y[0]], [1.0, -2.0 * y[1]]])


def f_ms(t, y):
    return F(y) + du_exact(t) - F(u_exact(t))


def jac_ms(t, y):
    return JF(y)


def dfdt_ms(t, y):
    # d/dt [u'(t) - F(u(t))] = u''(t) - JF(u(t)) u'(t)
    u = u_exact(t)
    return d2u_exact(t) - JF(u) @ du_exact(t)


# --------------------------------------------------------------------------
# (0) structural sanity of the transcription
# --------------------------------------------------------------------------
def test_shapes_and_structure():
    assert A.shape == (S, S) and CC.shape == (S, S)
    assert CN.shape == (S,) and D.shape == (S,) and H.shape == (3, S)
    assert np.all(np.triu(A) == 0.0) and np.all(np.triu(CC) == 0.0)
    assert D[0] == GAMMA
    # stiffly accurate structure: rows 6,7 of A extend row 5 by ones
    assert np.array_equal(A[6, :5], A[5, :5]) and A[6, 5] == 1.0
    assert np.array_equal(A[7, :6], A[6, :6]) and A[7, 6] == 1.0
    assert tab.B == tuple(A[S - 1, :S - 1]) + (1.0,)
    assert tab.BTILDE == (0.0,) * (S - 1) + (1.0,)
    for name in ("A", "C", "H"):
        for row in getattr(tab, name):
            assert all(isinstance(x, float) for x in row)


# --------------------------------------------------------------------------
# (e) algebraic order conditions (Hairer & Wanner II, Sec. IV.7, Table 7.1):
#   Gamma^{-1} = I/gamma - C, alpha = A Gamma, beta = alpha + Gamma,
#   Phi_j(leaf) = 1, Phi_j([t1]) = sum_k beta_jk Phi_k(t1),
#   Phi_j([t1..tm], m>=2) = prod_i sum_k alpha_jk Phi_k(ti);
#   order p  <=>  b . Phi(t) = 1/density(t) for all trees with |t| <= p.
# --------------------------------------------------------------------------
def _trees(n, _cache={}):
    """Rooted trees with n vertices as sorted tuples of (size, subtree)."""
    if n in _cache:
        return _cache[n]
    if n == 1:
        _cache[1] = [()]
        return _cache[1]
    out = set()

    def gen(rem, lo, cur):
        if rem == 0:
            out.add(tuple(cur))
            return
        for m in range(1, rem + 1):
            for sub in _trees(m):
                key = (m, sub)
                if key >= lo:
                    gen(rem - m, key, cur + [key])

    gen(n - 1, (0, ()), [])
    _cache[n] = sorted(out)
    return _cache[n]


def _density(t):
    d = 1 + sum(m for m, _ in t)
    for _, sub in t:
        d *= _density(sub)
    return d


def _classical():
    Ginv = np.eye(S) / GAMMA - CC
    G = np.linalg.inv(Ginv)
    alpha = A @ G
    b = np.array(tab.B) @ G
    bhat = A[S - 1] @ G
    return G, alpha, alpha + G, b, bhat


def _phi(t, alpha, beta):
    if len(t) == 0:
        return np.ones(S)
    if len(t) == 1:
        return beta @ _phi(t[0][1], alpha, beta)
    v = np.ones(S)
    for _, sub in t:
        v = v * (alpha @ _phi(sub, alpha, beta))
    return v


def _max_residual(w, order, alpha, beta, theta=1.0):
    return max(abs(w @ _phi(t, alpha, beta) - theta ** n / _density(t))
               for n in range(1, order + 1) for t in _trees(n))


def test_tree_counts():
    # number of rooted trees of order 1..6 (OEIS A000081)
    assert [len(_trees(n)) for n in range(1, 7)] == [1, 1, 2, 4, 9, 20]


def test_order_conditions():
    G, alpha, beta, b, bhat = _classical()
    # c_i = sum_j alpha_ij and d_i = sum_j Gamma_ij (Hairer-Wanner (7.4'))
    np.testing.assert_allclose(alpha.sum(axis=1), CN, atol=1e-13)
    np.testing.assert_allclose(G.sum(axis=1), D, atol=1e-13)
    # main method: order 5 exactly (order-6 conditions not all satisfied)
    assert _max_residual(b, 5, alpha, beta) < 1e-12
    assert _max_residual(b, 6, alpha, beta) > 1e-6
    # embedded method: order 4 exactly
    assert _max_residual(bhat, 4, alpha, beta) < 1e-12
    assert _max_residual(bhat, 5, alpha, beta) > 1e-6
    # dense output: b(theta) . Phi(t) = theta^|t| / density(t), order 4
    m = np.array(tab.B)
    for theta in (0.1, 0.3, 0.5, 0.7, 0.9):
        m_th = theta * m + theta * (1 - theta) * (
            H[0] + theta * H[1] + theta ** 2 * H[2])
        b_th = m_th @ G
        assert _max_residual(b_th, 4, alpha, beta, theta) < 1e-12
        assert _max_residual(b_th, 5, alpha, beta, theta) > 1e-6


# --------------------------------------------------------------------------
# (a) observed global order of y_{n+1}: 5 (Steinebach 2023)
# --------------------------------------------------------------------------
def test_global_convergence_order_5():
    T = 1.0
    hs, errs = [], []
    for n in (8, 16, 32, 64):
        h = T / n
        y = u_exact(0.0)
        for i in range(n):
            y, _, _ = rodas_step(f_ms, jac_ms, dfdt_ms, i * h, y, h)
        hs.append(h)
        errs.append(np.max(np.abs(y - u_exact(T))))
    p = slope(hs, errs)
    assert abs(p - tab.ORDER) < 0.3, (p, errs)


# --------------------------------------------------------------------------
# (b) embedded solution: order 4 (Steinebach 2023), i.e. local error
#     O(h^5); the main solution's local error is O(h^6).
# --------------------------------------------------------------------------
def test_embedded_local_order_4():
    t0 = 0.3
    y0 = u_exact(t0)
    hs = [0.2 / 2 ** j for j in range(4)]
    e_main, e_emb = [], []
    for h in hs:
        y1, yhat, _ = rodas_step(f_ms, jac_ms, dfdt_ms, t0, y0, h)
        ref = u_exact(t0 + h)
        e_main.append(np.max(np.abs(y1 - ref)))
        e_emb.append(np.max(np.abs(yhat - ref)))
    p_emb = slope(hs, e_emb) - 1.0
    p_main = slope(hs, e_main) - 1.0
    assert abs(p_emb - tab.EMBEDDED_ORDER) < 0.3, (p_emb, e_emb)
    assert abs(p_main - tab.ORDER) < 0.3, (p_main, e_main)


# --------------------------------------------------------------------------
# (c) dense output: order 4 (Steinebach 2023), i.e. local interpolation
#     error O(h^5) at fixed theta in (0, 1), starting from the exact y0.
# --------------------------------------------------------------------------
@pytest.mark.parametrize("theta", [0.25, 0.5, 0.75])
def test_dense_output_order_4(theta):
    t0 = 0.3
    y0 = u_exact(t0)
    hs = [0.2 / 2 ** j for j in range(4)]
    errs = []
    for h in hs:
        y1, _, K = rodas_step(f_ms, jac_ms, dfdt_ms, t0, y0, h)
        errs.append(np.max(np.abs(dense(theta, y0, y1, K)
                                  - u_exact(t0 + theta * h))))
    p = slope(hs, errs) - 1.0
    assert abs(p - tab.DENSE_ORDER) < 0.3, (p, errs)


def test_dense_output_endpoints():
    y0 = u_exact(0.3)
    y1, _, K = rodas_step(f_ms, jac_ms, dfdt_ms, 0.3, y0, 0.1)
    np.testing.assert_array_equal(dense(0.0, y0, y1, K), y0)
    np.testing.assert_allclose(dense(1.0, y0, y1, K), y1, rtol=0, atol=1e-15)


# --------------------------------------------------------------------------
# (d) stiff stability: L-stable (R(-inf) = 0, Steinebach 2023).
# --------------------------------------------------------------------------
def test_stability_function_l_stable():
    G, alpha, beta, b, _ = _classical()

    def R(z):  # R(z) = 1 + z b^T (I - z beta)^{-1} 1   (Hairer-Wanner (7.15))
        return 1.0 + z * (b @ np.linalg.solve(np.eye(S) - z * beta,
                                              np.ones(S)))

    assert abs(R(-1e12)) < 1e-9
    assert abs(R(-1e6)) < 1e-4
    # A-stability spot check on the imaginary axis and left half-plane
    for x, y in itertools.product((-1e-3, -1.0, -100.0), (0.0, 1.0, 10.0, 1e3)):
        assert abs(R(complex(x, y))) <= 1.0 + 1e-12


def test_stiff_linear_one_big_step():
    # y' = M y with eigenvalues -1 and -1e6 (non-normal mixing via P)
    P = np.array([[1.0, 1.0], [0.0, 1.0]])
    lam = np.array([-1.0, -1.0e6])
    M = P @ np.diag(lam) @ np.linalg.inv(P)
    f = lambda t, y: M @ y  # noqa: E731
    jac = lambda t, y: M  # noqa: E731
    dfdt = lambda t, y: np.zeros(2)  # noqa: E731
    y0 = P @ np.array([1.0, 1.0])  # unit amplitude in both modes
    h = 0.5
    y1, yhat, _ = rodas_step(f, jac, dfdt, 0.0, y0, h)
    z = np.linalg.solve(P, y1)  # modal amplitudes after one step
    assert np.all(np.isfinite(y1))
    assert abs(z[1]) < 1e-4                      # stiff mode damped to ~0
    assert abs(z[0] - np.exp(-h)) < 1e-4         # smooth mode accurate
    assert np.all(np.abs(np.linalg.solve(P, yhat)) < 1.0)


def test_prothero_robinson_stiff_non_autonomous():
    # y' = lam (y - phi(t)) + phi'(t), lam = -1e6, phi = sin t; y(0) = phi(0).
    # Stiffly accurate + L-stable: one big step lands on phi(t1) up to
    # O(1/|lam|) (exercises the D * h * dT term under stiffness).
    lam = -1.0e6
    f = lambda t, y: lam * (y - np.sin(t)) + np.cos(t)  # noqa: E731
    jac = lambda t, y: np.array([[lam]])  # noqa: E731
    dfdt = lambda t, y: np.array([-lam * np.cos(t) - np.sin(t)])  # noqa: E731
    h = 0.5
    y1, _, K = rodas_step(f, jac, dfdt, 0.0, np.array([0.0]), h)
    assert abs(y1[0] - np.sin(h)) < 1e-5
    ym = dense(0.5, np.array([0.0]), y1, K)
    assert abs(ym[0] - np.sin(0.5 * h)) < 1e-3
