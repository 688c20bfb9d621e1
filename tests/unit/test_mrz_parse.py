"""MRZ parsing (ICAO 9303 TD1 and TD3) with every check digit, and the cross-check against the
form; the ICAO specimen documents are the reference."""

from __future__ import annotations

from datetime import date

import pytest

from tipstream.kyc import checks, mrz
from tipstream.kyc.schemas import SubmissionForm

TODAY = date(2026, 11, 25)
ICAO_TD3 = (
    "P<UTOERIKSSON<<ANNA<MARIA<<<<<<<<<<<<<<<<<<<\nL898902C36UTO7408122F1204159ZE184226B<<<<<10"
)
ICAO_TD1 = (
    "I<UTOD231458907<<<<<<<<<<<<<<<\n7408122F1204159UTO<<<<<<<<<<<6\nERIKSSON<<ANNA<MARIA<<<<<<<<<<"
)


def td3(number: str, born: str, expires: str, names: str = "ERIKSSON<<ANNA<MARIA") -> str:
    """A valid passport MRZ (check digits computed) for these fields."""
    top = ("P<UTO" + names).ljust(44, "<")
    number = number.ljust(9, "<")
    personal = "<" * 14
    body = (
        number
        + mrz.check_digit(number)
        + "UTO"
        + born
        + mrz.check_digit(born)
        + "F"
        + expires
        + mrz.check_digit(expires)
        + personal
        + "0"
    )
    composite = body[0:10] + body[13:20] + body[21:43]
    return top + "\n" + body + mrz.check_digit(composite)


def test_check_digits_of_the_icao_examples() -> None:
    assert mrz.check_digit("L898902C3") == "6"
    assert mrz.check_digit("740812") == "2"
    assert mrz.check_digit("120415") == "9"
    assert mrz.check_digit("D23145890") == "7"


def test_td3_specimen() -> None:
    parsed = mrz.parse(ICAO_TD3, today=TODAY)
    assert parsed.format == "TD3"
    assert (parsed.surname, parsed.given_names) == ("ERIKSSON", "ANNA MARIA")
    assert parsed.document_number == "L898902C3"
    assert parsed.birth_date == date(1974, 8, 12)
    assert parsed.expiry_date == date(2012, 4, 15)
    assert (parsed.issuing_state, parsed.nationality, parsed.sex) == ("UTO", "UTO", "F")


def test_td1_specimen_with_spaces_and_lower_case() -> None:
    parsed = mrz.parse(ICAO_TD1.lower().replace("<<<", "< < <"), today=TODAY)
    assert parsed.format == "TD1"
    assert parsed.document_number == "D23145890"
    assert parsed.birth_date == date(1974, 8, 12)
    assert parsed.given_names == "ANNA MARIA"


def test_td1_long_document_number_continues_in_the_optional_field() -> None:
    number = "D23145890123"
    first = "I<UTO" + number[:9] + "<" + number[9:] + mrz.check_digit(number)
    first = first.ljust(30, "<")
    second_start = "7408122F1204159UTO"
    second = (second_start + "<" * 11).ljust(29, "<")
    composite = first[5:30] + second[0:7] + second[8:15] + second[18:29]
    text = f"{first}\n{second}{mrz.check_digit(composite)}\nERIKSSON<<ANNA<<<<<<<<<<<<<<<<"
    assert mrz.parse(text, today=TODAY).document_number == number


@pytest.mark.parametrize(
    ("position", "field"),
    [(9, "document number"), (19, "date of birth"), (27, "expiry date"), (43, "composite")],
)
def test_each_wrong_check_digit_is_named(position: int, field: str) -> None:
    top, bottom = ICAO_TD3.splitlines()
    wrong = str((int(bottom[position]) + 1) % 10)
    broken = bottom[:position] + wrong + bottom[position + 1 :]
    with pytest.raises(mrz.MrzError, match=field):
        mrz.parse(f"{top}\n{broken}", today=TODAY)


def test_a_changed_letter_breaks_the_check() -> None:
    top, bottom = ICAO_TD3.splitlines()
    with pytest.raises(mrz.MrzError, match="document number"):
        mrz.parse(top + "\n" + bottom.replace("L898902C3", "L898902C8"), today=TODAY)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "P<UTO",
        ICAO_TD3 + "\nEXTRA",
        ICAO_TD3.replace("ERIKSSON", "ERIKSSÖN"),
        ICAO_TD3.replace("P<UTO", "P-UTO"),
        ICAO_TD3.splitlines()[0] + "\n" + ICAO_TD3.splitlines()[1][:40],
    ],
)
def test_malformed_text_is_refused(text: str) -> None:
    with pytest.raises(mrz.MrzError):
        mrz.parse(text, today=TODAY)


def test_impossible_dates_are_refused() -> None:
    with pytest.raises(mrz.MrzError, match="date of birth"):
        mrz.parse(td3("AB1234567", "741312", "300101"), today=TODAY)


def test_centuries() -> None:
    parsed = mrz.parse(td3("AB1234567", "080229", "360101"), today=TODAY)
    assert parsed.birth_date == date(2008, 2, 29)  # a minor: born this century
    assert parsed.expiry_date == date(2036, 1, 1)
    assert mrz.parse(td3("AB1234567", "300101", "990101"), today=TODAY).birth_date == date(
        1930, 1, 1
    )


def form(**changes: object) -> SubmissionForm:
    values: dict[str, object] = {
        "legal_name": "Anna María Eriksson",
        "date_of_birth": date(1974, 8, 12),
        "country": "SE",
        "document_type": "passport",
        "document_number": "AB 123-4567",
        "document_expiry": date(2030, 4, 15),
        "agreement_version": "2026-01",
        "accept_agreement": True,
    }
    values.update(changes)
    return SubmissionForm(**values)  # type: ignore[arg-type]


def test_cross_check_agrees_despite_accents_spaces_and_dashes() -> None:
    parsed = mrz.parse(td3("AB1234567", "740812", "300415"), today=TODAY)
    assert checks.cross_check(form(), parsed) == []


def test_cross_check_names_every_disagreement() -> None:
    parsed = mrz.parse(td3("AB1234567", "740812", "300415"), today=TODAY)
    different = form(
        legal_name="Anna Svensson",
        date_of_birth=date(1974, 8, 13),
        document_number="AB1234568",
        document_expiry=date(2031, 4, 15),
    )
    assert checks.cross_check(different, parsed) == [
        "legal_name",
        "date_of_birth",
        "document_number",
        "document_expiry",
    ]
    flags, found = checks.mrz_findings(different, td3("AB1234567", "740812", "300415"), TODAY)
    assert flags == ["mrz_mismatch"]
    assert found["mrz"]["check_digits"] == "valid"
