"""OCR of the MRZ with tesseract (Debian tesseract-ocr, installed by appliance/test): a passport
page the test renders itself (Pillow, DejaVu Sans Mono from fonts-dejavu-core) is submitted,
and the reviewer gets its MRZ as a suggestion, parsed with every check digit valid and
cross-checked against the form; confirming it leaves no flag. Without tesseract the reviewer
is told to type the MRZ."""

from __future__ import annotations

import io
import json
from datetime import date
from pathlib import Path

import pytest
from PIL import Image, ImageDraw, ImageFont

from tests.helpers import UserFactory, assert_problem, scalar
from tests.integration.kyc.conftest import Tipctl, form_fields, image_files, submit
from tipstream.db import Conn
from tipstream.kyc import mrz, ocr

MONO = Path("/usr/share/fonts/truetype/dejavu/DejaVuSansMono.ttf")


@pytest.fixture(autouse=True)
def tesseract_installed() -> None:
    if ocr.tesseract() is None or not MONO.exists():
        pytest.fail(
            "tesseract-ocr and fonts-dejavu-core are needed (Debian packages; ./appliance/test "
            "installs them)"
        )


def passport_mrz(number: str, born: str, expires: str) -> str:
    top = "P<SWEERIKSSON<<ANNA<MARIA".ljust(44, "<")
    body = (
        number
        + mrz.check_digit(number)
        + "SWE"
        + born
        + mrz.check_digit(born)
        + "F"
        + expires
        + mrz.check_digit(expires)
        + "<" * 14
        + "<"
    )
    composite = body[0:10] + body[13:20] + body[21:43]
    return top + "\n" + body + mrz.check_digit(composite)


def passport_page(mrz_text: str) -> bytes:
    """A photo page: some printed fields above, the MRZ at the bottom, as a JPEG."""
    page = Image.new("RGB", (1000, 640), (246, 244, 236))
    draw = ImageDraw.Draw(page)
    label = ImageFont.truetype(str(MONO), 22)
    for row, text in enumerate(("PASSPORT / PASS", "ERIKSSON", "ANNA MARIA", "17 MAY 1990")):
        draw.text((330, 60 + row * 48), text, font=label, fill=(40, 40, 60))
    draw.rectangle((40, 60, 290, 380), fill=(200, 200, 210))  # where the portrait would be
    font = ImageFont.truetype(str(MONO), 30)
    for row, line in enumerate(mrz_text.split("\n")):
        draw.text((40, 500 + row * 50), line, font=font, fill=(0, 0, 0))
    out = io.BytesIO()
    page.save(out, format="JPEG", quality=92)
    return out.getvalue()


def test_tesseract_reads_a_rendered_td3_page() -> None:
    text = passport_mrz("XK4711C07", "900517", "340415")
    reading = ocr.read_mrz(passport_page(text), today=date(2026, 11, 25))
    assert reading is not None, ocr.ocr_text(passport_page(text))
    assert reading.text == text
    fields = reading.parsed
    assert (fields.surname, fields.given_names) == ("ERIKSSON", "ANNA MARIA")
    assert (fields.document_number, fields.issuing_state, fields.sex) == ("XK4711C07", "SWE", "F")
    assert fields.birth_date == date(1990, 5, 17) and fields.expiry_date == date(2034, 4, 15)


async def test_reviewers_get_the_ocr_mrz_as_a_suggestion(
    performer: UserFactory, reviewer: UserFactory, kyc_db: Conn, tipctl: Tipctl
) -> None:
    number = "XK4712C08"
    person = await performer("ocr")
    fields = form_fields(document_number=number)
    files = image_files(front=passport_page(passport_mrz(number, "900517", "340415")))
    response = await submit(person, fields, files)
    assert response.status_code == 201, response.text
    sid = response.json()["submission_id"]

    # Not for the applicant.
    assert_problem(await person.get(f"/api/kyc/review/{sid}/mrz/suggestion"), 403)
    moderator = await reviewer()
    suggested = await moderator.get(f"/api/kyc/review/{sid}/mrz/suggestion")
    assert suggested.status_code == 200, suggested.text
    assert suggested.headers["cache-control"].startswith("no-store")
    body = suggested.json()
    assert body["ocr_available"] and body["found"] and body["image"] == "front"
    assert body["mrz"] == passport_mrz(number, "900517", "340415")
    assert body["fields"]["document_number"] == number
    assert body["fields"]["birth_date"] == "1990-05-17"
    assert body["fields"]["expiry_date"] == "2034-04-15"
    assert body["mismatches"] == []
    audited = await scalar(
        kyc_db,
        "SELECT count(*) FROM audit_logs WHERE action = 'kyc.ocr' AND target_id = %s",
        (str(sid),),
    )
    assert audited == 1

    confirmed = await moderator.post(f"/api/kyc/review/{sid}/mrz", json={"mrz": body["mrz"]})
    assert confirmed.status_code == 200, confirmed.text
    assert confirmed.json()["flags"] == []

    # The same suggestion for a reviewer working from tipctl.
    code, out, err = await tipctl("kyc", "ocr", str(sid), "--json")
    assert code == 0, err
    assert json.loads(out)["mrz"] == body["mrz"]
    code, out, err = await tipctl("kyc", "ocr", str(sid))
    assert code == 0 and body["mrz"].split("\n")[1] in out and "nothing" in out


async def test_without_tesseract_or_an_mrz_the_reviewer_types_it(
    performer: UserFactory, reviewer: UserFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    person = await performer("no-ocr")
    response = await submit(person)  # photos without any MRZ
    assert response.status_code == 201, response.text
    sid = response.json()["submission_id"]
    moderator = await reviewer()
    body = (await moderator.get(f"/api/kyc/review/{sid}/mrz/suggestion")).json()
    assert body["ocr_available"] and not body["found"] and "type it" in body["note"]

    monkeypatch.setattr(ocr, "tesseract", lambda: None)  # a host without tesseract-ocr
    body = (await moderator.get(f"/api/kyc/review/{sid}/mrz/suggestion")).json()
    assert not body["ocr_available"] and "type the MRZ" in body["note"]
    assert_problem(await moderator.get("/api/kyc/review/999999999/mrz/suggestion"), 404)
