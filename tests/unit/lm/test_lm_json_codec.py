"""The LM client's JSON: requests written byte for byte as json writes them, answers read as json reads
them, whichever parser did the work (pydantic-core on the hot path, json for everything else)."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Any

import pytest

from dspex.errors import LMServerError
from dspex.lm import LM
from dspex.lm.client import _check_chat, _encode_json, _loads

# what the client wrote before pydantic-core took the plain requests over
_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def _as_json(body: Any) -> bytes:
    return _JSON.encode(body).encode("utf-8")


@pytest.mark.parametrize(
    "body",
    [
        {"model": "m", "messages": [{"role": "system", "content": "Your input fields are:\n1. `q` (str)"}]},
        {"model": "m", "messages": [], "temperature": 0.7, "max_tokens": 4000, "seed": 3, "stream": False},
        {"model": "m", "n": None, "stop": ["\n\n", "[[ ## completed ## ]]"], "top_p": 1.0},
        {"text": 'é😀\x00\x1f\u2028"\\/\t\r\n\x7f', "big": 10**30, "neg": -0.0, "zero": 0.0},
        {"nested": [[{"a": [1, True, None, "x"]}], {"b": {"c": 123456789012345.0}}]},
        # floats json writes with an exponent: pydantic-core would write 0.00001 and 1e16
        {"temperature": 1e-05, "x": 1e16, "y": 1.5e-07, "z": 5e-324},
        # types json converts or writes its own way: left to json
        {"tuple": (1, 2), 3: "int key", "sub": {True: "bool key", None: "none key", 1.5: "float key"}},
    ],
)
def test_requests_are_written_as_json_writes_them(body: dict[str, Any]) -> None:
    assert _encode_json(body) == _as_json(body)


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({"temperature": math.nan}, ValueError),  # allow_nan=False, as httpx's json= encoding
        ({"temperature": math.inf}, ValueError),
        ({"when": datetime(2026, 1, 1, tzinfo=UTC)}, TypeError),  # pydantic-core would write it
        ({"data": b"raw"}, TypeError),
        ({"set": {1, 2}}, TypeError),
        ({"content": "a lone \ud800 surrogate"}, UnicodeEncodeError),
    ],
)
def test_requests_json_refuses_are_still_refused(body: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        _as_json(body)
    with pytest.raises(error):
        _encode_json(body)


@pytest.mark.parametrize(
    "raw",
    [
        b'{"choices":[{"message":{"content":"[[ ## answer ## ]]\\n42"}}],"usage":{"prompt_tokens":12}}',
        b'{"a": 1, "a": 2, "f": [0.1, 1e308, 5e-324, -0.0, 123456789012345678901234567890]}',
        b'{"nan": NaN, "inf": Infinity, "minus": -Infinity}',
        '{"text": "é😀"}'.encode(),
        b'{"lone": "\\ud800"}',  # pydantic-core refuses a lone surrogate escape; json reads it
        '\ufeff{"bom": true}'.encode(),  # a UTF-8 BOM: json reads it
        '{"utf16": true}'.encode("utf-16"),  # json detects other encodings
    ],
)
def test_answers_are_read_as_json_reads_them(raw: bytes) -> None:
    read, expected = _loads(raw), json.loads(raw)
    assert json.dumps(read, sort_keys=True) == json.dumps(expected, sort_keys=True)  # NaN == NaN here


@pytest.mark.parametrize("raw", [b"", b"not json", b'{"a": 1', b"\xff\xfe\xfd{}", b'{"a": 1} trailing'])
def test_answers_json_refuses_are_still_refused(raw: bytes) -> None:
    with pytest.raises((json.JSONDecodeError, UnicodeDecodeError)):
        json.loads(raw)
    with pytest.raises((json.JSONDecodeError, UnicodeDecodeError)):
        _loads(raw)


def test_a_body_that_is_not_json_is_a_server_error() -> None:
    lm = LM("openai/m", api_base="http://127.0.0.1:9/v1", cache=False)
    with pytest.raises(LMServerError, match="not JSON"):
        _check_chat(lm, b"<html>busy</html>")
    assert _check_chat(lm, b'{"choices":[{"message":{"content":"hi"}}]}')["choices"][0]["message"] == {
        "content": "hi"
    }
