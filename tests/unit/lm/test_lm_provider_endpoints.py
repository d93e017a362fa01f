"""Known providers' models need no api_base, as in DSPy: `LM("anthropic/...")` builds, and a DSPy
program saved with such an LM (its state has no api_base) loads."""

from __future__ import annotations

from pathlib import Path

import dspy
import pytest

import dspex
from dspex.errors import ConfigurationError
from dspex.lm import LM

ANTHROPIC = "anthropic/claude-3-5-sonnet-20241022"


@pytest.mark.parametrize(
    ("model", "api_base", "key_env"),
    [
        (ANTHROPIC, "https://api.anthropic.com/v1", "ANTHROPIC_API_KEY"),
        (
            "gemini/gemini-2.0-flash",
            "https://generativelanguage.googleapis.com/v1beta/openai",
            "GEMINI_API_KEY",
        ),
        ("groq/llama-3.1-8b-instant", "https://api.groq.com/openai/v1", "GROQ_API_KEY"),
        ("openrouter/anthropic/claude-3.5-sonnet", "https://openrouter.ai/api/v1", "OPENROUTER_API_KEY"),
        ("ollama_chat/llama3.2", "http://localhost:11434/v1", None),
    ],
)
def test_a_known_provider_gets_its_endpoint_and_key_variable(
    model: str, api_base: str, key_env: str | None, tmp_path: Path
) -> None:
    dspy.LM(model)  # DSPy builds it too: nothing is checked before a call
    lm = LM(model, cache_dir=tmp_path)
    assert (lm.model, lm.api_base, lm.api_key_env) == (model, api_base, key_env)
    assert "api_base" not in lm.dump_state()  # the provider's default: DSPy's state has none either


def test_an_unknown_provider_needs_an_api_base_when_called(tmp_path: Path) -> None:
    lm = LM("someprovider/model-x", cache_dir=tmp_path, max_retries=3)  # building checks nothing
    assert lm.api_base == "" and "api_base" not in lm.dump_state()
    with pytest.raises(dspex.LMNotConfiguredError, match=r"provider 'someprovider'.*api_base") as caught:
        lm.complete([{"role": "user", "content": "hi"}])
    # a configuration error, not a transient one: a job stops at it instead of retrying
    assert isinstance(caught.value, ConfigurationError) and caught.value.systemic
    assert (caught.value.model, caught.value.provider) == ("someprovider/model-x", "someprovider")
    assert LM("someprovider/model-x", api_base="http://127.0.0.1:1/v1/", cache_dir=tmp_path).api_base == (
        "http://127.0.0.1:1/v1"
    )


def test_a_dspy_program_saved_with_an_anthropic_lm_loads(tmp_path: Path) -> None:
    original = dspy.Predict("question -> answer")
    original.lm = dspy.LM(ANTHROPIC, temperature=0.2)
    state = original.dump_state()
    assert "api_base" not in state["lm"]

    loaded = dspex.Predict("question -> answer").load_state(state)
    assert isinstance(loaded.lm, LM)
    assert (loaded.lm.model, loaded.lm.api_base, loaded.lm.temperature) == (
        ANTHROPIC,
        "https://api.anthropic.com/v1",
        0.2,
    )
