"""The workers' MCP allow-list: streamable-HTTP server URLs only, none by default."""

from __future__ import annotations

import pytest

from dspex.errors import ConfigurationError, SecurityPolicyError
from dspex.processors.security import SecurityPolicy

SERVER = "http://10.0.0.5:8000/mcp"


def test_no_mcp_server_is_allowed_by_default_not_even_on_loopback() -> None:
    policy = SecurityPolicy()
    with pytest.raises(SecurityPolicyError) as refused:
        policy.check_mcp_server("http://127.0.0.1:8000/mcp")
    message = str(refused.value)
    assert "http://127.0.0.1:8000/mcp is not allowed" in message and "(allowed: none)" in message
    assert "--allow-mcp-server http://127.0.0.1:8000/mcp" in message
    assert "MCP servers: none" in policy.describe()


def test_an_allowed_url_covers_its_paths_and_nothing_beside() -> None:
    policy = SecurityPolicy(allow_mcp_servers=[SERVER + "/"])
    policy.check_mcp_server(SERVER)
    policy.check_mcp_server(SERVER + "/tenant-a")
    for other in (
        "http://10.0.0.5:8001/mcp",  # another port
        "https://10.0.0.5:8000/mcp",  # another scheme
        "http://10.0.0.5:8000/mcp-admin",  # a sibling path, not a path under it
        "http://10.0.0.6:8000/mcp",
    ):
        with pytest.raises(SecurityPolicyError, match=f"MCP server {other} is not allowed.*{SERVER}"):
            policy.check_mcp_server(other)
    assert policy.allow_mcp_servers == (SERVER,) and SERVER in policy.describe()


@pytest.mark.parametrize("url", ["stdio:python server.py", "python -m my_server", "ws://10.0.0.5/mcp", ""])
def test_only_streamable_http_urls_are_reached(url: str) -> None:
    policy = SecurityPolicy(allow_mcp_servers=[SERVER])
    with pytest.raises(SecurityPolicyError, match="streamable-HTTP MCP servers only"):
        policy.check_mcp_server(url)


@pytest.mark.parametrize("url", ["stdio:python server.py", "10.0.0.5:8000/mcp", "http://host:99999/mcp"])
def test_a_bad_allowed_url_is_a_configuration_error(url: str) -> None:
    with pytest.raises(ConfigurationError, match=r"--allow-mcp-server|invalid address"):
        SecurityPolicy(allow_mcp_servers=[url])
