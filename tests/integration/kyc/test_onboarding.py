"""A performer's onboarding over the API: multipart submission, statuses, the age gate per
country, the MRZ and duplicate checks, upload refusals, and nothing in clear on disk."""

from __future__ import annotations

import asyncio
import uuid
from datetime import date, timedelta
from pathlib import Path

from litestar import Litestar
from litestar.testing import AsyncTestClient

from tests.helpers import BrowserFactory, UserFactory, assert_problem, scalar
from tests.integration.kyc.conftest import form_fields, image_files, photo, submit
from tests.unit.test_mrz_parse import td3
from tipstream.db import Conn


def years_ago(years: int, days: int = 0) -> str:
    today = date.today()
    try:
        born = today.replace(year=today.year - years)
    except ValueError:  # 29 February
        born = today.replace(year=today.year - years, day=28)
    return (born + timedelta(days=days)).isoformat()


async def submissions_of(db: Conn, user_id: int) -> int:
    return int(
        await scalar(db, "SELECT count(*) FROM kyc_submissions WHERE user_id = %s", (user_id,))
    )


async def test_a_performer_submits_and_sees_the_status(
    performer: UserFactory, kyc_db: Conn, vault_dir: Path
) -> None:
    alice = await performer()
    me = await alice.get("/api/kyc/me")
    assert me.status_code == 200 and me.json()["status"] == "not_started"
    assert me.json()["agreement_version"] == "2026-01"

    number = f"P{uuid.uuid4().hex[:8].upper()}"
    fields = form_fields(
        document_number=number,
        date_of_birth="1990-05-17",
        document_expiry="2034-04-15",
        mrz=td3(number, "900517", "340415"),
    )
    front = photo(800, 500)
    response = await submit(alice, fields, image_files(front=front, back=photo()))
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["status"] == "submitted" and body["may_publish"] is False
    assert body["document_expires_on"] == "2034-04-15"
    assert (await alice.get("/api/kyc/me")).json()["status"] == "submitted"

    row = await (
        await kyc_db.execute("SELECT * FROM kyc_submissions WHERE user_id = %s", (alice.user_id,))
    ).fetchone()
    assert row is not None
    assert row["flags"] == [] and row["checks"]["mrz"]["mismatches"] == []
    assert row["agreement_version"] == "2026-01" and row["agreement_accepted_at"] is not None
    # The row holds no personal data in clear.
    assert number not in str(row) and "Eriksson" not in str(row)
    # Files on disk: only ciphertext, neither the image nor any form field.
    blobs = [p.read_bytes() for p in vault_dir.rglob("*") if p.is_file()]
    assert len(blobs) >= 4
    for blob in blobs:
        assert number.encode() not in blob
        assert b"Eriksson" not in blob and b"1990-05-17" not in blob
        assert front[200:264] not in blob and b"JFIF" not in blob
        # A clear JPEG starts with its SOI marker; three random ciphertext bytes match it
        # somewhere in a 100 kB blob about once in 170 runs, so only the start is checked.
        assert not blob.startswith(b"\xff\xd8\xff")
    audit = await scalar(
        kyc_db,
        "SELECT count(*) FROM audit_logs WHERE action = 'kyc.submit' AND actor_id = %s",
        (alice.user_id,),
    )
    assert audit == 1

    again = await submit(alice)
    assert_problem(again, 409, "kyc-state")


async def test_minors_are_rejected_automatically_and_audited(
    performer: UserFactory, kyc_db: Conn
) -> None:
    kid = await performer("minor")
    response = await submit(kid, form_fields(date_of_birth=years_ago(18, days=1)))
    problem = assert_problem(response, 422, "underage")
    assert "18" in problem["detail"]
    me = (await kid.get("/api/kyc/me")).json()
    assert me["status"] == "rejected" and "minimum age" in me["reason"]
    assert me["may_publish"] is False
    row = await (
        await kyc_db.execute(
            "SELECT status, flags, front_object, selfie_object, decided_at FROM kyc_submissions"
            " WHERE user_id = %s",
            (kid.user_id,),
        )
    ).fetchone()
    assert row is not None
    assert row["status"] == "rejected" and row["flags"] == ["underage"]
    assert row["front_object"] is None and row["selfie_object"] is None  # no images kept
    assert row["decided_at"] is not None
    audited = await (
        await kyc_db.execute(
            "SELECT details FROM audit_logs WHERE action = 'kyc.reject_underage' AND actor_id = %s",
            (kid.user_id,),
        )
    ).fetchone()
    assert audited is not None and audited["details"]["minimum_age"] == 18

    # Exactly 18 today is old enough.
    adult = await performer("eighteen")
    ok = await submit(adult, form_fields(date_of_birth=years_ago(18)))
    assert ok.status_code == 201, ok.text


