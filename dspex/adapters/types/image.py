"""``dspex.Image``: an image input, sent to the LM as an ``image_url`` content part.

An image is a remote URL (http, https, gs) kept as a reference, or a ``data:`` URI. Constructing
one never reads a file or the network (values may come from untrusted input or LM output): load a
local file with :meth:`Image.from_path` and download with :meth:`Image.from_url`.

Constructing one does not decode its data either (as DSPy's): :func:`image_problem` does, and the
cluster client checks every image of a submission with it (:func:`check_images`), so an image that
cannot be read is an InputError naming the field and the example before any LM call.

    Image("https://example.com/cat.png")
    Image.from_path("cat.png")
    Image(png_bytes)                      # raw bytes of a PNG, JPEG, GIF, WEBP or BMP
"""

from __future__ import annotations

import base64
import binascii
import io
import os
import warnings
from collections.abc import Iterable
from typing import Any

import pydantic

from dspex.adapters.types import _fetch as requests  # requests.get's shape; see _fetch
from dspex.adapters.types._fetch import data_uri, guess_mime, is_http_url, is_remote_url
from dspex.adapters.types.base_type import Type
from dspex.errors import InputError

__all__ = ["Image", "check_images", "encode_image", "image_problem", "is_image", "is_url"]

_UNSET: Any = object()

# Leading bytes of the image formats an LM accepts, and their MIME types (no Pillow needed).
_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"BM", "image/bmp"),
)


class Image(Type):
    """An image: a remote URL or a base64 ``data:`` URI in ``url``.

    ``Image(source)`` accepts a URL, a data URI, raw image bytes, a Pillow image, another Image
    or ``{"url": ...}``. ``download=``/``verify=`` are DSPy's deprecated way to download while
    constructing; use :meth:`from_url`.
    """

    url: str

    model_config = pydantic.ConfigDict(
        frozen=True, str_strip_whitespace=True, validate_assignment=True, extra="forbid"
    )

    def __init__(
        self, source: Any = None, /, *, download: Any = _UNSET, verify: Any = _UNSET, **data: Any
    ) -> None:
        legacy = download is not _UNSET or verify is not _UNSET
        if legacy:
            _check_legacy_download(source)
        if source is not None and "url" in data:
            raise TypeError("Image received both `source` and `url`; provide only one image source")
        if source is not None:
            data["url"] = _source_url(source)
        url = data.get("url")
        if legacy and download and isinstance(url, str) and is_http_url(url):
            data["url"] = _download(url, verify=True if verify is _UNSET else verify)
        elif "url" in data:
            data["url"] = encode_image(data["url"])
        super().__init__(**data)

    def format(self) -> list[dict[str, Any]]:
        """One ``image_url`` content part."""
        return [{"type": "image_url", "image_url": {"url": self.url}}]

    @classmethod
    def from_url(cls, url: str, verify: bool = True, timeout: float | None = 30.0) -> Image:
        """Download an http(s) image and keep it as a data URI.

        This reaches whatever host ``url`` names (private and cloud-metadata addresses included,
        redirects followed): check untrusted URLs against an allowlist before calling it.
        """
        if not is_http_url(url):
            raise ValueError(f"Image.from_url requires an HTTP(S) URL, received: {url}")
        return cls(_download(url, verify=verify, timeout=timeout))

    @classmethod
    def from_path(cls, file_path: str) -> Image:
        """Read a local image file into a data URI (its MIME type from the file name)."""
        if not os.path.isfile(file_path):
            raise InputError(f"File not found: {file_path} (no image file at that path)")
        mime_type = guess_mime(file_path)
        if mime_type is None:
            raise ValueError(f"Could not determine MIME type for file: {file_path}")
        with open(file_path, "rb") as file:
            return cls(data_uri(mime_type, file.read()))

    @classmethod
    def from_file(cls, file_path: str) -> Image:
        """Deprecated alias of :meth:`from_path`."""
        warnings.warn(
            "Image.from_file is deprecated and will be removed in 3.4; use Image.from_path instead.",
            DeprecationWarning,
            stacklevel=2,
        )
        return cls.from_path(file_path)

    @classmethod
    def from_PIL(cls, pil_image: Any) -> Image:
        """Deprecated: ``Image(pil_image)`` does the same."""
        warnings.warn(
            "Image.from_PIL is deprecated and will be removed in 3.4; use Image(pil_image) instead.",
            DeprecationWarning,
            stacklevel=2,
        )
        return cls(pil_image)

    def __str__(self) -> str:
        return str(self.serialize_model())

    def __repr__(self) -> str:
        if "base64" in self.url:
            encoded = self.url.split("base64,")[1]
            subtype = self.url.split(";")[0].split("/")[-1]
            return f"Image(url=data:image/{subtype};base64,<IMAGE_BASE_64_ENCODED({len(encoded)!s})>)"
        return f"Image(url='{self.url}')"


