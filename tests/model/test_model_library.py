"""The bundled model library: every file loads; names resolve; KINETICS_MODEL_PATH comes first."""

from __future__ import annotations

from pathlib import Path

import pytest

from kinetics.errors import ModelFileError
from kinetics.model import Model, find_model_file, library_dirs, library_names, read_model_file

MODELS_DIR = Path(__file__).resolve().parents[2] / "models"
MODEL_FILES = sorted(MODELS_DIR.glob("*.toml"))


def test_library_is_not_empty():
    assert MODEL_FILES, f"no model files in {MODELS_DIR}"


@pytest.mark.parametrize("path", MODEL_FILES, ids=[p.stem for p in MODEL_FILES])
def test_library_file_loads(path):
    m = read_model_file(path)
    assert isinstance(m, Model)
    assert m.source == str(path)
    # CONVENTIONS.md: library models carry units and their published source.
    assert m.name == path.stem, "find_model_file looks a model up by file name"
    assert m.time_unit, "library models state their time unit"
    assert m.references, "library models cite their source"
    assert all(p.unit for p in m.parameters), "every library parameter has a unit ('1' if none)"
    # issue 3: a parameter without a unit or source is flagged by a check over the library
    no_source = [p.name for p in m.parameters if not p.source]
    assert not no_source, f"{path.name}: parameters without a source: {no_source}"
    no_unit = [o.name for o in m.outputs if not o.unit] + [s.name for s in m.states if not s.unit]
    assert not no_unit, f"{path.name}: outputs/states without a unit: {no_unit}"


@pytest.fixture
def no_env_path(monkeypatch):
    monkeypatch.delenv("KINETICS_MODEL_PATH", raising=False)


@pytest.mark.usefixtures("no_env_path")
def test_every_library_name_resolves_to_its_file():
    assert set(library_names()) >= {p.stem for p in MODEL_FILES}
    for p in MODEL_FILES:
        assert find_model_file(p.stem).resolve() == p.resolve()


@pytest.mark.usefixtures("no_env_path")
def test_source_tree_models_dir_is_searched():
    assert MODELS_DIR in [d.resolve() for d in library_dirs()]


def test_env_path_comes_first(tmp_path, monkeypatch):
    (tmp_path / "iv_1cmt.toml").write_text(MODELS_DIR.joinpath("iv_1cmt.toml").read_text())
    (tmp_path / "extra_model.toml").write_text("")
    monkeypatch.setenv("KINETICS_MODEL_PATH", str(tmp_path))
    assert library_dirs()[0] == tmp_path
    assert find_model_file("iv_1cmt") == tmp_path / "iv_1cmt.toml"
    assert "extra_model" in library_names()


@pytest.mark.usefixtures("no_env_path")
def test_path_is_returned_as_is(tmp_path):
    f = tmp_path / "mine.toml"
    f.write_text("")
    assert find_model_file(f) == f
    assert find_model_file(str(f)) == f


@pytest.mark.usefixtures("no_env_path")
@pytest.mark.parametrize(("name", "hint"), [("oral_1cm", "oral_1cmt"), ("iv1cmt", "iv_1cmt")], ids=["oral", "iv"])
def test_unknown_name_suggests_and_lists(name, hint):
    with pytest.raises(ModelFileError) as err:
        find_model_file(name)
    msg = str(err.value)
    assert f"no library model named '{name}'; did you mean '{hint}'?" in msg
    assert "available: " in msg and "iv_1cmt" in msg


@pytest.mark.usefixtures("no_env_path")
def test_unknown_name_without_close_match():
    with pytest.raises(ModelFileError, match="no library model named 'zzzzzz' \\(available"):
        find_model_file("zzzzzz")
