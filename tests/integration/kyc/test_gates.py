"""Only a performer with approved KYC (and an unexpired document) may go live or ask for a
payout: the whole path, from submission through a 2FA reviewer's approval."""

from __future__ import annotations

import uuid

import httpx

from tests.helpers import Browser, UserFactory, assert_problem
from tests.integration.kyc.conftest import submit
from tipstream.db import Conn


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
