"""Model -> Python source of numba kernels for its equations.

Every generated function takes flat float64 arrays and writes into an output
array; user-chosen names never appear in the source (symbols are printed as
array elements), so a model file cannot inject code.

Array layouts (n = states, np = parameters, no = outputs, nd = dose targets,
ns = switches); ``t`` is time, ``tc`` the time at which conditions on time are
evaluated (the midpoint of the current segment, so a switch is never straddled):

==================  ============================================  =========================
function            arguments                                      writes
==================  ============================================  =========================
m_rhs               t, tc, y[n], p[np], out[:, L], r               out[r, :n] = dy/dt
m_jac               t, tc, y, p, out[n, n]                         d rhs_i / d y_j
m_dfdt              t, tc, y, p, out[n]                            d rhs / d t
m_sens_rhs          t, tc, y, p, M, out[:, L], r, v                out[r, n(1+k)+i] = (J s_k)_i, k < M;
                                                                   fpv part of v = df/dp
m_sens_jac          t, tc, y, p, M, v                              ablk part of v = (d2f/dy2) s_k;
                                                                   gv part of v = d2f/(dp dy)
m_sens_solve_add    v, b[:, L], r, M                               b[r, n(1+k)+i] += (A_k b[r, :n])_i
m_sens_dfdt         t, tc, y, p, M, out[:, L], v                   out[0, n(1+k)+i] = (dJ/dt s_k)_i;
                                                                   fptv part of v = d2f/(dp dt)
m_init              p, out[n]                                      initial state
m_init_dp           p, out[n, np]                                  d initial / d p
m_out               t, y, p, out[no]                               outputs
m_out_dy / m_out_dp t, y, p, out[no, n] / out[no, np]              output derivatives
m_switch            p, out[ns]                                     switch times
m_switch_dp         p, out[ns, np]
m_dose_scale        p, out[nd]                                     dose scale factors
m_dose_scale_dp     p, out[nd, np]
==================  ============================================  =========================

The sensitivity functions (``m_sens_*``) read the sensitivity vectors ``s_k = y[n(1+k): n(2+k)]`` of
the integrated vector ``y`` and are written out straight-line on the structural non-zeros only; ``v``
is the solver's float work array, laid out at the generated offsets ``SV_*`` (see
:func:`_sensitivity_source`, which also defines the integer work layout ``SI_*``).
"""

from __future__ import annotations

from collections.abc import Sequence

import sympy as sp
from sympy.printing.pycode import PythonCodePrinter

from kinetics.model import TIME, Model

__all__ = ["generate_model_source", "model_fingerprint"]

#: Decorator of the generated functions that are called, not inlined: the solver helpers' options
#: (HOT_OPTIONS in kinetics/solve/_numerics.py), written out because the generated source comes first.
_HOT_DECORATOR = "@njit(error_model='numpy', no_cpython_wrapper=True, no_cfunc_wrapper=True, _nrt=False)"

_TC = sp.Symbol("tc", real=True)


class _KernelPrinter(PythonCodePrinter):
    """Prints sympy expressions as numba-compatible Python over flat arrays."""

    def __init__(self, names: dict[sp.Symbol, str]) -> None:
        super().__init__({"fully_qualified_modules": True, "standard": "python3"})
        self._names = names

    def _print_Symbol(self, expr: sp.Symbol) -> str:  # noqa: N802 (sympy naming)
        return self._names.get(expr, expr.name)

    def _print_Float(self, expr: sp.Float) -> str:  # noqa: N802
        return repr(float(expr))

    def _print_Rational(self, expr: sp.Rational) -> str:  # noqa: N802
        return f"({float(expr.p)!r}/{float(expr.q)!r})"

    def _print_Integer(self, expr: sp.Integer) -> str:  # noqa: N802
        return repr(float(expr)) if abs(int(expr)) > 2**52 else str(int(expr))

    def _print_Pow(self, expr: sp.Pow, rational: bool = False) -> str:  # noqa: N802
        base, exp = expr.as_base_exp()
        if exp == -1:
            return f"(1.0/{self.parenthesize(base, 1000)})"
        if exp.is_Integer and 2 <= int(exp) <= 4:
            b = self.parenthesize(base, 1000)
            return "(" + "*".join([b] * int(exp)) + ")"
        if exp == sp.Rational(1, 2):
            return f"math.sqrt({self._print(base)})"
        return f"({self.parenthesize(base, 1000)}**{self.parenthesize(exp, 1000)})"

    def _print_Piecewise(self, expr: sp.Piecewise) -> str:  # noqa: N802
        out = self._print(expr.args[-1].expr)
        if expr.args[-1].cond is not sp.true:
            out = "math.nan"
        for e, c in reversed(expr.args[:-1]):
            out = f"(({self._print(e)}) if ({self._print(c)}) else ({out}))"
        return out

    def _print_BooleanTrue(self, expr: sp.Basic) -> str:  # noqa: N802
        return "True"

    def _print_BooleanFalse(self, expr: sp.Basic) -> str:  # noqa: N802
        return "False"


