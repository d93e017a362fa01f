"""DSPy's per-model usage: ``track_usage()`` trackers' reports, ``settings.track_usage`` and
``Prediction.get_lm_usage()``, against an OpenAI-compatible HTTP server (the simulated LM, or a
one-route server whose answers carry token details)."""

from __future__ import annotations

import asyncio
import copy
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from aiohttp import web
from lm_served import served_v1
from pydantic import BaseModel

import dspex
from dspex.configuration import reset_settings
from dspex.lm.usage import UsageTracker, merge_usage_reports, track_usage, usage_report
from dspex.testing._server import SimulatedLM, make_app
from dspex.utils.dummies import DummyLM

MODEL = "openai/simulated"


@pytest.fixture(autouse=True)
def fresh_settings() -> Iterator[None]:
    reset_settings()
    yield
    reset_settings()


@pytest.fixture
async def sim_base() -> AsyncIterator[str]:
    async with served_v1(make_app(SimulatedLM())) as base:
        yield base


DETAILED_USAGE = {
    "prompt_tokens": 30,
    "completion_tokens": 7,
    "total_tokens": 37,
    "prompt_tokens_details": {"cached_tokens": 10, "audio_tokens": 0},
    "completion_tokens_details": {"reasoning_tokens": 4},
    "is_byok": True,
}


@pytest.fixture
async def detailed_base() -> AsyncIterator[str]:
    """A server that answers every chat call with one fixed answer and a detailed usage report."""

    async def chat(request: web.Request) -> web.Response:
        body = await request.json()
        return web.json_response(
            {
                "id": "c1",
                "model": body["model"],
                "choices": [
                    {
                        "index": 0,
                        "message": {
                            "role": "assistant",
                            "content": "[[ ## answer ## ]]\n5\n\n[[ ## completed ## ]]",
                        },
                        "finish_reason": "stop",
                    }
                ],
                "usage": DETAILED_USAGE,
            }
        )

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    async with served_v1(app) as base:
        yield base


