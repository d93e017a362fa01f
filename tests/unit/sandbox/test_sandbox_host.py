"""The host side of the sandbox, against a fake runner (fake_runner.py) instead of Deno."""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from collections import namedtuple
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from dspex.primitives.code_interpreter import (
    CodeExecutionError,
    CodeInterpreter,
    CodeInterpreterError,
    FinalOutput,
)
from dspex.primitives.python_interpreter import PythonInterpreter, _parameters, _tool_value
from dspex.sandbox import install
from dspex.sandbox.errors import (
    SandboxCrashError,
    SandboxMemoryError,
    SandboxStartupError,
    SandboxTimeoutError,
)
from dspex.sandbox.process import SandboxLimits

FAKE = str(Path(__file__).with_name("fake_runner.py"))
FAST = SandboxLimits(timeout_s=1.0, start_timeout_s=5.0)


def fake(*args: str, limits: SandboxLimits = FAST, **kwargs: Any) -> PythonInterpreter:
    return PythonInterpreter(deno_command=[sys.executable, FAKE, *args], limits=limits, **kwargs)


@pytest.fixture
def interpreter() -> Any:
    with fake(tools={"double": lambda x: x * 2}) as session:
        yield session


# -- results and errors -------------------------------------------------------------------------


def test_output_final_and_errors_map_to_dspy_types(interpreter: PythonInterpreter) -> None:
    assert interpreter.execute("echo:hi") == "hi"
    assert interpreter("final:done") == FinalOutput({"output": "done"})
    with pytest.raises(SyntaxError, match="Invalid Python syntax"):
        interpreter.execute("syntax")
    with pytest.raises(CodeExecutionError, match=r"ZeroDivisionError: \['boom'\]"):
        interpreter.execute("error:ZeroDivisionError")
    assert interpreter.execute("echo:still here") == "still here"


def test_output_limit_error_is_an_execution_error_that_keeps_the_session(
    interpreter: PythonInterpreter,
) -> None:
    with pytest.raises(CodeExecutionError) as raised:
        interpreter.execute("error:OutputLimitError")
    assert getattr(raised.value, "kind", None) == "output"
    assert interpreter.execute("echo:ok") == "ok"


def test_a_tool_call_round_trip_reaches_the_host_function(interpreter: PythonInterpreter) -> None:
    assert interpreter.execute("tool:double") == {"value": 4}


def test_a_failing_or_unknown_tool_is_an_error_reply_not_a_crash(interpreter: PythonInterpreter) -> None:
    interpreter.tools["double"] = lambda x: 1 / 0
    assert interpreter.execute("tool:double") == {"type": "ZeroDivisionError", "message": "division by zero"}
    assert interpreter.execute("tool:nope")["type"] == "CodeInterpreterError"


def test_async_tools_are_awaited(interpreter: PythonInterpreter) -> None:
    async def double(x: int) -> int:
        return x * 2

    interpreter.tools["double"] = double
    assert interpreter.execute("tool:double") == {"value": 4}


def test_lines_outside_the_protocol_are_skipped(interpreter: PythonInterpreter) -> None:
    assert interpreter.execute("forge") == "real"


def test_is_a_code_interpreter_with_dspy_instructions() -> None:
    assert isinstance(fake(), CodeInterpreter)
    assert "Pyodide" in PythonInterpreter.execution_instructions


# -- limits and crashes end the session ---------------------------------------------------------


def test_wall_time_limit_kills_and_every_later_call_says_so(interpreter: PythonInterpreter) -> None:
    started = time.monotonic()
    with pytest.raises(SandboxTimeoutError, match="time limit") as raised:
        interpreter.execute("hang")
    assert time.monotonic() - started < 10
    assert raised.value.kind == "timeout"
    assert "interpreter state was lost" in str(raised.value)
    with pytest.raises(SandboxTimeoutError):
        interpreter.execute("echo:again")


def test_process_exit_is_a_crash_with_its_stderr(interpreter: PythonInterpreter) -> None:
    with pytest.raises(SandboxCrashError, match="exit code 3") as raised:
        interpreter.execute("exit")
    assert "exiting on request" in str(raised.value)
    assert "interpreter state was lost" in str(raised.value)


