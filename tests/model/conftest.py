"""Shared fixtures for the model-layer tests: a valid reference model file and writers."""

from __future__ import annotations

import json
import signal
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import pytest
import sympy as sp

from kinetics.model import TIME

# A small but complete model file (every table used). Tests derive bad files from it by
# replacing or deleting single entries, so each failure has exactly one cause.
BASE_MODEL: dict[str, dict[str, str]] = {
    "": {"name": '"cd19"', "time_unit": '"d"', "description": '"CAR-T expansion and B-cell kill"'},
    "parameters": {
        "k_kill": '{ value = 0.5, unit = "1/d", lower = 0.0, upper = 10.0, description = "kill rate" }',
        "rho": "0.1",
        "Tmax": '{ value = 14.0, unit = "d", lower = 0.0 }',
    },
    "states": {"B": '{ initial = "1", unit = "cells" }', "C": "0"},
    "odes": {"B": '"-k_kill*C*B"', "C": '"ifelse(t < Tmax, rho*C, -rho*C)"'},
    "outputs": {"total": '"B + C"'},
    "doses": {"car": '{ state = "C" }'},
}


def _toml_str(s: str) -> str:
    """A TOML basic string holding ``s`` exactly (control characters escaped)."""
    out = []
    for ch in s:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _model_text(changes: Mapping[str, Mapping[str, str | None]] | None = None) -> str:
    """BASE_MODEL as TOML with ``changes[table][key]`` replaced (``None`` deletes the key).

    The top-level table is ``""``; values are TOML source text (quote strings with the ``toml_str`` fixture).
    """
    doc = {t: dict(entries) for t, entries in BASE_MODEL.items()}
    for table, entries in (changes or {}).items():
        doc.setdefault(table, {})
        for key, value in entries.items():
            if value is None:
                doc[table].pop(key, None)
            else:
                doc[table][key] = value
    lines = [f"{k} = {v}" for k, v in doc.pop("").items()]
    for table, entries in doc.items():
        lines.append(f"\n[{table}]")
        lines += [f"{_key(k)} = {v}" for k, v in entries.items()]
    return "\n".join(lines) + "\n"


def _key(k: str) -> str:
    return k if k and all(c.isalnum() or c in "_-" for c in k) and k.isascii() else json.dumps(k)


@pytest.fixture
def write_model(tmp_path: Path) -> Callable[[str | bytes, str], Path]:
    """Write text or bytes to a model file under ``tmp_path`` and return its path."""

    def write(content: str | bytes, name: str = "model.toml") -> Path:
        path = tmp_path / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
        return path

    return write


@pytest.fixture(scope="session")
def syms() -> dict[str, sp.Symbol]:
    """Symbols offered to parse_expression in the expression tests (t is the model's TIME)."""
    names = ("x", "y", "k", "k_kill", "Tmax", "Tlag")
    return {**{n: sp.Symbol(n, real=True) for n in names}, "t": TIME}


@pytest.fixture(scope="session")
def toml_str() -> Callable[[str], str]:
    """Quote a Python string as a TOML basic string."""
    return _toml_str


@pytest.fixture(scope="session")
def model_text() -> Callable[..., str]:
    """Build BASE_MODEL TOML text with changes, see :func:`_model_text`."""
    return _model_text


@contextmanager
def _time_limit(seconds: float) -> Iterator[None]:
    """Raise TimeoutError after ``seconds`` instead of hanging (SIGALRM; tests run in the main thread)."""

    def expire(*_: object) -> None:
        raise TimeoutError(f"took longer than {seconds} s")

    old = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


@pytest.fixture(scope="session")
def time_limit() -> Callable[[float], AbstractContextManager[None]]:
    """``with time_limit(5): ...`` fails a would-be hang with TimeoutError."""
    return _time_limit
