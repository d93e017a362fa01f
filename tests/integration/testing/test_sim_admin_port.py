"""SimulatedLMServer's subprocess serves /admin on a port of its own, which its control client uses
(answered promptly while the LM's port is busy with a burst of connections)."""

from __future__ import annotations

import json
import socket
import time

import httpx

from dspex.testing import SimulatedLMServer

_BODY = json.dumps({"model": "simulated", "messages": [{"role": "user", "content": "What is 1 + 2?"}]})
_REQUEST = (
    "POST /v1/chat/completions HTTP/1.1\r\nHost: sim\r\nContent-Type: application/json\r\n"
    f"Content-Length: {len(_BODY)}\r\n\r\n{_BODY}"
).encode()


def test_control_uses_an_admin_port_of_its_own_kept_across_restarts() -> None:
    with SimulatedLMServer() as sim:
        assert sim.admin_url != sim.url
        sim.control.configure(latency=0.05)
        # the LM's own port still serves /admin, for clients that only know it
        assert httpx.get(f"{sim.url}/admin/config", timeout=10).json()["latency"] == 0.05
        admin_url = sim.admin_url
        sim.restart()
        assert sim.admin_url == admin_url
        assert sim.control.stats()["config"]["latency"] == 0.0  # a restart starts from the knobs


def test_stats_answer_while_a_burst_of_held_requests_waits_on_the_lm_port() -> None:
    burst = 1_500
    with SimulatedLMServer() as sim:
        sim.control.hold()
        port = int(sim.url.rsplit(":", 1)[1])
        connections = [socket.create_connection(("127.0.0.1", port)) for _ in range(burst)]
        try:
            for connection in connections:
                connection.sendall(_REQUEST)
            slowest, deadline = 0.0, time.monotonic() + 60
            while time.monotonic() < deadline:
                started = time.monotonic()
                held = sim.control.stats()["held"]
                slowest = max(slowest, time.monotonic() - started)
                if held == burst:
                    break
                time.sleep(0.02)
            assert held == burst
            assert slowest < 5.0
            assert sim.control.release()["holding"] is False
            sim.control.wait_until(lambda stats: stats["completions_ok"] == burst, timeout=60)
        finally:
            for connection in connections:
                connection.close()
