"""Turning OCR output into an MRZ suggestion: typical confusions corrected only where the MRZ
layout or the check digits confirm them, miscounted fillers absorbed, anything unconfirmed
refused (no suggestion rather than a wrong one)."""

from __future__ import annotations

from datetime import date

from tests.unit.test_mrz_parse import ICAO_TD1, ICAO_TD3, TODAY, td3
from tipstream.kyc import ocr


def noisy(mrz: str, *edits: tuple[int, int, str]) -> str:
    lines = mrz.split("\n")
    for line, at, char in edits:
        lines[line] = lines[line][:at] + char + lines[line][at + 1 :]
    return "PASSPORT PASSEPORT\nsome other text on the page\n" + "\n".join(lines) + "\n"


def test_a_clean_reading_is_taken_as_is() -> None:
    reading = ocr.find_mrz(noisy(ICAO_TD3), today=TODAY)
    assert reading is not None and reading.corrections == 0
    assert reading.text == ICAO_TD3
    assert reading.parsed.document_number == "L898902C3"
    assert reading.parsed.birth_date == date(1974, 8, 12)


def test_letters_in_digit_fields_and_digits_in_letter_fields_are_corrected() -> None:
    # UT0 for UTO (nationality); O for 0, I for 1 and S for 5 in the dates.
    text = noisy(ICAO_TD3, (1, 12, "0"), (1, 15, "O"), (1, 21, "I"), (1, 23, "O"), (1, 26, "S"))
    reading = ocr.find_mrz(text, today=TODAY)
    assert reading is not None
    assert reading.text == ICAO_TD3
    assert reading.corrections == 5
    # UT0 -> UTO is vouched for by the layout alone (no check digit covers the nationality).
    assert reading.unconfirmed == 1
    assert reading.parsed.nationality == "UTO"


def test_a_document_number_confusion_is_fixed_only_when_its_check_digit_decides() -> None:
    mrz = td3("AB0123456", "900517", "340415")
    # O for 0 inside the number: only one reading satisfies the number's check digit.
    reading = ocr.find_mrz(noisy(mrz, (1, 2, "O")), today=TODAY)
    assert reading is not None and reading.parsed.document_number == "AB0123456"
    assert reading.corrections == 1 and reading.unconfirmed == 0


def test_miscounted_fillers_are_absorbed() -> None:
    top, bottom = ICAO_TD3.split("\n")
    text = top[:-3] + "\n" + bottom.replace("<<<<<10", "<<<<<<10")
    reading = ocr.find_mrz(text, today=TODAY)
    assert reading is not None and reading.text == ICAO_TD3


def test_id_cards_are_read_too() -> None:
    reading = ocr.find_mrz(noisy(ICAO_TD1, (1, 15, "U"), (1, 16, "T"), (1, 17, "0")), today=TODAY)
    assert reading is not None and reading.parsed.format == "TD1"
    assert reading.parsed.document_number == "D23145890"


def test_what_the_check_digits_do_not_confirm_is_no_suggestion() -> None:
    # A wrong digit in the date of birth: a real misreading no layout rule can undo.
    assert ocr.find_mrz(noisy(ICAO_TD3, (1, 15, "9")), today=TODAY) is None
    assert ocr.find_mrz("no machine readable zone here\n", today=TODAY) is None
    assert ocr.find_mrz("", today=TODAY) is None
