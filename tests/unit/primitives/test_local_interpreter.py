"""``LocalInterpreter`` with real worker subprocesses: the session, tools, SUBMIT, errors, the
timeout and the checks of its arguments (DSPy 3.4.1's behaviour)."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

import dspex
from dspex.errors import CodeExecutionError, CodeInterpreterError, ConfigurationError
from dspex.primitives.code_interpreter import CodeInterpreter, FinalOutput, create_interpreter
from dspex.primitives.local_interpreter import LocalInterpreter


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _gone_soon(pid: int, seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not _pid_alive(pid):
            return True
        time.sleep(0.05)
    return False


def _worker_pid(repl: LocalInterpreter) -> int:
    worker = repl._worker
    assert worker is not None
    return worker.pid


@pytest.fixture
def repl() -> Iterator[LocalInterpreter]:
    interpreter = LocalInterpreter()
    yield interpreter
    interpreter.shutdown()


def test_it_meets_the_code_interpreter_interface_and_is_exported() -> None:
    assert isinstance(LocalInterpreter(), CodeInterpreter)
    assert dspex.LocalInterpreter is LocalInterpreter
    assert dspex.primitives.LocalInterpreter is LocalInterpreter
    assert "local" in LocalInterpreter.execution_instructions.lower()


def test_state_persists_across_executes_and_variables_are_bound(repl: LocalInterpreter) -> None:
    assert repl.execute("import math\ntotal = 40") is None
    assert repl.execute("def bump(n):\n    return n + 1") is None
    assert repl.execute("bump(total) + extra + math.floor(0.5)", {"extra": 1}) == 42
    assert repl.execute("extra") == 1  # a variable stays a global of the session


def test_last_expression_value_wins_over_printed_output(repl: LocalInterpreter) -> None:
    assert repl.execute("print('shown')\n7 * 6") == 42
    assert repl.execute("print('one')\nprint('two')") == "one\ntwo"
    # stderr is captured with stdout, in order
    assert repl.execute("import sys\nprint('a')\nprint('b', file=sys.stderr)\nprint('c')") == "a\nb\nc"
    assert repl.execute("x = 1") is None
    assert repl.execute("None") is None
    assert repl.execute("object()").startswith("<object object")  # not JSON: its repr comes back


def test_printing_from_code_does_not_reach_the_host_stdout(
    repl: LocalInterpreter, capfd: pytest.CaptureFixture[str]
) -> None:
    assert repl.execute("import os\nprint('py')\nos.write(1, b'raw\\n')\nNone") == "py\nraw"
    assert "py" not in capfd.readouterr().out


def test_submit_without_output_fields_takes_one_value(repl: LocalInterpreter) -> None:
    assert repl.execute("SUBMIT({'a': [1, 2]})") == FinalOutput({"output": {"a": [1, 2]}})
    with pytest.raises(CodeExecutionError, match="SUBMIT takes exactly one value"):
        repl.execute("SUBMIT(1, 2)")
    # SUBMIT ends the run even inside a broad except: it is not an Exception
    assert repl.execute("try:\n    SUBMIT(5)\nexcept Exception:\n    pass\n'not reached'") == FinalOutput(
        {"output": 5}
    )


def test_submit_with_output_fields_by_position_or_keyword() -> None:
    with LocalInterpreter(output_fields=[{"name": "answer"}, {"name": "score", "type": "int"}]) as repl:
        assert repl.execute("SUBMIT('yes', 3)") == FinalOutput({"answer": "yes", "score": 3})
        assert repl.execute("SUBMIT(score=1, answer='no')") == FinalOutput({"answer": "no", "score": 1})
        with pytest.raises(CodeExecutionError, match=r"missing \['score'\], unexpected \['wrong'\]"):
            repl.execute("SUBMIT(answer='x', wrong=2)")
        with pytest.raises(CodeExecutionError, match="positional or keyword"):
            repl.execute("SUBMIT('x', score=2)")
        with pytest.raises(CodeExecutionError, match="3 values"):
            repl.execute("SUBMIT(1, 2, 3)")
        assert repl.execute("'still alive'") == "still alive"


def test_output_fields_set_after_construction_apply_to_the_next_execute(repl: LocalInterpreter) -> None:
    repl.output_fields = [{"name": "result"}]  # as RLM sets them on a given interpreter
    assert repl.execute("SUBMIT(result=2)") == FinalOutput({"result": 2})


def test_sync_and_async_host_tools_are_called_from_the_code() -> None:
    seen: list[Any] = []

    def lookup(key: str) -> str:
        seen.append(("lookup", key, os.getpid()))
        return key.upper()

    async def scale(value: int, factor: int = 2) -> int:
        await asyncio.sleep(0.01)
        return value * factor

    with LocalInterpreter(tools={"lookup": lookup, "scale": scale}) as repl:
        assert repl.execute("lookup('ab') + str(scale(4, factor=3))") == "AB12"
    assert seen == [("lookup", "ab", os.getpid())]  # ran in the host process


def test_a_tool_may_be_added_to_tools_after_construction(repl: LocalInterpreter) -> None:
    repl.tools["double"] = lambda n: n * 2
    assert repl.execute("double(21)") == 42


def test_an_async_tool_works_when_execute_is_called_inside_an_event_loop() -> None:
    async def fetch() -> str:
        return "fetched"

    async def main() -> Any:
        with LocalInterpreter(tools={"fetch": fetch}) as repl:
            return repl.execute("fetch()")

    assert asyncio.run(main()) == "fetched"


def test_a_failing_tool_raises_inside_the_code() -> None:
    def broken(**_: Any) -> None:
        raise ValueError("upstream said no")

    with LocalInterpreter(tools={"broken": broken}) as repl:
        caught = repl.execute(
            "try:\n    broken()\nexcept RuntimeError as exc:\n    message = str(exc)\nmessage"
        )
        assert caught == "ValueError: upstream said no"
        with pytest.raises(CodeExecutionError, match="ValueError: upstream said no"):
            repl.execute("broken(x=1)")
        assert repl.execute("1 + 1") == 2  # the session survives a failed tool


def test_a_tool_returning_non_json_fails_in_the_code() -> None:
    with (
        LocalInterpreter(tools={"make": lambda: object()}) as repl,
        pytest.raises(CodeExecutionError, match="not JSON-compatible"),
    ):
        repl.execute("make()")


def test_syntax_error_is_a_syntax_error_and_the_session_survives(repl: LocalInterpreter) -> None:
    repl.execute("kept = 3")
    with pytest.raises(SyntaxError):
        repl.execute("def broken(:\n    pass")
    assert repl.execute("kept") == 3


def test_runtime_error_is_a_code_execution_error_with_the_message(repl: LocalInterpreter) -> None:
    with pytest.raises(CodeExecutionError, match="ZeroDivisionError: division by zero"):
        repl.execute("1 / 0")
    with pytest.raises(CodeExecutionError, match="SystemExit"):
        repl.execute("import sys\nsys.exit(3)")
    assert repl.execute("'ok'") == "ok"


def test_timeout_kills_the_worker_and_ends_the_session() -> None:
    repl = LocalInterpreter(execution_timeout=1.0)
    repl.start()
    pid = _worker_pid(repl)
    child = repl.execute("import subprocess, sys\np = subprocess.Popen(['sleep', '60'])\np.pid")
    started = time.monotonic()
    with pytest.raises(CodeInterpreterError, match="timeout of 1 s") as raised:
        repl.execute("import time\ntime.sleep(30)")
    assert not isinstance(raised.value, CodeExecutionError)
    assert time.monotonic() - started < 10
    assert _gone_soon(pid)
    assert _gone_soon(child)  # the process group went with it
    with pytest.raises(CodeInterpreterError, match="session has ended"):
        repl.execute("1")
    repl.shutdown()


def test_timeout_covers_a_slow_host_tool() -> None:
    with LocalInterpreter(tools={"slow": lambda: time.sleep(5)}, execution_timeout=0.5) as repl:
        pid = _worker_pid(repl)
        with pytest.raises(CodeInterpreterError, match="timeout"):
            repl.execute("slow()")
        assert _gone_soon(pid)


def test_a_leaked_thread_ends_the_session(repl: LocalInterpreter) -> None:
    repl.start()
    pid = _worker_pid(repl)
    code = "import threading, time\nthreading.Thread(target=time.sleep, args=(30,)).start()"
    with pytest.raises(CodeInterpreterError, match="threads running") as raised:
        repl.execute(code)
    assert not isinstance(raised.value, CodeExecutionError)
    assert _gone_soon(pid)
    with pytest.raises(CodeInterpreterError, match="session has ended"):
        repl.execute("1")


def test_a_worker_that_dies_ends_the_session(repl: LocalInterpreter) -> None:
    with pytest.raises(CodeInterpreterError, match="exited unexpectedly"):
        repl.execute("import os\nos._exit(1)")
    with pytest.raises(CodeInterpreterError, match="session has ended"):
        repl.execute("1")


def test_shutdown_is_idempotent_and_final() -> None:
    repl = LocalInterpreter()
    repl.execute("1")
    pid = _worker_pid(repl)
    repl.shutdown()
    repl.shutdown()
    assert _gone_soon(pid)
    with pytest.raises(CodeInterpreterError, match="session has ended"):
        repl.start()
    never_started = LocalInterpreter()
    never_started.shutdown()
    never_started.shutdown()


def test_context_manager_and_call() -> None:
    with LocalInterpreter() as repl:
        pid = _worker_pid(repl)
        assert repl("a = 5\na * 2") == 10
    assert _gone_soon(pid)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"tools": {"SUBMIT": len}}, "invalid: \\['SUBMIT'\\]"),
        ({"tools": {"not-a-name": len}}, "invalid: \\['not-a-name'\\]"),
        ({"tools": {"class": len}}, "invalid: \\['class'\\]"),
        ({"tools": {"ok": 3}}, "not callable: \\['ok'\\]"),
        ({"tools": [len]}, "must be a dict"),
        ({"output_fields": [{"name": "for"}]}, "invalid: \\['for'\\]"),
        ({"output_fields": [{"name": "a"}, {"name": "a"}]}, "repeated: \\['a'\\]"),
        ({"output_fields": [{"name": "a", "type": object()}]}, "JSON-compatible"),
        ({"output_fields": ["answer"]}, "list of dicts"),
        ({"execution_timeout": 0}, "positive"),
        ({"execution_timeout": -1.5}, "positive"),
        ({"execution_timeout": "10"}, "positive"),
    ],
)
def test_bad_construction_arguments_are_refused(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message) as raised:
        LocalInterpreter(**kwargs)
    assert isinstance(raised.value, ValueError)  # what DSPy raises


@pytest.mark.parametrize(
    ("code", "variables", "message"),
    [
        (b"1", None, "code must be a string"),
        ("1", [("a", 1)], "variables must be a dict"),
        ("1", {"SUBMIT": 1}, "invalid: \\['SUBMIT'\\]"),
        ("1", {"tool": 1}, "invalid: \\['tool'\\]"),
        ("1", {"2x": 1}, "invalid: \\['2x'\\]"),
        ("1", {"data": {1, 2}}, "JSON-compatible"),
        ("1", {"data": float("nan")}, "JSON-compatible"),
    ],
)
def test_bad_execute_arguments_are_refused_before_any_process_starts(
    code: Any, variables: Any, message: str
) -> None:
    repl = LocalInterpreter(tools={"tool": len})
    with pytest.raises(CodeInterpreterError, match=message):
        repl.execute(code, variables)
    assert repl._worker is None
    repl.shutdown()


def test_a_bad_tool_name_added_later_is_refused_at_execute(repl: LocalInterpreter) -> None:
    repl.tools["bad name"] = len
    with pytest.raises(ConfigurationError, match="invalid: \\['bad name'\\]"):
        repl.execute("1")
    repl.tools.pop("bad name")
    repl.output_fields = [{"name": "x"}, {"name": "x"}]
    with pytest.raises(ValueError, match="repeated: \\['x'\\]"):
        repl.execute("1")
    assert repl._worker is None


def test_the_worker_runs_isolated_and_inherits_the_host_environment(
    repl: LocalInterpreter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not a sandbox, as in DSPy: ``-I`` drops PYTHON* variables from Python's own setup, but the
    code can read every environment variable the host has (secrets included)."""
    monkeypatch.setenv("DSPEX_LOCAL_INTERP_PROBE", "visible")
    monkeypatch.setenv("PYTHONPATH", "/nonexistent-probe-dir")
    facts = repl.execute(
        "import os, sys\n"
        "[sys.flags.isolated, os.environ.get('DSPEX_LOCAL_INTERP_PROBE'),"
        " '/nonexistent-probe-dir' in sys.path, sys.executable]"
    )
    assert facts == [1, "visible", False, sys.executable]


