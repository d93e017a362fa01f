"""LM errors carry DSPy 3.4.1's metadata (code, model, provider, request id) in dspex's one error
tree, and AdapterParseError takes both DSPy's and dspex's arguments."""

from __future__ import annotations

import json
import pickle
import socket
from types import SimpleNamespace

import pytest

import dspex
from dspex import errors
from dspex.lm import LM
from dspex.lm.retry import error_for_status


def test_an_lm_error_names_its_model_first_and_keeps_the_metadata() -> None:
    error = dspex.LMRateLimitError(
        "slow down", model="openai/gpt-4o", provider="openai", status=429, request_id="r-1", retry_after=1.5
    )
    assert str(error) == "[openai/gpt-4o] slow down" and error.message == "slow down"
    assert (error.code, error.provider, error.status, error.request_id, error.retry_after) == (
        "rate_limit",
        "openai",
        429,
        "r-1",
        1.5,
    )
    assert str(dspex.LMServerError("down")) == "down" and dspex.LMServerError().code == "server"
    assert dspex.LMError("x", code="custom").code == "custom"
    assert str(dspex.LMTimeoutError(model="m")) == "[m]"


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (dspex.LMAuthError(), "auth"),
        (dspex.LMInvalidRequestError(), "invalid_request"),
        (dspex.LMTransportError(), "transport"),
        (dspex.LMUnsupportedModelError(), "unsupported_model"),
        (dspex.LMUnexpectedError(), "unexpected"),
        (dspex.LMConfigurationError(), "configuration"),
        (dspex.LMNotConfiguredError(), "not_configured"),
        (dspex.AdapterParseError("bad", raw_text=""), "adapter_parse_error"),
        (dspex.ConfigurationError("no lm"), None),
    ],
)
def test_every_error_has_dspys_code(error: errors.DspexError, code: str | None) -> None:
    assert error.code == code


def test_context_window_exceeded_reads_as_in_dspy() -> None:
    bare = dspex.ContextWindowExceededError()
    assert str(bare) == "Context window exceeded" and bare.model is None
    assert bare.code == "context_window_exceeded" and isinstance(bare, dspex.LMInvalidRequestError)
    named = dspex.ContextWindowExceededError(model="openai/gpt-4o", message="200k > 128k")
    assert str(named) == "[openai/gpt-4o] 200k > 128k"
    assert str(dspex.ContextWindowExceededError("too long")) == "too long"  # dspex's positional form


def test_lm_configuration_errors_are_configuration_errors_too() -> None:
    error = dspex.LMNotConfiguredError("no endpoint", model="azure/x", provider="azure")
    assert isinstance(error, dspex.LMConfigurationError | dspex.LMError)
    assert isinstance(error, dspex.ConfigurationError) and isinstance(error, ValueError)
    assert error.systemic and not error.transient and not errors.is_retryable_lm_error(error)


def test_errors_keep_their_fields_through_pickle() -> None:
    original = dspex.LMRateLimitError("slow", model="m", provider="p", request_id="r", retry_after=2.0)
    copy = pickle.loads(pickle.dumps(original))
    assert type(copy) is dspex.LMRateLimitError and str(copy) == "[m] slow"
    assert (copy.model, copy.provider, copy.request_id, copy.retry_after, copy.code) == (
        "m",
        "p",
        "r",
        2.0,
        "rate_limit",
    )
    job = pickle.loads(pickle.dumps(dspex.JobError("failed", job_id="j-1", state="failed")))
    assert (job.job_id, job.state, str(job)) == ("j-1", "failed", "failed")


def test_an_http_error_answer_becomes_an_error_with_the_providers_metadata() -> None:
    body = json.dumps({"error": {"message": "key sk-secret is wrong", "code": "invalid_api_key"}})
    error = error_for_status(
        401,
        body,
        {"x-request-id": "req-9"},
        model="openai/gpt-4o",
        api_base="http://h/v1",
        secret="sk-secret",
    )
    assert isinstance(error, dspex.LMAuthError) and error.code == "auth"
    assert (error.provider, error.provider_code, error.request_id, error.status) == (
        "openai",
        "invalid_api_key",
        "req-9",
        401,
    )
    assert str(error) == "[openai/gpt-4o] http://h/v1 answered HTTP 401: key *** is wrong"


