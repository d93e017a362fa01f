"""``inspect_history``: print the last LM calls (messages and answers), as DSPy lays them out.

dspex.inspect_history(n=2)          # the process-wide history
lm.inspect_history()                # one LM's
lm.inspect_history(file=buffer)     # to a file, without colours
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Mapping
from typing import Any, TextIO

__all__ = ["inspect_history", "pretty_print_history"]

_BLUE, _RED, _GREEN, _RESET = "\x1b[34m", "\x1b[31m", "\x1b[32m", "\x1b[0m"


def inspect_history(n: int = 1, file: TextIO | None = None) -> None:
    """Print the last ``n`` LM calls of this process, whichever LM made them."""
    from dspex.lm.base import GLOBAL_HISTORY

    pretty_print_history(list(GLOBAL_HISTORY), n, file=file)


def pretty_print_history(history: list[dict[str, Any]], n: int = 1, file: TextIO | None = None) -> None:
    """Print the last ``n`` entries of ``history``: a timestamp, each message, then the answer."""
    out = file or sys.stdout
    paint = _painter(colours=file is None)
    for entry in history[-n:]:
        print("\n\n\n", file=out)
        print(paint(_BLUE, f"[{entry.get('timestamp', 'Unknown time')}]"), file=out)
        messages = entry.get("messages") or [{"role": "user", "content": entry.get("prompt")}]
        for message in messages:
            print(paint(_RED, f"{str(message['role']).capitalize()} message:"), file=out)
            for line in _content_lines(message.get("content"), paint):
                print(line, file=out)
            for line in _tool_call_lines(message.get("tool_calls"), paint):
                print(line, file=out)
            print("\n", file=out)
        outputs = entry.get("outputs") or [""]
        first = outputs[0]
        text = first.get("text") if isinstance(first, Mapping) else first
        if text:
            print(paint(_RED, "Response:"), file=out)
            print(paint(_GREEN, str(text).strip(), strip=True), file=out)
        if isinstance(first, Mapping):
            for line in _tool_call_lines(first.get("tool_calls"), paint):
                print(line, file=out)
        if len(outputs) > 1:
            print(paint(_RED, f" \t (and {len(outputs) - 1} other completions)", end=""), file=out)
    print("\n\n\n", file=out)


def _painter(*, colours: bool) -> Any:
    def paint(colour: str, text: str, end: str = "\n", strip: bool = False) -> str:
        text = text.lstrip() if strip else text
        return f"{colour}{text}{_RESET}{end}" if colours else f"{text}{end}"

    return paint


def _content_lines(content: Any, paint: Any) -> Iterable[str]:
    """A message's content: text as is, images, audio and files as one short placeholder each."""
    if isinstance(content, str) or content is None:
        return [str(content or "").strip()]
    lines = []
    for part in content:
        kind = part.get("type")
        if kind == "text":
            lines.append(str(part["text"]).strip())
        elif kind == "image_url":
            url = str(part["image_url"].get("url", ""))
            if "base64," in url:
                head, data = url.split("base64,", 1)
                lines.append(paint(_BLUE, f"<{head}base64,<IMAGE BASE 64 ENCODED({len(data)})>"))
            else:
                lines.append(paint(_BLUE, f"<image_url: {url}>"))
        elif kind == "input_audio":
            audio = part["input_audio"]
            lines.append(
                paint(
                    _BLUE, f"<audio format='{audio['format']}' base64-encoded, length={len(audio['data'])}>"
                )
            )
        elif kind in ("file", "input_file"):
            info = part.get("file", part.get("input_file", {}))
            name, file_id, data = info.get("filename", ""), info.get("file_id", ""), info.get("file_data", "")
            lines.append(paint(_BLUE, f"<file: name:{name}, id:{file_id}, data_length:{len(data)}>"))
    return lines


def _tool_call_lines(tool_calls: Any, paint: Any) -> list[str]:
    """``Tool calls:`` then ``name: {arguments}`` per call, in OpenAI's shape (``function.name``,
    ``function.arguments`` as a JSON string) or the plain one (``name`` and ``args``/``arguments``)."""
    if not tool_calls:
        return []
    lines = [paint(_RED, "Tool calls:", end="")]
    for call in tool_calls:
        function = call.get("function") or {}
        name = function.get("name") or call.get("name") or "<unknown>"
        arguments = function.get("arguments")
        if arguments is None:
            arguments = call.get("args", call.get("arguments", {}))
        lines.append(paint(_GREEN, f"{name}: {_arguments_text(arguments)}", end=""))
    return lines


def _arguments_text(arguments: Any) -> str:
    if isinstance(arguments, str):
        written: str = arguments
        try:
            arguments = json.loads(written)
        except json.JSONDecodeError:
            return written  # not JSON: shown as the LM wrote it
    if isinstance(arguments, (dict, list)):
        return json.dumps(arguments, ensure_ascii=False)
    return str(arguments)
