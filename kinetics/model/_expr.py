"""Safe parsing of model-file math strings into sympy expressions.

A model file is data. Strings are parsed with :func:`ast.parse` and the syntax
tree is walked against a whitelist; sympy objects are built node by node, so
nothing in a string is ever evaluated (no ``sympify``/``eval``).

Allowed: numbers, declared symbols, ``t``, ``pi``; ``+ - * / **`` (``^`` is read
as power, as in NONMEM/Monolix); comparisons and ``and``/``or``/``not`` inside
conditions; calls to the functions in :data:`FUNCTIONS`; conditionals as
``ifelse(cond, a, b)``, ``a if cond else b`` or ``Piecewise((a, cond), (b, True))``.
"""

from __future__ import annotations

import ast
import math
import warnings
from collections.abc import Mapping

import sympy as sp

from kinetics.errors import ExpressionError, did_you_mean

__all__ = ["parse_expression", "FUNCTIONS", "RESERVED_NAMES", "MAX_EXPRESSION_LENGTH"]

#: Longest accepted expression string (characters).
MAX_EXPRESSION_LENGTH = 20_000
#: Deepest accepted syntax tree; deeper trees are rejected before sympy sees them.
_MAX_DEPTH = 200
#: Integer literals up to this size stay exact; larger ones become floats.
_MAX_EXACT_INT = 10**6

def _log10(x: sp.Expr) -> sp.Expr:
    return sp.log(x) / sp.log(10)


#: Whitelisted functions: name -> (sympy constructor, min args, max args or None).
FUNCTIONS: dict[str, tuple[object, int, int | None]] = {
    "exp": (sp.exp, 1, 1),
    "log": (sp.log, 1, 1),
    "ln": (sp.log, 1, 1),
    "log10": (_log10, 1, 1),
    "sqrt": (sp.sqrt, 1, 1),
    "abs": (sp.Abs, 1, 1),
    "sin": (sp.sin, 1, 1),
    "cos": (sp.cos, 1, 1),
    "tan": (sp.tan, 1, 1),
    "tanh": (sp.tanh, 1, 1),
    "sinh": (sp.sinh, 1, 1),
    "cosh": (sp.cosh, 1, 1),
    "min": (sp.Min, 2, None),
    "max": (sp.Max, 2, None),
}
_CONDITIONALS = ("ifelse", "Piecewise")
_CONSTANTS = {"pi": sp.pi}

#: Names a model may not use for its own symbols.
RESERVED_NAMES = frozenset(
    set(FUNCTIONS) | set(_CONDITIONALS) | set(_CONSTANTS) | {"t", "tc", "True", "False"}
)

_BINOPS = {ast.Add, ast.Sub, ast.Mult, ast.Div, ast.Pow, ast.BitXor}
_CMPOPS = {ast.Lt: sp.Lt, ast.LtE: sp.Le, ast.Gt: sp.Gt, ast.GtE: sp.Ge, ast.Eq: sp.Eq, ast.NotEq: sp.Ne}


def _caret_to_power(text: str) -> tuple[str, list[int]]:
    """Spell ``^`` as ``**`` and map each character of the result to its index in ``text``.

    Python reads ``^`` as XOR, which binds looser than ``+`` and ``*``: ``k*x^2`` would
    become ``(k*x)**2`` and ``x^2+1`` would become ``x**3``. As ``**`` it has the power
    precedence of NONMEM/Monolix (right-associative, tighter than unary minus).
    """
    out: list[str] = []
    index: list[int] = []
    for i, ch in enumerate(text):
        rep = "**" if ch == "^" else ch
        out.append(rep)
        index.extend([i] * len(rep))
    index.append(len(text))
    return "".join(out), index


def _fits_double(num: sp.Expr) -> bool:
    try:
        return math.isfinite(float(num))
    except (OverflowError, TypeError, ValueError, ArithmeticError):  # huge Integer, complex, ...
        return False