class Outer(dspex.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inner = dspex.Predict("question -> answer")
        self.inner_usage: list[Any] = []

    async def aforward(self, question: str) -> dspex.Prediction:
        first = await self.inner.acall(question=question)
        self.inner_usage.append(first.get_lm_usage())
        return await self.inner.acall(question=question + " again")


def _question() -> str:
    return f"What is 2 + 3? ({uuid.uuid4().hex})"  # never in the response cache


# -- the reports and their sums -------------------------------------------------------------------


def test_reports_sum_key_by_key_with_nested_details_flags_and_names() -> None:
    total = merge_usage_reports(
        [
            {"prompt_tokens": 5, "prompt_tokens_details": None, "is_byok": True, "provider": "a"},
            {
                "prompt_tokens": 7,
                "prompt_tokens_details": {"cached_tokens": 2},
                "is_byok": True,
                "provider": "b",
            },
            {"completion_tokens": 3, "prompt_tokens_details": {"cached_tokens": 4, "audio_tokens": 1}},
        ]
    )
    assert total == {
        "prompt_tokens": 12,
        "prompt_tokens_details": {"cached_tokens": 6, "audio_tokens": 1},
        "is_byok": True,  # a flag is not a count
        "provider": "a",
        "completion_tokens": 3,
    }


def test_a_tracker_keeps_reports_per_model_and_skips_empty_ones() -> None:
    class Details(BaseModel):
        cached_tokens: int

    tracker = UsageTracker()
    tracker.add_usage("m1", {"prompt_tokens": 1, "prompt_tokens_details": Details(cached_tokens=1)})
    tracker.add_usage("m1", {"prompt_tokens": 2})
    tracker.add_usage("m2", {"completion_tokens": 9})
    tracker.add_usage("m3", {})
    assert tracker.usage_data["m1"][0] == {"prompt_tokens": 1, "prompt_tokens_details": {"cached_tokens": 1}}
    assert tracker.get_total_tokens() == {
        "m1": {"prompt_tokens": 3, "prompt_tokens_details": {"cached_tokens": 1}},
        "m2": {"completion_tokens": 9},
    }
    clone = copy.deepcopy(tracker)
    clone.add_usage("m2", {"completion_tokens": 1})
    assert tracker.get_total_tokens()["m2"] == {"completion_tokens": 9}
    assert clone.get_total_tokens()["m2"] == {"completion_tokens": 10}


def test_a_report_has_the_three_counts_even_when_the_provider_sent_fewer() -> None:
    assert usage_report({"prompt_tokens": 4, "completion_tokens": 2}) == {
        "prompt_tokens": 4,
        "completion_tokens": 2,
        "total_tokens": 6,
        "prompt_tokens_details": None,
        "completion_tokens_details": None,
    }


def test_dspy_import_path_of_the_tracker() -> None:
    from dspex.utils.usage_tracker import UsageTracker as FromDspyPath
    from dspex.utils.usage_tracker import track_usage as track_from_dspy_path

    assert FromDspyPath is UsageTracker
    assert track_from_dspy_path is dspex.track_usage is track_usage


# -- LM calls -------------------------------------------------------------------------------------


async def test_track_usage_keeps_provider_reports_and_settings_name_it(detailed_base: str) -> None:
    lm = dspex.LM(MODEL, api_base=detailed_base, api_key="k", cache=False)
    predict = dspex.Predict("question -> answer")
    assert dspex.settings.usage_tracker is None
    with dspex.context(lm=lm), dspex.track_usage() as tracker:
        assert dspex.settings.usage_tracker is tracker
        await predict.acall(question="q1")
        await predict.acall(question="q2")
    assert dspex.settings.usage_tracker is None
    assert tracker.usage_data[MODEL][0] == DETAILED_USAGE
    assert tracker.get_total_tokens() == {
        MODEL: {
            "prompt_tokens": 60,
            "completion_tokens": 14,
            "total_tokens": 74,
            "prompt_tokens_details": {"cached_tokens": 20, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 8},
            "is_byok": True,
        }
    }
    assert tracker.usage.prompt_tokens == 60  # dspex's own sum, from the same calls


async def test_cache_hits_add_no_report(sim_base: str) -> None:
    lm = dspex.LM(MODEL, api_base=sim_base, api_key="k", cache=True)
    dspex.configure(lm=lm, track_usage=True)
    predict = dspex.Predict("question -> answer")
    question = _question()
    first = await predict.acall(question=question)
    again = await predict.acall(question=question)
    assert first.get_lm_usage()[MODEL]["total_tokens"] > 0
    assert again.get_lm_usage() == {}  # tracked, nothing billed
    assert again.usage.cache_hits == 1


async def test_only_the_outermost_module_call_gets_lm_usage_and_off_means_none(sim_base: str) -> None:
    lm = dspex.LM(MODEL, api_base=sim_base, api_key="k", cache=False)
    dspex.configure(lm=lm)
    program = Outer()
    assert (await program.acall(question=_question())).get_lm_usage() is None  # tracking off
    dspex.configure(track_usage=True)
    prediction = await program.acall(question=_question())
    usage = prediction.get_lm_usage()
    assert list(usage) == [MODEL]
    assert usage[MODEL]["prompt_tokens"] == prediction.usage.prompt_tokens > 0
    assert prediction.usage.lm_calls == 2
    assert program.inner_usage == [None, None]
    # inside a tracker the user opened, the calls report to it and predictions get none
    with dspex.track_usage() as tracker:
        inside = await program.acall(question=_question())
    assert inside.get_lm_usage() is None
    assert len(tracker.usage_data[MODEL]) == 2


async def test_nested_trackers_and_a_tracker_given_to_context(sim_base: str) -> None:
    lm = dspex.LM(MODEL, api_base=sim_base, api_key="k", cache=False)
    predict = dspex.Predict("question -> answer")
    given = UsageTracker()
    with dspex.context(lm=lm), track_usage() as outer:
        await predict.acall(question=_question())
        with dspex.track_usage() as inner:
            await predict.acall(question=_question())
        with dspex.context(usage_tracker=given):
            assert dspex.settings.usage_tracker is given
            await predict.acall(question=_question())
    assert [len(t.usage_data[MODEL]) for t in (outer, inner, given)] == [3, 1, 1]


async def test_concurrent_calls_each_get_their_own_usage_and_the_outer_tracker_all(sim_base: str) -> None:
    lm = dspex.LM(MODEL, api_base=sim_base, api_key="k", cache=False)
    dspex.configure(lm=lm, track_usage=True)
    predict = dspex.Predict("question -> answer")
    predictions = await asyncio.gather(*(predict.acall(question=_question()) for _ in range(6)))
    for prediction in predictions:
        assert prediction.get_lm_usage()[MODEL]["prompt_tokens"] == prediction.usage.prompt_tokens
    batch = await asyncio.to_thread(predict.batch, [{"question": _question()} for _ in range(4)])
    assert all(p is not None and p.get_lm_usage()[MODEL]["total_tokens"] > 0 for p in batch)
    with dspex.track_usage() as run:
        await asyncio.to_thread(predict.batch, [{"question": _question()} for _ in range(4)])
    # dspex: calls made by batch/Parallel count in the tracker open around them
    assert len(run.usage_data[MODEL]) == 4


def test_dummy_lm_reports_zero_tokens_as_dspy_does() -> None:
    dspex.configure(lm=DummyLM([{"answer": "4"}]), track_usage=True)
    prediction = dspex.Predict("question -> answer")(question="2 + 2?")
    assert prediction.get_lm_usage() == {
        "dummy": {
            "prompt_tokens": 0,
            "completion_tokens": 0,
            "total_tokens": 0,
            "prompt_tokens_details": None,
            "completion_tokens_details": None,
        }
    }


def test_a_custom_base_lm_reports_its_usage_by_model() -> None:
    class Custom(dspex.BaseLM):
        def forward(self, prompt: Any = None, messages: Any = None, **kwargs: Any) -> dict[str, Any]:
            return {
                "choices": [{"message": {"role": "assistant", "content": "Hi!"}}],
                "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
                "model": "custom-model",
            }

    class Silent(Custom):
        def forward(self, prompt: Any = None, messages: Any = None, **kwargs: Any) -> dict[str, Any]:
            return {"choices": [{"message": {"role": "assistant", "content": "Hi!"}}]}

    with dspex.track_usage() as tracker:
        Custom(model="custom-model")("Query")
        Silent(model="silent-model")("Query")
    assert tracker.get_total_tokens()["custom-model"]["total_tokens"] == 5
    assert "silent-model" not in tracker.usage_data  # no report, none kept


def test_evaluate_under_track_usage_gives_each_prediction_its_usage() -> None:
    dspex.configure(lm=DummyLM([{"answer": "4"}] * 3), track_usage=True)
    seen: list[tuple[Any, Any]] = []

    def metric(example: Any, prediction: Any, trace: Any = None) -> bool:
        seen.append((prediction.get_lm_usage(), dspex.settings.usage_tracker))
        return True

    devset = [dspex.Example(question=f"{i} + 2?").with_inputs("question") for i in range(3)]
    dspex.Evaluate(devset=devset, metric=metric, num_threads=2)(dspex.Predict("question -> answer"))
    # dspex's own run tracker is not DSPy's settings.usage_tracker
    assert [usage for usage, _ in seen] == [{"dummy": usage_report({})}] * 3
    assert [tracker for _, tracker in seen] == [None] * 3
