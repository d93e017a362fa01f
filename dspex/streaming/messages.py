"""What a streamed program yields besides its result: field chunks and status messages.

:class:`StreamResponse` is one piece of an output field, from a :class:`~dspex.streaming.StreamListener`.
:class:`StatusMessage` is a line of progress ("Calling tool search..."), worded by a
:class:`StatusMessageProvider`; :func:`dspex.streamify` installs a callback that asks the provider at
each tool, module and LM start and end and sends what it answers into the stream.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from dspex.configuration import current_settings
from dspex.utils.callback import BaseCallback

__all__ = ["StatusMessage", "StatusMessageProvider", "StatusStreamingCallback", "StreamResponse"]


@dataclass
class StreamResponse:
    """One chunk of one output field of one predictor, as it streams.

    ``chunk`` is text (for a custom streamable type, such as ``Reasoning``, a value of that type);
    ``is_last_chunk`` is True on the field's last chunk (which may be empty).
    """

    predict_name: str | None
    signature_field_name: str
    chunk: Any
    is_last_chunk: bool


@dataclass
class StatusMessage:
    """A progress message of a streamed program."""

    message: str


class StatusMessageProvider:
    """The status messages of a streamed program; subclass it and return a string (or None for no
    message) from the hooks you want.

        class Progress(StatusMessageProvider):
            def lm_start_status_message(self, instance, inputs):
                return f"Asking {instance.model}..."

        program = dspex.streamify(dspex.Predict("q -> a"), status_message_provider=Progress())

    By default only tools have messages: "Calling tool <name>..." and, when it returns, that the LM
    is queried with the result.
    """

    def tool_start_status_message(self, instance: Any, inputs: dict[str, Any]) -> str | None:
        """Before a tool runs."""
        return f"Calling tool {instance.name}..."

    def tool_end_status_message(self, outputs: Any) -> str | None:
        """After a tool returned."""
        return "Tool calling finished! Querying the LLM with tool calling results..."

    def module_start_status_message(self, instance: Any, inputs: dict[str, Any]) -> str | None:
        """Before a module (or predictor) runs."""
        return None

    def module_end_status_message(self, outputs: Any) -> str | None:
        """After a module (or predictor) returned."""
        return None

    def lm_start_status_message(self, instance: Any, inputs: dict[str, Any]) -> str | None:
        """Before an LM call."""
        return None

    def lm_end_status_message(self, outputs: Any) -> str | None:
        """After an LM call."""
        return None


class _Sendable(Protocol):
    def send_nowait(self, item: Any) -> None: ...


class StatusStreamingCallback(BaseCallback):
    """Sends the provider's status messages into the stream of the :func:`dspex.streamify` run in
    progress (callbacks fire in worker threads too: sending never blocks)."""

    def __init__(self, status_message_provider: StatusMessageProvider | None = None) -> None:
        self.status_message_provider = status_message_provider or StatusMessageProvider()

    def _send(self, message: str | None) -> None:
        if not message:
            return
        stream: _Sendable | None = current_settings().send_stream
        if stream is not None:
            stream.send_nowait(StatusMessage(message))

    def on_tool_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        if getattr(instance, "name", None) != "finish":  # ReAct's way out is no tool call to report
            self._send(self.status_message_provider.tool_start_status_message(instance, inputs))

    def on_tool_end(self, call_id: str, outputs: Any | None, exception: BaseException | None = None) -> None:
        if outputs != "Completed.":  # what ReAct's finish returns
            self._send(self.status_message_provider.tool_end_status_message(outputs))

    def on_module_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        self._send(self.status_message_provider.module_start_status_message(instance, inputs))

    def on_module_end(
        self, call_id: str, outputs: Any | None, exception: BaseException | None = None
    ) -> None:
        self._send(self.status_message_provider.module_end_status_message(outputs))

    def on_lm_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        self._send(self.status_message_provider.lm_start_status_message(instance, inputs))

    def on_lm_end(self, call_id: str, outputs: Any | None, exception: BaseException | None = None) -> None:
        self._send(self.status_message_provider.lm_end_status_message(outputs))
