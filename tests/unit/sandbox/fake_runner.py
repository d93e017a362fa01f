"""A stand-in for runner.js that speaks the sandbox protocol, so the host's side is tested without Deno.

The code sent to ``execute`` is a command: ``echo:<text>``, ``final:<text>``, ``error:<type>``,
``syntax``, ``tool:<name>``, ``forge``, ``hang``, ``exit``, ``alloc:<MB>``, ``long:<bytes>``.
``argv[1]`` may be ``hang-at-start`` or ``die-at-start``.
"""

from __future__ import annotations

import json
import sys
import time


def send(message: object) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def execute(request_id: str, code: str) -> dict[str, object]:
    command, _, arg = code.partition(":")
    if command == "echo":
        return {"output": arg}
    if command == "final":
        return {"final": {"output": arg}}
    if command == "error":
        return {"error": {"type": arg, "message": "boom", "args": ["boom"]}}
    if command == "syntax":
        return {"error": {"type": "SyntaxError", "message": "invalid syntax", "args": []}}
    if command == "tool":
        send(
            {"id": f"{request_id}:tool:1", "method": "tool_call", "params": {"name": arg, "kwargs": {"x": 2}}}
        )
        reply = json.loads(sys.stdin.readline())
        return {"output": reply.get("result", reply.get("error"))}
    if command == "forge":
        print("not json at all", flush=True)
        send({"id": "someone-else", "result": {"output": "forged"}})
        return {"output": "real"}
    if command == "hang":
        time.sleep(3600)
    if command == "exit":
        sys.stderr.write("fake runner: exiting on request\n")
        sys.stderr.flush()
        sys.exit(3)
    if command == "alloc":
        hoard = bytearray(int(arg) * 1024 * 1024)
        for index in range(0, len(hoard), 4096):
            hoard[index] = 1
        time.sleep(3600)
    if command == "long":
        sys.stdout.write("x" * int(arg) + "\n")
        sys.stdout.flush()
        time.sleep(3600)
    return {"output": None}


def main() -> None:
    mode = sys.argv[1] if len(sys.argv) > 1 else ""
    if mode == "hang-at-start":
        time.sleep(3600)
    if mode == "die-at-start":
        sys.stderr.write("error: Pyodide could not be loaded\n")
        sys.exit(1)
    for line in sys.stdin:
        message = json.loads(line)
        method, request_id = message.get("method"), message.get("id")
        if method == "shutdown":
            return
        if method == "execute":
            send({"id": request_id, "result": execute(request_id, message["params"]["code"])})
        elif method == "mount" and message["params"]["virtual_path"].endswith("broken"):
            send({"id": request_id, "error": {"type": "NotCapable", "message": "denied"}})
        else:
            send({"id": request_id, "result": {"ok": method}})


if __name__ == "__main__":
    main()
