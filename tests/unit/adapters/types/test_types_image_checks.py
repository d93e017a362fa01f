"""Images that cannot be read are named with their field and example; workers download nothing unasked."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path

import pytest

import dspex
from dspex.adapters.types import media_fetches
from dspex.adapters.types.image import check_images, image_problem
from dspex.errors import InputError, SecurityPolicyError
from dspex.primitives import Example

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNk+A8AAQUBAScY42YAAAAASUVORK5CYII="
)
GOOD = "data:image/png;base64," + base64.b64encode(PNG).decode()


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("data:image/png;base64,***", "does not decode"),
        ("data:image/png;base64," + base64.b64encode(b"just some text").decode(), "not an image"),
        ("data:text/plain;base64,aGVsbG8=", "not an image type"),
        ("data:image/png,rawtext", "not a base64 data URI"),
        ("data:image/png;base64,", "empty"),
        ("cat.png", "neither a data URI"),
    ],
)
def test_unreadable_images_say_why(url: str, problem: str) -> None:
    found = image_problem(url)
    assert found is not None and problem in found


def test_readable_images_and_remote_urls_pass_without_a_download() -> None:
    assert image_problem(GOOD) is None
    assert image_problem("https://example.com/cat.png") is None
    assert image_problem("data:image/svg+xml;base64," + base64.b64encode(b"<svg/>").decode()) is None


def test_check_images_names_the_field_and_the_example() -> None:
    example = Example(question="q", photos=[dspex.Image(GOOD), dspex.Image("data:image/png;base64,AAAA")])
    with pytest.raises(InputError, match=r"field 'photos' of example 7: the image cannot be read: its data"):
        check_images(example, "example 7")
    check_images(Example(question="q", photo=dspex.Image(GOOD)), "example 0")


def test_a_missing_image_file_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="File not found"):
        dspex.Image.from_path(str(tmp_path / "missing.png"))


def test_downloads_are_refused_where_media_fetches_are_not_allowed() -> None:
    async def in_a_task() -> None:
        dspex.Image.from_url("http://169.254.169.254/latest/meta-data")

    async def run() -> None:
        with media_fetches(allowed=False):
            with pytest.raises(SecurityPolicyError, match="does not download media URLs"):
                dspex.Image.from_url("https://example.com/cat.png")
            with pytest.raises(SecurityPolicyError):
                await asyncio.create_task(in_a_task())  # tasks started inside inherit the refusal
            with pytest.raises(SecurityPolicyError):
                dspex.Audio.from_url("https://example.com/a.wav")

    asyncio.run(run())