class _Builder:
    """Walks a whitelisted Python syntax tree and builds sympy objects."""

    def __init__(self, text: str, symbols: Mapping[str, sp.Symbol], where: str,
                 column: object = None) -> None:
        self.text = text
        self.symbols = symbols
        self.where = where
        self.column = column  # callable: ast col_offset (UTF-8 bytes of parsed text) -> column in text

    def fail(self, node: ast.AST | None, why: str) -> ExpressionError:
        col = ""
        if node is not None and hasattr(node, "col_offset"):
            c = self.column(node.col_offset) if callable(self.column) else node.col_offset + 1
            col = f" (column {c})"
        return ExpressionError(f"{self.where}: {why}{col} in expression {self.text!r}")

    # -- entry points ------------------------------------------------------
    def value(self, node: ast.AST, depth: int = 0) -> sp.Expr:
        """Build a numeric-valued expression."""
        if depth > _MAX_DEPTH:
            raise self.fail(node, f"expression nested deeper than {_MAX_DEPTH} levels")
        d = depth + 1
        if isinstance(node, ast.Constant):
            return self._number(node)
        if isinstance(node, ast.Name):
            return self._name(node)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            operand = self.value(node.operand, d)
            return -operand if isinstance(node.op, ast.USub) else operand
        if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
            return self._finite(node, self._binop(node, self.value(node.left, d), self.value(node.right, d)))
        if isinstance(node, ast.IfExp):
            return self._piecewise(node, [(self.value(node.body, d), self.condition(node.test, d)),
                                          (self.value(node.orelse, d), sp.true)])
        if isinstance(node, ast.Call):
            return self._finite(node, self._call(node, d))
        if isinstance(node, (ast.Compare, ast.BoolOp)) or (
            isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not)
        ):
            raise self.fail(node, "a condition is used where a number is expected (use ifelse(cond, a, b))")
        raise self.fail(node, f"'{ast.unparse(node)[:40]}' is not allowed (only numbers, declared "
                              "symbols, arithmetic and whitelisted math functions)")

    def condition(self, node: ast.AST, depth: int) -> sp.Basic:
        """Build a boolean condition (comparisons joined by and/or/not)."""
        if depth > _MAX_DEPTH:
            raise self.fail(node, f"expression nested deeper than {_MAX_DEPTH} levels")
        d = depth + 1
        if isinstance(node, ast.Compare):
            terms = [self.value(node.left, d)] + [self.value(c, d) for c in node.comparators]
            parts = []
            for op, lhs, rhs in zip(node.ops, terms[:-1], terms[1:]):
                if type(op) not in _CMPOPS:
                    raise self.fail(node, f"comparison '{type(op).__name__}' is not allowed")
                parts.append(_CMPOPS[type(op)](lhs, rhs))
            return sp.And(*parts) if len(parts) > 1 else parts[0]
        if isinstance(node, ast.BoolOp):
            parts = [self.condition(v, d) for v in node.values]
            return sp.And(*parts) if isinstance(node.op, ast.And) else sp.Or(*parts)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            return sp.Not(self.condition(node.operand, d))
        if isinstance(node, ast.Constant) and isinstance(node.value, bool):
            return sp.true if node.value else sp.false
        if isinstance(node, ast.Name) and node.id in ("True", "False"):
            return sp.true if node.id == "True" else sp.false
        raise self.fail(node, "expected a condition (a comparison such as 't < Tmax')")

    # -- pieces ------------------------------------------------------------
    def _finite(self, node: ast.AST, r: sp.Expr) -> sp.Expr:
        """Reject a constant sub-expression that is not a finite float64 (checked at every node).

        Keeping every constant within float64 range also bounds the work sympy does
        when it later compares or combines constants: ``sin(exp(exp(100))) + 1``
        would otherwise make sympy evaluate sin of a 10**43-digit number (a hang).
        """
        if not r.is_number:
            return r
        try:
            f = float(r)
        except (TypeError, ValueError, OverflowError, ArithmeticError):
            raise self.fail(node, f"constant '{ast.unparse(node)[:40]}' is not a finite real number") from None
        if not math.isfinite(f):
            raise self.fail(node, f"constant '{ast.unparse(node)[:40]}' is not a finite real number "
                                  "(overflows double precision)")
        return r

    def _number(self, node: ast.Constant) -> sp.Expr:
        v = node.value
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise self.fail(node, f"literal {v!r} is not a number")
        if isinstance(v, int) and abs(v) <= _MAX_EXACT_INT:
            return sp.Integer(v)
        try:
            f = float(v)
        except OverflowError:
            f = math.inf
        if not math.isfinite(f):
            raise self.fail(node, f"number {str(v)[:30]} is not finite")
        return sp.Float(f)

    def _name(self, node: ast.Name) -> sp.Expr:
        if node.id in self.symbols:
            return self.symbols[node.id]
        if node.id in _CONSTANTS:
            return _CONSTANTS[node.id]
        if node.id in FUNCTIONS or node.id in _CONDITIONALS:
            raise self.fail(node, f"function '{node.id}' used without arguments")
        hint = did_you_mean(node.id, list(self.symbols))
        raise self.fail(node, f"unknown symbol '{node.id}'{hint}")

    def _binop(self, node: ast.BinOp, a: sp.Expr, b: sp.Expr) -> sp.Expr:
        op = type(node.op)
        if op is ast.Add:
            return a + b
        if op is ast.Sub:
            return a - b
        if op is ast.Mult:
            return a * b
        if op is ast.Div:
            if b.is_number and (b.is_zero or float(b) == 0.0):  # Float(0.0) == 0 is False in sympy
                raise self.fail(node, "division by zero")
            return a / b
        # Pow (** or ^): fold numeric powers in floating point so that a literal
        # like 10**10**10 cannot make sympy build a huge exact integer.
        if a.is_number and b.is_number:
            try:
                f = float(a) ** float(b)
            except (OverflowError, ZeroDivisionError, TypeError, ValueError) as exc:
                raise self.fail(node, f"constant power cannot be evaluated ({exc})") from None
            if isinstance(f, complex) or not math.isfinite(f):
                raise self.fail(node, "constant power is not a finite real number")
            return sp.Float(f)
        if b.is_number and abs(float(b)) > 1e3:
            raise self.fail(node, "exponent larger than 1000 in magnitude")
        return sp.Pow(a, b)

    def _call(self, node: ast.Call, depth: int) -> sp.Expr:
        if not isinstance(node.func, ast.Name):
            raise self.fail(node, "only plain calls to whitelisted math functions are allowed "
                                  "(no attribute access or computed calls)")
        name = node.func.id
        if node.keywords:
            raise self.fail(node, f"keyword arguments are not allowed in a call to '{name}'")
        if any(isinstance(a, ast.Starred) for a in node.args):
            raise self.fail(node, "starred arguments are not allowed")
        if name == "ifelse":
            if len(node.args) != 3:
                raise self.fail(node, "ifelse takes exactly 3 arguments: ifelse(condition, value_if_true, value_else)")
            cond = self.condition(node.args[0], depth)
            return self._piecewise(node, [(self.value(node.args[1], depth), cond),
                                          (self.value(node.args[2], depth), sp.true)])
        if name == "Piecewise":
            return self._piecewise_call(node, depth)
        if name not in FUNCTIONS:
            allowed = ", ".join(sorted(FUNCTIONS) + list(_CONDITIONALS))
            hint = did_you_mean(name, list(FUNCTIONS) + list(_CONDITIONALS))
            raise self.fail(node, f"call to unknown function '{name}'{hint} (allowed: {allowed})")
        ctor, nmin, nmax = FUNCTIONS[name]
        n = len(node.args)
        if n < nmin or (nmax is not None and n > nmax):
            want = str(nmin) if nmin == nmax else f"at least {nmin}"
            raise self.fail(node, f"'{name}' takes {want} argument(s), got {n}")
        args = [self.value(a, depth) for a in node.args]
        return ctor(*args)  # type: ignore[operator]

    def _piecewise_call(self, node: ast.Call, depth: int) -> sp.Expr:
        pairs = []
        for arg in node.args:
            if not (isinstance(arg, ast.Tuple) and len(arg.elts) == 2):
                raise self.fail(node, "Piecewise takes (value, condition) pairs, e.g. "
                                      "Piecewise((a, t < Tmax), (b, True))")
            pairs.append((self.value(arg.elts[0], depth), self.condition(arg.elts[1], depth)))
        if not pairs:
            raise self.fail(node, "Piecewise needs at least one (value, condition) pair")
        return self._piecewise(node, pairs)

    def _piecewise(self, node: ast.AST, pairs: list[tuple[sp.Expr, sp.Basic]]) -> sp.Expr:
        if pairs[-1][1] is not sp.true:
            raise self.fail(node, "the last Piecewise condition must be True (an otherwise branch), "
                                  "so the value is defined everywhere")
        return sp.Piecewise(*pairs)


