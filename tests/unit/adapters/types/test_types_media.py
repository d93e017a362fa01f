"""Image, Audio and File: construction from in-memory values only, explicit loading, content parts."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError

import dspex
from dspex.adapters.types import _fetch
from dspex.adapters.types.audio import _normalize_audio_format, encode_audio
from dspex.adapters.types.file import encode_file_to_dict
from dspex.adapters.types.image import encode_image, is_image

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNk+A8AAQUBAScY42YAAAAASUVORK5CYII="
)


class FakeResponse:
    def __init__(self, content: bytes, mime: str) -> None:
        self.content = content
        self.headers = {"Content-Type": mime}

    def raise_for_status(self) -> None:
        return None


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> None:
        pytest.fail("a network request was made")

    monkeypatch.setattr(_fetch, "get", refuse)


def test_image_keeps_urls_and_data_uris(no_network: None) -> None:
    assert dspex.Image("https://example.com/a.png").url == "https://example.com/a.png"
    assert dspex.Image(url="gs://bucket/a.png").url == "gs://bucket/a.png"
    assert dspex.Image({"url": "data:image/png;base64,AA=="}).url == "data:image/png;base64,AA=="
    assert dspex.Image(dspex.Image("https://e.com/x.png")).url == "https://e.com/x.png"


def test_image_from_bytes_is_sniffed_without_pillow() -> None:
    assert dspex.Image(PNG).url.startswith("data:image/png;base64,")
    assert encode_image(b"\xff\xd8\xff\xe0rest").startswith("data:image/jpeg;base64,")
    with pytest.raises(ValueError, match="could not be identified"):
        dspex.Image(b"not an image")


def test_image_refuses_local_paths_and_both_sources(no_network: None) -> None:
    with pytest.raises(ValueError, match="from_path"):
        dspex.Image("/etc/passwd")
    with pytest.raises(TypeError, match="both"):
        dspex.Image("https://e.com/a.png", url="https://e.com/b.png")


def test_image_validation_never_downloads(no_network: None) -> None:
    with pytest.raises(TypeError, match="positional image source"):
        TypeAdapter(dspex.Image).validate_python({"url": "http://169.254.169.254/", "download": True})
    with pytest.raises(ValidationError):
        TypeAdapter(dspex.Image).validate_python({"url": "/etc/passwd"})


def test_image_from_url_and_legacy_download(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    def fake_get(url: str, **kwargs: Any) -> FakeResponse:
        seen.update(kwargs)
        return FakeResponse(b"img", "image/png")

    monkeypatch.setattr("dspex.adapters.types.image.requests.get", fake_get)
    image = dspex.Image.from_url("https://e.com/a", timeout=5.0)
    assert image.url == "data:image/png;base64," + base64.b64encode(b"img").decode()
    assert seen == {"verify": True, "timeout": 5.0}
    with pytest.warns(DeprecationWarning, match="deprecated"):
        assert dspex.Image("https://e.com/a", download=True).url == image.url
    with pytest.raises(ValueError, match="HTTP"):
        dspex.Image.from_url("file:///etc/passwd")


def test_image_from_path_format_repr_and_str(tmp_path: Path) -> None:
    path = tmp_path / "cat.png"
    path.write_bytes(PNG)
    image = dspex.Image.from_path(str(path))
    assert image.format() == [{"type": "image_url", "image_url": {"url": image.url}}]
    assert repr(image).startswith("Image(url=data:image/png;base64,<IMAGE_BASE_64_ENCODED(")
    assert str(image).startswith("<<CUSTOM-TYPE-START-IDENTIFIER>>")
    assert repr(dspex.Image("https://e.com/a.png")) == "Image(url='https://e.com/a.png')"
    with pytest.raises(ValueError, match="File not found"):
        dspex.Image.from_path(str(tmp_path / "missing.png"))
    assert is_image("https://e.com/a.png") and not is_image("a.png")


@pytest.mark.parametrize(
    ("given", "expected"), [("wav", "wav"), ("x-wav", "wav"), ("my-x-format", "my-x-format"), ("x-", "")]
)
def test_normalize_audio_format(given: str, expected: str) -> None:
    assert _normalize_audio_format(given) == expected


def test_audio_from_in_memory_values() -> None:
    assert dspex.Audio(b"abc", audio_format="mp3").format() == [
        {"type": "input_audio", "input_audio": {"data": "YWJj", "format": "mp3"}}
    ]
    assert encode_audio("data:audio/x-wav;base64,AA==") == {"data": "AA==", "audio_format": "wav"}
    assert dspex.Audio({"data": "AA==", "audio_format": "wav"}).data == "AA=="
    assert (
        repr(dspex.Audio(data="AAAA", audio_format="wav"))
        == "Audio(data=<AUDIO_BASE_64_ENCODED(4)>, audio_format='wav')"
    )


def test_audio_refuses_paths_and_conflicting_arguments() -> None:
    with pytest.raises(ValueError, match=r"Audio\.from_path"):
        dspex.Audio("clip.wav", audio_format="wav")
    with pytest.raises(TypeError, match="already carries its format"):
        dspex.Audio("data:audio/wav;base64,AA==", audio_format="mp3")
    with pytest.raises(TypeError, match="sampling_rate"):
        dspex.Audio(b"abc", sampling_rate=44100)


def test_audio_from_path_and_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "clip.wav"
    path.write_bytes(b"sound")
    assert base64.b64decode(dspex.Audio.from_path(str(path)).data) == b"sound"
    monkeypatch.setattr(
        "dspex.adapters.types.audio.requests.get", lambda url, **kw: FakeResponse(b"remote", "audio/x-mp3")
    )
    audio = dspex.Audio.from_url("https://e.com/a")
    assert (base64.b64decode(audio.data), audio.audio_format) == (b"remote", "mp3")
    with pytest.warns(DeprecationWarning, match="Audio.from_file is deprecated"):
        dspex.Audio.from_file(str(path))


def test_file_values_and_format(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("hello")
    file = dspex.File.from_path(str(path))
    assert file.file_data == "data:text/plain;base64,aGVsbG8=" and file.filename == "notes.txt"
    assert dspex.File.from_file_id("file-1").format() == [{"type": "file", "file": {"file_id": "file-1"}}]
    assert dspex.File(b"x", filename="a.bin").file_data == "data:application/octet-stream;base64,eA=="
    assert "DATA_URI(text/plain" in repr(file) and "filename='notes.txt'" in repr(file)


def test_file_refuses_paths_and_conflicts() -> None:
    with pytest.raises(ValueError, match=r"File\.from_path"):
        encode_file_to_dict("/etc/passwd")
    with pytest.raises(ValueError, match="must contain at least one"):
        dspex.File(invalid="dict")
    with pytest.raises(TypeError, match="file_data"):
        dspex.File(b"x", file_data="data:text/plain;base64,AA==")
    with pytest.raises(ValidationError):
        dspex.File.from_bytes(b"x").file_data = "changed"  # type: ignore[misc]
