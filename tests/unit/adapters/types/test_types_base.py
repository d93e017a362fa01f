"""dspex.Type: annotation scanning, marker serialization, splitting messages into content parts."""

from __future__ import annotations

import json
from typing import Any

import pydantic

import dspex
from dspex.adapters.types.base_type import (
    CUSTOM_TYPE_END_IDENTIFIER as END,
)
from dspex.adapters.types.base_type import (
    CUSTOM_TYPE_START_IDENTIFIER as START,
)
from dspex.adapters.types.base_type import (
    expand_custom_types,
    split_message_content_for_custom_types,
)


class Event(dspex.Type):
    name: str

    def format(self) -> list[dict[str, Any]]:
        return [{"type": "text", "text": f"event {self.name}"}]


class Key(dspex.Type):
    model_config = pydantic.ConfigDict(frozen=True)
    key: str

    def format(self) -> str:
        return self.key


def test_extract_finds_nested_types_in_order() -> None:
    assert dspex.Type.extract_custom_type_from_annotation(Event) == [Event]
    assert dspex.Type.extract_custom_type_from_annotation(list[Event]) == [Event]
    assert dspex.Type.extract_custom_type_from_annotation(dict[Key, list[Event]]) == [Key, Event]
    assert dspex.Type.extract_custom_type_from_annotation(Event | None) == [Event]
    assert dspex.Type.extract_custom_type_from_annotation(str) == []


def test_defaults_of_the_hooks() -> None:
    assert dspex.Type.description() == ""
    assert dspex.Type.is_streamable() is False
    assert dspex.Type.parse_lm_response("x") is None
    assert dspex.Type.parse_stream_chunk(object()) is None


def test_list_format_is_wrapped_in_markers_and_text_format_is_not() -> None:
    dumped = Event(name="a").model_dump()
    assert dumped == f'{START}[{{"type": "text", "text": "event a"}}]{END}'
    assert Key(key="k").model_dump() == "k"


def test_split_puts_parts_between_the_text() -> None:
    image = [{"type": "image_url", "image_url": {"url": "https://x/a.png"}}]
    content = f"before {START}{json.dumps(image)}{END} after"
    messages = [{"role": "system", "content": content}, {"role": "user", "content": content}]
    split_message_content_for_custom_types(messages)
    assert messages[0]["content"] == content  # only user messages are split
    assert messages[1]["content"] == [
        {"type": "text", "text": "before "},
        image[0],
        {"type": "text", "text": " after"},
    ]


def test_split_reads_a_twice_encoded_payload() -> None:
    # A value inside a list field is dumped to a marker string, then the list to JSON: quotes escaped.
    outer = json.dumps([Event(name="a").model_dump()])
    [message] = split_message_content_for_custom_types([{"role": "user", "content": outer}])
    assert {"type": "text", "text": "event a"} in message["content"]


def test_split_leaves_a_message_without_markers_alone() -> None:
    messages = [{"role": "user", "content": "plain"}]
    assert split_message_content_for_custom_types(messages) == [{"role": "user", "content": "plain"}]


def test_expand_replaces_the_message_and_keeps_unparseable_payloads_as_text() -> None:
    original = {"role": "user", "content": f"{START}not json at all{END}!"}
    messages = [original]
    expand_custom_types(messages)
    assert original["content"].startswith(START)  # not changed in place
    assert messages[0]["content"][-1] == {"type": "text", "text": "!"}
    assert all(part["type"] == "text" for part in messages[0]["content"])