def test_memory_watchdog_kills_a_growing_process() -> None:
    session = fake(limits=SandboxLimits(timeout_s=20, memory_mb=100))
    with session, pytest.raises(SandboxMemoryError, match="100 MB memory limit"):
        session.execute("alloc:300")


def test_a_line_past_the_bound_ends_the_session() -> None:
    session = fake(limits=SandboxLimits(timeout_s=20, output_chars=10))
    with session, pytest.raises(SandboxCrashError, match="past the output limit"):
        session.execute(f"long:{SandboxLimits(output_chars=10).max_line_bytes + 10}")


def test_a_runner_that_never_starts_is_a_startup_error_not_a_hang() -> None:
    session = fake("hang-at-start", limits=SandboxLimits(start_timeout_s=1.0))
    started = time.monotonic()
    with pytest.raises(SandboxStartupError, match="did not start within 1 s"):
        session.start()
    assert time.monotonic() - started < 10


def test_a_runner_that_dies_at_start_names_the_fix_and_its_stderr() -> None:
    with pytest.raises(SandboxStartupError, match="make install") as raised:
        fake("die-at-start").start()
    assert "Pyodide could not be loaded" in str(raised.value)


def test_a_missing_pyodide_cache_names_the_fix(tmp_path: Path) -> None:
    session = PythonInterpreter(deno_dir=tmp_path)
    with pytest.raises(SandboxStartupError, match=r"not in the sandbox cache .*make install"):
        session.execute("1")


def test_a_missing_deno_names_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "deno", None)
    monkeypatch.setattr(install.shutil, "which", lambda name: None)
    with pytest.raises(SandboxStartupError, match="pip install deno=="):
        install.find_deno()


def test_shutdown_ends_the_session(interpreter: PythonInterpreter) -> None:
    interpreter.start()
    interpreter.shutdown()
    with pytest.raises(CodeInterpreterError, match="session has ended"):
        interpreter.execute("echo:x")


def test_a_tool_cannot_reenter_its_interpreter(interpreter: PythonInterpreter) -> None:
    interpreter.tools["double"] = lambda x: interpreter.execute("echo:inner")
    reply = interpreter.execute("tool:double")
    assert reply["type"] == "CodeInterpreterError"
    assert "recursively" in reply["message"]


# -- the Deno command: permissions --------------------------------------------------------------


def flags(session: PythonInterpreter) -> dict[str, str]:
    return {arg.split("=")[0]: arg.partition("=")[2] for arg in session.deno_command if arg.startswith("--")}


def test_default_command_grants_nothing_but_the_pyodide_cache(tmp_path: Path) -> None:
    session = PythonInterpreter(deno_dir=tmp_path)
    granted = flags(session)
    assert "--cached-only" in granted and "--no-prompt" in granted
    assert granted["--allow-read"] == str(install.pyodide_dir(tmp_path).resolve())
    for forbidden in (
        "--allow-net",
        "--allow-env",
        "--allow-run",
        "--allow-write",
        "--allow-ffi",
        "--allow-all",
    ):
        assert forbidden not in granted
    assert "-A" not in session.deno_command


def test_granted_files_network_and_memory_reach_the_flags(tmp_path: Path) -> None:
    (tmp_path / "in.txt").write_text("x")
    session = PythonInterpreter(
        deno_dir=tmp_path / "deno",
        enable_read_paths=[tmp_path / "in.txt"],
        enable_write_paths=[str(tmp_path / "out.txt")],
        enable_network_access=["example.com"],
        limits=SandboxLimits(memory_mb=300),
    )
    granted = flags(session)
    assert str(tmp_path / "in.txt") in granted["--allow-read"].split(",")
    assert granted["--allow-write"] == str(tmp_path / "out.txt")
    assert granted["--allow-net"] == "example.com"
    assert "--max-old-space-size=300" in granted["--v8-flags"]


