"""Saved programs both ways against the real DSPy 3.4.1: DSPy's files load into dspex, dspex's into DSPy.

Every program is compared by what a saved state carries: each predictor's demos, instructions and
field prefixes/descriptions (``dump_state()["signature"]``).
"""

from __future__ import annotations

import json
import logging
import os
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import dspex
from dspex.errors import ProgramLoadError

dspy = pytest.importorskip("dspy")


def search(query: str) -> str:
    """Look the query up in the test's tiny index."""
    return f"found {query}"


def lookup(name: str) -> str:
    """Say what a name refers to."""
    return f"{name} is a thing"


class DspyTwoStep(dspy.Module):  # type: ignore[misc]
    def __init__(self) -> None:
        super().__init__()
        self.draft = dspy.ChainOfThought("question -> answer")
        self.check = dspy.Predict("question, answer -> verdict: bool")

    def forward(self, question: str) -> Any:
        draft = self.draft(question=question)
        return self.check(question=question, answer=draft.answer)


class TwoStep(dspex.Module):
    def __init__(self) -> None:
        self.draft = dspex.ChainOfThought("question -> answer")
        self.check = dspex.Predict("question, answer -> verdict: bool")

    async def aforward(self, question: str) -> Any:
        draft = await self.draft.acall(question=question)
        return await self.check.acall(question=question, answer=draft.answer)


# name -> (DSPy builder, dspex builder): the same program in each.
PROGRAMS: dict[str, tuple[Callable[[], Any], Callable[[], dspex.Module]]] = {
    "predict": (lambda: dspy.Predict("question -> answer"), lambda: dspex.Predict("question -> answer")),
    "chain_of_thought": (
        lambda: dspy.ChainOfThought("question -> answer"),
        lambda: dspex.ChainOfThought("question -> answer"),
    ),
    "react": (
        lambda: dspy.ReAct("question -> answer", tools=[search, lookup], max_iters=4),
        lambda: dspex.ReAct("question -> answer", tools=[search, lookup], max_iters=4),
    ),
    "two_step": (DspyTwoStep, TwoStep),
}


def _optimize(program: Any, example: Callable[..., Any]) -> Any:
    """Change every predictor as an optimizer would: instructions, one field's prefix and desc, demos."""
    for i, (_, predictor) in enumerate(program.named_predictors()):
        signature = predictor.signature.with_instructions(f"Instructions for predictor {i}.")
        first = next(iter(signature.fields))
        predictor.signature = signature.with_updated_fields(
            first, prefix=f"Field {i}:", desc=f"described {i}"
        )
        names = [*signature.input_fields, *signature.output_fields]
        predictor.demos = [
            example(**{name: f"{name} {i}.{n}" for name in names}).with_inputs(*signature.input_fields)
            for n in range(2)
        ]
    return program


def _carried(program: Any) -> dict[str, Any]:
    """What a saved state carries, per predictor: demos (as dicts) and the signature's text."""
    return {
        name: {
            "demos": [dict(demo.items()) for demo in predictor.demos],
            "signature": predictor.signature.dump_state(),
        }
        for name, predictor in program.named_predictors()
    }


@pytest.mark.parametrize("name", list(PROGRAMS))
def test_a_program_saved_by_dspy_loads_into_dspex(name: str, tmp_path: Path) -> None:
    build_dspy, build_dspex = PROGRAMS[name]
    original = _optimize(build_dspy(), dspy.Example)
    path = tmp_path / "program.json"
    original.save(str(path))
    loaded = build_dspex().load(path)
    assert _carried(loaded) == _carried(original)


@pytest.mark.parametrize("name", list(PROGRAMS))
def test_a_program_saved_by_dspex_loads_into_dspy(name: str, tmp_path: Path) -> None:
    build_dspy, build_dspex = PROGRAMS[name]
    original = _optimize(build_dspex(), dspex.Example)
    path = tmp_path / "program.json"
    original.save(path)
    into_dspy = build_dspy()
    into_dspy.load(str(path))
    assert _carried(into_dspy) == _carried(original)
    rebuilt = dspex.load(path)  # and dspex rebuilds it alone from the same file
    assert type(rebuilt) is type(original) and _carried(rebuilt) == _carried(original)


@pytest.mark.parametrize("name", list(PROGRAMS))
def test_state_pickles_both_ways(name: str, tmp_path: Path) -> None:
    build_dspy, build_dspex = PROGRAMS[name]
    from_dspy = _optimize(build_dspy(), dspy.Example)
    from_dspy.save(str(tmp_path / "dspy.pkl"))
    assert _carried(build_dspex().load(tmp_path / "dspy.pkl", allow_pickle=True)) == _carried(from_dspy)
    from_dspex = _optimize(build_dspex(), dspex.Example)
    from_dspex.save(tmp_path / "dspex.pkl")
    into_dspy = build_dspy()
    into_dspy.load(str(tmp_path / "dspex.pkl"), allow_pickle=True)
    assert _carried(into_dspy) == _carried(from_dspex)


@pytest.mark.parametrize("name", ["predict", "chain_of_thought", "react"])
def test_a_dspy_save_program_directory_rebuilds_a_standard_module(name: str, tmp_path: Path) -> None:
    build_dspy, build_dspex = PROGRAMS[name]
    original = _optimize(build_dspy(), dspy.Example)
    original.save(str(tmp_path / "saved"), save_program=True)
    assert sorted(p.name for p in (tmp_path / "saved").iterdir()) == ["metadata.json", "program.pkl"]
    with pytest.raises(ProgramLoadError, match=r"saved/program\.pkl: .*allow_pickle=True"):
        dspex.load(tmp_path / "saved")
    loaded = dspex.load(tmp_path / "saved", allow_pickle=True)
    assert type(loaded) is type(build_dspex()) and _carried(loaded) == _carried(original)


