"""The evaluate methods' options are written once (``EvaluateOptions``): the same keywords, the
same defaults, and an unknown keyword refused as a signature that listed them would."""

from __future__ import annotations

import asyncio

import pytest

import dspex
from dspex.client._client_evaluate import EvaluateOptions, _EvaluateCall
from dspex.client._submit import Limits
from dspex.errors import ConfigurationError

DEVSET = [dspex.Example(question="1+1?", answer="2").with_inputs("question")]


def test_the_options_are_the_documented_keywords() -> None:
    assert set(EvaluateOptions.__optional_keys__) == {
        "name",
        "failure_score",
        "max_errors",
        "max_cost_usd",
        "priority",
        "num_threads",
        "display_progress",
        "timeout",
        "mode",
    }
    assert not EvaluateOptions.__required_keys__


def test_the_defaults() -> None:
    call = _EvaluateCall.of("evaluate", True, {})
    assert call == _EvaluateCall(Limits(), wait=True, display_progress=True, timeout=None)


def test_given_options_reach_the_limits_and_the_wait() -> None:
    options: EvaluateOptions = {
        "name": "nightly",
        "failure_score": 0.5,
        "max_errors": 3,
        "max_cost_usd": 1.25,
        "priority": "bulk",
        "display_progress": False,
        "timeout": 9.0,
        "mode": "batch",
    }
    call = _EvaluateCall.of("evaluate_many", False, options)
    assert call.limits == Limits("nightly", 0.5, 3, 1.25, priority="bulk", lm_mode="batch")
    assert (call.wait, call.display_progress, call.timeout) == (False, False, 9.0)


def test_a_mode_other_than_online_or_batch_is_refused() -> None:
    assert _EvaluateCall.of("evaluate", True, {"mode": "online"}).limits.lm_mode is None
    with pytest.raises(ConfigurationError, match="'online' or 'batch'"):
        _EvaluateCall.of("evaluate", True, {"mode": "offline"})  # type: ignore[typeddict-item]


@pytest.mark.parametrize("method", ["evaluate", "evaluate_many"])
def test_an_unknown_keyword_is_a_type_error_before_any_connection(method: str) -> None:
    client = dspex.Client("127.0.0.1:1")  # nothing listens: a connection would fail differently
    program = dspex.Predict("question -> answer")
    first = program if method == "evaluate" else [program]
    with pytest.raises(TypeError, match=rf"Client\.{method}\(\) got an unexpected keyword argument 'nme'"):
        getattr(client, method)(first, DEVSET, "exact_match:answer", nme="x")


def test_the_async_forms_refuse_the_same_way() -> None:
    client = dspex.Client("127.0.0.1:1")
    program = dspex.Predict("question -> answer")
    with pytest.raises(
        TypeError, match=r"Client\.aevaluate\(\) got an unexpected keyword argument 'retries'"
    ):
        asyncio.run(client.aevaluate(program, DEVSET, "exact_match:answer", retries=2))  # type: ignore[call-overload]