def _check_legacy_download(source: Any) -> None:
    # Only a positional source may download: a dict routed here by validation (LM output, a
    # loaded file) must never make the process fetch a URL it names.
    if source is None:
        raise TypeError(
            "`download` and `verify` are only valid with a positional image source; "
            "use Image.from_url(url, verify=...) to download a remote image."
        )
    warnings.warn(
        "The `download` and `verify` arguments to Image() are deprecated and will be removed in 3.4. "
        "Use Image.from_url(url, verify=...) to download a remote image, "
        "or Image.from_path(path) for a local file.",
        DeprecationWarning,
        stacklevel=3,
    )


def _source_url(source: Any) -> Any:
    if isinstance(source, dict) and set(source) == {"url"}:
        return source["url"]
    return source


def _download(url: str, *, verify: bool, timeout: float | None = 30.0) -> str:
    response = requests.get(url, verify=verify, timeout=timeout)
    response.raise_for_status()
    mime_type = response.headers.get("Content-Type", "") or guess_mime(url)
    if not mime_type:
        raise ValueError(f"Could not determine MIME type for URL: {url}")
    return data_uri(mime_type, response.content)


def is_url(text: str) -> bool:
    """Whether ``text`` is an http, https or gs URL with a host."""
    return is_remote_url(text)


def encode_image(image: Any) -> str:
    """An image as the string an :class:`Image` keeps: a data URI, or the remote URL unchanged.

    Accepts a data URI, an http(s)/gs URL, raw image bytes, a Pillow image, an Image or
    ``{"url": ...}``. A local path is refused (use :meth:`Image.from_path`): nothing is read here.
    """
    if isinstance(image, dict) and "url" in image:
        return encode_image(image["url"])
    if isinstance(image, str):
        if image.startswith("data:") or is_remote_url(image):
            return image
        raise ValueError(
            f"Unrecognized image string: {image}. Local files must be loaded with Image.from_path()."
        )
    if isinstance(image, Image):
        return image.url
    if isinstance(image, bytes | bytearray):
        return data_uri(_sniff_mime(bytes(image)), bytes(image))
    if _is_pil_image(image):
        return _encode_pil(image)
    raise ValueError(f"Unsupported image type: {type(image)}")


def _sniff_mime(data: bytes) -> str:
    mime_type = _sniffed(data)
    if mime_type is None:
        raise InputError("Bytes could not be identified as an image (PNG, JPEG, GIF, WEBP or BMP)")
    return mime_type


def _sniffed(data: bytes) -> str | None:
    for magic, mime_type in _MAGIC:
        if data.startswith(magic):
            return mime_type
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


# Types whose leading bytes _sniffed knows: data declared as one of them must look like an image.
_SNIFFABLE = frozenset({"image/png", "image/jpeg", "image/jpg", "image/gif", "image/bmp", "image/webp"})


def image_problem(url: str) -> str | None:
    """Why the image ``url`` cannot be sent to an LM, or None when it can.

    A data URI must have an image type, base64 data that decodes, and (for PNG, JPEG, GIF, BMP
    and WEBP) bytes that start as such an image does. A remote URL is not fetched to check it.
    """
    if not url.startswith("data:"):
        return None if is_remote_url(url) else "it is neither a data URI nor an http(s) or gs URL"
    header, comma, payload = url.partition(",")
    mime_type = header[len("data:") :].split(";")[0].strip().lower()
    if not comma or ";base64" not in header.lower():
        return "it is not a base64 data URI (data:<type>;base64,<data>)"
    if not mime_type.startswith("image/"):
        return f"its data URI type is {mime_type or 'missing'!r}, not an image type"
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        return f"its base64 data does not decode ({exc})"
    if not data:
        return "its data is empty"
    if mime_type in _SNIFFABLE and _sniffed(data) is None:
        return f"its data is not an image, though its type says {mime_type}"
    return None


def check_images(fields: Any, where: str) -> None:
    """InputError naming the field and ``where`` (e.g. ``"example 3"``) for the first Image among
    ``fields``' values (an Example or a mapping; Images in lists and tuples too) that cannot be read."""
    for name, value in fields.items():
        for image in _images_in(value):
            problem = image_problem(image.url)
            if problem is not None:
                raise InputError(f"field {name!r} of {where}: the image cannot be read: {problem}")


def _images_in(value: Any) -> Iterable[Image]:
    if isinstance(value, Image):
        return (value,)
    if isinstance(value, list | tuple):
        return (item for item in value if isinstance(item, Image))
    return ()


def _is_pil_image(value: Any) -> bool:
    # Duck-typed so that Pillow is neither required nor imported just to check.
    return type(value).__module__.startswith("PIL.") and callable(getattr(value, "save", None))


def _encode_pil(image: Any) -> str:
    file_format = image.format or "PNG"
    buffer = io.BytesIO()
    image.save(buffer, format=file_format)
    mime_type = guess_mime(f"file.{file_format.lower()}")
    if mime_type is None:
        raise ValueError(f"Could not determine MIME type for image format: {file_format}")
    return data_uri(mime_type, buffer.getvalue())


def is_image(value: Any) -> bool:
    """Whether ``value`` is a Pillow image, a data URI or a remote image URL."""
    if _is_pil_image(value):
        return True
    return isinstance(value, str) and (value.startswith("data:") or is_remote_url(value))