def test_importing_the_worker_module_does_nothing_and_it_refuses_to_serve() -> None:
    import dspex.primitives._local_worker as worker

    with pytest.raises(RuntimeError, match="own process"):
        worker.serve()


def test_create_interpreter_uses_a_configured_local_factory() -> None:
    with dspex.context(interpreter_factory=LocalInterpreter):
        repl = create_interpreter(None)
    try:
        assert isinstance(repl, LocalInterpreter)
        assert repl.execute("2 ** 5") == 32
    finally:
        repl.shutdown()


def test_only_one_execute_runs_at_a_time() -> None:
    import threading

    started = threading.Event()

    def wait_a_bit() -> int:
        started.set()
        time.sleep(0.5)
        return 1

    with LocalInterpreter(tools={"wait_a_bit": wait_a_bit}) as repl:
        first = threading.Thread(target=repl.execute, args=("wait_a_bit()",))
        first.start()
        assert started.wait(10)
        with pytest.raises(CodeInterpreterError, match="already running"):
            repl.execute("1")
        first.join()
        assert repl.execute("2") == 2


class _Heard(dspex.BaseCallback):
    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []

    def on_interpreter_execute_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        self.events.append(("execute", inputs["code"]))

    def on_interpreter_tool_call_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        self.events.append(("tool", inputs["tool_name"], inputs["args"], inputs["kwargs"]))

    def on_interpreter_tool_call_end(
        self, call_id: str, outputs: Any, exception: BaseException | None = None
    ) -> None:
        self.events.append(("tool done", outputs))


