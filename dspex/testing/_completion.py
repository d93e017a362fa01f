"""Turning a chat request body into the simulated LM's chat.completion payload."""

from __future__ import annotations

import time
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dspex.ids import content_id
from dspex.testing._prompt import message_text, read_prompt
from dspex.testing._respond import compose_answer, garbled

__all__ = ["Completion", "build_completion", "estimate_tokens", "request_hash"]

_CHARS_PER_TOKEN = 4


@dataclass(frozen=True, slots=True)
class Completion:
    """A finished answer: the payload to send and what the server counts and logs about it."""

    payload: dict[str, Any]
    model: str
    request_hash: str
    prompt_hash: str
    demos: int
    correct: bool | None
    question_text: str
    prompt_tokens: int
    completion_tokens: int


def estimate_tokens(chars: int) -> int:
    """Tokens as the simulation counts them: about four characters each, at least one."""
    return max(1, -(-chars // _CHARS_PER_TOKEN))


def request_hash(body: Mapping[str, Any]) -> str:
    """The content id that decides the answer; fields left out: all but model, messages, seed, temperature."""
    keys = ("model", "messages", "seed", "temperature")
    return content_id({key: body.get(key) for key in keys})


def _prompt_hash(texts: list[str]) -> str:
    # everything but the last message: the same program (instructions + demos) gets the same value
    return f"{zlib.crc32(chr(0).join(texts[:-1]).encode('utf-8')):08x}"


def _choice(index: int, content: str, max_tokens: Any) -> tuple[dict[str, Any], int]:
    tokens = estimate_tokens(len(content))
    finish = "stop"
    if isinstance(max_tokens, int) and 0 < max_tokens < tokens:
        content, tokens, finish = content[: max_tokens * _CHARS_PER_TOKEN], max_tokens, "length"
    message = {"role": "assistant", "content": content}
    return {"index": index, "message": message, "finish_reason": finish, "logprobs": None}, tokens


def build_completion(
    body: Mapping[str, Any], *, garble: float = 0.0, garble_fields: str | None = None
) -> Completion:
    """Answer a validated chat request body (model and a non-empty messages list are present).

    ``garble`` / ``garble_fields``: the server's knobs of the same names (see :func:`garbled`)."""
    messages = body["messages"]
    texts = [message_text(m.get("content")) for m in messages]
    view = read_prompt(messages, body.get("response_format"))
    digest = request_hash(body)
    n = body["n"] if isinstance(body.get("n"), int) and body["n"] > 1 else 1
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
    hashes = [digest if i == 0 else content_id({"h": digest, "i": i}) for i in range(n)]
    answers = [garbled(compose_answer(view, h), view, h, garble, garble_fields) for h in hashes]
    built = [_choice(i, a.content, max_tokens) for i, a in enumerate(answers)]
    prompt_tokens = estimate_tokens(sum(len(t) for t in texts))
    completion_tokens = sum(tokens for _, tokens in built)
    payload = {
        "id": f"chatcmpl-sim-{digest[:24]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body["model"],
        "system_fingerprint": "dspex-simulated",
        "choices": [choice for choice, _ in built],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }
    question = view.question.text if view.question else view.last_user.strip()
    return Completion(
        payload, body["model"], digest, _prompt_hash(texts), view.demo_count, answers[0].correct,
        question, prompt_tokens, completion_tokens,
    )  # fmt: skip