def _to_piecewise(expr: sp.Expr) -> sp.Expr:
    """Rewrite Min/Max/Abs/sign as Piecewise so derivatives stay Heaviside-free."""
    return expr.replace(
        lambda e: isinstance(e, (sp.Min, sp.Max, sp.Abs, sp.sign)), lambda e: e.rewrite(sp.Piecewise)
    )


def _conditions_at_tc(expr: sp.Expr) -> sp.Expr:
    """Evaluate conditions on ``t`` at the segment time ``tc`` (see module docstring)."""
    rels = [r for r in expr.atoms(sp.core.relational.Relational) if TIME in r.free_symbols]
    return expr.xreplace({r: r.xreplace({TIME: _TC}) for r in rels}) if rels else expr


def _emit(name: str, args: str, targets: Sequence[tuple[str, sp.Expr]], printer: _KernelPrinter,
          zero: Sequence[str] = (), inline: bool = False) -> str:
    """One njit function: CSE temporaries, then assignments to the targets.

    Zero targets are skipped when ``zero`` names arrays to clear first; otherwise
    every target is written (so the output may be a longer array, e.g. ``Y[:n]``).
    """
    nonzero = [(lhs, e) for lhs, e in targets if not (zero and e.is_number and e == 0)]
    deco = ("@njit(inline='always', error_model='numpy')" if inline
            else _HOT_DECORATOR)
    lines = [deco, f"def {name}({args}):"]
    for arr in zero:
        lines.append(f"    {arr}[...] = 0.0")
    if nonzero:
        temps, reduced = sp.cse([e for _, e in nonzero], symbols=sp.numbered_symbols("x_", real=True),
                                optimizations="basic")
        for sym, e in temps:
            lines.append(f"    {sym.name} = {printer.doprint(e)}")
        for (lhs, _), e in zip(nonzero, reduced):
            lines.append(f"    {lhs} = {printer.doprint(e)}")
    if len(lines) == 2:
        lines.append("    return")
    return "\n".join(lines) + "\n"


