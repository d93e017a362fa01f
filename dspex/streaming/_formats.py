"""Finding one output field's text in a stream of LM text chunks, per adapter format.

A scanner is fed the LM's text chunk by chunk and answers the pieces of its field to emit, each with
whether it is the field's last. Two kinds:

* :class:`MarkerScanner` (ChatAdapter's ``[[ ## answer ## ]]`` headers, XMLAdapter's ``<answer>`` tags):
  the field starts after its start marker and ends at the next end marker. Chunks are emitted whole,
  as they arrive, except while the text held back could still turn into an end marker; those are
  held (at most :data:`MAX_HELD` chunks) so that no marker text ever reaches the user. Whitespace
  around the value is dropped, as the adapter's parser strips it.
* :class:`JSONScanner` (JSONAdapter's one JSON object): a small incremental JSON reader that knows
  exactly where the field's value begins and ends (strings, nesting and escapes included); the
  pieces are the value's raw JSON text (a string value keeps its quotes, as DSPy streams it).
"""

from __future__ import annotations

import re
from typing import Literal, Protocol

__all__ = ["MAX_HELD", "FieldScanner", "Format", "JSONScanner", "MarkerScanner", "scanner_for"]

Format = Literal["chat", "json", "xml"]
Piece = tuple[str, bool]  # (text, is_last)

# Chunks held back while they could still form an end marker; a marker spans far fewer tokens.
MAX_HELD = 10

_CHAT_END = re.compile(r"\[\[ ## \w+ ## \]\]")
_CHAT_HEAD = "[[ ## "
_CHAT_TAIL = " ## ]]"
_WORD = re.compile(r"\w*")


class FieldScanner(Protocol):
    started: bool
    ended: bool

    def feed(self, text: str) -> list[Piece]:
        """The pieces of the field in ``text`` (the next chunk of the LM's answer)."""

    def finish(self) -> list[Piece]:
        """At the end of the answer: what is still held, as the last piece (if the field started)."""


def scanner_for(fmt: Format, field: str) -> FieldScanner:
    """A scanner for ``field`` in an answer written in format ``fmt``."""
    if fmt == "json":
        return JSONScanner(field)
    if fmt == "xml":
        return MarkerScanner(f"<{field}>", re.compile(re.escape(f"</{field}>")), _xml_end_prefix(field))
    return MarkerScanner(f"[[ ## {field} ## ]]", _CHAT_END, partial_chat_marker)


def partial_chat_marker(text: str) -> int | None:
    """Where an end of ``text`` could be the beginning of a ``[[ ## name ## ]]`` header, if anywhere."""
    return next((index for index in _positions(text, "[") if _is_chat_marker_prefix(text[index:])), None)


def _is_chat_marker_prefix(text: str) -> bool:
    if len(text) <= len(_CHAT_HEAD):
        return _CHAT_HEAD.startswith(text)
    if not text.startswith(_CHAT_HEAD):
        return False
    rest = text[len(_CHAT_HEAD) :]
    word = _WORD.match(rest)
    after = rest[word.end() :] if word else rest
    if not after:
        return True  # the name is still arriving
    return word is not None and word.end() > 0 and _CHAT_TAIL.startswith(after)


def _xml_end_prefix(field: str) -> _PartialMarker:
    closing = f"</{field}>"

    def partial(text: str) -> int | None:
        return next((index for index in _positions(text, "<") if closing.startswith(text[index:])), None)

    return partial


def _positions(text: str, char: str) -> list[int]:
    return [index for index, found in enumerate(text) if found == char]


class _PartialMarker(Protocol):
    def __call__(self, text: str) -> int | None:
        """Where an end of ``text`` could begin an end marker (None: nowhere)."""


