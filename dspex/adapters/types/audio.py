"""``dspex.Audio``: an audio input, sent to the LM as an ``input_audio`` content part.

Constructed from in-memory values only (a ``data:audio/...`` URI, raw bytes with ``audio_format=``,
a ``{"data", "audio_format"}`` dict, another Audio, or a numpy-like array with ``soundfile``
installed). Read a local file with :meth:`Audio.from_path`, download with :meth:`Audio.from_url`.

    Audio.from_path("clip.wav")
    Audio(wav_bytes, audio_format="wav")
"""

from __future__ import annotations

import base64
import importlib
import io
import os
import warnings
from typing import Any

import pydantic

from dspex.adapters.types import _fetch as requests  # requests.get's shape; see _fetch
from dspex.adapters.types._fetch import guess_mime, is_http_url
from dspex.adapters.types.base_type import Type

__all__ = ["Audio", "encode_audio"]


def _normalize_audio_format(audio_format: str) -> str:
    """``x-wav`` -> ``wav``: MIME subtypes may carry an ``x-`` prefix the LM APIs do not want."""
    return audio_format.removeprefix("x-")


class Audio(Type):
    """Base64 audio ``data`` and its ``audio_format`` (``wav``, ``mp3``...)."""

    data: str
    audio_format: str

    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")

    def __init__(self, *args: Any, **data: Any) -> None:
        if len(args) > 1:
            raise TypeError(f"Audio expected at most 1 positional argument, received {len(args)}")
        if args:
            data = _from_positional(args[0], data)
        super().__init__(**data)

    def format(self) -> list[dict[str, Any]]:
        """One ``input_audio`` content part."""
        return [{"type": "input_audio", "input_audio": {"data": self.data, "format": self.audio_format}}]

    @pydantic.model_validator(mode="before")
    @classmethod
    def _accept_in_memory(cls, values: Any) -> Any:
        if isinstance(values, cls):
            return {"data": values.data, "audio_format": values.audio_format}
        return encode_audio(values)

    @classmethod
    def from_url(cls, url: str, verify: bool = True, timeout: float | None = 30.0) -> Audio:
        """Download http(s) audio (its format from the response's ``Content-Type``).

        This reaches whatever host ``url`` names (private and cloud-metadata addresses included,
        redirects followed): check untrusted URLs against an allowlist before calling it.
        """
        if not is_http_url(url):
            raise ValueError(f"Audio.from_url requires an HTTP(S) URL, received: {url}")
        response = requests.get(url, verify=verify, timeout=timeout)
        response.raise_for_status()
        mime_type = response.headers.get("Content-Type", "audio/wav")
        return cls(data=_b64(response.content), audio_format=_audio_subtype(mime_type))

    @classmethod
    def from_path(cls, file_path: str) -> Audio:
        """Read a local audio file (its format from the file name)."""
        if not os.path.isfile(file_path):
            raise ValueError(f"File not found: {file_path}")
        audio_format = _audio_subtype(guess_mime(file_path))
        with open(file_path, "rb") as file:
            return cls(data=_b64(file.read()), audio_format=audio_format)

    @classmethod
    def from_file(cls, file_path: str) -> Audio:
        """Deprecated alias of :meth:`from_path`."""
        warnings.warn(
            "Audio.from_file is deprecated and will be removed in 3.4; use Audio.from_path instead.",
            DeprecationWarning,
            stacklevel=2,
        )
        return cls.from_path(file_path)

    @classmethod
    def from_array(cls, array: Any, sampling_rate: int, format: str = "wav") -> Audio:
        """Encode a numpy-like array of samples (needs the optional ``soundfile`` package)."""
        try:
            soundfile = importlib.import_module("soundfile")
        except ImportError as exc:
            raise ImportError("soundfile is required to process audio arrays.") from exc
        buffer = io.BytesIO()
        soundfile.write(buffer, array, sampling_rate, format=format.upper(), subtype="PCM_16")
        return cls(data=_b64(buffer.getvalue()), audio_format=format)

    def __str__(self) -> str:
        return str(self.serialize_model())

    def __repr__(self) -> str:
        return f"Audio(data=<AUDIO_BASE_64_ENCODED({len(self.data)})>, audio_format='{self.audio_format}')"


def _from_positional(value: Any, data: dict[str, Any]) -> dict[str, Any]:
    if "data" in data:
        raise TypeError("Audio received data as both a positional and keyword argument")
    sampling_rate = data.pop("sampling_rate", None)
    audio_format = data.pop("audio_format", None)
    if audio_format is not None and _carries_own_format(value):
        raise TypeError(
            "Audio received audio_format alongside an input that already carries its format; provide only one"
        )
    if sampling_rate is not None and not hasattr(value, "shape"):
        raise TypeError("Audio received sampling_rate for a non-array input; it only applies to array data")
    encoded = encode_audio(value, sampling_rate=sampling_rate or 16000, format=audio_format or "wav")
    return {**encoded, **data}


def _carries_own_format(value: Any) -> bool:
    if isinstance(value, Audio) or (isinstance(value, dict) and "audio_format" in value):
        return True
    return isinstance(value, str) and value.startswith("data:audio/")


def _audio_subtype(mime_type: str | None) -> str:
    if not mime_type or not mime_type.startswith("audio/"):
        raise ValueError(f"Unsupported MIME type for audio: {mime_type}")
    return _normalize_audio_format(mime_type.split("/")[1])


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("utf-8")


def encode_audio(audio: Any, sampling_rate: int = 16000, format: str = "wav") -> dict[str, Any]:
    """Audio as ``{"data": <base64>, "audio_format": ...}``; nothing is read from disk or network.

    Accepts such a dict, an Audio, a ``data:audio/...`` URI, raw bytes (in ``format``) or a
    numpy-like array (sampled at ``sampling_rate``; needs ``soundfile``).
    """
    if isinstance(audio, dict) and "data" in audio and "audio_format" in audio:
        return audio
    if isinstance(audio, Audio):
        return {"data": audio.data, "audio_format": audio.audio_format}
    if isinstance(audio, str):
        return _from_data_uri(audio)
    if isinstance(audio, bytes):
        return {"data": _b64(audio), "audio_format": format}
    if hasattr(audio, "shape"):
        encoded = Audio.from_array(audio, sampling_rate=sampling_rate, format=format)
        return {"data": encoded.data, "audio_format": encoded.audio_format}
    raise ValueError(f"Unsupported type for encode_audio: {type(audio)}")


def _from_data_uri(text: str) -> dict[str, Any]:
    if not text.startswith("data:audio/"):
        raise ValueError(
            "String audio inputs must be data URIs. "
            "Load local files with Audio.from_path() and remote resources with Audio.from_url()."
        )
    header, separator, encoded = text.partition(",")
    mime = header.removeprefix("data:").split(";", 1)[0]
    _, slash, audio_format = mime.partition("/")
    if not separator or not slash or not audio_format:
        raise ValueError("Malformed audio data URI")
    return {"data": encoded, "audio_format": _normalize_audio_format(audio_format)}