def generate_model_source(model: Model) -> str:
    """Python source defining the model's numba kernels (see the module docstring)."""
    ys = [s.symbol for s in model.states]
    ps = [p.symbol for p in model.parameters]
    n, npar = len(ys), len(ps)
    s_syms = [sp.Symbol(f"s__{i}", real=True) for i in range(n)]
    names: dict[sp.Symbol, str] = {TIME: "t", _TC: "tc"}
    names.update({y: f"y[{i}]" for i, y in enumerate(ys)})
    names.update({p: f"p[{k}]" for k, p in enumerate(ps)})
    names.update({s: f"s[{i}]" for i, s in enumerate(s_syms)})
    pr = _KernelPrinter(names)

    f = [_conditions_at_tc(_to_piecewise(e)) for e in model.odes]
    jac = [[sp.diff(fi, yj) for yj in ys] for fi in f]
    dfdp = [[sp.diff(fi, pk) for pk in ps] for fi in f]
    init = [_to_piecewise(s.initial) for s in model.states]
    outs = [_to_piecewise(o.expression) for o in model.outputs]
    sw = [_to_piecewise(e) for e in model.switches]
    scale = [_to_piecewise(d.scale) for d in model.dose_targets]
    is_autonomous = all(TIME not in fi.free_symbols for fi in f)

    rhs_args = "t, tc, y, p, out"
    parts = [
        _emit("m_rhs", "t, tc, y, p, out, r", [(f"out[r, {i}]", e) for i, e in enumerate(f)], pr, inline=True),
        _emit("m_jac", rhs_args, [(f"out[{i}, {j}]", jac[i][j]) for i in range(n) for j in range(n)], pr,
              zero=["out"]),
        _emit("m_dfdt", rhs_args, [(f"out[{i}]", sp.diff(fi, TIME)) for i, fi in enumerate(f)], pr),
        _emit("m_init", "p, out", [(f"out[{i}]", e) for i, e in enumerate(init)], pr),
        _emit("m_init_dp", "p, out", [(f"out[{i}, {k}]", sp.diff(e, pk)) for i, e in enumerate(init)
                                      for k, pk in enumerate(ps)], pr, zero=["out"]),
        _emit("m_out", "t, y, p, out", [(f"out[{i}]", e) for i, e in enumerate(outs)], pr, zero=["out"]),
        _emit("m_out_dy", "t, y, p, out", [(f"out[{i}, {j}]", sp.diff(e, yj)) for i, e in enumerate(outs)
                                           for j, yj in enumerate(ys)], pr, zero=["out"]),
        _emit("m_out_dp", "t, y, p, out", [(f"out[{i}, {k}]", sp.diff(e, pk)) for i, e in enumerate(outs)
                                           for k, pk in enumerate(ps)], pr, zero=["out"]),
        _emit("m_switch", "p, out", [(f"out[{i}]", e) for i, e in enumerate(sw)], pr, zero=["out"]),
        _emit("m_switch_dp", "p, out", [(f"out[{i}, {k}]", sp.diff(e, pk)) for i, e in enumerate(sw)
                                        for k, pk in enumerate(ps)], pr, zero=["out"]),
        _emit("m_dose_scale", "p, out", [(f"out[{i}]", e) for i, e in enumerate(scale)], pr, zero=["out"]),
        _emit("m_dose_scale_dp", "p, out", [(f"out[{i}, {k}]", sp.diff(e, pk)) for i, e in enumerate(scale)
                                            for k, pk in enumerate(ps)], pr, zero=["out"]),
    ]
    parts.append(_sensitivity_source(jac, dfdp, ys, ps, pr, is_autonomous, len(scale), len(sw)))
    parts.append(_sparse_lu_source([[not _is_zero(e) for e in row] for row in jac]))
    header = (
        "# Generated by kinetics.codegen from a model file; do not edit.\n"
        "import math\n"
        "import numpy as np\n"
        "from numba import njit, prange\n\n"
        f"N_STATES = {n}\n"
        f"N_PARAMS = {npar}\n"
        f"N_OUTPUTS = {len(outs)}\n"
        f"N_SWITCHES = {len(sw)}\n"
        f"N_DOSE_TARGETS = {len(scale)}\n"
        f"AUTONOMOUS = {is_autonomous}\n"
        f"NONNEGATIVE = np.array({[i for i, s in enumerate(model.states) if s.nonnegative]!r}, dtype=np.int64)\n\n"
    )
    return header + "\n\n".join(parts)


def _is_zero(e: sp.Expr) -> bool:
    """Structurally zero (a zero number), as opposed to an expression that may evaluate to 0."""
    return bool(e.is_number and e == 0)


def _int_array(name: str, values: Sequence[int]) -> str:
    return f"{name} = np.array([{', '.join(str(int(v)) for v in values)}], dtype=np.int64)"


def _cse_lines(targets: Sequence[tuple[str, sp.Expr]], printer: _KernelPrinter) -> list[str]:
    """Body lines ``target = expr`` for every target, sharing common subexpressions."""
    if not targets:
        return []
    temps, reduced = sp.cse([e for _, e in targets], symbols=sp.numbered_symbols("x_", real=True),
                            optimizations="basic")
    lines = [f"    {sym.name} = {printer.doprint(e)}" for sym, e in temps]
    lines += [f"    {lhs} = {printer.doprint(e)}" for (lhs, _), e in zip(targets, reduced)]
    return lines


def _sum_of_products(terms: Sequence[tuple[str, str]]) -> str:
    return " + ".join(f"{a}*{b}" for a, b in terms) if terms else "0.0"


