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
m_dfdp              t, tc, y, p, out[n, np]                        d rhs_i / d p_k
m_hess_s            t, tc, y, p, s[n], out[n, n]                   sum_l d2 rhs_i/dy_j dy_l s_l
m_dfdp_dy           t, tc, y, p, out[np, n, n]                     d2 rhs_i / dp_k dy_j
m_djac_dt           t, tc, y, p, out[n, n]                         d2 rhs_i / dy_j dt
m_dfdp_dt           t, tc, y, p, out[n, np]                        d2 rhs_i / dp_k dt
m_init              p, out[n]                                      initial state
m_init_dp           p, out[n, np]                                  d initial / d p
m_out               t, y, p, out[no]                               outputs
m_out_dy / m_out_dp t, y, p, out[no, n] / out[no, np]              output derivatives
m_switch            p, out[ns]                                     switch times
m_switch_dp         p, out[ns, np]
m_dose_scale        p, out[nd]                                     dose scale factors
m_dose_scale_dp     p, out[nd, np]
==================  ============================================  =========================
"""

from __future__ import annotations

from collections.abc import Sequence

import sympy as sp
from sympy.printing.pycode import PythonCodePrinter

from kinetics.model import TIME, Model

__all__ = ["generate_model_source", "model_fingerprint"]

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
            else "@njit(error_model='numpy', no_cpython_wrapper=True)")
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

    hess_s = [[sum((sp.diff(jac[i][j], ys[l]) * s_syms[l] for l in range(n)), sp.Integer(0))
               for j in range(n)] for i in range(n)]
    dfdp_dy = [(f"out[{k}, {i}, {j}]", sp.diff(dfdp[i][k], ys[j]))
               for k in range(npar) for i in range(n) for j in range(n)]

    rhs_args = "t, tc, y, p, out"
    parts = [
        _emit("m_rhs", "t, tc, y, p, out, r", [(f"out[r, {i}]", e) for i, e in enumerate(f)], pr, inline=True),
        _emit("m_jac", rhs_args, [(f"out[{i}, {j}]", jac[i][j]) for i in range(n) for j in range(n)], pr,
              zero=["out"]),
        _emit("m_dfdt", rhs_args, [(f"out[{i}]", sp.diff(fi, TIME)) for i, fi in enumerate(f)], pr),
        _emit("m_dfdp", rhs_args, [(f"out[{i}, {k}]", dfdp[i][k]) for i in range(n) for k in range(npar)], pr,
              zero=["out"]),
        _emit("m_hess_s", "t, tc, y, p, s, out", [(f"out[{i}, {j}]", hess_s[i][j]) for i in range(n)
                                                   for j in range(n)], pr, zero=["out"]),
        _emit("m_dfdp_dy", rhs_args, dfdp_dy, pr, zero=["out"]),
        _emit("m_djac_dt", rhs_args, [(f"out[{i}, {j}]", sp.diff(jac[i][j], TIME)) for i in range(n)
                                      for j in range(n)], pr, zero=["out"]),
        _emit("m_dfdp_dt", rhs_args, [(f"out[{i}, {k}]", sp.diff(dfdp[i][k], TIME)) for i in range(n)
                                      for k in range(npar)], pr, zero=["out"]),
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
    parts.append(_sparse_lu_source([[not (e.is_number and e == 0) for e in row] for row in jac]))
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
        f"AUTONOMOUS = {is_autonomous}\n\n"
    )
    return header + "\n\n".join(parts)


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
    factor = ["@njit(error_model='numpy')", "def m_w_factor(a):"]
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
    solve = ["@njit(error_model='numpy', no_cpython_wrapper=True)", "def m_w_solve(a, b, r, off):"]
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
    ]
    return "\n".join(parts)
