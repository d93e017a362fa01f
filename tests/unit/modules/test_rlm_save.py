"""Saving an RLM and rebuilding it from the saved JSON alone (as a worker does)."""

from __future__ import annotations

import contextlib
import io
import json
import string
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import dspex
from dspex.errors import ProgramLoadError
from dspex.modules import RLM
from dspex.primitives.code_interpreter import FinalOutput
from dspex.primitives.saving import load_program
from dspex.serialization import dump_program
from dspex.utils import DummyLM


class _Done(Exception):
    def __init__(self, output: dict[str, Any]) -> None:
        self.output = output


class ScriptedInterpreter:
    """exec() in one namespace; SUBMIT maps its arguments onto ``output_fields`` in order."""

    execution_instructions = "Scripted test runtime."

    def __init__(self) -> None:
        self.tools: dict[str, Callable[..., Any]] = {}
        self.output_fields: list[dict[str, str]] = []
        self.namespace: dict[str, Any] = {}

    def start(self) -> None:
        pass

    def execute(self, code: str, variables: dict[str, Any] | None = None) -> Any:
        self.namespace.update(self.tools, **(variables or {}), SUBMIT=self._submit)
        out = io.StringIO()
        try:
            with contextlib.redirect_stdout(out):
                exec(compile(code, "<rlm>", "exec"), self.namespace)
        except _Done as done:
            return FinalOutput(done.output)
        return out.getvalue()

    def _submit(self, *args: Any, **kwargs: Any) -> None:
        names = [field["name"] for field in self.output_fields]
        raise _Done({**dict(zip(names, args, strict=False)), **kwargs})

    def shutdown(self) -> None:
        pass


def _scripted_lm() -> DummyLM:
    return DummyLM(
        [
            {"reasoning": "look", "code": "print(capwords(text))"},
            {"reasoning": "done", "code": "SUBMIT(capwords(text))"},
        ]
    )


def _run(program: Any) -> tuple[Any, list[Any]]:
    lm = _scripted_lm()
    with dspex.context(lm=lm, interpreter_factory=ScriptedInterpreter):
        pred = program(text="hello kafka world")
    return pred, lm.history


def _built() -> RLM:
    rlm = RLM(
        "text -> title: str",
        max_iters=5,
        max_llm_calls=7,
        max_output_chars=321,
        tools=[string.capwords],
        sub_lm=dspex.LM("openai/gpt-4o-mini", api_key="sk-never-saved", temperature=0.3),
        interpreter_factory=ScriptedInterpreter,
    )
    rlm.generate_action.signature = rlm.generate_action.signature.with_instructions(
        rlm.generate_action.signature.instructions + "\nOptimized hint."
    )
    return rlm


def test_a_saved_rlm_rebuilds_from_its_json_alone() -> None:
    original = _built()
    data = dump_program(original)
    assert "sk-never-saved" not in json.dumps(data)
    loaded = load_program(json.loads(json.dumps(data)))
    assert isinstance(loaded, RLM)
    assert (loaded.max_iters, loaded.max_llm_calls, loaded.max_output_chars) == (5, 7, 321)
    assert list(loaded.tools) == ["capwords"]
    assert isinstance(loaded.sub_lm, dspex.LM)
    assert loaded.sub_lm.settings() == original.sub_lm.settings()  # type: ignore[union-attr]
    assert "Optimized hint." in loaded.generate_action.signature.instructions
    assert dump_program(loaded) == data


def test_a_loaded_rlm_sends_the_same_prompts_and_answers_the_same() -> None:
    original = _built()
    loaded = load_program(dump_program(original))
    pred, prompts = _run(original)
    loaded_pred, loaded_prompts = _run(loaded)
    assert pred.title == loaded_pred.title == "Hello Kafka World"
    assert loaded_pred.trajectory == pred.trajectory
    assert [call["messages"] for call in loaded_prompts] == [call["messages"] for call in prompts]


def test_a_saved_rlm_file_loads(tmp_path: Path) -> None:
    path = tmp_path / "rlm.json"
    _built().save(path)
    loaded = dspex.load(path)
    assert isinstance(loaded, RLM) and loaded.max_iters == 5


def test_a_sub_lm_that_is_not_a_dspex_lm_is_not_saved() -> None:
    rlm = RLM("text -> title", sub_lm=DummyLM([{"title": "x"}]), interpreter_factory=ScriptedInterpreter)
    loaded = load_program(dump_program(rlm))
    assert isinstance(loaded, RLM) and loaded.sub_lm is None


def test_a_saved_rlm_without_state_is_refused() -> None:
    data = dump_program(RLM("text -> title", interpreter_factory=ScriptedInterpreter))
    del data["state"]
    with pytest.raises(ProgramLoadError, match="RLM"):
        load_program(data)
