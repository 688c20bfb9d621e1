"""Whatever bytes or text arrive, the MRZ parser and the image sanitizer answer with their own
refusals (4xx problems), never with a crash."""

from __future__ import annotations

import contextlib
from datetime import date

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tipstream.config import KycSettings
from tipstream.errors import Problem
from tipstream.kyc import mrz
from tipstream.kyc.uploads import sanitize_image

MRZ_ALPHABET = st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789<")
KYC = KycSettings(max_image_bytes=1_000_000, max_image_pixels=4_000_000)


@settings(deadline=None)
@given(st.text(max_size=200))
def test_any_text_is_an_mrz_or_an_mrz_error(text: str) -> None:
    with contextlib.suppress(mrz.MrzError):
        mrz.parse(text, today=date(2026, 1, 1))


@settings(deadline=None)
@given(st.lists(st.text(MRZ_ALPHABET, min_size=30, max_size=30), min_size=3, max_size=3))
def test_td1_shaped_noise_fails_cleanly(lines: list[str]) -> None:
    with contextlib.suppress(mrz.MrzError):
        mrz.parse("\n".join(lines), today=date(2026, 1, 1))


@settings(deadline=None)
@given(st.lists(st.text(MRZ_ALPHABET, min_size=44, max_size=44), min_size=2, max_size=2))
def test_td3_shaped_noise_fails_cleanly(lines: list[str]) -> None:
    with contextlib.suppress(mrz.MrzError):
        mrz.parse("\n".join(lines), today=date(2026, 1, 1))


# Timing varies with the machine's load (the first decode imports Pillow's plugins).
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from([b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"RIFF\x00\x00\x00\x00WEBP", b""]),
    st.binary(max_size=4096),
)
def test_any_bytes_are_an_image_or_a_problem(magic: bytes, body: bytes) -> None:
    try:
        sanitize_image(magic + body, KYC, field="front")
    except Problem as problem:
        assert 400 <= problem.status < 500