def test_env_vars_are_copied_by_value_never_granted_to_deno(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DSPEX_SANDBOX_CANARY", "yes")
    session = PythonInterpreter(enable_env_vars=["DSPEX_SANDBOX_CANARY", "DSPEX_UNSET_VAR"])
    assert "--allow-env" not in flags(session)
    assert session._granted_env() == {"DSPEX_SANDBOX_CANARY": "yes"}
    assert set(install.deno_env(Path("/x"))) == {
        "DENO_DIR",
        "DENO_NO_UPDATE_CHECK",
        "DENO_NO_PACKAGE_JSON",
        "NO_COLOR",
    }


def test_write_paths_may_not_cover_the_runtime(tmp_path: Path) -> None:
    with pytest.raises(CodeInterpreterError, match="overlap"):
        PythonInterpreter(deno_dir=tmp_path, enable_write_paths=[tmp_path / "npm" / "x"])


def test_mounts_need_unique_basenames(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    with pytest.raises(CodeInterpreterError, match="unique basenames"):
        PythonInterpreter(enable_read_paths=[tmp_path / "f.txt", tmp_path / "a" / "f.txt"])


def test_custom_command_is_used_verbatim_and_a_dict_is_refused() -> None:
    assert fake().deno_command == [sys.executable, FAKE]
    with pytest.raises(TypeError, match="list of strings"):
        PythonInterpreter(deno_command={"cmd": "deno"})  # type: ignore[arg-type]


def test_missing_read_file_is_refused_and_write_file_is_created(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        fake(enable_read_paths=[tmp_path / "absent.txt"]).start()
    target = tmp_path / "out.txt"
    with fake(enable_write_paths=[target]) as session:
        assert session.execute("echo:w") == "w"
    assert target.exists()


def test_a_runner_error_outside_the_code_ends_the_session(tmp_path: Path) -> None:
    (tmp_path / "broken").write_text("x")
    with pytest.raises(CodeInterpreterError, match="failed during mount"):
        fake(enable_read_paths=[tmp_path / "broken"]).start()


# -- values crossing the boundary ---------------------------------------------------------------


class Hit(BaseModel):
    id: int


@dataclasses.dataclass
class Box:
    w: int


Point = namedtuple("Point", "x y")


def test_variables_are_json_with_models_sets_and_non_finite_floats() -> None:
    session = fake()
    payload = session._serialize_variables(
        {"hit": Hit(id=1), "s": {3, 1}, "t": (1, 2), "inf": float("inf"), "nan": float("nan")}
    )
    decoded = json.loads(payload)
    assert decoded["hit"] == {"id": 1} and decoded["s"] == [1, 3] and decoded["t"] == [1, 2]
    assert decoded["inf"] == float("inf")


@pytest.mark.parametrize("name", ["for", "class", "1x", "a-b"])
def test_bad_variable_names_are_refused_before_anything_runs(name: str) -> None:
    with pytest.raises(CodeInterpreterError, match="Invalid variable name"):
        fake().execute("echo:x", variables={name: 1})


def test_unsupported_variable_values_are_refused() -> None:
    with pytest.raises(CodeInterpreterError, match="Unsupported value type"):
        fake()._serialize_variables({"x": object()})


@pytest.mark.parametrize(
    ("result", "expected"),
    [
        (None, ""),
        ("s", "s"),
        (3, 3),
        ([Hit(id=2)], [{"id": 2}]),
        (Box(w=1), {"w": 1}),
        (Point(1, 2), {"x": 1, "y": 2}),
        (float("nan"), "nan"),
        (object, str(object)),
    ],
)
def test_tool_results_as_the_sandbox_sees_them(result: Any, expected: Any) -> None:
    assert _tool_value(result) == expected


def test_tool_parameters_keep_simple_types_and_json_defaults() -> None:
    def tool(query: str, limit: int = 10, mode: list[str] | None = None, *rest: Any, **extra: Any) -> str:
        return ""

    assert _parameters(tool) == [
        {"name": "query", "type": "str"},
        {"name": "limit", "type": "int", "default": 10},
        {"name": "mode", "default": None},
    ]


def test_a_process_killed_from_outside_ends_the_session(interpreter: PythonInterpreter) -> None:
    interpreter.start()
    process = interpreter.deno_process
    assert process is not None
    process.kill()
    process.wait()
    with pytest.raises(SandboxCrashError, match="interpreter state was lost"):
        interpreter.execute("echo:x")
    with pytest.raises(CodeInterpreterError):
        interpreter.execute("echo:again")
