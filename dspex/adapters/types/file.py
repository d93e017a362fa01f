"""``dspex.File``: a document input (PDF, text...), sent to the LM as a ``file`` content part.

A file is inline ``file_data`` (a data URI), an uploaded ``file_id``, and/or a ``filename``.
Constructed from in-memory values only; read a local file with :meth:`File.from_path`.

    File.from_path("report.pdf")
    File.from_file_id("file-abc123")
    File(b"raw bytes", filename="notes.txt")
"""

from __future__ import annotations

import os
from typing import Any

import pydantic

from dspex.adapters.types._fetch import data_uri, guess_mime
from dspex.adapters.types.base_type import Type

__all__ = ["File", "encode_file_to_dict"]

_KEYS = ("file_data", "file_id", "filename")
_OCTET = "application/octet-stream"


class File(Type):
    """A file for the LM: ``file_data`` (``data:<mime>;base64,...``), ``file_id``, ``filename``."""

    file_data: str | None = None
    file_id: str | None = None
    filename: str | None = None

    model_config = pydantic.ConfigDict(
        frozen=True, str_strip_whitespace=True, validate_assignment=True, extra="forbid"
    )

    def __init__(self, *args: Any, **data: Any) -> None:
        if len(args) > 1:
            raise TypeError(f"File expected at most 1 positional argument, received {len(args)}")
        if args:
            normalized = encode_file_to_dict(args[0])
            overlap = sorted(set(normalized) & set(data))
            if overlap:
                raise TypeError(
                    f"File received {', '.join(overlap)} "
                    "from both the positional source and keyword arguments"
                )
            data = {**normalized, **data}
        super().__init__(**data)

    @pydantic.model_validator(mode="before")
    @classmethod
    def _accept_in_memory(cls, values: Any) -> Any:
        if isinstance(values, cls):
            return {key: getattr(values, key) for key in _KEYS}
        return encode_file_to_dict(values)

    def format(self) -> list[dict[str, Any]]:
        """One ``file`` content part with the keys that are set."""
        file = {key: getattr(self, key) for key in _KEYS if getattr(self, key)}
        return [{"type": "file", "file": file}]

    @classmethod
    def from_path(cls, file_path: str, filename: str | None = None, mime_type: str | None = None) -> File:
        """Read a local file; ``filename`` defaults to its base name, ``mime_type`` to a guess from it."""
        if not os.path.isfile(file_path):
            raise ValueError(f"File not found: {file_path}")
        with open(file_path, "rb") as file:
            content = file.read()
        mime_type = mime_type or guess_mime(file_path) or _OCTET
        return cls(file_data=data_uri(mime_type, content), filename=filename or os.path.basename(file_path))

    @classmethod
    def from_bytes(cls, file_bytes: bytes, filename: str | None = None, mime_type: str = _OCTET) -> File:
        """A file from raw bytes."""
        return cls(file_data=data_uri(mime_type, file_bytes), filename=filename)

    @classmethod
    def from_file_id(cls, file_id: str, filename: str | None = None) -> File:
        """A reference to a file already uploaded to the provider."""
        return cls(file_id=file_id, filename=filename)

    def __str__(self) -> str:
        return str(self.serialize_model())

    def __repr__(self) -> str:
        parts = []
        if self.file_data is not None:
            parts.append(_data_summary(self.file_data))
        if self.file_id is not None:
            parts.append(f"file_id='{self.file_id}'")
        if self.filename is not None:
            parts.append(f"filename='{self.filename}'")
        return f"File({', '.join(parts)})"


def _data_summary(file_data: str) -> str:
    if not file_data.startswith("data:"):
        return f"file_data=<DATA({len(file_data)} chars)>"
    mime_type = file_data.split(";")[0].split(":")[1]
    size = len(file_data.split("base64,")[1]) if "base64," in file_data else len(file_data)
    return f"file_data=<DATA_URI({mime_type}, {size} chars)>"


def encode_file_to_dict(file_input: Any) -> dict[str, Any]:
    """A file input as a dict of ``file_data`` / ``file_id`` / ``filename``; nothing is read from disk.

    Accepts a File, such a dict, a ``data:`` URI or raw bytes; any other string is refused
    (a path must go through :meth:`File.from_path`).
    """
    if isinstance(file_input, File):
        return {key: getattr(file_input, key) for key in _KEYS if getattr(file_input, key) is not None}
    if isinstance(file_input, dict):
        if any(key in file_input for key in _KEYS):
            return file_input
        raise ValueError("Value of `dspy.File` must contain at least one of: file_data, file_id, or filename")
    if isinstance(file_input, str):
        if file_input.startswith("data:"):
            return {"file_data": file_input}
        raise ValueError(
            f"String file inputs must be data URIs, received: {file_input}. "
            "Load local files with File.from_path()."
        )
    if isinstance(file_input, bytes):
        return {"file_data": data_uri(_OCTET, file_input)}
    raise ValueError(f"Unsupported file input type: {type(file_input)}")
