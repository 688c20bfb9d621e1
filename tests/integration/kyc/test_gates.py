"""Only a performer with approved KYC (and an unexpired document) may go live or ask for a
payout: the whole path, from submission through a 2FA reviewer's approval."""

from __future__ import annotations

import uuid
from datetime import date, timedelta

import httpx

from tests.helpers import Browser, UserFactory, assert_problem, scalar
from tests.integration.kyc.approved import approve_kyc
from tests.integration.kyc.conftest import submit
from tests.integration.ledger.conftest import insert_stream
from tipstream.config import Settings
from tipstream.db import Conn
from tipstream.kyc import service as kyc_service
from tipstream.ledger import service as ledger
from tipstream.ledger import tips


async def try_payout(person: Browser) -> httpx.Response:
    return await person.post(
        "/api/payouts/",
        json={
            "amount": "60.00",
            "account_holder": "Anna Eriksson",
            "iban": "DE89370400440532013000",
        },
        headers={"idempotency-key": str(uuid.uuid4())},
    )


async def test_publishing_and_payouts_wait_for_approval(
    performer: UserFactory, reviewer: UserFactory, kyc_db: Conn
) -> None:
    person = await performer("gated")
    assert_problem(
        await person.post("/api/streams", json={"title": "Too soon"}), 403, "kyc-required"
    )
    assert_problem(await try_payout(person), 403, "kyc-required")

    submitted = await submit(person)
    assert submitted.status_code == 201, submitted.text
    assert_problem(
        await person.post("/api/streams", json={"title": "Still waiting"}), 403, "kyc-required"
    )
    assert_problem(await try_payout(person), 403, "kyc-required")

    moderator = await reviewer()
    sid = submitted.json()["submission_id"]
    decided = await moderator.post(f"/api/kyc/review/{sid}/decision", json={"decision": "approve"})
    assert decided.status_code == 200, decided.text

    stream = await person.post("/api/streams", json={"title": "Verified at last"})
    assert stream.status_code == 201, stream.text
    payout = await try_payout(person)
    # Past the KYC gate: what stops it now is the (empty) earnings balance.
    assert payout.status_code != 403 and payout.status_code < 500, payout.text

    # The document expires: publishing and payouts stop, the performer is told and may resubmit.
    await kyc_db.execute(
        "UPDATE kyc SET document_expires_on = current_date - 1 WHERE user_id = %s",
        (person.user_id,),
    )
    me = (await person.get("/api/kyc/me")).json()
    assert me["status"] == "expired" and me["may_publish"] is False
    assert_problem(
        await person.post("/api/streams", json={"title": "Expired"}), 403, "kyc-required"
    )
    assert_problem(await try_payout(person), 403, "kyc-required")
    again = await submit(person)
    assert again.status_code == 201, again.text


async def test_rejected_and_sent_back_performers_stay_gated(
    performer: UserFactory, reviewer: UserFactory
) -> None:
    moderator = await reviewer()
    for decision in ("reject", "needs_resubmission"):
        person = await performer(decision)
        sid = (await submit(person)).json()["submission_id"]
        decided = await moderator.post(
            f"/api/kyc/review/{sid}/decision", json={"decision": decision, "reason": "Unreadable"}
        )
        assert decided.status_code == 200
        assert_problem(await person.post("/api/streams", json={"title": "No"}), 403, "kyc-required")
        assert_problem(await try_payout(person), 403, "kyc-required")


async def test_the_issue_done_when(
    performer: UserFactory,
    reviewer: UserFactory,
    viewer: UserFactory,
    kyc_db: Conn,
    kyc_settings: Settings,
) -> None:
    """A performer submits KYC over the API, a reviewer with 2FA approves it, the performer can
    then go live and request a payout; the on-disk vault holds only ciphertext (test_onboarding)."""
    person = await performer("done-when")
    sid = (await submit(person)).json()["submission_id"]
    moderator = await reviewer()
    assert (
        await moderator.post(f"/api/kyc/review/{sid}/decision", json={"decision": "approve"})
    ).status_code == 200

    created = await person.post("/api/streams", json={"title": "First show"})
    assert created.status_code == 201, created.text
    # Going live passes the KYC gate; this app has no Janus behind it (the rooms tests go live
    # for real with performers approved the same way), so what answers is the media server.
    live = await person.post(f"/api/streams/{created.json()['id']}/live")
    assert live.status_code != 403, live.text

    fan = await viewer()
    await ledger.grant_tokens(
        kyc_db, kyc_settings, user_id=fan.user_id, tokens=10_000, grant_id=uuid.uuid4().hex,
        reason="test funding", actor_id=None,
    )  # fmt: skip
    stream = await insert_stream(kyc_db, person.user_id)
    await tips.post_tip(
        kyc_db, kyc_settings, viewer_id=fan.user_id, stream_id=stream, tokens=10_000,
        message=None, private=False, idempotency_key=uuid.uuid4().hex,
    )  # fmt: skip
    payout = await try_payout(person)
    assert payout.status_code == 201, payout.text
    assert payout.json()["status"] in ("requested", "pending")


async def test_the_daily_job_expires_lapsed_verifications(
    performer: UserFactory, kyc_db: Conn
) -> None:
    lapsed, current = await performer("lapsed"), await performer("current")
    await approve_kyc(kyc_db, lapsed.user_id, expires=date.today() - timedelta(days=1))
    await approve_kyc(kyc_db, current.user_id, expires=date.today() + timedelta(days=30))
    expired = await kyc_service.expire_documents(kyc_db)
    assert lapsed.user_id in expired and current.user_id not in expired
    status = "SELECT status FROM kyc WHERE user_id = %s"
    assert await scalar(kyc_db, status, (lapsed.user_id,)) == "expired"
    assert await scalar(kyc_db, status, (current.user_id,)) == "approved"
    assert (await lapsed.get("/api/kyc/me")).json()["status"] == "expired"
    assert (
        await scalar(
            kyc_db,
            "SELECT count(*) FROM audit_logs WHERE action = 'kyc.expired' AND target_id = %s",
            (str(lapsed.user_id),),
        )
        == 1
    )
    assert lapsed.user_id not in await kyc_service.expire_documents(kyc_db)
