"""Reading the MRZ off a document image with tesseract, where it is installed (Debian:
tesseract-ocr). Optional at run time: without the binary there is no suggestion and the MRZ is
typed as before. What OCR reads is only a suggestion for the reviewer, and only one that
mrz.parse accepts (every check digit valid) is offered.

OCR confuses a few characters (O/0, I/1, B/8, S/5, Z/2, G/6). A character is corrected only
where the MRZ layout says which kind belongs there (a date is digits, a country code letters)
or, in the document number, where exactly one reading satisfies its check digit; the corrected
text must then pass every check digit, so a correction is never a guess that goes unconfirmed.
"""

from __future__ import annotations

import io
import itertools
import re
import shutil
import subprocess
from dataclasses import dataclass
from datetime import date

from PIL import Image, ImageOps

from tipstream.kyc import mrz as mrzlib

MRZ_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789<"
TIMEOUT_SECONDS = 30
# Tesseract reads characters best at roughly 30-40 px tall; MRZ lines in photos are often less.
MIN_WIDTH = 1600
TO_DIGIT = {
    "O": "0",
    "Q": "0",
    "D": "0",
    "I": "1",
    "L": "1",
    "Z": "2",
    "S": "5",
    "G": "6",
    "B": "8",
}
TO_LETTER = {"0": "O", "1": "I", "2": "Z", "5": "S", "6": "G", "8": "B"}
# Per position: "9" digits (or "<" filler), "A" letters (or "<"), "X" either, "S" sex.
TD3_LAYOUT = ("A" * 44, "X" * 9 + "9" + "AAA" + "9" * 7 + "S" + "9" * 7 + "X" * 14 + "99")
TD1_LAYOUT = (
    "AA" + "AAA" + "X" * 9 + "9" + "X" * 15,
    "9" * 7 + "S" + "9" * 7 + "AAA" + "X" * 11 + "9",
    "A" * 30,
)
# Where the document number and its check digit are: (line, start, end, check digit index).
NUMBER_AT = {"TD3": (1, 0, 9, 9), "TD1": (0, 5, 14, 14)}
MAX_AMBIGUOUS = 6
# (line, position) no check digit covers: TD3's first line, nationality and sex; TD1's document
# code, issuing state, sex, nationality and names.
UNCHECKED = {
    "TD3": {(0, i) for i in range(44)} | {(1, 10), (1, 11), (1, 12), (1, 20)},
    "TD1": {(0, i) for i in range(5)}
    | {(1, 7), (1, 15), (1, 16), (1, 17)}
    | {(2, i) for i in range(30)},
}
MAX_FILLER_SLIP = 6
FILLER_RUN = re.compile(r"<{2,}")
# One block of text, the MRZ alphabet only, no dictionaries (an MRZ is not words).
TESSERACT_ARGS = (
    "stdin", "stdout", "--psm", "6", "-l", "eng",
    "-c", f"tessedit_char_whitelist={MRZ_CHARS}",
    "-c", "load_system_dawg=0", "-c", "load_freq_dawg=0",
)  # fmt: skip


class OcrUnavailable(Exception):
    """tesseract is not installed on this host."""


@dataclass(frozen=True)
class MrzReading:
    text: str  # the MRZ as it validates, lines joined by "\n"
    parsed: mrzlib.Mrz
    corrections: int  # characters changed from what tesseract read
    # Of those, changes no check digit covers (a digit read in a name or a country code, made the
    # letter it is confused with): the layout vouches for them, the reviewer should look.
    unconfirmed: int = 0


def tesseract() -> str | None:
    return shutil.which("tesseract")