class MarkerScanner:
    """A field between a start marker and the next end marker (ChatAdapter, XMLAdapter)."""

    def __init__(self, start: str, end: re.Pattern[str], partial_end: _PartialMarker) -> None:
        self.start = start
        self.end = end
        self.partial_end = partial_end
        self.started = False
        self.ended = False
        self._seen = ""  # text before the start marker (only what could still begin it)
        self._held: list[str] = []  # chunks of the value not emitted yet
        self._value_started = False
        self._held_space = ""  # whitespace after the value so far: emitted only if text follows

    def feed(self, text: str) -> list[Piece]:
        if self.ended or not text:
            return []
        if not self.started:
            text = self._seek(text)
            if not self.started or not text:
                return []
        self._held.append(text)
        held = "".join(self._held)
        found = self.end.search(held)
        if found:
            self.ended = True
            self._held = []
            return self._emit(held[: found.start()], last=True)
        if self.partial_end(held) is None:
            self._held = []
            return self._emit(held, last=False)
        if len(self._held) > MAX_HELD:
            return self._emit(self._held.pop(0), last=False)
        return []

    def finish(self) -> list[Piece]:
        if self.ended or not self.started:
            return []
        self.ended = True
        held = "".join(self._held)
        self._held = []
        boundary = self.partial_end(held)  # an end marker cut short by the end of the answer
        return self._emit(held if boundary is None else held[:boundary], last=True)

    def _seek(self, text: str) -> str:
        """Look for the start marker; the text after it, once found."""
        seen = self._seen + text
        index = seen.find(self.start)
        if index < 0:
            self._seen = _tail_that_could_begin(seen, self.start)
            return ""
        self.started = True
        self._seen = ""
        return seen[index + len(self.start) :]

    def _emit(self, text: str, *, last: bool) -> list[Piece]:
        if not self._value_started:
            text = text.lstrip()
        value = text.rstrip()
        if value:
            self._value_started = True
            text, self._held_space = self._held_space + value, text[len(value) :]
        else:
            self._held_space += text
            text = ""
        if last:
            return [(text, True)]
        return [(text, False)] if text else []


def _tail_that_could_begin(text: str, marker: str) -> str:
    """The longest end of ``text`` that is a beginning of ``marker`` (what to keep looking at)."""
    for size in range(min(len(text), len(marker) - 1), 0, -1):
        if marker.startswith(text[-size:]):
            return text[-size:]
    return ""


class JSONScanner:
    """The value of one top-level key of a streamed JSON object (JSONAdapter)."""

    def __init__(self, field: str) -> None:
        self.field = field
        self.started = False
        self.ended = False
        self._depth = 0
        self._in_string = False
        self._escaped = False
        self._key: list[str] | None = None  # the top-level key being read
        self._last_key = ""
        self._expect: Literal["key", "colon", "value", "after"] = "key"
        self._literal = False  # inside our value, a number / true / false / null

    def feed(self, text: str) -> list[Piece]:
        if self.ended:
            return []
        out: list[str] = []
        for char in text:
            if self._step(char, out):
                self.ended = True
                return [("".join(out), True)]
        return [("".join(out), False)] if out else []

    def finish(self) -> list[Piece]:
        if self.ended or not self.started:
            return []
        self.ended = True
        return [("", True)]

    def _in_value(self) -> bool:
        return self.started and not self.ended

    def _step(self, char: str, out: list[str]) -> bool:
        """Read one character; True when our value just ended."""
        if self._in_string:
            self._string_char(char, out)
            return self._in_value() and not self._in_string and self._depth == 1
        if self._literal:
            if char in ",}] \t\r\n":
                return True
            out.append(char)
            return False
        return self._structure(char, out)

    def _string_char(self, char: str, out: list[str]) -> None:
        if self._in_value():
            out.append(char)
        if self._escaped:
            self._escaped = False
        elif char == "\\":
            self._escaped = True
        elif char == '"':
            self._in_string = False
            if self._key is not None:
                self._last_key, self._key = "".join(self._key), None
                self._expect = "colon"
            return
        if self._key is not None:
            self._key.append(char)

    def _structure(self, char: str, out: list[str]) -> bool:
        if self._depth == 1 and self._expect == "value" and not char.isspace():
            self._expect = "after"
            if self._last_key == self.field and not self.started:
                self.started = True
                if char not in '"{[':
                    self._literal = True
                    out.append(char)
                    return False
        if self._in_value():
            out.append(char)
        if char == '"':
            self._in_string = True
            if self._depth == 1 and self._expect == "key":
                self._key = []
        elif char in "{[":
            self._depth += 1
        elif char in "}]":
            self._depth -= 1
            if self._in_value() and self._depth == 1:
                return True
        elif self._depth == 1 and char == ":" and self._expect == "colon":
            self._expect = "value"
        elif self._depth == 1 and char == ",":
            self._expect = "key"
        return False
