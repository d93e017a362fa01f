"""Code interpreters as the callbacks hear them (DSPy's ``on_interpreter_*`` hooks), without a sandbox:
a hand-written interpreter decorated with ``with_callbacks``, and ``PythonInterpreter``'s host side
(its tools and its tool-call reply) before any Deno process starts."""

from __future__ import annotations

import json
from typing import Any

import pytest

from dspex.configuration import context
from dspex.primitives.code_interpreter import CodeInterpreterError
from dspex.primitives.python_interpreter import PythonInterpreter
from dspex.utils.callback import BaseCallback, with_callbacks


class Heard(BaseCallback):
    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    def on_interpreter_startup_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        self.events.append(("startup+", inputs))

    def on_interpreter_startup_end(
        self, call_id: str, outputs: Any, exception: BaseException | None = None
    ) -> None:
        self.events.append(("startup-", exception))

    def on_interpreter_execute_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        self.events.append(("execute+", inputs))

    def on_interpreter_execute_end(
        self, call_id: str, outputs: Any, exception: BaseException | None = None
    ) -> None:
        self.events.append(("execute-", outputs))

    def on_interpreter_tool_call_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        self.events.append(("tool+", inputs))

    def on_interpreter_tool_call_end(
        self, call_id: str, outputs: Any, exception: BaseException | None = None
    ) -> None:
        self.events.append(("tool-", exception if exception is not None else outputs))

    def on_module_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        self.events.append(("module+", inputs))


class Scratch:
    """An interpreter of the caller's own: it only meets the CodeInterpreter interface."""

    def __init__(self) -> None:
        self.tools: dict[str, Any] = {}

    @with_callbacks
    def start(self) -> None:
        pass

    @with_callbacks
    def execute(self, code: str, variables: dict[str, Any] | None = None) -> Any:
        return code.upper()

    def shutdown(self) -> None:
        pass


def test_a_hand_written_interpreter_is_heard_by_the_interpreter_hooks_not_the_module_ones() -> None:
    heard = Heard()
    with context(callbacks=[heard]):
        Scratch().start()
        assert Scratch().execute("x", {"a": 1}) == "X"
    assert heard.events == [
        ("startup+", {}),
        ("startup-", None),
        ("execute+", {"code": "x", "variables": {"a": 1}}),
        ("execute-", "X"),
    ]


def test_an_unknown_tool_is_reported_to_the_callbacks_as_the_error_raised() -> None:
    heard = Heard()
    interpreter = PythonInterpreter(callbacks=[heard])
    with pytest.raises(CodeInterpreterError, match="Unknown tool: nope") as raised:
        interpreter.invoke_tool("nope", {"q": 1})
    assert heard.events == [("tool+", {"tool_name": "nope", "kwargs": {"q": 1}}), ("tool-", raised.value)]


def test_a_tool_call_reply_names_the_host_error_type_after_the_callbacks_heard_it() -> None:
    heard, failure = Heard(), KeyError("missing row")

    def lookup(row: str) -> str:
        raise failure

    interpreter = PythonInterpreter(tools={"lookup": lookup, "double": lambda n: n * 2}, callbacks=[heard])
    written: list[tuple[str, str]] = []
    interpreter._write_message = lambda message, where: written.append((message, where))  # type: ignore[method-assign]

    interpreter._handle_tool_call({"id": "r1", "params": {"name": "lookup", "kwargs": {"row": "7"}}})
    interpreter._handle_tool_call({"id": "r2", "params": {"name": "double", "kwargs": {"n": 4}}})

    assert heard.events[1] == ("tool-", failure)
    error_reply, value_reply = (json.loads(message) for message, _ in written)
    assert error_reply["id"] == "r1" and error_reply["error"]["data"]["type"] == "KeyError"
    assert error_reply["error"]["message"] == str(failure)
    assert value_reply == {"jsonrpc": "2.0", "id": "r2", "result": {"value": 8}}


def test_writing_a_protocol_message_without_a_session_is_an_interpreter_error() -> None:
    with pytest.raises(CodeInterpreterError, match="no sandbox session"):
        PythonInterpreter()._write_message('{"id": 1}', "while testing")
