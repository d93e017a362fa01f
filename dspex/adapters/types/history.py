"""``dspex.History``: earlier turns of a conversation, given to a predictor as an input field.

Each message is a dict keyed by the signature's field names; the adapters write each one as a
user turn (its input fields) and an assistant turn (its output fields) before the current request.

    class Chat(dspex.Signature):
        question: str = dspex.InputField()
        history: dspex.History = dspex.InputField()
        answer: str = dspex.OutputField()

    history = dspex.History(messages=[{"question": "Capital of France?", "answer": "Paris"}])
    dspex.Predict(Chat)(question="And of Germany?", history=history)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pydantic

from dspex.adapters.types._cache import SignatureCache
from dspex.adapters.types._tool_history import history_tool_turns

if TYPE_CHECKING:
    from dspex.adapters.base import Adapter
    from dspex.signatures import Signature

__all__ = ["History", "format_conversation_history", "history_field_name", "signature_without_history"]


class History(pydantic.BaseModel):
    """The conversation so far: a list of dicts keyed by field name."""

    messages: list[dict[str, Any]]

    model_config = pydantic.ConfigDict(
        frozen=True, str_strip_whitespace=True, validate_assignment=True, extra="forbid"
    )


# -- how the adapters lay a History out ---------------------------------------------------------
# per signature class: (history field name or None, the signature without that field)
_PLANS: SignatureCache[tuple[str | None, Any]] = SignatureCache()


def history_field_name(signature: type[Signature]) -> str | None:
    """The name of the signature's ``History`` input field, or None (looked up once per signature)."""
    return _plan(signature)[0]


def signature_without_history(signature: type[Signature]) -> type[Signature]:
    """The signature minus its ``History`` field (built once per signature); itself when it has none."""
    name, without = _plan(signature)
    return without if name is not None else signature


def _plan(signature: type[Signature]) -> tuple[str | None, Any]:
    return _PLANS.get(signature, signature.input_fields, _build_plan)


def _build_plan(signature: Any) -> tuple[str | None, Any]:
    fields = signature.input_fields
    name = next((name for name, spec in fields.items() if spec.annotation == History), None)
    return name, (signature.delete(name) if name is not None else signature)


def format_conversation_history(
    adapter: Adapter,
    signature: type[Signature],
    history_field_name: str,
    inputs: dict[str, Any],
) -> list[dict[str, Any]]:
    """Each earlier message as a user turn (its inputs) and an assistant turn (its outputs), DSPy's way.

    ``signature`` is the one without the history field. The history value (a History, or its
    dict form) is removed from ``inputs``; a turn with nothing to show is left out. A user turn
    carries the format reminder when the message has an input, as the current request does (the
    same prefix, so prompt caches reuse it).
    """
    history = inputs.pop(history_field_name, None)
    if history is None:
        return []
    if not isinstance(history, History):  # e.g. {"messages": [...]} after a trip through JSON
        history = History.model_validate(history)
    turns: list[dict[str, Any]] = []
    for message in history.messages:
        tool_turns = history_tool_turns(adapter, signature, message)  # None: no tool calls in it
        if tool_turns is not None:
            turns.extend(tool_turns)
            continue
        reminder = any(name in message for name in signature.input_fields)
        user = adapter.format_user_message_content(signature, message, main_request=reminder)
        if user:
            turns.append({"role": "user", "content": user})
        assistant = adapter.format_assistant_message_content(signature, message)
        if assistant:
            turns.append({"role": "assistant", "content": assistant})
    return turns
