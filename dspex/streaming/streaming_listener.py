"""``StreamListener``: the chunks of one output field of one predictor, as the LM streams them.

    listeners = [StreamListener(signature_field_name="answer")]
    program = dspex.streamify(dspex.Predict("question -> answer"), stream_listeners=listeners)
    async for item in program(question="Why?"):
        if isinstance(item, StreamResponse):
            print(item.chunk, end="")

The listener knows the field's boundaries in ChatAdapter, JSONAdapter and XMLAdapter answers (the
adapter of the streaming predictor, else the settings', else ChatAdapter's); see
:mod:`dspex.streaming._formats`. An output type that streams natively (``Reasoning``'s
``reasoning_content``, ``Citations``) is read from the chunk by the type itself.
"""

from __future__ import annotations

import inspect
from collections import defaultdict
from typing import Any, cast

from dspex.adapters import Adapter, ChatAdapter, JSONAdapter, XMLAdapter
from dspex.configuration import current_settings
from dspex.errors import ConfigurationError
from dspex.streaming._formats import FieldScanner, Format, partial_chat_marker, scanner_for
from dspex.streaming.messages import StreamResponse

__all__ = [
    "ADAPTER_SUPPORT_STREAMING",
    "StreamListener",
    "adapter_format",
    "find_predictor_for_stream_listeners",
]

ADAPTER_SUPPORT_STREAMING = [ChatAdapter, XMLAdapter, JSONAdapter]
_FORMAT_NAMES: dict[str, Format] = {"ChatAdapter": "chat", "JSONAdapter": "json", "XMLAdapter": "xml"}


class StreamListener:
    """Listens to the LM stream of one predictor and yields the chunks of one of its output fields.

    ``predict`` (or ``predict_name``) names the predictor; left out, :func:`dspex.streamify` finds
    the one predictor of the program with an output field ``signature_field_name`` (and raises
    when there are several). ``allow_reuse=True`` lets the listener serve every call of its
    predictor (a predictor called in a loop); by default it streams the first call only.
    """

    def __init__(
        self,
        signature_field_name: str,
        predict: Any = None,
        predict_name: str | None = None,
        allow_reuse: bool = False,
    ) -> None:
        self.signature_field_name = signature_field_name
        self.predict = predict
        self.predict_name = predict_name
        self.allow_reuse = allow_reuse
        self.stream_start = False
        self.stream_end = False
        self.cache_hit = False  # DSPy's flag; a cached answer never streams here, so it stays False
        self._format: Format | None = None
        self._scanner: FieldScanner | None = None

    # -- the stream ----------------------------------------------------------------------------

    def begin_stream(self, fmt: Format | None = None) -> None:
        """A new LM stream of the predictor starts (in adapter format ``fmt``); a reusable listener
        that already streamed its field starts over."""
        if self.stream_end and self.allow_reuse:
            self._reset()
        if not self.stream_start:
            self._format = fmt

    def receive(self, chunk: Any) -> StreamResponse | None:
        """The field's next chunk in ``chunk`` (a :class:`~dspex.lm.sse.ChatChunk`), if any."""
        if self.stream_end:
            if not self.allow_reuse:
                return None
            self._reset()
        native = self._native_chunk(chunk)
        if native is not None:
            return native
        delta = _delta(chunk)
        text = getattr(delta, "content", None) if delta is not None else None
        pieces = self._scan().feed(text) if text else []
        if _finished(chunk):  # the answer is complete: nothing more can end the field
            pieces += self._scan().finish()
        return self._response(pieces)

    def finalize(self) -> StreamResponse | None:
        """At the end of the program: the field's held-back text, if its stream never ended."""
        if self.stream_end or not self.stream_start:
            return None
        return self._response(self._scan().finish())

    def fresh_copy(self) -> StreamListener:
        """A copy for one run of a streamed program: same field, predictor and options, nothing seen yet."""
        return StreamListener(self.signature_field_name, self.predict, self.predict_name, self.allow_reuse)

    def flush(self) -> str:
        """DSPy's name: end the field now and return the text still held back."""
        response = self.finalize()
        return response.chunk if response is not None and isinstance(response.chunk, str) else ""

    def _could_form_end_identifier(self, concat_message: str, adapter_name: str) -> bool:
        """Whether ``concat_message`` may be the start of the field's end marker (DSPy's check)."""
        fmt = _FORMAT_NAMES.get(adapter_name)
        if fmt == "chat":
            return partial_chat_marker(concat_message) is not None or "[[ ##" in concat_message
        if fmt == "xml":
            closing = f"</{self.signature_field_name}>"
            return any(closing.startswith(concat_message[i:]) for i in range(len(concat_message))) or (
                "</" in concat_message
            )
        stripped = concat_message.rstrip()
        return stripped.endswith(('"', '",', '"}')) or "}" in concat_message

    # -- internals -----------------------------------------------------------------------------

    def _scan(self) -> FieldScanner:
        if self._scanner is None:
            fmt = self._format or adapter_format(current_settings().adapter)
            self._scanner = scanner_for(fmt, self.signature_field_name)
        return self._scanner

    def _response(self, pieces: list[tuple[str, bool]]) -> StreamResponse | None:
        scanner = self._scanner
        if scanner is not None:
            self.stream_start = self.stream_start or scanner.started
            self.stream_end = scanner.ended
        if not pieces:
            return None
        # a chunk carries at most one piece of text; a finish right after joins it as the last
        text = "".join(piece for piece, _ in pieces)
        return StreamResponse(self.predict_name, self.signature_field_name, text, pieces[-1][1])

    def _native_chunk(self, chunk: Any) -> StreamResponse | None:
        """A chunk of an output type that streams natively (e.g. ``Reasoning``), parsed by the type."""
        kind: Any = self._output_type
        if not (inspect.isclass(kind) and getattr(kind, "is_streamable", lambda: False)()):
            return None
        parsed = cast(Any, kind).parse_stream_chunk(chunk)
        if parsed is None or parsed == "":
            return None
        self.stream_start = True
        return StreamResponse(self.predict_name, self.signature_field_name, parsed, is_last_chunk=False)

    @property
    def _output_type(self) -> Any:
        fields = getattr(getattr(self.predict, "signature", None), "output_fields", None) or {}
        spec = fields.get(self.signature_field_name)
        return getattr(spec, "annotation", None)

    def _reset(self) -> None:
        self.stream_start = False
        self.stream_end = False
        self.cache_hit = False
        self._scanner = None

    def __repr__(self) -> str:
        return f"StreamListener({self.signature_field_name!r}, predict_name={self.predict_name!r})"


