"""MCP tools in the pipeline's predictors: streamable-HTTP servers at allowed addresses only (issue 19).

An MCP server of the test (``mcp``'s ``MCPServer`` under uvicorn on a loopback port) serves ``add``;
a program from an allowed module (:mod:`e2e_mcp_programs`) opens a session to the server its example
names and runs ReActV2 over the server's tools. A predictor started with
``--allow-mcp-server <url>`` gives the same per-example results as local ``Evaluate`` and its calls
reach the server; a job naming the same server by another address is refused as a whole, with the
URL and the flag in the reason, before any request reaches the server.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import uvicorn
from e2e_mcp_programs import MCPAgent
from e2e_pipeline import Pipeline, devset, local_evaluate, per_example, sim_lm
from mcp.server.mcpserver import MCPServer
from starlette.types import Receive, Scope, Send

from dspex.errors import JobError
from dspex.primitives import Example
from dspex.testing import SimulatedLMServer

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

EXAMPLES = 16
PROGRAMS_DIR = Path(__file__).resolve().parent


class AddServer:
    """An MCP server with one tool, ``add``, on a loopback port; it counts tool calls and HTTP requests."""

    def __init__(self) -> None:
        self.calls = 0
        self.requests = 0
        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        self.port = self.socket.getsockname()[1]
        root = logging.getLogger()
        handlers, level = list(root.handlers), root.level
        try:  # MCPServer calls logging.basicConfig: leave the root logger as it was
            server = MCPServer("dspex-e2e", log_level="WARNING")
        finally:
            root.handlers[:] = handlers
            root.setLevel(level)
        server.add_tool(self.add)
        app = server.streamable_http_app()

        async def counted(scope: Scope, receive: Receive, send: Send) -> None:
            self.requests += scope["type"] == "http"
            await app(scope, receive, send)

        config = uvicorn.Config(counted, log_level="warning", access_log=False)
        self.uvicorn = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.uvicorn.run, args=([self.socket],), daemon=True)

    def add(self, a: int, b: int) -> int:
        """Add two integers and return the sum."""
        self.calls += 1
        return a + b

    def url(self, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}/mcp"

    def start(self) -> AddServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.uvicorn.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "the MCP server did not start"
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.uvicorn.should_exit = True
        self.thread.join(timeout=30)
        self.socket.close()


@pytest.fixture
def add_server() -> Iterator[AddServer]:
    server = AddServer().start()
    yield server
    server.stop()


def examples_for(url: str, seed: int) -> list[Example]:
    return [
        Example(question=e.question, answer=e.answer, mcp_url=url).with_inputs("question", "mcp_url")
        for e in devset(EXAMPLES, seed=seed)
    ]


def test_mcp_tools_run_in_predictors_at_allowed_addresses_only(
    pipeline_factory: Callable[..., Pipeline],
    sim_factory: Callable[..., SimulatedLMServer],
    cache_dir: Path,
    add_server: AddServer,
) -> None:
    python_path = os.pathsep.join(filter(None, [str(PROGRAMS_DIR), os.environ.get("PYTHONPATH")]))
    pipeline = pipeline_factory(env={"PYTHONPATH": python_path})
    allowed = add_server.url()
    pipeline.start_workers(1, "--allow-module", "e2e_mcp_programs", "--allow-mcp-server", allowed)
    pipeline.wait_ready()
    lm = sim_lm(sim_factory(latency=0.005), cache_dir)
    examples = examples_for(allowed, seed=31)

    [remote] = pipeline.evaluate([MCPAgent()], examples, lm, name="mcp-allowed")
    remote_calls = add_server.calls
    local = local_evaluate(MCPAgent(), examples, lm)

    assert (remote.errors, local.errors) == (0, 0), (remote.error_messages, local.error_messages)
    assert per_example(remote) == per_example(local)
    assert remote_calls == EXAMPLES and add_server.calls == 2 * EXAMPLES  # one add call per question

    requests_before = add_server.requests
    other_address = add_server.url("localhost")  # the same server, by an address the worker does not allow
    with pytest.raises(JobError) as refused:
        pipeline.evaluate([MCPAgent()], examples_for(other_address, seed=32), lm, name="mcp-refused")
    assert f"MCP server {other_address} is not allowed" in str(refused.value)
    assert f"--allow-mcp-server {other_address}" in str(refused.value)
    assert add_server.calls == 2 * EXAMPLES and add_server.requests == requests_before
    pipeline.check_running()
