"""`dspex worker predict|optimize --allow-mcp-server` (and DSPEX_WORKER_ALLOW_MCP_SERVER)."""

from __future__ import annotations

import pytest
import typer
from typer.testing import CliRunner

from dspex.cli._worker_options import WorkerSettings

runner = CliRunner()


@pytest.mark.parametrize("kind", ["predict", "optimize"])
def test_the_option_is_offered_where_programs_run(worker_app: typer.Typer, kind: str) -> None:
    result = runner.invoke(worker_app, ["worker", kind, "--help"], terminal_width=200)
    assert result.exit_code == 0 and "--allow-mcp-serv" in result.output  # rich may cut the rest


def test_a_stdio_server_is_a_usage_error_from_the_flag_or_the_variable(worker_app: typer.Typer) -> None:
    base = ["worker", "predict", "--bootstrap", "127.0.0.1:1"]
    flag = runner.invoke(worker_app, [*base, "--allow-mcp-server", "stdio:python server.py"])
    assert flag.exit_code == 2 and "streamable-HTTP" in flag.output
    variable = '["http://10.0.0.5/mcp", "stdio:python server.py"]'
    env = runner.invoke(worker_app, base, env={"DSPEX_WORKER_ALLOW_MCP_SERVER": variable})
    assert env.exit_code == 2 and "streamable-HTTP" in env.output


def test_the_allowed_servers_reach_the_workers_policy() -> None:
    servers = ["http://10.0.0.5:8000/mcp", "https://tools.example/mcp"]
    from_flags = WorkerSettings(allow_mcp_server=servers).worker_options()
    assert from_flags.policy.allow_mcp_servers == tuple(servers)
    from_env = WorkerSettings.from_env({"DSPEX_WORKER_ALLOW_MCP_SERVER": f'["{servers[1]}"]'}, {})
    from_env.worker_options().policy.check_mcp_server("https://tools.example/mcp/a")
    assert WorkerSettings().worker_options().policy.allow_mcp_servers == ()