def adapter_format(adapter: Adapter | None) -> Format:
    """The answer format of ``adapter`` (None: ChatAdapter's); a clear error for one that cannot stream."""
    if adapter is None:
        return "chat"
    # JSONAdapter and XMLAdapter derive from ChatAdapter: the most specific class decides
    for kind, fmt in ((JSONAdapter, "json"), (XMLAdapter, "xml"), (ChatAdapter, "chat")):
        if isinstance(adapter, kind):
            return fmt  # type: ignore[return-value]
    names = ", ".join(kind.__name__ for kind in ADAPTER_SUPPORT_STREAMING)
    raise ConfigurationError(
        f"Unsupported adapter for streaming: {type(adapter).__name__}, please use one of the following "
        f"adapters: {names}"
    )


def _delta(chunk: Any) -> Any:
    choices: Any = getattr(chunk, "choices", None)
    if not choices:
        return None
    return getattr(choices[0], "delta", None)


def _finished(chunk: Any) -> bool:
    choices: Any = getattr(chunk, "choices", None)
    return bool(choices) and getattr(choices[0], "finish_reason", None) is not None


def find_predictor_for_stream_listeners(
    program: Any, stream_listeners: list[StreamListener]
) -> dict[int, list[StreamListener]]:
    """The listeners by ``id()`` of the predictor each listens to, filling in ``predict`` and
    ``predict_name`` of those that name only a field (a field of several predictors is an error)."""
    named = list(program.named_predictors())
    unnamed = {listener.signature_field_name for listener in stream_listeners if listener.predict is None}
    by_field = _predictors_by_field(named, unnamed)
    names = {id(predictor): name for name, predictor in named}
    result: dict[int, list[StreamListener]] = defaultdict(list)
    for listener in stream_listeners:
        if listener.predict is None:
            if listener.signature_field_name not in by_field:
                raise ConfigurationError(
                    f"Signature field {listener.signature_field_name} is not a field of any predictor in the "
                    "program, cannot automatically determine which predictor to use for streaming. Please "
                    "verify your field name or specify the predictor to listen to."
                )
            listener.predict_name, listener.predict = by_field[listener.signature_field_name]
        elif listener.predict_name is None:
            listener.predict_name = names.get(id(listener.predict))
        result[id(listener.predict)].append(listener)
    return result


def _predictors_by_field(named: list[tuple[str, Any]], wanted: set[str]) -> dict[str, tuple[str, Any]]:
    found: dict[str, tuple[str, Any]] = {}
    for name, predictor in named:
        for field in predictor.signature.output_fields:
            if field not in wanted:
                continue
            if field in found:
                raise ConfigurationError(
                    f"Signature field {field} is not unique in the program, cannot automatically determine "
                    "which predictor to use for streaming. Please specify the predictor to listen to."
                )
            found[field] = (name, predictor)
    return found