def test_callbacks_hear_executions_and_tool_calls() -> None:
    heard = _Heard()
    with LocalInterpreter(tools={"inc": lambda n, by=1: n + by}, callbacks=[heard]) as repl:
        assert repl.execute("inc(1, by=2)") == 3
    assert heard.events == [("execute", "inc(1, by=2)"), ("tool", "inc", [1], {"by": 2}), ("tool done", 3)]


class _UpperLM(dspex.BaseLM):
    """A sub-LM for ``llm_query``: answers the prompt in upper case."""

    def __init__(self) -> None:
        super().__init__("upper", cache=False)

    async def aforward(self, prompt: str | None = None, messages: Any = None, **kwargs: Any) -> str:
        content = prompt if messages is None else messages[-1]["content"]
        return str(content).upper()


def test_rlm_runs_its_loop_in_a_local_interpreter() -> None:
    from dspex.utils import DummyLM

    codes = [
        "print(len(numbers))",
        "half = sum(numbers) // 2",
        "SUBMIT(total=half * 2, word=llm_query('ok'))",
    ]
    lm = DummyLM(
        [{"reasoning": f"step {i}", "code": f"```python\n{code}\n```"} for i, code in enumerate(codes)]
    )
    rlm = dspex.RLM(
        "numbers: list[int] -> total: int, word: str", sub_lm=_UpperLM(), interpreter_factory=LocalInterpreter
    )
    with dspex.context(lm=lm):
        pred = rlm(numbers=[1, 2, 3])
    assert (pred.total, pred.word) == (6, "OK")
    assert pred.trajectory[0]["output"].strip() == "3"


def test_tools_called_from_an_executor_inside_the_code_overlap() -> None:
    import threading

    lock = threading.Lock()
    in_flight = {"now": 0, "most": 0}

    def slow_square(n: int) -> int:
        with lock:
            in_flight["now"] += 1
            in_flight["most"] = max(in_flight["most"], in_flight["now"])
        time.sleep(0.2)
        with lock:
            in_flight["now"] -= 1
        return n * n

    code = (
        "from concurrent.futures import ThreadPoolExecutor\n"
        "with ThreadPoolExecutor(4) as pool:\n"
        "    squares = list(pool.map(slow_square, range(4)))\n"
        "squares"
    )
    with LocalInterpreter(tools={"slow_square": slow_square}, execution_timeout=20) as repl:
        assert repl.execute(code) == [0, 1, 4, 9]
        assert repl.execute("len(squares)") == 4  # the executor's threads ended: the session lives
    assert in_flight["most"] > 1
