"""dspex.LM.finetune through the OpenAI-compatible provider, against the simulated LM's fine-tuning API
(a simulation: the in-process server, real HTTP)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import dspex
from dspex.errors import ConfigurationError, FinetuneError, SecurityPolicyError
from dspex.lm.finetune import OpenAIProvider, TrainingStatus, register_training_prices
from dspex.testing import SimulatedLMServer, arithmetic_rows

_SYSTEM = "Your input fields are:\n1. `question` (str)\nYour output fields are:\n1. `answer` (str)"


def record(question: str, answer: str) -> dict[str, Any]:
    return {
        "messages": [
            {"role": "system", "content": _SYSTEM},
            {"role": "user", "content": f"[[ ## question ## ]]\n{question}"},
            {"role": "assistant", "content": f"[[ ## answer ## ]]\n{answer}\n\n[[ ## completed ## ]]"},
        ]
    }


def records(n: int, seed: int = 0) -> list[dict[str, Any]]:
    return [record(row["question"], row["answer"]) for row in arithmetic_rows(n, seed)]


@pytest.fixture
def sim() -> Iterator[SimulatedLMServer]:
    with SimulatedLMServer(in_process=True, finetune_seconds=0.2, require_api_key="sk-sim-secret") as server:
        yield server


def make_lm(sim: SimulatedLMServer, tmp_path: Path, **provider: Any) -> dspex.LM:
    return dspex.LM(
        "sim/arith",
        api_base=sim.base_url,
        api_key="sk-sim-secret",
        cache_dir=tmp_path,
        provider=OpenAIProvider(poll_interval=0.02, **provider),
    )


def test_a_job_gives_a_new_lm_for_the_tuned_model_at_the_same_endpoint(
    sim: SimulatedLMServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    lm = make_lm(sim, tmp_path)
    with caplog.at_level(logging.INFO, logger="dspex.lm.finetune"):
        job = lm.finetune(records(12), "chat", {"n_epochs": 2})
        tuned = job.result(timeout=20)
    assert isinstance(tuned, dspex.LM) and tuned.api_base == lm.api_base
    assert tuned.model == f"sim/ft:arith:dspex:{job.provider_job_id}"
    assert job.status() is TrainingStatus.succeeded and job.provider_file_id is not None
    assert "New fine-tuned model created" in caplog.text  # the provider's events are logged
    assert tuned.complete([{"role": "user", "content": "What is 2 + 3?"}]).text  # the endpoint serves it
    assert "sk-sim-secret" not in caplog.text


def test_the_same_data_reattaches_to_the_job_instead_of_starting_another(
    sim: SimulatedLMServer, tmp_path: Path
) -> None:
    lm = make_lm(sim, tmp_path)
    first = lm.finetune(records(12), "chat", {"n_epochs": 2})
    first.result(timeout=20)
    again = lm.finetune(records(12), "chat", {"n_epochs": 2})
    assert again.result(timeout=20).model == first.result().model
    other = lm.finetune(records(12), "chat", {"n_epochs": 3})  # other hyperparameters: a new job
    assert other.result(timeout=20).model != first.result().model
    assert sim.control.stats()["fine_tuning"]["created"] == 2


def test_a_failed_job_raises_with_its_id_and_the_providers_reason(
    sim: SimulatedLMServer, tmp_path: Path
) -> None:
    lm = make_lm(sim, tmp_path)
    job = lm.finetune(records(5), "chat")  # well-formed, but the provider wants 10 examples at least
    with pytest.raises(FinetuneError, match="at least 10") as caught:
        job.result(timeout=20)
    assert caught.value.job_id == job.provider_job_id and job.provider_job_id in str(caught.value)
    sim.control.configure(finetune_fail=1.0)
    with pytest.raises(FinetuneError, match="Simulated training failure"):
        lm.finetune(records(12, seed=3), "chat").result(timeout=20)


def test_a_cancelled_job_ends_with_a_finetune_error(sim: SimulatedLMServer, tmp_path: Path) -> None:
    sim.control.configure(finetune_seconds=30.0)
    job = make_lm(sim, tmp_path).finetune(records(12, seed=4), "chat")
    deadline = time.monotonic() + 20
    while job.provider_job_id is None and not job.done() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert job.cancel() is True
    with pytest.raises(FinetuneError, match="cancelled"):
        job.result(timeout=20)


def test_bad_input_is_refused_before_anything_is_sent(sim: SimulatedLMServer, tmp_path: Path) -> None:
    lm = make_lm(sim, tmp_path)
    broken = [*records(11), {"messages": [{"role": "robot", "content": "hi"}]}]
    with pytest.raises(ConfigurationError, match="record 11: message 0: role must be one of"):
        lm.finetune(broken, "chat")
    with pytest.raises(ConfigurationError, match=r"unknown train_kwargs \['epochs'\]"):
        lm.finetune(records(12), "chat", {"epochs": 2})
    with pytest.raises(ConfigurationError, match="unknown train_data_format"):
        lm.finetune(records(12), "jsonl")
    with pytest.raises(ConfigurationError, match="empty"):
        lm.finetune([], "chat")
    elsewhere = make_lm(sim, tmp_path, api_base="http://127.0.0.1:9/v1")
    with pytest.raises(SecurityPolicyError, match="not the LM's own API base"):
        elsewhere.finetune(records(12), "chat")
    assert sim.control.stats()["files"]["uploaded"] == 0


def test_an_endpoint_without_the_fine_tuning_api_is_a_clear_error(tmp_path: Path) -> None:
    with SimulatedLMServer(in_process=True) as plain:
        lm = dspex.LM("sim/arith", api_base=plain.base_url + "/nothing-here", cache_dir=tmp_path,
                      provider=OpenAIProvider(poll_interval=0.02))  # fmt: skip
        with pytest.raises(ConfigurationError, match="does not serve the OpenAI files and fine-tuning API"):
            lm.finetune(records(12), "chat").result(timeout=20)


def test_a_job_over_the_training_budget_is_refused_with_the_numbers(
    sim: SimulatedLMServer, tmp_path: Path
) -> None:
    data = records(12)
    with pytest.raises(
        ConfigurationError, match=r"training tokens \(2 epochs x .*over max_training_tokens=100"
    ):
        make_lm(sim, tmp_path, max_training_tokens=100).finetune(data, "chat", {"n_epochs": 2})
    register_training_prices({"arith": 1_000.0})  # USD per million training tokens
    try:
        with pytest.raises(ConfigurationError, match=r"\(3 epochs \(assumed\).*over max_cost_usd=\$0.01"):
            make_lm(sim, tmp_path, max_cost_usd=0.01).finetune(data, "chat")
        with dspex.track_usage() as run:
            job = make_lm(sim, tmp_path, max_cost_usd=100.0).finetune(data, "chat", {"n_epochs": 1})
            job.result(timeout=20)
    finally:
        register_training_prices({"arith": 0.0})
    assert job.trained_tokens is not None and job.trained_tokens > 0  # as the provider reported them
    assert job.cost_usd == pytest.approx(job.trained_tokens * 1_000.0 / 1e6)
    assert run.usage.cost_usd == pytest.approx(job.cost_usd) and run.usage.lm_calls == 0
    assert sim.control.stats()["files"]["uploaded"] == 1


def test_a_training_file_over_the_providers_limit_is_refused_with_the_numbers(
    sim: SimulatedLMServer, tmp_path: Path
) -> None:
    sim.control.configure(file_max_bytes=2_000)
    with pytest.raises(
        FinetuneError, match=r"refused the training file .* bytes, 12 records\).*limit of 2000 bytes"
    ):
        make_lm(sim, tmp_path).finetune(records(12), "chat").result(timeout=20)
    assert sim.control.stats()["fine_tuning"]["created"] == 0
