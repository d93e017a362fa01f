"""Optimizer checkpoints as models: checkpoints written before the models still resume, and a bad
checkpoint is a one-line ConfigurationError naming the version, or the field and its expected type.

``checkpoints/v1_state_dicts.json`` holds ``state_dict()`` of runs of six optimizers, captured from the
code as it was before the checkpoint models (the hand-written ``to_dict``/``from_dict``); each entry
is rebuilt here with the setup it was captured with.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from dspex_optimizer_fakes import FakeExecutor, dataset, sim_lm_of

from dspex.configuration import context
from dspex.errors import ConfigurationError
from dspex.lm import LM
from dspex.metrics import exact_match, numeric_equal
from dspex.modules import Predict
from dspex.optimizers import (
    COPRO,
    SIMBA,
    BootstrapFewShot,
    BootstrapFewShotWithRandomSearch,
    LabeledFewShot,
    LocalExecutor,
    MIPROv2,
    OptimizerRun,
)
from dspex.optimizers.checkpoint import CHECKPOINT_VERSION, BootstrapState, read_checkpoint, read_state
from dspex.primitives import Example
from dspex.schemas import OptimizerCheckpoint
from dspex.schemas.serde import decode, encode
from dspex.serialization import candidate_id
from dspex.testing import SimulatedLMServer, arithmetic_dataset

WRITTEN_BEFORE = json.loads((Path(__file__).parent / "checkpoints" / "v1_state_dicts.json").read_text())
METRIC = exact_match("answer")
UNUSED_LM = LM("openai/unused", api_base="http://127.0.0.1:9", api_key="x", cache=False)


def third_fails(example: Example, rollout: int | None) -> bool:
    return int(example.answer) % 3 != 0


def half_pass(example: Example, rollout: int | None) -> bool:
    return int(example.answer) % 2 == 0


# Each fixture entry's run, as it was captured (FakeExecutor: no LM; state None: a fresh run).
def bootstrap(state: Any = None) -> OptimizerRun:
    optimizer = BootstrapFewShot(METRIC, max_bootstrapped_demos=3, max_labeled_demos=3)
    sets = {"trainset": dataset(12), "valset": dataset(6, offset=50)}
    return optimizer.start(
        Predict("question -> answer"), **sets, executor=FakeExecutor(third_fails), state=state
    )


def random_search(state: Any = None) -> OptimizerRun:
    optimizer = BootstrapFewShotWithRandomSearch(METRIC, num_candidate_programs=3, max_bootstrapped_demos=3)
    sets = {"trainset": dataset(12), "valset": dataset(10, offset=50)}
    return optimizer.start(
        Predict("question -> answer"), **sets, executor=FakeExecutor(third_fails), state=state
    )


def labeled(state: Any = None) -> OptimizerRun:
    return LabeledFewShot(k=2).start(
        Predict("question -> answer"),
        trainset=dataset(6),
        valset=dataset(4, offset=50),
        metric=METRIC,
        executor=FakeExecutor(),
        state=state,
    )


def simba(state: Any = None) -> OptimizerRun:
    optimizer = SIMBA(METRIC, bsize=4, num_candidates=3, max_steps=3, prompt_model=UNUSED_LM)
    return optimizer.start(
        Predict("question -> answer"),
        trainset=dataset(10),
        seed=5,
        executor=FakeExecutor(half_pass),
        state=state,
    )


def copro(lm: LM, state: Any = None) -> OptimizerRun:
    optimizer = COPRO(prompt_model=lm, metric=numeric_equal("answer"), breadth=3, depth=3)
    return optimizer.start(
        Predict("question -> answer", lm=lm), trainset=arithmetic_dataset(12, seed=4), state=state
    )


def mipro(lm: LM, state: Any = None) -> OptimizerRun:
    optimizer = MIPROv2(numeric_equal("answer"), auto="light", seed=1)
    return optimizer.start(
        Predict("question -> answer", lm=lm),
        trainset=arithmetic_dataset(20, seed=21),
        valset=arithmetic_dataset(20, seed=22),
        executor=LocalExecutor(64),
        state=state,
    )


WITHOUT_LM: dict[str, Callable[..., OptimizerRun]] = {
    "bootstrap_after_1": bootstrap,
    "random_search_after_1": random_search,
    "random_search_done": random_search,
    "labeled_done": labeled,
    "simba_after_3": simba,
}


def saved(name: str) -> dict[str, Any]:
    return copy.deepcopy(WRITTEN_BEFORE[name])


# --------------------------------------------------------------------------- written before: resumes


@pytest.mark.parametrize("name", sorted(WITHOUT_LM))
def test_a_checkpoint_written_before_the_models_loads_and_writes_back_the_same(name: str) -> None:
    run = WITHOUT_LM[name](saved(name))
    assert run.state_dict() == WRITTEN_BEFORE[name]  # the wire form is unchanged
    assert run.step_index == WRITTEN_BEFORE[name]["step"] and run.done is WRITTEN_BEFORE[name]["done"]


@pytest.mark.parametrize("name", ["bootstrap_after_1", "random_search_after_1", "simba_after_3"])
async def test_a_checkpoint_written_before_resumes_to_the_uninterrupted_result(name: str) -> None:
    build = WITHOUT_LM[name]
    whole = build()
    expected = await whole.run_to_end()
    resumed = build(saved(name))
    assert candidate_id(await resumed.run_to_end()) == candidate_id(expected)
    assert resumed.history.trials == whole.history.trials  # the trials before the checkpoint included
    assert resumed.budget.spent == whole.budget.spent


async def test_copro_and_mipro_checkpoints_written_before_load_and_run_on(sim: SimulatedLMServer) -> None:
    lm = sim_lm_of(sim)
    for name, build in (("copro_after_2", copro), ("mipro_in_search", mipro)):
        run = build(lm, saved(name))
        assert run.state_dict() == WRITTEN_BEFORE[name], name
        with context(lm=lm):
            await run.run_to_end()
        assert run.done and len(run.history.trials) > len(WRITTEN_BEFORE[name]["history"]["trials"]), name


def test_the_checkpoint_goes_through_the_optimizer_state_topic_unchanged() -> None:
    state = WRITTEN_BEFORE["simba_after_3"]
    message = OptimizerCheckpoint(job_id="j", step=state["step"], optimizer="simba", state=state)
    received = decode(encode(message), OptimizerCheckpoint)
    assert received.state == state and simba(received.state).state_dict() == state


# --------------------------------------------------------------------------- bad checkpoints


@pytest.mark.parametrize("version", [2, 0, None, "1"])
def test_another_version_is_refused_naming_both_versions(version: Any) -> None:
    data = saved("bootstrap_after_1")
    data["version"] = version
    with pytest.raises(ConfigurationError, match=rf"version {version!r}; this dspex reads version 1") as info:
        bootstrap(data)
    assert "\n" not in str(info.value)


def test_a_checkpoint_without_a_version_is_refused() -> None:
    data = saved("bootstrap_after_1")
    del data["version"]
    with pytest.raises(ConfigurationError, match="version None; this dspex reads version 1"):
        bootstrap(data)


def bad(name: str, path: str, value: Any) -> dict[str, Any]:
    """The saved checkpoint with the value at ``path`` (dotted, list indexes as numbers) replaced."""
    data = saved(name)
    *parents, last = path.split(".")
    node: Any = data
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return data


@pytest.mark.parametrize(
    ("name", "path", "value", "expected"),
    [
        ("bootstrap_after_1", "step", "1", "step: should be a valid integer, got str '1'"),
        ("bootstrap_after_1", "done", 0, "done: should be a valid boolean, got int 0"),
        (
            "bootstrap_after_1",
            "state.tasks.0.opened",
            2.5,
            "state.tasks.0.opened: should be a valid integer",
        ),
        (
            "bootstrap_after_1",
            "history.trials.0.score",
            "high",
            "history.trials.0.score: should be a valid number",
        ),
        (
            "bootstrap_after_1",
            "budget.spent.lm_calls",
            [3],
            "budget.spent.lm_calls: should be a valid integer",
        ),
        (
            "random_search_after_1",
            "state.best",
            "0",
            "state.best: should be a valid integer, got str '0'",
        ),
        ("simba_after_3", "state.pool.0.scores", "0.5", "state.pool.0.scores: should be a valid array"),
        (
            "simba_after_3",
            "state.phase",
            "dance",
            "state.phase: should be 'sample', 'choose' or 'evaluate'",
        ),
        (
            "bootstrap_after_1",
            "state.tasks.0.surprise",
            1,
            "state.tasks.0.surprise: unknown field",
        ),
        (
            "bootstrap_after_1",
            "history.trials.0.surprise",
            1,
            "history.trials.0.surprise: unknown field",
        ),
    ],
)
def test_a_field_of_the_wrong_type_is_one_line_naming_the_field_and_the_type(
    name: str, path: str, value: Any, expected: str
) -> None:
    build = WITHOUT_LM[name]
    with pytest.raises(ConfigurationError) as info:
        build(bad(name, path, value))
    message = str(info.value)
    assert expected in message and "\n" not in message, message
    assert message.startswith("bad optimizer checkpoint (")


def test_a_missing_field_is_named() -> None:
    data = saved("bootstrap_after_1")
    del data["state"]["tasks"][0]["attempts"]
    with pytest.raises(ConfigurationError, match=r"\(BootstrapState\): state\.tasks\.0\.attempts: missing"):
        bootstrap(data)


def test_a_checkpoint_of_another_optimizer_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="of a BootstrapFewShot run, not SIMBA"):
        simba(saved("bootstrap_after_1"))
    with pytest.raises(ConfigurationError, match="candidate seeds"):  # same name, other plan
        BootstrapFewShotWithRandomSearch(METRIC, num_candidate_programs=5, max_bootstrapped_demos=3).start(
            Predict("question -> answer"),
            trainset=dataset(12),
            valset=dataset(10, offset=50),
            executor=FakeExecutor(),
            state=saved("random_search_after_1"),
        )


@pytest.mark.parametrize("data", [[1, 2], "checkpoint", 7])
def test_a_checkpoint_that_is_not_an_object_is_refused(data: Any) -> None:
    with pytest.raises(ConfigurationError, match="is a JSON object"):
        bootstrap(data)


def test_a_refused_checkpoint_leaves_the_run_as_it_was() -> None:
    run = bootstrap()
    before = run.state_dict()
    with pytest.raises(ConfigurationError):
        run.load_state_dict(bad("bootstrap_after_1", "state.tasks.0.done", "yes"))
    assert run.state_dict() == before


# --------------------------------------------------------------------------- the models


def test_state_dict_is_a_run_checkpoint_of_this_version_with_the_optimizers_state_model() -> None:
    data = bootstrap().state_dict()
    checkpoint = read_checkpoint(json.loads(json.dumps(data)))
    assert checkpoint.version == CHECKPOINT_VERSION == data["version"] == 1
    state = read_state(BootstrapState, checkpoint.state)
    assert state.tasks[0].opened == 0 and checkpoint.history.optimizer == "BootstrapFewShot"
    with pytest.raises(Exception, match="frozen"):
        checkpoint.step = 3  # type: ignore[misc]


def test_a_state_dict_not_yet_through_json_loads_too() -> None:
    run = simba()
    state = run.state_dict()  # Python values as they are: tuples, integer keys
    assert simba(state).state_dict() == json.loads(json.dumps(state))