def parse_expression(text: object, symbols: Mapping[str, sp.Symbol], where: str) -> sp.Expr:
    """Parse a math string into a sympy expression without evaluating it.

    Parameters
    ----------
    text
        The expression, e.g. ``"ka*depot - CL/V*central"``. Numbers are also accepted.
    symbols
        Names that may appear, mapped to their sympy symbols (``t`` included if allowed).
    where
        Location used in error messages, e.g. ``"models/x.toml: [odes] central"``.

    Returns
    -------
    sympy.Expr
        The expression; never contains NaN or infinities.

    Raises
    ------
    ExpressionError
        On any syntax error, unknown name or disallowed construct.
    """
    if isinstance(text, bool):
        raise ExpressionError(f"{where}: expected a math expression, got boolean {text!r}")
    if isinstance(text, (int, float)):
        text = repr(text)
    if not isinstance(text, str):
        raise ExpressionError(f"{where}: expected a math expression string, got {type(text).__name__}")
    if len(text) > MAX_EXPRESSION_LENGTH:
        raise ExpressionError(f"{where}: expression is {len(text)} characters long "
                              f"(at most {MAX_EXPRESSION_LENGTH})")
    if not text.strip():
        raise ExpressionError(f"{where}: expression is empty")
    if "\x00" in text:
        raise ExpressionError(f"{where}: expression contains a NUL character")
    lead = len(text) - len(text.lstrip())
    source, index = _caret_to_power(text.strip())

    def column(byte_offset: int) -> int:  # 1-based column in the original text
        chars = len(source.encode("utf-8")[:byte_offset].decode("utf-8", "ignore"))
        return lead + index[min(chars, len(index) - 1)] + 1

    try:
        with warnings.catch_warnings():
            # e.g. '1if x else 2' warns "invalid decimal literal"; refuse it rather than print to stderr
            warnings.simplefilter("error")
            tree = ast.parse(source, mode="eval")
    except SyntaxError as exc:
        col = f" at column {lead + index[min(exc.offset - 1, len(index) - 1)] + 1}" if exc.offset else ""
        raise ExpressionError(f"{where}: syntax error{col} in expression {text!r}: {exc.msg}") from None
    except (RecursionError, MemoryError, ValueError):
        raise ExpressionError(f"{where}: expression {text[:60]!r}... is too deeply nested") from None
    builder = _Builder(text, symbols, where, column)
    try:
        expr = builder.value(tree.body)
    except ExpressionError:
        raise
    except RecursionError:
        raise ExpressionError(f"{where}: expression {text[:60]!r}... is too deeply nested") from None
    except (TypeError, ValueError, ArithmeticError) as exc:
        # sympy refuses some constructs (e.g. comparing with a complex number); report, never leak.
        raise ExpressionError(f"{where}: expression {text[:60]!r} cannot be built: {exc}") from None
    bad = expr.atoms(sp.core.numbers.ComplexInfinity, sp.core.numbers.NaN, sp.core.numbers.Infinity,
                     sp.core.numbers.NegativeInfinity)
    if bad:
        raise ExpressionError(f"{where}: expression {text!r} contains a non-finite constant "
                              f"({', '.join(map(str, bad))}), e.g. from log(0) or 0/0")
    if expr.has(sp.I):
        raise ExpressionError(f"{where}: expression {text!r} has a complex constant (e.g. sqrt of a negative number)")
    # sympy merges numeric factors of symbolic terms (x*1e308*1e308 -> 1.0e+616*x,
    # exp(x)*exp(700)*exp(700) -> exp(1400)*exp(x)) and powers ((x**1000)**1000 -> x**1000000),
    # so the per-node checks are repeated on the result.
    for num in expr.atoms(sp.Number, sp.Function):
        if num.is_number and not _fits_double(num):
            raise ExpressionError(f"{where}: expression {text!r} has a constant that overflows double "
                                  f"precision ({str(num)[:30]})")
    for pw in expr.atoms(sp.Pow):
        if pw.exp.is_Number and (not _fits_double(pw.exp) or abs(float(pw.exp)) > 1e3):
            raise ExpressionError(f"{where}: expression {text!r} has an exponent larger than 1000 in magnitude")
    return expr