async def test_the_minimum_age_is_per_country(performer: UserFactory) -> None:
    """The KYC settings of this run say US: 21."""
    us = await performer("us")
    assert_problem(
        await submit(us, form_fields(country="us", date_of_birth=years_ago(20))), 422, "underage"
    )
    se = await performer("se")
    assert (
        await submit(se, form_fields(country="SE", date_of_birth=years_ago(20)))
    ).status_code == 201


async def test_a_document_on_another_account_is_flagged(
    performer: UserFactory, kyc_db: Conn
) -> None:
    number = f"DUP{uuid.uuid4().hex[:6].upper()}"
    first, second = await performer("first"), await performer("second")
    assert (await submit(first, form_fields(document_number=number))).status_code == 201
    # Same document, typed differently.
    spaced = number[:3] + " " + number[3:].lower()
    assert (await submit(second, form_fields(document_number=spaced))).status_code == 201
    row = await (
        await kyc_db.execute(
            "SELECT flags, checks FROM kyc_submissions WHERE user_id = %s", (second.user_id,)
        )
    ).fetchone()
    assert row is not None
    assert "duplicate_document" in row["flags"]
    assert row["checks"]["duplicate_document_users"] == [first.user_id]


async def test_mrz_and_registration_disagreements_are_flagged(
    performer: UserFactory, kyc_db: Conn
) -> None:
    person = await performer("mismatch")
    fields = form_fields(
        document_number="ZX9876543",
        date_of_birth="1991-05-17",  # registered with 1990-05-17
        mrz=td3("ZX9876543", "910517", "300101"),  # expiry differs from the form's 2034-04-15
    )
    assert (await submit(person, fields)).status_code == 201
    row = await (
        await kyc_db.execute(
            "SELECT flags, checks FROM kyc_submissions WHERE user_id = %s", (person.user_id,)
        )
    ).fetchone()
    assert row is not None
    assert set(row["flags"]) == {"mrz_mismatch", "dob_differs_from_registration"}
    assert row["checks"]["mrz"]["mismatches"] == ["document_expiry"]


async def test_bad_input_is_refused_and_changes_nothing(
    performer: UserFactory, kyc_db: Conn
) -> None:
    person = await performer("bad")
    pdf = b"%PDF-1.7\n1 0 obj<<>>endobj\n%%EOF\n"
    cases = [
        (await person.post("/api/kyc/submission", json=form_fields()), 415, None),
        (await submit(person, {**form_fields(), "favourite_colour": "red"}), 422, None),
        (await submit(person, form_fields(legal_name=None)), 422, None),
        (await submit(person, form_fields(accept_agreement="false")), 422, None),
        (await submit(person, form_fields(agreement_version="1999-01")), 422, None),
        (await submit(person, form_fields(date_of_birth="1990-02-30")), 422, None),
        (await submit(person, form_fields(date_of_birth="2999-01-01")), 422, None),
        (await submit(person, form_fields(country="Sweden")), 422, None),
        (await submit(person, form_fields(document_type="library_card")), 422, None),
        (await submit(person, form_fields(document_number="x\x00y")), 422, None),
        (await submit(person, form_fields(legal_name="\u0000\u0001")), 422, None),
        (await submit(person, form_fields(document_expiry="2020-01-01")), 422, "document-expired"),
        (await submit(person, form_fields(mrz="P<UTO\nL898902C36")), 422, "invalid-mrz"),
        (await submit(person, form_fields(document_type="id_card")), 422, None),  # no back
        (await submit(person, files=image_files(front=pdf)), 415, "unsupported-image"),
        (await submit(person, files=image_files(selfie=photo()[:500])), 422, "bad-image"),
        (await submit(person, files=image_files(selfie=None)), 422, None),
        (
            await submit(
                person, files={**image_files(), "passport_scan": ("x.jpg", photo(), "image/jpeg")}
            ),
            422,
            None,
        ),
    ]
    for number, (response, status, slug) in enumerate(cases):
        assert response.status_code == status, (number, response.text)
        assert_problem(response, status, slug)
    twice = await person.post(
        "/api/kyc/submission",
        data=form_fields(),
        files=[
            ("front", ("a.jpg", photo(), "image/jpeg")),
            ("front", ("b.jpg", photo(), "image/jpeg")),
            ("selfie", ("c.jpg", photo(), "image/jpeg")),
        ],
    )
    assert_problem(twice, 422)
    assert await submissions_of(kyc_db, person.user_id) == 0
    assert (await person.get("/api/kyc/me")).json()["status"] == "not_started"


