"""Session-scoped compiled models shared by the solver tests (JIT cost paid once)."""

from __future__ import annotations

import pytest

import kinetics


@pytest.fixture(scope="session")
def oral() -> kinetics.CompiledModel:
    return kinetics.load_model("oral_1cmt")


@pytest.fixture(scope="session")
def iv() -> kinetics.CompiledModel:
    return kinetics.load_model("iv_1cmt")


@pytest.fixture(scope="session")
def phase() -> kinetics.CompiledModel:
    """Exponential growth at rate rho until Tmax, then decline at alpha (Stein 2019 shape, one phase)."""
    return kinetics.compile_model(kinetics.build_model(
        "phase", {"rho": 0.8, "alpha": 0.3, "Tmax": 5.0, "C0": 2.0}, {"C": "C0"},
        {"C": "ifelse(t < Tmax, rho*C, -alpha*C)"}, outputs={"C_obs": "C"}, doses={"cells": "C"},
    ))


@pytest.fixture(scope="session")
def linear3() -> kinetics.CompiledModel:
    """A 3-state linear system with a non-symmetric matrix (reference: scipy.linalg.expm)."""
    return kinetics.compile_model(kinetics.build_model(
        "linear3", {"a": 0.7, "b": 0.2, "c": 1.3, "d": 0.05},
        {"x1": 1.0, "x2": 0.5, "x3": "0"},
        {"x1": "-a*x1 + d*x3", "x2": "a*x1 - b*x2 - c*x2", "x3": "c*x2 - d*x3 + b*x2"},
        outputs={"total": "x1 + x2 + x3", "x3_obs": "x3"}, doses={"x1": "x1"},
    ))


@pytest.fixture(scope="session")
def blowup() -> kinetics.CompiledModel:
    """x' = k x^2, x(0) = 1: blows up at t = 1/k (a solve must fail and say so)."""
    return kinetics.compile_model(kinetics.build_model("blowup", {"k": 1.0}, {"x": 1.0}, {"x": "k*x**2"},
                                                       outputs={"x_obs": "x"}))
