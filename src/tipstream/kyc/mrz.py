"""Machine readable zones (ICAO 9303) of passports (TD3: 2 lines of 44) and ID cards (TD1: 3 lines
of 30), parsed with every check digit validated. Typed by the performer or a reviewer."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date

TD3 = (2, 44)
TD1 = (3, 30)
ALLOWED = re.compile(r"^[A-Z0-9<]+$")
WEIGHTS = (7, 3, 1)


class MrzError(ValueError):
    """Not a valid TD1/TD3 MRZ; the message says what is wrong."""


def char_value(char: str) -> int:
    if char.isdigit():
        return int(char)
    if "A" <= char <= "Z":
        return ord(char) - ord("A") + 10
    if char == "<":
        return 0
    raise MrzError(f"character {char!r} is not allowed in an MRZ")


def check_digit(field: str) -> str:
    return str(sum(char_value(c) * WEIGHTS[i % 3] for i, c in enumerate(field)) % 10)


@dataclass(frozen=True)
class Mrz:
    format: str  # TD1 | TD3
    document_code: str
    issuing_state: str
    surname: str
    given_names: str
    document_number: str
    nationality: str
    birth_date: date
    sex: str
    expiry_date: date


def _verify(name: str, field: str, digit: str) -> None:
    # "<" as the check digit of an empty optional field counts as 0.
    if check_digit(field) != digit.replace("<", "0"):
        raise MrzError(f"check digit of the {name} is wrong")


def _date(text: str, *, name: str, past: bool, today: date) -> date:
    if not text.isdigit():
        raise MrzError(f"{name} is not a date (YYMMDD)")
    yy, mm, dd = int(text[:2]), int(text[2:4]), int(text[4:])
    century = today.year // 100 * 100
    year = century + yy
    # Birth dates are in the past; expiry dates are at most a few decades ahead.
    if past and year > today.year:
        year -= 100
    if not past and year < today.year - 50:
        year += 100
    try:
        return date(year, mm, dd)
    except ValueError:
        raise MrzError(f"{name} is not a valid date") from None


def _names(field: str) -> tuple[str, str]:
    surname, _, given = field.partition("<<")
    return surname.replace("<", " ").strip(), given.replace("<", " ").strip()


def normalize(text: str) -> list[str]:
    lines = [line.strip().replace(" ", "").upper() for line in text.strip().splitlines()]
    return [line for line in lines if line]


def parse(text: str, *, today: date | None = None) -> Mrz:
    today = today or date.today()
    lines = normalize(text)
    shape = (len(lines), len(lines[0]) if lines else 0)
    if any(len(line) != shape[1] for line in lines) or shape not in (TD1, TD3):
        raise MrzError("an MRZ is 2 lines of 44 characters (passport) or 3 of 30 (ID card)")
    for line in lines:
        if not ALLOWED.match(line):
            raise MrzError("an MRZ holds only A-Z, 0-9 and <")
    return _td3(lines, today) if shape == TD3 else _td1(lines, today)


def _td3(lines: list[str], today: date) -> Mrz:
    top, bottom = lines
    number, number_cd = bottom[0:9], bottom[9]
    birth, birth_cd = bottom[13:19], bottom[19]
    expiry, expiry_cd = bottom[21:27], bottom[27]
    personal, personal_cd = bottom[28:42], bottom[42]
    _verify("document number", number, number_cd)
    _verify("date of birth", birth, birth_cd)
    _verify("expiry date", expiry, expiry_cd)
    _verify("personal number", personal, personal_cd)
    composite = bottom[0:10] + bottom[13:20] + bottom[21:43]
    _verify("whole MRZ (composite)", composite, bottom[43])
    surname, given = _names(top[5:44])
    return Mrz(
        format="TD3",
        document_code=top[0:2].replace("<", ""),
        issuing_state=top[2:5].replace("<", ""),
        surname=surname,
        given_names=given,
        document_number=number.replace("<", ""),
        nationality=bottom[10:13].replace("<", ""),
        birth_date=_date(birth, name="date of birth", past=True, today=today),
        sex=bottom[20],
        expiry_date=_date(expiry, name="expiry date", past=False, today=today),
    )


def _td1(lines: list[str], today: date) -> Mrz:
    first, second, third = lines
    number, number_cd = first[5:14], first[14]
    optional1 = first[15:30]
    if number_cd == "<" and optional1.strip("<"):
        # A number longer than 9 characters continues in the optional field, its check digit
        # follows the continuation (ICAO 9303 part 5, note j).
        continuation = optional1.split("<", 1)[0]
        number, number_cd = number + continuation[:-1], continuation[-1]
    birth, birth_cd = second[0:6], second[6]
    expiry, expiry_cd = second[8:14], second[14]
    _verify("document number", number, number_cd)
    _verify("date of birth", birth, birth_cd)
    _verify("expiry date", expiry, expiry_cd)
    composite = first[5:30] + second[0:7] + second[8:15] + second[18:29]
    _verify("whole MRZ (composite)", composite, second[29])
    surname, given = _names(third)
    return Mrz(
        format="TD1",
        document_code=first[0:2].replace("<", ""),
        issuing_state=first[2:5].replace("<", ""),
        surname=surname,
        given_names=given,
        document_number=number.replace("<", ""),
        nationality=second[15:18].replace("<", ""),
        birth_date=_date(birth, name="date of birth", past=True, today=today),
        sex=second[7],
        expiry_date=_date(expiry, name="expiry date", past=False, today=today),
    )
