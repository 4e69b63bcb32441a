"""Fixtures for the estimation tests: compiled models and the public reference datasets."""

from __future__ import annotations

from pathlib import Path

import pytest

import kinetics
from kinetics.data import read_dataset

from tests.references import shared_data

HERE = Path(__file__).resolve().parent


def shared(name: str) -> Path:
    return shared_data(name)


@pytest.fixture(scope="session")
def oral():
    return kinetics.load_model("oral_1cmt")


@pytest.fixture(scope="session")
def wang_model():
    return kinetics.load_model(HERE / "wang2007.toml")


@pytest.fixture(scope="session")
def theoph():
    return read_dataset(shared("theoph_nonmem.csv"))


@pytest.fixture(scope="session")
def wang_data():
    return read_dataset(shared("Wang2007.csv").parent / "wang2007_m3.csv")
