"""Saving and loading custom Module subclasses: by import path plus state."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from dspex_example_programs import AsyncTwoStep, Fanout, NeedsArgs, ScriptedAdapter, offline_lm

import dspex
from dspex.configuration import context
from dspex.errors import ProgramLoadError, SecurityPolicyError
from dspex.modules import Predict
from dspex.primitives import Example, Module
from dspex.primitives.saving import load_program


def _optimize(program: Module) -> Module:
    """Change every predictor the way an optimizer would."""
    for i, (_, predictor) in enumerate(program.named_predictors()):
        predictor.signature = predictor.signature.with_instructions(f"Instructions {i}.")
        names = [*predictor.signature.input_fields, *predictor.signature.output_fields]
        predictor.demos = [Example({name: f"{name}-{i}" for name in names})]
        predictor.config = {"temperature": 0.1 * i}
    return program


def test_custom_module_round_trip(tmp_path: Path) -> None:
    original = _optimize(AsyncTwoStep())
    original.set_lm(offline_lm(api_key="sk-secret"))
    path = tmp_path / "two_step.json"
    original.save(path)
    data = json.loads(path.read_text())
    assert list(data) == ["draft.predict", "check", "metadata", "dspex_program"]  # DSPy's state, and ours
    assert data["dspex_program"]["type"] == "dspex_example_programs:AsyncTwoStep"
    assert list(data["dspex_program"]["children"]) == ["draft", "check"]
    assert "sk-secret" not in path.read_text()
    loaded = dspex.load(path, allow_modules=["dspex_example_programs"])
    assert isinstance(loaded, AsyncTwoStep)
    assert loaded.dump_state() == original.dump_state() and loaded.dump() == original.dump()
    assert loaded.draft.predict.signature.instructions == "Instructions 0."


async def test_a_loaded_program_runs_the_same(tmp_path: Path) -> None:
    original = _optimize(Fanout())
    path = tmp_path / "fanout.json"
    original.save(path)
    loaded = dspex.load(path)
    with context(lm=offline_lm()):
        adapter_a, adapter_b = ScriptedAdapter(), ScriptedAdapter()
        with context(adapter=adapter_a):
            first = await original.acall(question="q")
        with context(adapter=adapter_b):
            again = await loaded.acall(question="q")
    assert again == first
    assert [s.predictor_path for s in again.trace] == [s.predictor_path for s in first.trace]
    assert adapter_a.calls == adapter_b.calls  # same demos, config and inputs went to the adapter


def test_allow_modules_refuses_other_packages(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    AsyncTwoStep().save(path)
    with pytest.raises(SecurityPolicyError, match="outside the allowed modules"):
        dspex.load(path, allow_modules=["mycompany.programs"])


def test_a_class_that_needs_arguments_says_how_to_load_it(tmp_path: Path) -> None:
    original = _optimize(NeedsArgs(2))
    path = tmp_path / "needs_args.json"
    original.save(path)
    with pytest.raises(
        ProgramLoadError, match=r"needs_args\.json: at program: NeedsArgs needs constructor arguments"
    ):
        dspex.load(path)
    with pytest.raises(ProgramLoadError, match=r"NeedsArgs\(\.\.\.\)\.load\(path\)"):
        dspex.load(path)
    loaded = NeedsArgs(2).load(path)
    assert loaded.dump() == original.dump()


def test_loading_into_a_program_of_another_shape_names_the_place(tmp_path: Path) -> None:
    path = tmp_path / "needs_args.json"
    NeedsArgs(2).save(path)
    with pytest.raises(ProgramLoadError, match=r"at program.steps\[1\]: NeedsArgs has no sub-module there"):
        NeedsArgs(1).load(path)
    other = tmp_path / "other.json"
    Predict("question -> answer").save(other)
    with pytest.raises(ProgramLoadError, match=r"other\.json: no state for predictor\(s\) \['steps\[0\]"):
        NeedsArgs(1).load(other)  # checked before anything changes


def test_a_class_defined_in_a_function_cannot_be_loaded() -> None:
    class Local(Module):
        def __init__(self) -> None:
            self.predict = Predict("q -> a")

    with pytest.raises(ProgramLoadError, match="defined inside a function"):
        load_program(Local().dump())


def test_load_into_same_fields_keeps_the_predictors_own_fields(tmp_path: Path) -> None:
    saved = dspex.ChainOfThought("q -> a")
    saved.predict.signature = saved.predict.signature.with_instructions("Answer tersely.")
    path = tmp_path / "cot.json"
    saved.save(path)
    loaded = dspex.ChainOfThought("q -> a")
    loaded.load(path)
    # The untyped-field mark of a string signature survives, and the saved instructions apply.
    assert loaded.predict.signature.input_fields["q"].json_schema_extra["IS_TYPE_UNDEFINED"] is True
    assert str(loaded.predict.signature) == str(saved.predict.signature)


def test_load_into_other_fields_takes_the_saved_signature(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    dspex.Predict("question -> answer").save(path)
    loaded = dspex.Predict("q -> a")
    loaded.load(path, allow_modules=[])
    assert list(loaded.signature.fields) == ["question", "answer"]


def test_an_adapter_given_options_is_rebuilt_with_them() -> None:
    predict = Predict("question -> answer", adapter=dspex.ChatAdapter(use_native_function_calling=True))
    state = predict.predictor_state()
    assert state["adapter"] == {"name": "chat", "options": {"use_native_function_calling": True}}
    loaded = Predict("question -> answer")
    loaded.load_predictor_state(state)
    assert isinstance(loaded.adapter, dspex.ChatAdapter) and loaded.adapter.use_native_function_calling
    # an adapter with its defaults is saved by name alone, as before
    assert Predict("q -> a", adapter=dspex.JSONAdapter()).predictor_state()["adapter"] == "json"


def test_unfit_adapter_options_are_a_load_error() -> None:
    state = Predict("q -> a").predictor_state() | {"adapter": {"name": "chat", "options": {"nope": 1}}}
    with pytest.raises(ProgramLoadError, match="adapter 'chat': options"):
        Predict("q -> a").load_predictor_state(state)


@pytest.mark.parametrize(
    "path",
    [
        "dspex.primitives.local_interpreter:LocalInterpreter",
        "dspex:LocalInterpreter",
        "dspex.primitives._local_worker:serve",
    ],
)
def test_a_program_cannot_name_the_local_interpreter_whatever_the_policy(path: str) -> None:
    from dspex.serialization import import_object

    for allow_modules in (None, ["dspex"]):
        with pytest.raises(SecurityPolicyError, match="outside the sandbox"):
            import_object(path, allow_modules=allow_modules, what="tool")