async def test_the_body_limit_of_the_upload_route(performer: UserFactory, kyc_db: Conn) -> None:
    person = await performer("huge")
    huge = b"\xff\xd8\xff" + b"\x00" * (33 * 1024 * 1024)
    response = await submit(person, files=image_files(front=huge))
    assert_problem(response, 413)
    # Above the per-image limit but inside the body limit: refused per image.
    big = photo() + b"\x00" * 10_000_001
    assert_problem(await submit(person, files=image_files(front=big)), 413, "image-too-large")
    assert await submissions_of(kyc_db, person.user_id) == 0


async def test_only_performers_onboard(
    viewer: UserFactory, reviewer: UserFactory, kyc_client: object
) -> None:
    someone = await viewer()
    assert_problem(await someone.get("/api/kyc/me"), 403)
    assert_problem(await submit(someone), 403)
    moderator = await reviewer()
    assert_problem(await submit(moderator), 403)


async def test_a_minor_cannot_even_register_as_performer(
    new_browser: BrowserFactory, kyc_client: AsyncTestClient[Litestar], kyc_db: Conn
) -> None:
    anon = new_browser(kyc_client)
    response = await anon.register(role="performer", date_of_birth=years_ago(17))
    assert_problem(response, 422, "underage")
    assert await scalar(kyc_db, "SELECT count(*) FROM users WHERE email = %s", (anon.email,)) == 0


async def test_two_submissions_at_once_make_one(
    performer: UserFactory, kyc_db: Conn, vault_dir: Path
) -> None:
    person = await performer("racer")

    def files() -> int:
        return sum(1 for p in vault_dir.rglob("*") if p.is_file())

    before = files()
    first, second = await asyncio.gather(submit(person), submit(person))
    assert sorted([first.status_code, second.status_code]) == [201, 409], (first.text, second.text)
    assert await submissions_of(kyc_db, person.user_id) == 1
    # The loser's ciphertext went with its rolled-back transaction: form, front, selfie remain.
    assert files() - before == 3


async def test_a_minor_on_the_document_is_rejected_whatever_the_form_says(
    performer: UserFactory, kyc_db: Conn
) -> None:
    person = await performer("mrz-minor")
    young = date.today().replace(year=date.today().year - 16, day=1)
    fields = form_fields(
        document_number="MN1234567",
        date_of_birth="1990-05-17",
        mrz=td3("MN1234567", young.strftime("%y%m%d"), "340415"),
    )
    assert_problem(await submit(person, fields), 422, "underage")
    me = (await person.get("/api/kyc/me")).json()
    assert me["status"] == "rejected"
    age = await scalar(
        kyc_db,
        "SELECT checks->'age'->>'age' FROM kyc_submissions WHERE user_id = %s",
        (person.user_id,),
    )
    assert int(age) in (15, 16)


async def test_an_empty_file_input_counts_as_no_file(performer: UserFactory) -> None:
    """What a browser's form sends for a passport with the 'back' input left empty."""
    person = await performer("browser")
    files = {**image_files(), "back": ("", b"", "application/octet-stream")}
    response = await submit(person, form_fields(mrz=""), files)
    assert response.status_code == 201, response.text
