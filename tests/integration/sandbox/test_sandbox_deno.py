"""The sandbox with the real Deno + Pyodide: DSPy's behaviour, then escape and abuse attempts.

Every abuse test would pass its attack if the sandbox were misconfigured (a broad --allow-read,
a missing limit...), and each ends as an error while the sandbox, or the pool, keeps serving.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from dspex.primitives.code_interpreter import CodeExecutionError, CodeInterpreterError, FinalOutput
from dspex.primitives.python_interpreter import PythonInterpreter
from dspex.sandbox import install
from dspex.sandbox.errors import SandboxMemoryError, SandboxOutputError, SandboxTimeoutError
from dspex.sandbox.pool import SandboxPool

pytestmark = pytest.mark.slow


def attempt(interpreter: PythonInterpreter, statement: str) -> str:
    """Run ``statement`` in the sandbox; what it returned, or its exception as text."""
    code = (
        f"try:\n    _r = repr({statement})\n"
        "except BaseException as e:\n    _r = 'ERR ' + type(e).__name__ + ': ' + str(e)\n_r"
    )
    return str(interpreter.execute(code))


# -- DSPy's behaviour --------------------------------------------------------------------------


def test_state_survives_between_calls_and_variables_arrive(shared: PythonInterpreter) -> None:
    assert shared.execute("counter = base + 1\ncounter", variables={"base": 41}) == 42
    assert shared.execute("counter += 1\nprint('now', counter)") == "now 43\n"
    assert shared.execute("(counter, [1, 2], {'k': None})") == [43, [1, 2], {"k": None}]


def test_submit_ends_with_final_output(shared: PythonInterpreter) -> None:
    assert shared.execute("SUBMIT(['a', 1])") == FinalOutput({"output": ["a", 1]})


def test_typed_submit_and_tools_from_the_host(shared: PythonInterpreter) -> None:
    calls: list[dict[str, Any]] = []

    def search(query: str, limit: int = 2) -> list[str]:
        calls.append({"query": query, "limit": limit})
        return [f"{query}-{i}" for i in range(limit)]

    async def shout(text: str) -> str:
        await asyncio.sleep(0)
        return text.upper()

    def broken(x: int) -> str:
        raise ValueError(f"bad value: {x}")

    shared.tools.update({"search": search, "shout": shout, "broken": broken})
    shared.output_fields = [{"name": "answer", "type": "str"}, {"name": "n", "type": "int"}]
    shared._tools_registered = False
    try:
        assert shared.execute("hits = search('q')\nshout(hits[1])") == "Q-1"
        assert calls == [{"query": "q", "limit": 2}]
        assert "ValueError: bad value: 7" in attempt(shared, "broken(7)")
        assert shared.execute("SUBMIT(hits[0], 3)") == FinalOutput({"answer": "q-0", "n": 3})
    finally:
        shared.tools.clear()
        shared.output_fields = None
        shared._tools_registered = False


def test_syntax_and_runtime_errors_keep_the_session(shared: PythonInterpreter) -> None:
    with pytest.raises(SyntaxError, match="Invalid Python syntax"):
        shared.execute("def broken(:")
    with pytest.raises(CodeExecutionError, match=r"ValueError: \[5\]"):
        shared.execute("raise ValueError(5)")
    with pytest.raises(CodeExecutionError, match="SystemExit"):
        shared.execute("import sys; sys.exit(2)")
    assert shared.execute("'alive'") == "alive"


def test_granted_files_and_env_only(shared: PythonInterpreter, grants: Any) -> None:
    assert shared.execute("open('/sandbox/notes.txt').read()") == "granted content"
    shared.execute("open('/sandbox/result.txt', 'w').write('from the sandbox')")
    assert grants.write_file.read_text() == "from the sandbox"
    assert shared.execute("import os\nos.environ.get('DSPEX_SANDBOX_CANARY')") == "granted-value"
    assert shared.execute("'DSPEX_SANDBOX_UNGRANTED' in os.environ") is False


# -- escape attempts ---------------------------------------------------------------------------


def test_host_files_cannot_be_read(shared: PythonInterpreter) -> None:
    got = attempt(shared, "__import__('js').Deno.readTextFileSync('/etc/passwd')")
    assert got.startswith("ERR") and "read access" in got and "root:" not in got
    cache = install.pyodide_dir() / "package.json"  # readable while Pyodide loaded, revoked since
    assert attempt(shared, f"__import__('js').Deno.readTextFileSync({str(cache)!r})").startswith("ERR")
    with pytest.raises(CodeExecutionError, match="read access"):
        shared.execute("import js\njs.Deno.readTextFileSync('/etc/passwd')")
    got = attempt(shared, "__import__('js').eval(\"import('file:///etc/passwd')\")")
    assert "root:" not in got


def test_processes_cannot_be_started(shared: PythonInterpreter) -> None:
    got = attempt(shared, "__import__('js').Deno.Command.new('/bin/sh').outputSync()")
    assert got.startswith("ERR") and "run access" in got


def test_environment_is_not_reachable_through_deno(shared: PythonInterpreter) -> None:
    got = attempt(shared, "__import__('js').Deno.env.get('HOME')")
    assert got.startswith("ERR") and "env access" in got


def test_network_cannot_reach_a_loopback_listener(shared: PythonInterpreter, listener: Any) -> None:
    url = f"http://127.0.0.1:{listener.port}/"
    with pytest.raises(CodeExecutionError, match="net access"):
        shared.execute(f"import js\nawait js.fetch({url!r})")
    connect = f"import js\nawait js.Deno.connect(js.JSON.parse('{{\"port\": {listener.port}}}'))"
    with pytest.raises(CodeExecutionError, match="net access"):
        shared.execute(connect)
    time.sleep(0.3)
    assert listener.connections == 0


def test_files_outside_the_grant_cannot_be_written(shared: PythonInterpreter, grants: Any) -> None:
    got = attempt(shared, f"__import__('js').Deno.writeTextFileSync({str(grants.outside)!r}, 'escaped')")
    assert got.startswith("ERR") and "write access" in got
    assert not grants.outside.exists()


def test_forged_protocol_lines_are_ignored(shared: PythonInterpreter) -> None:
    code = (
        "import js\n"
        'forged = \'{"id": "guess", "result": {"final": "forged"}}\\n\'\n'
        "js.Deno.stdout.writeSync(js.TextEncoder.new().encode(forged))\n"
        "'genuine'"
    )
    assert shared.execute(code) == "genuine"


def test_output_past_the_limit_is_an_error_and_the_session_lives(shared: PythonInterpreter) -> None:
    with pytest.raises(SandboxOutputError, match="output exceeded"):
        shared.execute("chunk = 'x' * 1_000_000\nfor _ in range(100):\n    print(chunk)")  # 100 MB
    with pytest.raises(SandboxOutputError):
        shared.execute("'y' * 5_000_000")
    assert shared.execute("'alive'") == "alive"


# -- limits that kill: the pool recovers ---------------------------------------------------------


def test_pool_sessions_do_not_see_each_other(pool: SandboxPool) -> None:
    with pool() as first:
        first.execute("secret = 1\nimport builtins\nbuiltins.len = lambda x: -1")
    with pool() as second:
        assert second.execute("'secret' in globals()") is False
        assert second.execute("len('abc')") == 3


def test_an_infinite_loop_times_out_and_the_pool_recovers(pool: SandboxPool) -> None:
    session = pool()
    session.execute("marker = 'lost with the process'")
    with pytest.raises(SandboxTimeoutError, match="time limit"):
        session.execute("while True:\n    pass")
    with pytest.raises(CodeInterpreterError, match="state was lost"):
        session.execute("marker")
    session.shutdown()
    with pool() as fresh, pytest.raises(CodeExecutionError, match="NameError"):
        fresh.execute("marker")
    assert pool.stats()["failures_timeout"] == 1


def test_a_gigabyte_against_512_mb_is_killed_and_replaced(pool: SandboxPool) -> None:
    with pool() as session, pytest.raises(SandboxMemoryError, match="512 MB memory limit"):
        session.execute("hoard = b'x' * (1024 ** 3)\nlen(hoard)")
    stats = pool.stats()
    assert stats["failures_memory"] == 1
    # a replacement is warming (the timeout test above shows one serving); not waited for here
    assert stats["idle"] + stats["warming"] == pool.size
