"""``dspex.Type``: the base of the special field types (images, audio, files, documents...).

A special type renders itself as content parts of an OpenAI-style user message (``format()``).
Inside a formatted prompt string such a value is written between two marker strings; after the
whole message has been rendered, :func:`split_message_content_for_custom_types` cuts the text at the
markers and puts the parts in their place, so an image sits between the text around it.

    class Event(dspex.Type):
        name: str

        def format(self) -> str:
            return f"event {self.name}"
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any, get_args, get_origin

import json_repair
import pydantic

if TYPE_CHECKING:
    from dspex.signatures import Signature

__all__ = [
    "CUSTOM_TYPE_END_IDENTIFIER",
    "CUSTOM_TYPE_START_IDENTIFIER",
    "Type",
    "expand_custom_types",
    "has_custom_type_marker",
    "split_message_content_for_custom_types",
]

# The markers DSPy writes around a formatted value; kept identical so prompts match byte for byte.
CUSTOM_TYPE_START_IDENTIFIER = "<<CUSTOM-TYPE-START-IDENTIFIER>>"
CUSTOM_TYPE_END_IDENTIFIER = "<<CUSTOM-TYPE-END-IDENTIFIER>>"

_MARKED = re.compile(rf"{CUSTOM_TYPE_START_IDENTIFIER}(.*?){CUSTOM_TYPE_END_IDENTIFIER}", re.DOTALL)


class Type(pydantic.BaseModel):
    """Base class of the special input/output types of a signature.

    A subclass implements :meth:`format`, returning either a string or a list of content parts
    (the items of an OpenAI user message's ``content`` list, e.g.
    ``{"type": "image_url", "image_url": {"url": ...}}``).
    """

    def format(self) -> list[dict[str, Any]] | str:
        """This value as message content parts (or as plain text)."""
        raise NotImplementedError

    @classmethod
    def description(cls) -> str:
        """A sentence the adapters add to a field's description; empty by default."""
        return ""

    @classmethod
    def extract_custom_type_from_annotation(cls, annotation: Any) -> list[type[Type]]:
        """Every subclass of ``cls`` found in ``annotation``, however deeply nested.

        ``list[dict[str, Event]]`` gives ``[Event]``; arguments are visited left to right.
        """
        try:
            if isinstance(annotation, type) and issubclass(annotation, cls):
                return [annotation]
        except TypeError:  # generic aliases such as list[int] are not classes on every Python
            pass
        if get_origin(annotation) is None:
            return []
        found: list[type[Type]] = []
        for arg in get_args(annotation):
            found.extend(cls.extract_custom_type_from_annotation(arg))
        return found

    @pydantic.model_serializer()
    def serialize_model(self) -> Any:
        """Dump as the formatted value; content parts go between the markers so they can be split out."""
        formatted = self.format()
        if isinstance(formatted, list):
            return _mark(formatted)
        return formatted

    @classmethod
    def adapt_to_native_lm_feature(
        cls,
        signature: type[Signature],
        field_name: str,
        lm: Any,
        lm_kwargs: dict[str, Any],
    ) -> type[Signature]:
        """The signature to use when the LM handles this type natively; unchanged by default."""
        return signature

    @classmethod
    def is_streamable(cls) -> bool:
        """Whether a value of this type can arrive in stream chunks."""
        return False

    @classmethod
    def parse_stream_chunk(cls, chunk: Any) -> Type | None:
        """A value built from one stream chunk, or ``None`` when the chunk holds none."""
        return None

    @classmethod
    def parse_lm_response(cls, response: str | dict[str, Any]) -> Type | None:
        """A value built from a native LM response, or ``None`` when it holds none."""
        return None


def _mark(parts: list[dict[str, Any]]) -> str:
    return (
        f"{CUSTOM_TYPE_START_IDENTIFIER}{json.dumps(parts, ensure_ascii=False)}{CUSTOM_TYPE_END_IDENTIFIER}"
    )


def has_custom_type_marker(text: str) -> bool:
    """Whether ``text`` holds a marked value (a cheap test before splitting)."""
    return CUSTOM_TYPE_START_IDENTIFIER in text


def split_message_content_for_custom_types(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Turn each user message holding marked values into a list of content parts, in place.

    Text around the markers becomes ``{"type": "text", ...}`` parts and each marked value its own
    parts. Messages without markers (and non-user messages) are left as they are. Returns ``messages``.
    """
    for message in messages:
        content = message.get("content")
        if (
            message.get("role") != "user"
            or not isinstance(content, str)
            or not has_custom_type_marker(content)
        ):
            continue
        parts = _split_content(content)
        if parts is not None:
            message["content"] = parts
    return messages


def _split_content(content: str) -> list[dict[str, Any]] | None:
    parts: list[dict[str, Any]] = []
    last_end = 0
    for match in _MARKED.finditer(content):
        start, end = match.span()
        if start > last_end:
            parts.append({"type": "text", "text": content[last_end:start]})
        parts.extend(_marked_parts(match.group(1).strip()))
        last_end = end
    if last_end == 0:
        return None
    if last_end < len(content):
        parts.append({"type": "text", "text": content[last_end:]})
    return parts


def _marked_parts(raw: str) -> list[dict[str, Any]]:
    parsed = _parse_marked(raw)
    if parsed:
        return list(parsed)
    return [{"type": "text", "text": raw}]  # not JSON after all: keep the text


def _parse_marked(raw: str) -> Any:
    # A value nested in a list or dict field was JSON-encoded twice (its marker string got quoted).
    for parse in (json.loads, _parse_twice_encoded, json_repair.loads):
        try:
            return parse(raw)
        except (ValueError, TypeError, RecursionError):  # JSONDecodeError is a ValueError
            continue
    return None


def _parse_twice_encoded(raw: str) -> Any:
    return json.loads(json.loads(f'"{raw}"'))


def expand_custom_types(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The adapters' last formatting step: user messages holding marked values become content parts.

    As DSPy 3.4.1's adapters do: the text around the markers becomes text parts, a marked value
    that is not a JSON list stays as text, and a message is replaced (never changed in place).
    A message without the start marker costs one substring search.
    """
    for index, message in enumerate(messages):
        content = message.get("content")
        if type(content) is str and CUSTOM_TYPE_START_IDENTIFIER in content and message.get("role") == "user":
            messages[index] = {**message, "content": _content_parts(content)}
    return messages


def _content_parts(content: str) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    last_end = 0
    for match in _MARKED.finditer(content):
        start, end = match.span()
        if start > last_end:
            parts.append({"type": "text", "text": content[last_end:start]})
        parts.extend(_payload_parts(match.group(1).strip()))
        last_end = end
    if last_end < len(content):
        parts.append({"type": "text", "text": content[last_end:]})
    return parts


def _payload_parts(raw: str) -> list[dict[str, Any]]:
    parsed = _parse_marked(raw)
    if isinstance(parsed, list):
        return [part if isinstance(part, dict) else {"type": "text", "text": str(part)} for part in parsed]
    return [{"type": "text", "text": raw}]
