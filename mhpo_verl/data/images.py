"""Images out of dataset records, as the bytes verl's multimodal parquet embeds.

Datasets ship their images in several forms: Hugging Face ``Image`` features (a ``{bytes, path}`` struct in parquet,
a ``PIL.Image`` once ``datasets`` decodes it), a path relative to the dataset folder (MathVista's and MathVision's
``image`` column next to the ``images/`` folder of the release), or a list of either (Geometry3K's ``images``).
:func:`embedded_image` turns any of them into ``{"bytes": ..., "path": ...}`` after checking that the bytes decode,
which is the layout verl's ``RLHFDataset`` opens with ``PIL.Image.open(BytesIO(image["bytes"]))``.

A problem with an image is never converted without it: a missing or undecodable image is a reason the converter
reports, not a row written with a hole.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MAX_IMAGE_PIXELS = 64_000_000
"""Refuse larger images (a decompression bomb would otherwise stall the converter and then every rollout worker)."""


@dataclass(frozen=True)
class EmbeddedImage:
    data: bytes
    name: str
    width: int
    height: int

    def as_row(self) -> dict[str, Any]:
        """The parquet struct verl reads: ``{"bytes", "path"}`` (``path`` only names the image; nothing reads it)."""
        return {"bytes": self.data, "path": self.name}

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.data).hexdigest()[:16]


class ImageProblem(ValueError):
    """Why an image cannot be used; the converter reports it as the row's reason."""


def embedded_image(value: Any, image_root: Path | None) -> EmbeddedImage:
    """One image as checked bytes; :class:`ImageProblem` says why not (missing, unreadable, undecodable)."""
    data, name = _image_bytes(value, image_root)
    width, height = _decoded_size(data, name)
    return EmbeddedImage(data=data, name=name, width=width, height=height)


def _image_bytes(value: Any, image_root: Path | None) -> tuple[bytes, str]:
    if value is None or value == "" or value == {}:
        raise ImageProblem("missing image: the image field is empty")
    if _is_pil_image(value):
        return _encode_pil(value), getattr(value, "filename", "") or "image.png"
    if isinstance(value, (bytes, bytearray)):
        return bytes(value), "image"
    if isinstance(value, Mapping):
        data = value.get("bytes")
        path = value.get("path") or ""
        if data:
            return bytes(data), str(path) or "image"
        if path:
            return _read_file(str(path), image_root), str(path)
        raise ImageProblem(f"missing image: the image struct holds neither bytes nor a path ({sorted(value)})")
    if isinstance(value, (str, Path)):
        return _read_file(str(value), image_root), str(value)
    kind = type(value).__name__
    raise ImageProblem(f"missing image: expected bytes, a {{bytes, path}} struct or a file path, got {kind}")


def _read_file(path: str, image_root: Path | None) -> bytes:
    candidate = Path(path).expanduser()
    if not candidate.is_absolute() and image_root is not None:
        candidate = image_root / candidate
    if not candidate.is_file():
        where = f" (relative paths are read from --image-root {str(image_root)!r})" if image_root is not None else ""
        raise ImageProblem(f"missing image: file {str(candidate)!r} does not exist{where}")
    return candidate.read_bytes()


def _decoded_size(data: bytes, name: str) -> tuple[int, int]:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            if width * height > MAX_IMAGE_PIXELS:
                raise ImageProblem(f"undecodable image {name!r}: {width}x{height} exceeds {MAX_IMAGE_PIXELS} pixels")
            image.load()  # decodes the pixels: a truncated file fails here, not in a rollout worker
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        if isinstance(error, ImageProblem):
            raise
        raise ImageProblem(f"undecodable image {name!r}: {type(error).__name__}: {error}") from None
    if width < 1 or height < 1:
        raise ImageProblem(f"undecodable image {name!r}: size {width}x{height}")
    return width, height


def _is_pil_image(value: Any) -> bool:
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - Pillow comes with transformers
        return False
    return isinstance(value, Image.Image)


def _encode_pil(image: Any) -> bytes:
    """A decoded ``PIL.Image`` (what ``datasets`` yields from the Hub) back to bytes, in its own format if known."""
    buffer = io.BytesIO()
    image_format = image.format if image.format in ("PNG", "JPEG", "WEBP", "GIF", "BMP") else "PNG"
    image.save(buffer, format=image_format)
    return buffer.getvalue()
