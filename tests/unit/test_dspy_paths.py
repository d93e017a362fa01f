"""DSPy's module paths resolve to dspex's modules: the same objects, their own specs untouched."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

import dspex  # installs the finder
from dspex._dspy_paths import DSPY_PATHS


@pytest.mark.parametrize(("alias", "real"), sorted(DSPY_PATHS.items()))
def test_every_dspy_path_is_the_dspex_module_itself(alias: str, real: str) -> None:
    module = importlib.import_module(alias)
    assert module is importlib.import_module(real)
    assert module.__spec__ is not None and module.__spec__.name == real  # the real spec kept


def test_dspy_style_imports_work_in_a_fresh_interpreter() -> None:
    code = (
        "from dspex.teleprompt import BootstrapFewShot\n"
        "from dspex.predict.predict import Predict\n"
        "from dspex.utils.dummies import DummyLM\n"
        "import dspex\n"
        "assert BootstrapFewShot is dspex.BootstrapFewShot and Predict is dspex.Predict\n"
        "assert dspex.teleprompt.BootstrapFewShot is BootstrapFewShot\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "ok"


def test_a_path_dspy_does_not_have_is_still_an_import_error() -> None:
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("dspex.teleprompt.no_such_module")
    assert dspex.__name__ == "dspex"