def test_an_over_long_prompt_answer_is_a_context_window_error() -> None:
    body = json.dumps({"error": {"message": "too many tokens", "code": "context_length_exceeded"}})
    error = error_for_status(400, body, {}, model="openai/gpt-4o", api_base="http://h/v1")
    assert isinstance(error, dspex.ContextWindowExceededError) and error.status == 400
    other = error_for_status(400, json.dumps({"error": {"message": "bad"}}), {}, model="m", api_base="b")
    assert type(other) is dspex.LMInvalidRequestError and other.provider is None


def test_adapter_parse_error_takes_dspys_arguments() -> None:
    signature = dspex.Signature("question -> answer1, answer2")
    error = dspex.AdapterParseError(
        adapter_name="JSONAdapter",
        signature=signature,
        lm_response="{}",
        message="Nothing parsed.",
        parsed_result={"answer1": "x"},
    )
    assert (error.adapter_name, error.signature, error.lm_response, error.raw_text) == (
        "JSONAdapter",
        signature,
        "{}",
        "{}",
    )
    text = str(error)
    assert text.startswith("Nothing parsed.\n\nAdapter JSONAdapter failed to parse the LM response.")
    assert "LM Response: {} " in text and "[answer1, answer2]" in text
    assert text.endswith("Actual output fields parsed from the LM response: [answer1] \n\n")
    positional = dspex.AdapterParseError("ChatAdapter", signature, "raw")
    assert positional.adapter == "ChatAdapter" and "Actual output" not in str(positional)


def test_adapter_parse_error_keeps_dspexs_own_form() -> None:
    error = dspex.AdapterParseError(
        "no answer field", raw_text="hello", adapter="ChatAdapter", field="answer"
    )
    assert str(error) == "no answer field" and error.message == "no answer field"
    assert (error.raw_text, error.lm_response, error.adapter_name, error.field) == (
        "hello",
        "hello",
        "ChatAdapter",
        "answer",
    )
    copy = pickle.loads(pickle.dumps(error))
    assert (str(copy), copy.raw_text, copy.field) == ("no answer field", "hello", "answer")


def test_a_refused_connection_names_the_model_and_provider() -> None:
    with socket.socket() as probe:  # a loopback port nothing listens on: refused at once
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    lm = LM("sim/arith", api_base=f"http://127.0.0.1:{port}/v1", cache=False, max_retries=0)
    with pytest.raises(dspex.LMTransportError) as caught:
        lm.complete([{"role": "user", "content": "hi"}])
    assert (caught.value.model, caught.value.provider, caught.value.code) == ("sim/arith", "sim", "transport")
    assert errors.is_retryable_lm_error(caught.value)


def test_a_used_up_quota_is_a_billing_error_and_not_waited_out() -> None:
    body = json.dumps({"error": {"message": "You exceeded your current quota", "code": "insufficient_quota"}})
    error = error_for_status(429, body, {"retry-after": "5"}, model="openai/gpt-4o", api_base="http://h/v1")
    assert isinstance(error, dspex.LMBillingError) and error.code == "billing"
    assert error.systemic and not errors.is_retryable_lm_error(error)
    assert isinstance(error_for_status(402, "pay", {}, model="m", api_base="b"), dspex.LMBillingError)
    assert isinstance(error_for_status(429, "slow", {}, model="m", api_base="b"), dspex.LMRateLimitError)


def test_dspys_other_lm_errors_have_their_fields() -> None:
    unsupported = dspex.LMUnsupportedFeatureError("no", feature="finetuning", issues=["not on this endpoint"])
    assert (unsupported.features, unsupported.issues, unsupported.code) == (
        ["finetuning"],
        ["not on this endpoint"],
        "unsupported_feature",
    )
    stream = dspex.LMStreamAssemblyError("cut off", partial="Hel", part_index=3, model="m")
    assert (str(stream), stream.partial, stream.part_index) == ("[m] cut off", "Hel", 3)
    assert isinstance(stream, dspex.LMUnexpectedError) and not errors.is_retryable_lm_error(stream)
    lock = dspex.LMLockTimeoutError("busy", path="/k", lock_path="/k.lock")
    assert (lock.path, lock.lock_path) == ("/k", "/k.lock") and errors.is_retryable_lm_error(lock)
    limit = dspex.LMCollectionLimitError(
        "full", source=SimpleNamespace(limit="bytes", maximum=10, partial="x")
    )
    assert (limit.limit, limit.maximum, limit.partial, limit.code) == ("bytes", 10, "x", "collection_limit")