def _sensitivity_source(jac: list[list[sp.Expr]], dfdp: list[list[sp.Expr]], ys: list[sp.Symbol],
                        ps: list[sp.Symbol], printer: _KernelPrinter, autonomous: bool, n_dose_targets: int,
                        n_switches: int) -> str:
    """Straight-line kernels for forward sensitivities of M directions, and the layout of their work arrays.

    The sensitivity right-hand side of direction k is J s_k + df/dp_k and the corresponding block of the
    augmented Jacobian is A_k = (d2f/dy2) s_k + d2f/(dp_k dy). Only structural non-zeros are evaluated:
    J on its pattern (once per call, shared by all directions), the second derivatives once per call and
    contracted with each s_k, and df/dp, d2f/(dp dy) for every parameter on their patterns, from which the
    solver adds the one parameter column a direction needs. A_k's pattern is a subset of J's (a
    derivative of a structural zero is zero).

    Work arrays (the solver's ``sens = (si, sv)``; two arrays, because numba pays two atomic
    reference-count operations per array argument at most calls, and the work travels through the step
    loop): ``si`` int64 = flags[2], FP_PTR[np+1], FP_ROW[FP_NNZ], G_PTR[np+1], G_POS[G_NNZ], sdir[M]
    (``SI_PATTERN`` holds the middle four: df/dp and d2f/(dp dy) entries sorted by parameter, with the
    state row / the position in the A pattern of each); ``sv`` float64 = fpv[FP_NNZ], gv[G_NNZ],
    fptv[FP_NNZ] (df/dp, d2f/(dp dy), d2f/(dp dt) on their patterns), rate_dp[n, np],
    scale_dp[max(nd,1), np], sw_dp[max(ns,1), np], ablk[M, A_NNZ] (row-major), at offsets ``SV_*``.
    ``A_ROW``/``A_COL`` give the (row, column) of each entry of the A pattern.
    """
    n, npar = len(ys), len(ps)
    jnz = [(i, j) for i in range(n) for j in range(n) if not _is_zero(jac[i][j])]
    fp = [(k, i) for k in range(npar) for i in range(n) if not _is_zero(dfdp[i][k])]  # sorted by parameter
    hess = {}
    for i, j in jnz:
        terms = [(l, sp.diff(jac[i][j], ys[l])) for l in range(n)]
        hess[i, j] = [(l, d) for l, d in terms if not _is_zero(d)]
    gdiff = [(k, ij, sp.diff(jac[ij[0]][ij[1]], ps[k])) for k in range(npar) for ij in jnz]
    gnz = [(k, ij, d) for k, ij, d in gdiff if not _is_zero(d)]  # sorted by parameter
    g_entries = {ij for _, ij, _ in gnz}
    apat = [ij for ij in jnz if hess[ij] or ij in g_entries]
    apos = {ij: a for a, ij in enumerate(apat)}

    def ptr(keys: list[int]) -> list[int]:
        out = [0] * (npar + 1)
        for k in keys:
            out[k + 1] += 1
        for k in range(npar):
            out[k + 1] += out[k]
        return out

    nfp, ng, na = len(fp), len(gnz), len(apat)
    si_fp_ptr = 2
    si_fp_row = si_fp_ptr + npar + 1
    si_g_ptr = si_fp_row + nfp
    si_g_pos = si_g_ptr + npar + 1
    si_dir = si_g_pos + ng
    sv_g, sv_fpt = nfp, nfp + ng
    sv_rate = sv_fpt + nfp
    sv_scale = sv_rate + n * npar
    sv_sw = sv_scale + max(n_dose_targets, 1) * npar
    sv_ablk = sv_sw + max(n_switches, 1) * npar
    pattern = (ptr([k for k, _ in fp]) + [i for _, i in fp] + ptr([k for k, _, _ in gnz])
               + [apos[ij] for _, ij, _ in gnz])
    consts = [
        f"J_NNZ = {len(jnz)}", f"FP_NNZ = {nfp}", f"A_NNZ = {na}", f"G_NNZ = {ng}",
        _int_array("A_ROW", [i for i, _ in apat]), _int_array("A_COL", [j for _, j in apat]),
        f"SI_FP_PTR = {si_fp_ptr}", f"SI_FP_ROW = {si_fp_row}", f"SI_G_PTR = {si_g_ptr}", f"SI_G_POS = {si_g_pos}",
        f"SI_DIR = {si_dir}", _int_array("SI_PATTERN", pattern),
        f"SV_G = {sv_g}", f"SV_FPT = {sv_fpt}", f"SV_RATE = {sv_rate}", f"SV_SCALE = {sv_scale}",
        f"SV_SW = {sv_sw}", f"SV_ABLK = {sv_ablk}",
    ]
    deco = _HOT_DECORATOR

    def direction_loop(rows: dict[int, list[tuple[str, int]]], store: str, ablk: bool = False) -> list[str]:
        """``for k < M: store(i) = sum coef * s_k[j]`` for the rows given as {i: [(coef, j)]}; ``ab`` is the
        offset of A_k in ``v`` when ``ablk``."""
        cols = sorted({j for terms in rows.values() for _, j in terms})
        lines = ["    for k in range(M):", f"        off = {n} * (k + 1)"]
        lines += [f"        ab = {sv_ablk} + {na} * k"] if ablk else []
        lines += [f"        s_{j} = y[off + {j}]" for j in cols]
        lines += [f"        {store.format(i=i)} = {_sum_of_products([(c, f's_{j}') for c, j in terms])}"
                  for i, terms in rows.items()]
        return lines

    # J s_k into out[r, n(1+k):], df/dp into v[:FP_NNZ]. Not inlined: measured, inlining it saved 6 % of
    # a dual_car_sle sensitivity solve, cost 35 % more on oral_1cmt and 6 s more compile time.
    rows = {i: [(f"j_{e}", j) for e, (ii, j) in enumerate(jnz) if ii == i] for i in range(n)}
    body = _cse_lines([(f"j_{e}", jac[i][j]) for e, (i, j) in enumerate(jnz)]
                      + [(f"v[{q}]", dfdp[i][k]) for q, (k, i) in enumerate(fp)], printer)
    rhs = [deco, "def m_sens_rhs(t, tc, y, p, M, out, r, v):", *body,
           *direction_loop(rows, "out[r, off + {i}]")]
    # A_k = (d2f/dy2) s_k on the A pattern into v[SV_ABLK + A_NNZ k:], d2f/(dp dy) into v[SV_G:]
    hlist = [(a, l, d) for a, ij in enumerate(apat) for l, d in hess[ij]]
    body = _cse_lines([(f"h_{q}", d) for q, (_, _, d) in enumerate(hlist)]
                      + [(f"v[{sv_g + q}]", d) for q, (_, _, d) in enumerate(gnz)], printer)
    arows = {a: [(f"h_{q}", l) for q, (aa, l, _) in enumerate(hlist) if aa == a] for a in range(na)}
    jacs = [deco, "def m_sens_jac(t, tc, y, p, M, v):", *body, *direction_loop(arows, "v[ab + {i}]", ablk=True)]
    # b_k += A_k b_0 (the block lower-triangular part of the augmented iteration matrix); b_0 = b[r, :n]
    # does not depend on k, so its entries are read once, before the loop
    solve = [deco, "def m_sens_solve_add(v, b, r, M):"]
    if apat:
        solve += [f"    b_{j} = b[r, {j}]" for j in sorted({j for _, j in apat})]
        solve += ["    for k in range(M):", f"        off = {n} * (k + 1)", f"        ab = {sv_ablk} + {na} * k"]
        for i in sorted({i for i, _ in apat}):
            terms = [(f"v[ab + {a}]", f"b_{j}") for a, (ii, j) in enumerate(apat) if ii == i]
            solve.append(f"        b[r, off + {i}] += {_sum_of_products(terms)}")
    else:
        solve.append("    return")
    # dF/dt of the sensitivity part into out[0, n:], d2f/(dp dt) into v[SV_FPT:] (non-autonomous models only)
    dfdt = [deco, "def m_sens_dfdt(t, tc, y, p, M, out, v):"]
    if autonomous:
        dfdt.append("    return")
    else:
        jt = [(e, j, sp.diff(jac[i][j], TIME)) for e, (i, j) in enumerate(jnz)]
        jt = [(e, j, d) for e, j, d in jt if not _is_zero(d)]
        dfdt += _cse_lines([(f"jt_{e}", d) for e, _, d in jt]
                           + [(f"v[{sv_fpt + q}]", sp.diff(dfdp[i][k], TIME)) for q, (k, i) in enumerate(fp)],
                           printer)
        trows = {i: [(f"jt_{e}", j) for e, j, _ in jt if jnz[e][0] == i] for i in range(n)}
        dfdt += direction_loop(trows, "out[0, off + {i}]")
    return ("\n".join(consts) + "\n\n\n" + "\n\n\n".join("\n".join(f) for f in (rhs, jacs, solve, dfdt))
            + "\n")


