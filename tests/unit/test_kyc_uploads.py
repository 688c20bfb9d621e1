"""Upload safety with real crafted files: the type is judged from the bytes, EXIF/GPS, comments
and appended payloads are gone after re-encoding, broken and bomb-sized images are refused."""

from __future__ import annotations

import io
import struct
import zlib

import pytest
from PIL import ExifTags, Image

from tipstream.config import KycSettings
from tipstream.kyc.uploads import BadImage, ImageTooLarge, UnsupportedImage, sanitize_image

SETTINGS = KycSettings(max_image_bytes=2_000_000, max_image_pixels=25_000_000)


def picture(
    fmt: str = "JPEG", size: tuple[int, int] = (320, 240), mode: str = "RGB", **save: object
) -> bytes:
    image = Image.new(mode, size, (200, 30, 60) if mode == "RGB" else (200, 30, 60, 128))
    for x in range(0, size[0], 7):
        image.putpixel((x, x % size[1]), (0, 0, 0) if mode == "RGB" else (0, 0, 0, 255))
    out = io.BytesIO()
    image.save(out, format=fmt, **save)
    return out.getvalue()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bomb_png(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height: a few hundred bytes on the wire."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    body = zlib.compress(b"\x00" * 1024)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", body)
        + png_chunk(b"IEND", b"")
    )


def decoded(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def test_exif_with_gps_is_stripped() -> None:
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = "SpyCam"
    exif[ExifTags.Base.Artist] = "Anna Maria Eriksson"
    gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
    gps[ExifTags.GPS.GPSLatitudeRef] = "N"
    gps[ExifTags.GPS.GPSLatitude] = (52.0, 31.0, 12.0)
    gps[ExifTags.GPS.GPSLongitudeRef] = "E"
    gps[ExifTags.GPS.GPSLongitude] = (13.0, 24.0, 36.0)
    original = picture(exif=exif.tobytes())
    assert decoded(original).getexif().get_ifd(ExifTags.IFD.GPSInfo)  # the GPS really is there
    clean = sanitize_image(original, SETTINGS, field="front")
    image = decoded(clean)
    assert image.format == "JPEG"
    assert not image.getexif()
    assert b"Exif" not in clean and b"SpyCam" not in clean and b"Eriksson" not in clean


def test_orientation_is_applied_before_the_exif_goes() -> None:
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6  # rotate 90° clockwise to display
    clean = sanitize_image(picture(size=(320, 200), exif=exif.tobytes()), SETTINGS, field="front")
    assert decoded(clean).size == (200, 320)


@pytest.mark.parametrize(
    "payload",
    [
        b"PK\x03\x04" + b"\x14\x00" * 10 + b"evil.js" + b"\x00" * 30,  # JPEG + ZIP polyglot
        b"<html><script>alert(document.cookie)</script></html>",
        b"%PDF-1.7\n1 0 obj << /JS (app.alert(1)) >> endobj\n%%EOF",
    ],
)
def test_appended_payloads_do_not_survive(payload: bytes) -> None:
    polyglot = picture() + payload
    clean = sanitize_image(polyglot, SETTINGS, field="front")
    assert payload[:12] not in clean
    assert clean.rstrip(b"\x00").endswith(b"\xff\xd9")


def test_comments_and_text_chunks_are_dropped() -> None:
    jpeg = picture(comment=b"<?php system($_GET['c']); ?>")
    assert b"<?php" in jpeg
    assert b"<?php" not in sanitize_image(jpeg, SETTINGS, field="front")
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "<script>x</script>")
    png = picture("PNG", pnginfo=info)
    clean = sanitize_image(png, SETTINGS, field="back")
    assert b"<script>" not in clean and decoded(clean).format == "JPEG"


def test_png_with_alpha_and_webp_are_accepted_as_jpeg() -> None:
    for data in (picture("PNG", mode="RGBA"), picture("WEBP")):
        clean = sanitize_image(data, SETTINGS, field="selfie")
        image = decoded(clean)
        assert image.format == "JPEG" and image.mode == "RGB" and image.size == (320, 240)


@pytest.mark.parametrize(
    ("data", "what"),
    [
        (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj<<>>endobj\n%%EOF", "a PDF renamed .jpg"),
        (picture("GIF"), "GIF"),
        (b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"/>', "SVG"),
        (b"MZ\x90\x00" + b"\x00" * 100, "an executable"),
        (b"", "an empty file"),
    ],
)
def test_other_types_are_refused_from_their_content(data: bytes, what: str) -> None:
    with pytest.raises(UnsupportedImage) as refused:
        sanitize_image(data, SETTINGS, field="front")
    assert refused.value.status == 415, what


def test_truncated_images_are_refused() -> None:
    for data in (picture()[:600], picture("PNG")[:200]):
        with pytest.raises(BadImage) as refused:
            sanitize_image(data, SETTINGS, field="front")
        assert refused.value.status == 422


def test_a_lying_signature_is_refused() -> None:
    """JPEG magic bytes in front of PNG content: decoded only as what the signature says."""
    with pytest.raises(BadImage):
        sanitize_image(b"\xff\xd8\xff" + picture("PNG"), SETTINGS, field="front")


def test_decompression_bombs_are_refused_before_decoding() -> None:
    for width, height in ((30_000, 30_000), (100_000, 300), (65_535, 65_535)):
        bomb = bomb_png(width, height)
        assert len(bomb) < 2000
        with pytest.raises(ImageTooLarge) as refused:
            sanitize_image(bomb, SETTINGS, field="front")
        assert refused.value.status == 413


def test_too_many_bytes_and_too_few_pixels() -> None:
    with pytest.raises(ImageTooLarge):
        sanitize_image(picture() + b"\x00" * SETTINGS.max_image_bytes, SETTINGS, field="front")
    with pytest.raises(BadImage, match="smaller than"):
        sanitize_image(picture(size=(20, 20)), SETTINGS, field="front")
