"""Hostile uploads to the onboarding form: mangled multipart bodies and hostile filenames get a
clear answer (a 4xx problem, or the submission judged by its content), never a 500, and a
refused form stores nothing."""

from __future__ import annotations

from tests.helpers import UserFactory, assert_problem, scalar
from tests.integration.kyc.conftest import form_fields, image_files, photo, submit
from tipstream.db import Conn

BOUNDARY = "fuzzboundary"
HOSTILE_NAMES = (
    "../../../../etc/passwd",
    "a\x00b.jpg",
    "\u202egpj.exe",
    "CON",
    "..",
    "/",
    "\\..\\..\\boot.ini",
    "%00.jpg",
    "line\r\nX-Injected: 1.jpg",
)


def multipart(*parts: bytes) -> bytes:
    body = b"".join(b"--" + BOUNDARY.encode() + b"\r\n" + part + b"\r\n" for part in parts)
    return body + b"--" + BOUNDARY.encode() + b"--\r\n"


async def stored(kyc_db: Conn, user_id: int) -> int:
    return int(
        await scalar(kyc_db, "SELECT count(*) FROM kyc_submissions WHERE user_id = %s", (user_id,))
    )


async def test_parts_that_are_no_utf8_text_are_422_and_store_nothing(
    performer: UserFactory, kyc_db: Conn
) -> None:
    person = await performer("mangled")
    image_without_filename = (
        b'Content-Disposition: form-data; name="front"\r\n'
        b"Content-Type: image/jpeg\r\n\r\n" + photo()
    )
    latin1_field = b'Content-Disposition: form-data; name="legal_name"\r\n\r\n\xe9l\xe9onore'
    for part in (image_without_filename, latin1_field):
        response = await person.post(
            "/api/kyc/submission",
            content=multipart(part),
            headers={"content-type": f"multipart/form-data; boundary={BOUNDARY}"},
        )
        problem = assert_problem(response, 422, "invalid-input")
        assert "UTF-8" in problem["detail"]
    assert await stored(kyc_db, person.user_id) == 0


async def test_hostile_filenames_are_ignored_and_the_content_decides(
    performer: UserFactory, kyc_db: Conn
) -> None:
    for name in HOSTILE_NAMES:
        person = await performer("hostile-name")
        files = {field: (name, data, kind) for field, (_, data, kind) in image_files().items()}
        response = await submit(person, form_fields(), files)
        assert response.status_code == 201, (name, response.text)
        assert response.json()["status"] == "submitted"
        assert await stored(kyc_db, person.user_id) == 1
