"""The API reference (docs/build_api_reference.py): pdoc builds it and every public name has a
docstring."""

import importlib.util
import subprocess
import sys
import types
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "docs" / "build_api_reference.py"


@pytest.fixture(scope="module")
def builder():
    spec = importlib.util.spec_from_file_location("build_api_reference", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def modules(builder):
    return list(builder.iter_modules())


def test_reference_has_a_page_per_package_and_module(builder, modules, tmp_path):
    pages = builder.build_html(modules, tmp_path)
    assert (tmp_path / "index.html").is_file() and (tmp_path / "search.js").is_file()
    for package in ("dspnet_tf", "tfx_pipeline", "serving"):
        assert (tmp_path / f"{package}.html").is_file(), package
    # Submodules of a package whose __all__ does not list them get pages too.
    for page in ("dspnet_tf/layers/transformer_block.html", "dspnet_tf/models/dspnet.html",
                 "tfx_pipeline/trainer.html", "serving/model_manager.html"):
        assert (tmp_path / page).is_file(), page
    assert len(pages) == len(modules) + 1  # + index.html
    assert not [m.__name__ for m in modules if m.__name__.split(".")[-1].startswith("_")]
    text = (tmp_path / "dspnet_tf/layers/transformer_block.html").read_text(encoding="utf-8")
    assert "TransformerBlock" in text


def test_every_public_name_has_a_docstring(builder, modules):
    missing = builder.undocumented(modules)
    assert not missing, "public names without a docstring:\n  " + "\n  ".join(missing)


def test_the_check_finds_what_it_should(builder):
    module = types.ModuleType("fake_api", "A module.")
    source = '''
import os
from os.path import join

def documented():
    """Yes."""

def undocumented():
    pass

def _private():
    pass

class Base:
    """Base."""

    def method(self):
        """Base's method."""

class Child(Base):
    """Child."""

    def method(self):  # an override without its own docstring
        pass

    @property
    def size(self):
        pass

    @classmethod
    def make(cls):
        """Made."""

    def __len__(self):
        return 0

class Bare:
    pass
'''
    exec(compile(source, "fake_api.py", "exec"), module.__dict__)  # pylint: disable=exec-used
    assert builder.undocumented([module]) == [
        "fake_api.Bare", "fake_api.Child.method", "fake_api.Child.size", "fake_api.undocumented"]
    module.__all__ = ["documented", "join"]  # __all__ decides; imported names count then
    assert builder.undocumented([module]) == []


def test_help_runs_without_importing_tensorflow():
    result = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True,
                            text=True, timeout=60, check=True)
    assert "--out" in result.stdout and "docs/api" in result.stdout
