"""Turning a chat request body into the simulated LM's chat.completion payload.

A request with ``tools`` may be answered with ``tool_calls`` (:mod:`dspex.testing._tools`); any other
with content (:mod:`dspex.testing._respond`).
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dspex.ids import content_id
from dspex.testing._finetune import answer_model, tuned_gain
from dspex.testing._prompt import PromptView, message_text, read_prompt
from dspex.testing._respond import TUNED_GAIN, abusive_answer, compose_answer, garbled
from dspex.testing._tools import ToolTurn, text_tool_turn, tool_turn

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
    """The content id that decides the answer; fields left out: all but model, messages, seed, temperature.
    A simulated fine-tuned model counts without its job id (:func:`answer_model`)."""
    keys = ("model", "messages", "seed", "temperature")
    fields = {key: body.get(key) for key in keys}
    fields["model"] = answer_model(fields["model"])
    return content_id(fields)


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


def _tool_choice(index: int, turn: ToolTurn) -> tuple[dict[str, Any], int]:
    # max_tokens does not cut tool calls: a cut call would be invalid JSON, which no test wants
    message = {"role": "assistant", "content": turn.content, "tool_calls": turn.tool_calls}
    chars = len(turn.content or "") + sum(len(call["function"]["arguments"]) for call in turn.tool_calls)
    choice = {"index": index, "message": message, "finish_reason": "tool_calls", "logprobs": None}
    return choice, estimate_tokens(chars)


@dataclass(frozen=True)
class AnswerKnobs:
    """The server's knobs that change what an answer says."""

    garble: float
    garble_fields: str | None
    code_abuse: float
    code_abuse_port: int


def _answer(
    index: int,
    body: Mapping[str, Any],
    view: PromptView,
    digest: str,
    knobs: AnswerKnobs,
) -> tuple[dict[str, Any], int, bool | None]:
    """One choice, its completion tokens and whether its arithmetic answer is correct."""
    turn = tool_turn(body, view, digest)
    if turn is not None:
        return (*_tool_choice(index, turn), turn.correct)
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
    turn = text_tool_turn(body, view, digest)
    if turn is not None and turn.content is not None:
        return (*_choice(index, turn.content, max_tokens), turn.correct)
    answer = abusive_answer(view, digest, knobs.code_abuse, knobs.code_abuse_port) or garbled(
        compose_answer(view, digest), view, digest, knobs.garble, knobs.garble_fields
    )
    return (*_choice(index, answer.content, max_tokens), answer.correct)


def build_completion(
    body: Mapping[str, Any],
    *,
    garble: float = 0.0,
    garble_fields: str | None = None,
    code_abuse: float = 0.0,
    code_abuse_port: int = 9,
) -> Completion:
    """Answer a validated chat request body (model and a non-empty messages list are present).

    ``garble`` / ``garble_fields`` / ``code_abuse`` / ``code_abuse_port``: the server's knobs of the
    same names (see :func:`garbled` and :func:`abusive_answer`)."""
    knobs = AnswerKnobs(garble, garble_fields, code_abuse, code_abuse_port)
    messages = body["messages"]
    texts = [message_text(m.get("content")) for m in messages]
    view = read_prompt(messages, body.get("response_format"))
    digest = request_hash(body)
    n = body["n"] if isinstance(body.get("n"), int) and body["n"] > 1 else 1
    hashes = [digest if i == 0 else content_id({"h": digest, "i": i}) for i in range(n)]
    gain = TUNED_GAIN.set(tuned_gain(body["model"]))  # a simulated fine-tuned model answers better
    try:
        built = [_answer(i, body, view, h, knobs) for i, h in enumerate(hashes)]
    finally:
        TUNED_GAIN.reset(gain)
    prompt_tokens = estimate_tokens(sum(len(t) for t in texts))
    completion_tokens = sum(tokens for _, tokens, _ in built)
    payload = {
        "id": f"chatcmpl-sim-{digest[:24]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body["model"],
        "system_fingerprint": "dspex-simulated",
        "choices": [choice for choice, _, _ in built],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }
    question = view.question.text if view.question else view.last_user.strip()
    return Completion(
        payload, body["model"], digest, _prompt_hash(texts), view.demo_count, built[0][2],
        question, prompt_tokens, completion_tokens,
    )  # fmt: skip
