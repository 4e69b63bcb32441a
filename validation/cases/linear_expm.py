"""A non-symmetric linear 4-state system against its matrix exponential (scipy.linalg.expm)."""

from __future__ import annotations

import functools

import numpy as np

import kinetics
from validation.framework import MODELS_DIR, Case, check_success

SOURCE = ("Exact solution y(t) = expm(A t) y0 of the linear ODE y' = A y, evaluated with scipy.linalg.expm "
          "(scaling and squaring with Pade approximants, accurate to ~1e-15 relative for this well-conditioned "
          "A: Al-Mohy AH, Higham NJ, SIAM J Matrix Anal Appl 31(3):970-989 (2009), doi:10.1137/09074721X)")

# Rates of validation/models/linear_cycle4.toml, passed explicitly so A below and the solve use one set.
RATES = {"k12": 2.0, "k23": 1.5, "k31": 1.0, "k34": 0.3, "k41": 0.05, "k10": 0.2, "k40": 0.02}
Y0 = np.array([100.0, 10.0, 5.0, 1.0])  # mg; passed as initial_states (the file has the same values)
TIMES = np.arange(1, 97) * 0.5  # 0.5 .. 48 h
RTOL = 1e-10
# All states stay positive (A is Metzler) and above ~1e-1 mg on the grid, so atol = 1e-12 is far below
# rtol*|y| and the error control is relative.
ATOL = 1e-12
SETUP = f"rtol={RTOL:g}, atol={ATOL:g}; grid 0.5..48 h step 0.5 h; eigenvalues of A: {{eig}}"


def system_matrix(k: dict[str, float]) -> np.ndarray:
    """A of y' = A y, rows = d/dt of x1..x4 (same equations as linear_cycle4.toml)."""
    return np.array([
        [-(k["k12"] + k["k10"]), 0.0, k["k31"], k["k41"]],
        [k["k12"], -k["k23"], 0.0, 0.0],
        [0.0, k["k23"], -(k["k31"] + k["k34"]), 0.0],
        [0.0, 0.0, k["k34"], -(k["k41"] + k["k40"])],
    ])


def _reference() -> dict[str, np.ndarray]:
    from scipy.linalg import expm

    A = system_matrix(RATES)
    Y = np.array([expm(A * t) @ Y0 for t in TIMES])
    return {f"x{i + 1}": Y[:, i] for i in range(4)}


@functools.cache
def _model() -> kinetics.CompiledModel:
    return kinetics.load_model(MODELS_DIR / "linear_cycle4.toml")


def _solve(method: str) -> dict[str, np.ndarray]:
    m = _model()
    sim = m.simulate(TIMES, params=RATES, initial_states=dict(zip(m.state_names, Y0)), rtol=RTOL, atol=ATOL,
                     method=method)
    check_success(sim, f"linear_cycle4 {method}")
    return {name: sim.states[:, i] for i, name in enumerate(m.state_names)}


_eig = np.linalg.eigvals(system_matrix(RATES))
_SETUP = SETUP.format(eig=", ".join(f"{z.real:.3g}{z.imag:+.3g}i" if abs(z.imag) > 0 else f"{z.real:.3g}"
                                    for z in sorted(_eig, key=lambda z: (z.real, z.imag))))

CASES = [
    Case(name=f"linear4-expm[{method}]", source=SOURCE, compute=functools.partial(_solve, method),
         expected=_reference, kind="relative", tolerance=1e-8, grid=tuple(TIMES), setup=_SETUP)
    for method in ("auto", "rodas5p", "dopri5")
]
