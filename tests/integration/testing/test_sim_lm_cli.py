"""`dspex sim-lm` serves until SIGTERM, on the port it prints."""

from __future__ import annotations

import re
import signal
import subprocess
import sys

import httpx

SCRIPT = """
import typer
from dspex.cli.simlm import register
app = typer.Typer()

@app.callback()
def root() -> None:
    pass

register(app)
app()
"""


def test_sim_lm_command_serves_with_its_knobs_until_sigterm() -> None:
    command = [sys.executable, "-c", SCRIPT, "sim-lm", "--port", "0", "--model", "sim-a", "--rate", "50"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        banner = process.stdout.readline()
        match = re.search(r"simulation, not a real model\) on (http://127\.0\.0\.1:\d+/v1)", banner)
        assert match, banner
        body = {"model": "sim-a", "messages": [{"role": "user", "content": "What is 1 + 1?"}]}
        assert httpx.post(f"{match.group(1)}/chat/completions", json=body).status_code == 200
        config = httpx.get(match.group(1).removesuffix("/v1") + "/admin/config").json()
        assert (config["models"], config["rate"]) == (["sim-a"], 50.0)
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=20)
    assert process.returncode == 0, stderr
