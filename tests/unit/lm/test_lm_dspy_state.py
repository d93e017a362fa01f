"""DSPy 3.4.1's LM surface: BaseLM's defaults, copies and history list, the OpenAI reasoning-model
rules, and the saved state (``dump_state`` / ``load_state``) of dspex's LM."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import pytest

import dspex
from dspex.lm import LM, BaseLM
from dspex.lm.base import GLOBAL_HISTORY


def completion(text: str) -> dict[str, Any]:
    return {"choices": [{"message": {"content": text}}], "model": "custom"}


class Recording(BaseLM):
    """A DSPy-style LM: records what forward got, answers with the prompt's length."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("custom", **kwargs)
        self.seen: list[tuple[str | None, Any]] = []

    def forward(self, prompt: str | None = None, messages: Any = None, **kwargs: Any) -> Any:
        self.seen.append((prompt, messages))
        return completion(f"{len(prompt or '')} chars")


def test_base_lm_starts_with_dspys_defaults_and_its_own_callback_list() -> None:
    callbacks: list[Any] = [object()]
    lm = BaseLM("custom", callbacks=callbacks)
    assert lm.kwargs == {"temperature": None, "max_tokens": None}
    assert lm.num_retries == 3 and lm.history == [] and isinstance(lm.history, list)
    assert lm.callbacks == callbacks and lm.callbacks is not callbacks


def test_a_direct_prompt_reaches_forward_as_the_prompt() -> None:
    lm = Recording()
    assert lm("Query") == ["5 chars"]
    assert lm.seen == [("Query", None)]
    assert lm(messages=[{"role": "user", "content": "Query"}]) == ["0 chars"]
    assert lm.seen[-1] == (None, [{"role": "user", "content": "Query"}])
    assert lm.history[-1]["outputs"] == ["0 chars"] and len(lm.history) == 2


def test_a_copy_shares_clients_and_isolates_history_callbacks_and_kwargs() -> None:
    lm = Recording(temperature=0.1, callbacks=["cb"])
    lm.client = object()  # type: ignore[attr-defined]
    lm("hello")
    copied = lm.copy(temperature=0.2, rollout_id=7, cache=False)
    assert copied.client is lm.client  # type: ignore[attr-defined]
    assert copied.history == [] and len(lm.history) == 1
    assert copied.callbacks == ["cb"] and copied.callbacks is not lm.callbacks
    assert copied.kwargs == {"temperature": 0.2, "max_tokens": None, "rollout_id": 7}
    assert lm.kwargs == {"temperature": 0.1, "max_tokens": None} and copied.cache is False and lm.cache
    assert copied.copy(rollout_id=None).kwargs == {"temperature": 0.2, "max_tokens": None}


def test_history_is_a_list_bounded_by_max_history_size() -> None:
    lm = Recording()
    with dspex.context(max_history_size=3):
        for prompt in ("a", "bb", "ccc", "dddd", "eeeee"):
            lm(prompt)
    assert [entry["outputs"] for entry in lm.history] == [["3 chars"], ["4 chars"], ["5 chars"]]
    assert lm.history[-2:] == lm.history[1:]


@pytest.mark.parametrize("model", ["openai/o1", "openai/gpt-5-mini", "openai/o3-mini-2025-01-31"])
def test_reasoning_models_refuse_other_temperatures_and_short_limits(model: str) -> None:
    with pytest.raises(
        dspex.LMConfigurationError,
        match=r"reasoning models require passing temperature=1\.0 or None and max_tokens >= 16000",
    ) as e:
        LM(model, temperature=0.7, max_tokens=1000, cache=False)
    assert e.value.model == model and e.value.provider == "openai" and str(e.value).startswith(f"[{model}] ")
    assert isinstance(e.value, dspex.ConfigurationError)
    lm = LM(model, temperature=1.0, max_tokens=16_000, cache=False)
    assert lm.kwargs["max_completion_tokens"] == 16_000 and "max_tokens" not in lm.kwargs
    bare = LM(model, cache=False)
    assert bare.kwargs["temperature"] is None and bare.kwargs["max_completion_tokens"] is None


