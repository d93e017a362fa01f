"""DSPy's logging switches on dspex's loggers: disable_logging silences the whole tree."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest

import dspex


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        dspex.enable_logging()


def test_disable_logging_silences_dspexs_child_loggers_until_enabled(captured: io.StringIO) -> None:
    child = logging.getLogger("dspex.optimizers.grpo")
    dspex.disable_logging()
    dspex.disable_logging()  # twice: enable still restores the level from before the first
    child.warning("hidden")
    child.error("hidden too")
    dspex.enable_logging()
    child.warning("shown")
    assert captured.getvalue().splitlines() == ["shown"]
    assert logging.getLogger("dspex").level == logging.NOTSET


def test_configure_dspy_loggers_installs_one_handler_that_does_not_propagate(
    captured: io.StringIO, capsys: pytest.CaptureFixture[str]
) -> None:
    name = "dspex_test_tree"
    dspex.configure_dspy_loggers(name)
    dspex.configure_dspy_loggers(name)
    logger = logging.getLogger(name)
    assert len(logger.handlers) == 1 and logger.propagate is False and logger.level == logging.INFO
    logging.getLogger(f"{name}.child").info("hello")
    assert " INFO dspex_test_tree.child: hello" in capsys.readouterr().err
    assert captured.getvalue() == ""  # not through the root logger's handlers
    logger.handlers.clear()


def test_dspys_names_for_the_signature_metaclass_and_the_litellm_switches_exist() -> None:
    assert isinstance(dspex.Signature, dspex.SignatureMeta)
    dspex.enable_litellm_logging()
    dspex.disable_litellm_logging()
