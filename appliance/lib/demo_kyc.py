"""Demo data for the one-box runner: the demo performer's identity verified the way a real one
is — a submission with document images through the KYC service, then a reviewer's approval —
so the demo performer can go live. Idempotent: an approved performer is left as it is.

Usage: demo_kyc.py EMAIL  (TIPSTREAM_CONFIG names the config). Exit 0 done, 3 nothing to do.
"""

from __future__ import annotations

import asyncio
import io
import sys
from datetime import date

from PIL import Image, ImageDraw

from tipstream import db
from tipstream.accounts import service as accounts
from tipstream.config import load_settings
from tipstream.kyc import service as kyc
from tipstream.kyc.schemas import SubmissionForm


def _picture(caption: str, colour: tuple[int, int, int]) -> bytes:
    """A plain stand-in for a photo of a document: real JPEG bytes the upload checks accept."""
    image = Image.new("RGB", (640, 400), colour)
    draw = ImageDraw.Draw(image)
    draw.rectangle((20, 20, 620, 380), outline=(255, 255, 255), width=4)
    draw.text((40, 40), caption, fill=(255, 255, 255))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


async def main(email: str) -> int:
    settings = load_settings()
    async with db.connect(settings) as conn:
        user = await accounts.find_user(conn, email)
        if await kyc.is_approved(conn, user.id):
            return 3
        state = await kyc.state(conn, settings, user.id)
        if state.status != "submitted":
            row = await accounts.get_user(conn, user.id)
            born = await _registered_birth_date(conn, row.id)
            form = SubmissionForm(
                legal_name=row.display_name,
                date_of_birth=born,
                country="US",
                document_type="passport",
                document_number=f"DEMO{row.id:05d}",
                document_expiry=date(date.today().year + 5, 1, 1),
                agreement_version=settings.kyc.agreement_version,
                accept_agreement=True,
            )
            files = {
                "front": _picture("DEMO PASSPORT - not a real document", (40, 60, 120)),
                "selfie": _picture("DEMO SELFIE WITH DOCUMENT", (90, 50, 70)),
            }
            state = await kyc.submit(
                conn, settings, user_id=user.id, form=form, files=files, ip=None
            )
        assert state.submission_id is not None
        await kyc.decide(conn, state.submission_id, "approve", reason=None, actor_id=None, ip=None)
    return 0


async def _registered_birth_date(conn: db.Conn, user_id: int) -> date:
    cur = await conn.execute("SELECT date_of_birth FROM users WHERE id = %s", (user_id,))
    row = await cur.fetchone()
    assert row is not None
    born = row["date_of_birth"]
    assert isinstance(born, date)
    return born


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1])))