def _prepare(image: bytes) -> bytes:
    """Greyscale, upscaled when small, as PNG for tesseract."""
    with Image.open(io.BytesIO(image)) as opened:
        grey = ImageOps.grayscale(ImageOps.exif_transpose(opened))
    if grey.width < MIN_WIDTH:
        factor = MIN_WIDTH / grey.width
        grey = grey.resize((MIN_WIDTH, round(grey.height * factor)), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    grey.save(out, format="PNG")
    return out.getvalue()


def ocr_text(image: bytes) -> str:
    """What tesseract reads, restricted to the MRZ alphabet, line by line."""
    binary = tesseract()
    if binary is None:
        raise OcrUnavailable("tesseract is not installed on this host")
    try:
        result = subprocess.run(
            [binary, *TESSERACT_ARGS],
            input=_prepare(image),
            capture_output=True,
            timeout=TIMEOUT_SECONDS,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return ""
    if result.returncode != 0:
        return ""
    return result.stdout.decode("ascii", "replace")


def _fit(line: str, width: int) -> str | None:
    """The line at the MRZ's width: OCR often miscounts a run of "<" fillers, so the longest run
    absorbs the difference (the check digits then judge the result)."""
    delta = width - len(line)
    if delta == 0:
        return line
    if abs(delta) > MAX_FILLER_SLIP:
        return None
    runs = [(m.end() - m.start(), m.start(), m.end()) for m in FILLER_RUN.finditer(line)]
    if not runs:
        return None
    length, start, end = max(runs)
    if length + delta < 1:
        return None
    return line[:start] + "<" * (length + delta) + line[end:]


def _candidates(text: str) -> list[list[str]]:
    """Runs of consecutive lines shaped like a TD3 (2x44) or TD1 (3x30) MRZ, bottom first."""
    lines = ["".join(c for c in line.upper() if c in MRZ_CHARS) for line in text.splitlines()]
    lines = [line for line in lines if len(line) >= 20]
    found = []
    for count, width in (mrzlib.TD3, mrzlib.TD1):
        for end in range(len(lines), count - 1, -1):
            block = [_fit(line, width) for line in lines[end - count : end]]
            if all(block):
                found.append([line for line in block if line])
    return found


def _by_layout(lines: list[str], layout: tuple[str, ...]) -> list[str]:
    fixed = []
    for line, kinds in zip(lines, layout, strict=True):
        chars = []
        for char, kind in zip(line, kinds, strict=True):
            if kind == "9":
                char = TO_DIGIT.get(char, char)
            elif kind == "A":
                char = TO_LETTER.get(char, char)
            elif kind == "S" and char not in "MFX<":
                char = "<"
            chars.append(char)
        fixed.append("".join(chars))
    return fixed


def _number_readings(lines: list[str], fmt: str) -> list[list[str]]:
    """Each reading of the document number (confusable characters either way) whose check
    digit holds; the caller accepts only a single one."""
    row, start, end, digit_at = NUMBER_AT[fmt]
    number, digit = lines[row][start:end], lines[row][digit_at]
    swaps = {**TO_DIGIT, **TO_LETTER}
    ambiguous = [i for i, c in enumerate(number) if c in swaps]
    if len(ambiguous) > MAX_AMBIGUOUS:
        return []
    readings = []
    for choice in itertools.product((False, True), repeat=len(ambiguous)):
        chars = list(number)
        for index, swap in zip(ambiguous, choice, strict=True):
            if swap:
                chars[index] = swaps[chars[index]]
        candidate = "".join(chars)
        if mrzlib.check_digit(candidate) == digit.replace("<", "0"):
            line = lines[row][:start] + candidate + lines[row][end:]
            readings.append([line if i == row else other for i, other in enumerate(lines)])
    return readings


def _validated(lines: list[str], today: date) -> mrzlib.Mrz | None:
    try:
        return mrzlib.parse("\n".join(lines), today=today)
    except mrzlib.MrzError:
        return None


def _changed_at(raw: list[str], fixed: list[str]) -> set[tuple[int, int]]:
    return {
        (row, at)
        for row, (r, f) in enumerate(zip(raw, fixed, strict=True))
        for at, (a, b) in enumerate(zip(r, f, strict=True))
        if a != b
    }


def find_mrz(text: str, *, today: date | None = None) -> MrzReading | None:
    """The MRZ in OCR output, corrected only as far as the check digits confirm."""
    today = today or date.today()
    for raw in _candidates(text):
        fmt = "TD3" if len(raw) == 2 else "TD1"
        typed = _by_layout(raw, TD3_LAYOUT if fmt == "TD3" else TD1_LAYOUT)
        valid = [
            (lines, parsed)
            for lines in _number_readings(typed, fmt)
            if (parsed := _validated(lines, today)) is not None
        ]
        scored = sorted((len(_changed_at(raw, lines)), n) for n, (lines, _) in enumerate(valid))
        # The reading that changes least; two equally close ones are a guess, not a reading.
        if scored and (len(scored) == 1 or scored[0][0] < scored[1][0]):
            changed, best = scored[0]
            lines, parsed = valid[best]
            unconfirmed = len(_changed_at(raw, lines) & UNCHECKED[fmt])
            return MrzReading("\n".join(lines), parsed, changed, unconfirmed)
    return None


def read_mrz(image: bytes, *, today: date | None = None) -> MrzReading | None:
    """OCR one document image; None when no MRZ that validates was found. Blocking: call it
    in a thread. Raises OcrUnavailable without tesseract."""
    return find_mrz(ocr_text(image), today=today)
