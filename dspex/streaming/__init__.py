"""Streaming a program's outputs while it runs (DSPy's ``dspy.streaming``).

    program = dspex.streamify(predict, stream_listeners=[StreamListener(signature_field_name="answer")])
    async for item in program(question="..."):
        ...

:func:`streamify` wraps a program; :class:`StreamListener` picks one output field's chunks out of the
LM's stream (:class:`StreamResponse`); :class:`StatusMessageProvider` words the
:class:`StatusMessage` s; :func:`apply_sync_streaming` turns the async generator into a sync one and
:func:`streaming_response` into server-sent events for an HTTP response.
"""

from __future__ import annotations

from dspex.streaming.messages import StatusMessage, StatusMessageProvider, StreamResponse
from dspex.streaming.streamify import apply_sync_streaming, streamify, streaming_response
from dspex.streaming.streaming_listener import StreamListener

__all__ = [
    "StatusMessage",
    "StatusMessageProvider",
    "StreamListener",
    "StreamResponse",
    "apply_sync_streaming",
    "streamify",
    "streaming_response",
]
