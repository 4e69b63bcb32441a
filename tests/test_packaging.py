"""A plain (non-editable) `pip install .` ships the model library and the solver template."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_plain_install_finds_library_models(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".venv*", ".git", "out", "__pycache__", "*.egg-info"))
    prefix = tmp_path / "prefix"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--prefix", str(prefix), str(src)],
                   check=True, capture_output=True)
    site = next(prefix.glob("lib/python*/site-packages"))
    code = ("import kinetics, sys; m = kinetics.load_model('stein2019'); "
            "print(kinetics.__file__); print(m.simulate([7.0]).outputs['car_qpcr'][0])")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, cwd=tmp_path,
                         env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
                              "KINETICS_CACHE_DIR": str(tmp_path / "cache")}).stdout.split()
    assert out[0].startswith(str(prefix))
    assert abs(float(out[1]) / 3105.26 - 1) < 1e-5  # Stein 2019 C(7), published
