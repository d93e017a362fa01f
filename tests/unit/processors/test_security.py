"""The workers' allow-lists: modules, API bases and key variables, and their loopback defaults."""

from __future__ import annotations

import pytest

import dspex
from dspex.errors import ConfigurationError, SecurityPolicyError
from dspex.processors.lms import LMPool
from dspex.processors.security import SecurityPolicy, is_loopback_url
from dspex.schemas import LMSpec


@pytest.mark.parametrize(
    ("url", "loopback"),
    [
        ("http://127.0.0.1:8000/v1", True),
        ("http://127.8.9.10/v1", True),
        ("https://localhost/v1", True),
        ("http://[::1]:9000/v1", True),
        ("http://10.0.0.1:8000/v1", False),
        ("https://api.openai.com/v1", False),
        ("https://127.0.0.1.evil.example/v1", False),
        ("ftp://127.0.0.1/v1", False),
        ("not a url", False),
    ],
)
def test_loopback_detection(url: str, loopback: bool) -> None:
    assert is_loopback_url(url) is loopback


def test_defaults_allow_loopback_bases_with_any_key_and_nothing_else() -> None:
    policy = SecurityPolicy()
    policy.check_lm("http://127.0.0.1:8000/v1", "OPENAI_API_KEY")
    policy.check_lm("http://localhost:1234/v1", None)
    with pytest.raises(SecurityPolicyError, match=r"https://api\.openai\.com/v1 is not allowed.*loopback"):
        policy.check_lm("https://api.openai.com/v1", None)


def test_an_lm_without_an_api_base_is_refused_with_what_to_give() -> None:
    for policy in (SecurityPolicy(), SecurityPolicy(allow_api_bases=("https://api.example/v1",))):
        with pytest.raises(SecurityPolicyError, match=r"no API base .*give the LM api_base=\.\.\."):
            policy.check_lm("", None)


def test_allowed_bases_cover_their_paths_and_nothing_beside() -> None:
    policy = SecurityPolicy(allow_api_bases=["https://api.openai.com/v1/"], allow_key_envs=["OPENAI_API_KEY"])
    policy.check_lm("https://api.openai.com/v1", "OPENAI_API_KEY")
    policy.check_lm("https://api.openai.com/v1/deployments/x", "OPENAI_API_KEY")
    for refused in (
        "https://api.openai.com/v10",
        "http://api.openai.com/v1",
        "https://api.openai.com:8443/v1",
        "https://api.openai.com.evil.example/v1",
        "http://127.0.0.1:8000/v1",  # explicit lists replace the loopback default
    ):
        with pytest.raises(SecurityPolicyError, match="--allow-api-base"):
            policy.check_api_base(refused)


def test_key_variables_need_naming_unless_the_base_is_loopback() -> None:
    listed = SecurityPolicy(allow_api_bases=["https://api.example.com/v1"], allow_key_envs=["EXAMPLE_KEY"])
    with pytest.raises(SecurityPolicyError, match="key variable AWS_SECRET_ACCESS_KEY is not allowed"):
        listed.check_lm("https://api.example.com/v1", "AWS_SECRET_ACCESS_KEY")
    unlisted = SecurityPolicy(allow_api_bases=["https://api.example.com/v1", "http://127.0.0.1:9/v1"])
    unlisted.check_lm("http://127.0.0.1:9/v1", "ANY_KEY")
    with pytest.raises(SecurityPolicyError, match="--allow-key-env EXAMPLE_KEY"):
        unlisted.check_lm("https://api.example.com/v1", "EXAMPLE_KEY")


def test_modules_always_include_dspex_and_reject_bad_names() -> None:
    assert SecurityPolicy().modules == ("dspex",)
    assert SecurityPolicy(allow_modules=["mypkg.metrics", "dspex"]).modules == ("dspex", "mypkg.metrics")
    with pytest.raises(ConfigurationError, match="--allow-module"):
        SecurityPolicy(allow_modules=["my-pkg"])
    with pytest.raises(ConfigurationError, match="http"):
        SecurityPolicy(allow_api_bases=["api.openai.com/v1"])


def test_lm_pool_checks_the_built_lm_including_provider_defaults() -> None:
    pool = LMPool(SecurityPolicy())
    local = pool.for_spec(LMSpec(model="openai/sim", api_base="http://127.0.0.1:8000/v1"))
    assert pool.for_spec(LMSpec(model="openai/sim", api_base="http://127.0.0.1:8000/v1")) is local
    assert local.cache is False, "no cache directory given: every call reaches the LM"
    # no api_base: the openai provider's default (api.openai.com) is what gets checked
    with pytest.raises(SecurityPolicyError, match=r"api\.openai\.com"):
        pool.for_spec(LMSpec(model="openai/gpt-4o-mini"))
    with pytest.raises(SecurityPolicyError, match=r"api\.openai\.com"):  # a program predictor's own LM too
        pool.for_settings(dspex.LM("openai/gpt-4o-mini").settings())
