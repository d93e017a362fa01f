"""BestOfN without an LM: rollout settings, failures, rewards, validation and saving."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from dspex_breadth_unit_tools import Flaky, constant_reward

import dspex
from dspex.errors import ConfigurationError, LMServerError, ProgramLoadError
from dspex.lm import LM
from dspex.modules import BestOfN, ChainOfThought, Predict
from dspex.primitives import Module, Prediction


def _lm(**kwargs: Any) -> LM:
    return LM("openai/offline", api_base="http://127.0.0.1:9/v1", cache=False, **kwargs)


def _configs(module: Module) -> list[dict[str, Any]]:
    return [predictor.config for predictor in module.predictors()]


def test_rollouts_send_distinct_ids_at_a_non_zero_temperature() -> None:
    program = ChainOfThought("question -> answer", lm=_lm(), max_tokens=50)
    best = BestOfN(program, N=3, reward_fn=constant_reward, threshold=1.0)
    rollouts = [best.rollout(i) for i in range(3)]
    assert [_configs(r) for r in rollouts] == [
        [{"max_tokens": 50, "rollout_id": i, "temperature": 1.0}] for i in range(3)
    ]
    assert program.predict.config == {"max_tokens": 50}  # the module itself is untouched


def test_rollouts_keep_a_temperature_the_user_chose() -> None:
    from_lm = BestOfN(Predict("q -> a", lm=_lm(temperature=0.3)), 2, constant_reward, 1.0).rollout(1)
    from_config = BestOfN(
        Predict("q -> a", lm=_lm(), temperature=0.6, rollout_id=10), 2, constant_reward, 1.0
    )
    explicit = BestOfN(Predict("q -> a", lm=_lm(temperature=0.3)), 2, constant_reward, 1.0, temperature=0.9)
    assert _configs(from_lm) == [{"rollout_id": 1, "temperature": 0.3}]
    assert _configs(from_config.rollout(1)) == [{"temperature": 0.6, "rollout_id": 11}]
    assert _configs(explicit.rollout(0)) == [{"rollout_id": 0, "temperature": 0.9}]
    with dspex.context(lm=_lm(temperature=0.2)):
        assert (
            _configs(BestOfN(Predict("q -> a"), 2, constant_reward, 1.0).rollout(0))[0]["temperature"] == 0.2
        )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"N": 0}, "N must be an integer >= 1"),
        ({"reward_fn": "exact_match"}, "reward_fn must be callable"),
        ({"fail_count": 1.5}, "fail_count must be None or an integer"),
        ({"temperature": 0.0}, "temperature must be None or > 0"),
        ({"module": "qa"}, "needs a dspex Module"),
    ],
)
def test_bad_arguments_are_configuration_errors(kwargs: dict[str, Any], message: str) -> None:
    args = {"module": Predict("q -> a"), "N": 2, "reward_fn": constant_reward, "threshold": 1.0, **kwargs}
    with pytest.raises(ConfigurationError, match=message):
        BestOfN(**args)


async def test_failed_attempts_are_tolerated_up_to_fail_count() -> None:
    Flaky.calls.clear()
    pred = await BestOfN(Flaky(failures=2), N=4, reward_fn=constant_reward, threshold=1.0).acall(question="q")
    assert pred.answer == "3" and len(Flaky.calls) == 4  # two failures, then two scored attempts

    Flaky.calls.clear()
    with pytest.raises(LMServerError, match="bad moment") as caught:
        await BestOfN(Flaky(failures=2), N=4, reward_fn=constant_reward, threshold=1.0, fail_count=1).acall(
            question="q"
        )
    assert "2 of 2 attempts failed" in caught.value.__notes__[0]

    Flaky.calls.clear()
    with pytest.raises(LMServerError):  # every attempt failed: nothing to return
        await BestOfN(Flaky(failures=3), N=3, reward_fn=constant_reward, threshold=1.0).acall(question="q")


async def test_the_best_reward_wins_and_async_rewards_are_awaited() -> None:
    async def by_number(inputs: dict[str, Any], pred: Prediction) -> float:
        return {"1": 0.2, "2": 0.9, "3": 0.5}[pred.answer]

    Flaky.calls.clear()
    pred = await BestOfN(Flaky(), N=3, reward_fn=by_number, threshold=1.0).acall(question="q")
    assert pred.answer == "2" and len(Flaky.calls) == 3

    Flaky.calls.clear()
    pred = await BestOfN(Flaky(), N=3, reward_fn=by_number, threshold=0.9).acall(question="q")
    assert pred.answer == "2" and len(Flaky.calls) == 2  # stopped at the first reaching the threshold


async def test_a_configuration_error_is_raised_at_once() -> None:
    best = BestOfN(Predict("question -> answer"), N=3, reward_fn=constant_reward, threshold=1.0)
    with pytest.raises(ConfigurationError, match="has no LM"):
        await best.acall(question="q")


def test_a_saved_best_of_n_rebuilds_with_its_reward_function(tmp_path: Path) -> None:
    best = BestOfN(ChainOfThought("question -> answer", lm=_lm()), 3, constant_reward, 0.75, fail_count=1)
    path = tmp_path / "best.json"
    best.save(path)
    loaded = dspex.load(path, allow_modules=["dspex_breadth_unit_tools"])
    assert isinstance(loaded, BestOfN) and loaded.dump() == best.dump()
    assert (loaded.N, loaded.threshold, loaded.fail_count, loaded.reward_fn) == (3, 0.75, 1, constant_reward)
    assert [path for path, _ in loaded.named_predictors()] == ["module.predict"]


def test_a_lambda_reward_cannot_be_saved() -> None:
    best = BestOfN(Predict("q -> a"), 2, lambda inputs, pred: 1.0, 1.0)
    with pytest.raises(ConfigurationError, match=r"reward_fn .* cannot be saved by import path"):
        best.dump()


def test_a_saved_best_of_n_without_its_module_is_a_load_error() -> None:
    data = BestOfN(Predict("q -> a"), 2, constant_reward, 1.0).dump()
    data["children"] = {}
    with pytest.raises(ProgramLoadError, match="'module' child"):
        dspex.primitives.saving.load_program(data)