#: Threshold pivoting: the diagonal pivot is accepted if it is at least this fraction of the
#: largest entry below it in its column (as in sparse direct solvers, e.g. UMFPACK's default
#: 0.1); otherwise the solver falls back to dense LU with partial pivoting.
PIVOT_THRESHOLD = 0.1


def _sparse_lu_source(pattern: list[list[bool]]) -> str:
    """Straight-line LU without row exchanges for the iteration matrix W = I/(h gamma) - J.

    ``pattern[i][j]`` says whether J[i, j] can be non-zero; W adds the diagonal. The
    elimination's fill-in is worked out here, so the generated code touches only entries
    that can be non-zero. ``m_w_factor(a)`` factors ``a`` (n, n) in place, storing the
    reciprocal of each pivot on the diagonal, and returns False (leaving ``a`` partly
    overwritten) when a pivot fails the threshold test; ``m_w_solve(a, b, r, off)`` then
    solves for ``b[r, off:off+n]`` in place.
    """
    n = len(pattern)
    nz = [[pattern[i][j] or i == j for j in range(n)] for i in range(n)]
    factor = [_HOT_DECORATOR, "def m_w_factor(a):"]
    for k in range(n):
        below = [i for i in range(k + 1, n) if nz[i][k]]
        right = [j for j in range(k + 1, n) if nz[k][j]]
        cmax = "0.0" if not below else (f"abs(a[{below[0]}, {k}])" if len(below) == 1 else
                                         "max(" + ", ".join(f"abs(a[{i}, {k}])" for i in below) + ")")
        factor.append(f"    piv = a[{k}, {k}]")
        factor.append(f"    if not (0.0 < abs(piv) < math.inf and abs(piv) >= {PIVOT_THRESHOLD!r} * {cmax}):")
        factor.append("        return False")
        factor.append("    inv = 1.0 / piv")
        factor.append(f"    a[{k}, {k}] = inv")
        for i in below:
            factor.append(f"    l = a[{i}, {k}] * inv")
            factor.append(f"    a[{i}, {k}] = l")
            for j in right:
                factor.append(f"    a[{i}, {j}] -= l * a[{k}, {j}]")
                nz[i][j] = True
    factor.append("    return True")
    solve = [_HOT_DECORATOR, "def m_w_solve(a, b, r, off):"]
    for i in range(n):
        terms = [f" - a[{i}, {j}] * b[r, off + {j}]" for j in range(i) if nz[i][j]]
        if terms:
            solve.append(f"    b[r, off + {i}] = b[r, off + {i}]" + "".join(terms))
    for i in reversed(range(n)):
        terms = [f" - a[{i}, {j}] * b[r, off + {j}]" for j in range(i + 1, n) if nz[i][j]]
        solve.append(f"    b[r, off + {i}] = (b[r, off + {i}]" + "".join(terms) + f") * a[{i}, {i}]")
    return "\n".join(factor) + "\n\n\n" + "\n".join(solve) + "\n"


def model_fingerprint(model: Model) -> str:
    """A canonical text of everything in the model that affects generated code."""
    parts = [
        "states:" + ",".join(model.state_names),
        "params:" + ",".join(model.parameter_names),
        "outputs:" + ",".join(model.output_names),
        "doses:" + ",".join(f"{d.name}>{d.state}*{sp.srepr(d.scale)}" for d in model.dose_targets),
        "odes:" + ";".join(sp.srepr(e) for e in model.odes),
        "init:" + ";".join(sp.srepr(s.initial) for s in model.states),
        "out:" + ";".join(sp.srepr(o.expression) for o in model.outputs),
        "switch:" + ";".join(sp.srepr(e) for e in model.switches),
        "nonnegative:" + ",".join(s.name for s in model.states if s.nonnegative),
    ]
    return "\n".join(parts)
