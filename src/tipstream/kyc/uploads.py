"""Upload safety for identity images: the type comes from the bytes, never from the filename or
the declared type; every accepted image is decoded and re-encoded by Pillow, which drops EXIF
(GPS included), comments, ICC/XMP blocks and anything appended after the image data (polyglots).
Images larger than the configured pixel count are refused from their header, before decoding."""

from __future__ import annotations

import io
import warnings

from PIL import Image, ImageOps, UnidentifiedImageError

from tipstream.config import KycSettings
from tipstream.errors import InvalidInput, Problem

# The content types accepted, by signature.
SIGNATURES = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
)
MIN_SIDE = 64
OUTPUT_TYPE = "image/jpeg"


class UnsupportedImage(Problem):
    status, slug, title = 415, "unsupported-image", "Unsupported file type"


class ImageTooLarge(Problem):
    status, slug, title = 413, "image-too-large", "Image too large"


class BadImage(InvalidInput):
    slug, title = "bad-image", "Damaged or unreadable image"


def sniff(data: bytes) -> str | None:
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    for signature, name in SIGNATURES:
        if data.startswith(signature):
            return name
    return None


def sanitize_image(data: bytes, settings: KycSettings, *, field: str) -> bytes:
    """Return the image re-encoded as a clean JPEG, or raise a 4xx Problem saying why not."""
    if len(data) > settings.max_image_bytes:
        raise ImageTooLarge(
            f"{field}: {len(data)} bytes; images may be at most {settings.max_image_bytes} bytes"
        )
    kind = sniff(data)
    if kind is None:
        raise UnsupportedImage(f"{field}: not a JPEG, PNG or WebP image (judged from its content)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=[kind]) as probe:
                width, height = probe.size
                if width * height > settings.max_image_pixels:
                    raise ImageTooLarge(
                        f"{field}: {width}x{height} pixels; at most "
                        f"{settings.max_image_pixels} pixels"
                    )
                probe.verify()
            with Image.open(io.BytesIO(data), formats=[kind]) as image:
                image.load()
                upright = ImageOps.exif_transpose(image)
                frame = upright.convert("RGB") if upright.mode != "RGB" else upright
                if min(frame.size) < MIN_SIDE:
                    raise BadImage(f"{field}: smaller than {MIN_SIDE} pixels on a side")
                out = io.BytesIO()
                # A fresh image from the pixels only: no info dict, so no EXIF/ICC/comment.
                clean = Image.new("RGB", frame.size)
                clean.paste(frame)
                clean.save(out, format="JPEG", quality=90, optimize=True)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageTooLarge(f"{field}: image dimensions too large") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        raise BadImage(
            f"{field}: the image is damaged or truncated ({type(exc).__name__})"
        ) from None
    return out.getvalue()