def test_an_endpointless_provider_builds_and_keeps_dspys_token_names(tmp_path: Path) -> None:
    chat = LM(
        "azure/gpt-5-chat", temperature=0.7, max_tokens=1000, cache_dir=tmp_path
    )  # not a reasoning model
    assert chat.kwargs["max_tokens"] == 1000 and "max_completion_tokens" not in chat.kwargs
    assert chat.api_base == ""


def test_dump_state_has_dspys_keys_and_values(tmp_path: Path) -> None:
    lm = LM(
        "openai/gpt-4o-mini",
        temperature=1,
        max_tokens=100,
        num_retries=10,
        launch_kwargs={"gpus": 1},
        train_kwargs={"epochs": 5},
        finetuning_model="gpt-4o-mini-2024-07-18",
        cache_dir=tmp_path,
    )
    assert lm.dump_state() == {
        "_dspy_lm_class": "dspy.clients.lm.LM",
        "model": "openai/gpt-4o-mini",
        "model_type": "chat",
        "temperature": 1,
        "max_tokens": 100,
        "num_retries": 10,
        "cache": True,
        "finetuning_model": "gpt-4o-mini-2024-07-18",
        "launch_kwargs": {"gpus": 1},
        "train_kwargs": {"epochs": 5},
    }
    loaded = BaseLM.load_state(lm.dump_state())
    assert isinstance(loaded, LM) and loaded.dump_state() == lm.dump_state()
    assert lm.copy(temperature=0.5).train_kwargs == {"epochs": 5}
    assert pickle.loads(pickle.dumps(lm)).launch_kwargs == {"gpus": 1}


def test_developer_role_is_saved_only_when_on() -> None:
    lm = LM("openai/gpt-4o-mini", use_developer_role=True, model_type="responses", cache=False)
    state = lm.dump_state()
    assert state["use_developer_role"] is True and state["model_type"] == "responses"
    loaded = LM.load_state(state)
    assert isinstance(loaded, LM) and loaded.use_developer_role and loaded.model_type == "responses"
    assert "use_developer_role" not in LM("openai/gpt-4o-mini", cache=False).dump_state()


def test_a_class_marker_given_as_a_keyword_is_never_saved_nor_sent() -> None:
    lm = LM("openai/gpt-4o-mini", cache=False, **{"_dspy_lm_class": "elsewhere.Evil"})
    assert lm.kwargs["_dspy_lm_class"] == "elsewhere.Evil"  # shown as DSPy shows it
    assert lm.dump_state()["_dspy_lm_class"] == "dspy.clients.lm.LM"
    assert "_dspy_lm_class" not in lm._defaults_sent and "_dspy_lm_class" not in lm.request_kwargs


def test_a_saved_max_completion_tokens_loads_as_max_tokens() -> None:
    state = {
        "_dspy_lm_class": "dspy.clients.lm.LM",
        "model": "openai/gpt-5-nano",
        "temperature": 1.0,
        "max_completion_tokens": 20_000,
        "num_retries": 1,
        "cache": False,
    }
    loaded = BaseLM.load_state(state)
    assert isinstance(loaded, LM) and loaded.max_tokens == 20_000
    assert loaded.kwargs["max_completion_tokens"] == 20_000
    saved = loaded.dump_state()
    assert saved["max_tokens"] == 20_000 and "max_completion_tokens" not in saved


def test_a_subclass_shapes_its_initial_kwargs_and_records_entries_itself() -> None:
    class Renaming(BaseLM):
        def _get_initial_kwargs(self, *, temperature: Any, max_tokens: Any, **kwargs: Any) -> dict[str, Any]:
            return {"temperature": temperature, "max_output_tokens": max_tokens, **kwargs}

    lm = Renaming("custom", max_tokens=64, top_p=0.5)
    assert lm.kwargs == {"temperature": None, "max_output_tokens": 64, "top_p": 0.5}
    with dspex.context(max_history_size=2):
        for i in range(3):
            lm.update_history({"prompt": f"p{i}", "outputs": [str(i)]})
    assert [entry["prompt"] for entry in lm.history] == ["p1", "p2"]
    assert GLOBAL_HISTORY[-1]["prompt"] == "p2"
    with dspex.context(disable_history=True):
        lm.update_history({"prompt": "hidden"})
    assert lm.history[-1]["prompt"] == "p2"
