"""LM settings: what they hold, what they never hold (the key), and bad arguments."""

from __future__ import annotations

import copy
import json
import pickle
from pathlib import Path

import pytest
from pydantic import SecretStr

from dspex.errors import ConfigurationError
from dspex.lm import LM, LMSettings, RetryPolicy

KEY = "sk-unit-0123456789abcdef"


def make(tmp_path: Path, **kwargs: object) -> LM:
    return LM("openai/gpt-4o-mini", api_key=KEY, cache_dir=tmp_path, **kwargs)  # type: ignore[arg-type]


def test_settings_hold_everything_but_the_key(tmp_path: Path) -> None:
    lm = make(tmp_path, temperature=0.5, max_tokens=50, top_p=0.9)
    settings = lm.settings()
    assert settings == LMSettings(
        model="openai/gpt-4o-mini",
        api_base="https://api.openai.com/v1",
        api_key_env="OPENAI_API_KEY",
        temperature=0.5,
        max_tokens=50,
        request_kwargs={"top_p": 0.9},
    )
    texts = [repr(lm), str(lm), repr(settings), str(settings), settings.model_dump_json()]
    texts.append(json.dumps(vars(lm), default=str))  # even the object's own attributes
    assert all(KEY not in text for text in texts)


def test_a_secretstr_key_is_accepted_and_stays_secret(tmp_path: Path) -> None:
    lm = LM("sim/x", api_base="http://127.0.0.1:1/v1", api_key=SecretStr(KEY), cache_dir=tmp_path)
    assert KEY not in repr(vars(lm)) and lm.api_key_env is None


def test_settings_round_trip_and_copy_keeps_local_things(tmp_path: Path) -> None:
    policy = RetryPolicy(base_delay=0.01)
    lm = make(tmp_path, retry_policy=policy, seed_offset=3)
    again = LM.from_settings(lm.settings(), cache_dir=tmp_path)
    assert again.settings() == lm.settings()
    warmer = lm.copy(temperature=0.7)
    assert warmer.temperature == 0.7 and lm.temperature is None  # DSPy 3.4.1: the provider default
    assert warmer.cache_dir == tmp_path and warmer.request_kwargs == {"seed_offset": 3}
    assert warmer.settings().model_copy(update={"temperature": None}) == lm.settings()


def test_settings_refuse_unknown_fields() -> None:
    with pytest.raises(ValueError, match="api_key"):
        LMSettings(model="openai/x", api_base="http://h", api_key=KEY)  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"model": "/gpt-4o-mini"}, "provider/name"),
        ({"model": "openai/x", "stream": True}, "stream"),
        ({"model": "openai/x", "n": 3}, "n > 1"),
        ({"model": "openai/x", "max_tokens": 0}, "max_tokens"),
        ({"model": "openai/x", "timeout": -1}, "timeout"),
    ],
)
def test_bad_arguments_say_what_to_change(kwargs: dict[str, object], match: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=match) as caught:
        LM(api_key=KEY, cache_dir=tmp_path, **kwargs)  # type: ignore[arg-type]
    assert KEY not in str(caught.value)


def test_the_key_never_reaches_an_error_about_settings(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError) as caught:
        LM("openai/x", api_key=KEY, cache_dir=tmp_path, temperature=-1)
    assert KEY not in str(caught.value) and KEY not in repr(caught.value.__cause__)


def test_copies_share_the_immutable_lm_and_pickles_drop_the_key(tmp_path: Path) -> None:
    lm = make(tmp_path, top_p=0.5)
    assert copy.deepcopy(lm) is lm and copy.copy(lm) is lm
    data = pickle.dumps(lm)
    assert KEY.encode() not in data
    again = pickle.loads(data)
    assert again.settings() == lm.settings() and again.cache_dir == tmp_path