def test_a_dspy_save_program_directory_of_a_custom_module_loads_into_one_built_in_code(
    tmp_path: Path,
) -> None:
    original = _optimize(DspyTwoStep(), dspy.Example)
    original.save(str(tmp_path / "saved"), save_program=True)
    with pytest.raises(ProgramLoadError, match=r"DspyTwoStep.*a custom module's code is never loaded"):
        dspex.load(tmp_path / "saved", allow_pickle=True)
    assert _carried(TwoStep().load(tmp_path / "saved", allow_pickle=True)) == _carried(original)


def test_a_dspex_save_program_directory_round_trips(tmp_path: Path) -> None:
    original = _optimize(TwoStep(), dspex.Example)
    original.save(tmp_path / "saved", save_program=True)
    assert (
        json.loads((tmp_path / "saved" / "metadata.json").read_text())["dependency_versions"]["dspy"]
        == "3.4.1"
    )
    loaded = dspex.load(tmp_path / "saved", allow_pickle=True)
    assert isinstance(loaded, TwoStep) and _carried(loaded) == _carried(original)


def test_the_restricted_unpickler_runs_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self) -> tuple[Any, ...]:
            return (os.system, (f"touch {marker}",))

    (tmp_path / "state.pkl").write_bytes(pickle.dumps({"self": Payload()}))
    with pytest.raises(ProgramLoadError, match=r"state\.pkl: the pickle names posix\.system"):
        dspex.Predict("q -> a").load(tmp_path / "state.pkl", allow_pickle=True)
    (tmp_path / "evil").mkdir()
    (tmp_path / "evil" / "program.pkl").write_bytes(pickle.dumps(Payload()))
    with pytest.raises(ProgramLoadError, match="posix:system"):
        dspex.load(tmp_path / "evil", allow_pickle=True)
    assert not marker.exists()


def test_a_tool_pickled_by_value_is_refused(tmp_path: Path) -> None:
    def local_tool(query: str) -> str:
        """A tool cloudpickle saves as code."""
        return query

    dspy.ReAct("question -> answer", tools=[local_tool]).save(str(tmp_path / "saved"), save_program=True)
    with pytest.raises(ProgramLoadError, match="ReAct tool 'local_tool' was pickled by value"):
        dspex.load(tmp_path / "saved", allow_pickle=True)


# -- LM state ----------------------------------------------------------------------------------------


def test_lm_state_goes_both_ways_without_a_key(tmp_path: Path) -> None:
    original = dspex.Predict("q -> a", lm=dspex.LM("openai/gpt-4o-mini", api_key="sk-never", temperature=0.5))
    original.save(tmp_path / "p.json")
    assert "sk-never" not in (tmp_path / "p.json").read_text()
    into_dspy = dspy.Predict("q -> a")
    into_dspy.load(str(tmp_path / "p.json"))
    assert into_dspy.lm.model == "openai/gpt-4o-mini" and into_dspy.lm.kwargs["temperature"] == 0.5
    into_dspy.save(str(tmp_path / "back.json"))
    back = dspex.Predict("q -> a").load(tmp_path / "back.json")
    assert back.lm is not None and back.lm.model == "openai/gpt-4o-mini" and back.lm.temperature == 0.5


def test_an_endpoint_in_a_dspy_file_is_dropped_unless_trusted(tmp_path: Path, caplog: Any) -> None:
    saved = dspy.Predict("q -> a")
    saved.lm = dspy.LM("openai/gpt-4o-mini", api_base="http://elsewhere.example/v1")
    saved.save(str(tmp_path / "p.json"))
    with caplog.at_level(logging.WARNING):
        safe = dspex.Predict("q -> a").load(tmp_path / "p.json")
    assert safe.lm is not None and safe.lm.api_base == "https://api.openai.com/v1"
    assert "Ignoring unsafe LM config key(s)" in caplog.text
    trusted = dspex.Predict("q -> a").load(tmp_path / "p.json", allow_unsafe_lm_state=True)
    assert trusted.lm is not None and trusted.lm.api_base == "http://elsewhere.example/v1"


# -- files of another shape -------------------------------------------------------------------------


def test_a_dspy_state_file_says_how_to_load_it(tmp_path: Path) -> None:
    dspy.Predict("q -> a").save(str(tmp_path / "p.json"))
    with pytest.raises(ProgramLoadError, match=r"p\.json: a DSPy state file .*program\.load\(path\)"):
        dspex.load(tmp_path / "p.json")


@pytest.mark.parametrize(
    ("edit", "problem"),
    [
        (lambda s: s.pop("signature"), r": 'signature' is missing \(expected \{\"instructions\""),
        (lambda s: s.update(demos="x"), r": 'demos' is a str, expected a list"),
        (lambda s: s["signature"]["fields"].pop(), r"'signature.fields' has 1 fields, expected 2"),
        (lambda s: s.update(extended_signature={}), r"'extended_signature' is DSPy 2\.5's format"),
        (lambda s: s.update(metadata=[]), r"'metadata' does not fit"),
    ],
)
def test_a_file_of_another_shape_names_the_file_and_field(edit: Any, problem: str, tmp_path: Path) -> None:
    dspy.Predict("q -> a").save(str(tmp_path / "p.json"))
    state = json.loads((tmp_path / "p.json").read_text())
    edit(state)
    (tmp_path / "p.json").write_text(json.dumps(state))
    with pytest.raises(ProgramLoadError, match=rf"p\.json.*{problem}"):
        dspex.Predict("q -> a").load(tmp_path / "p.json")
