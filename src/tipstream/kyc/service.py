"""KYC rules: onboarding submissions, the automatic checks, the review decisions, who may
publish and be paid, retention purges. The HTTP routes and tipctl both call these functions;
every view of personal data and every decision is written to the audit log."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any
from uuid import UUID

import msgspec

from tipstream.accounts import queries as accounts_queries
from tipstream.accounts.service import Underage, age_on
from tipstream.audit import service as audit
from tipstream.config import Settings
from tipstream.db import Conn
from tipstream.errors import Conflict, Forbidden, InvalidInput, NotFound, Problem
from tipstream.kyc import checks, mrz, ocr, queries, uploads
from tipstream.kyc.mrz import MrzError
from tipstream.kyc.queries import SubmissionNotFound, SubmissionRow
from tipstream.kyc.schemas import (
    KycState,
    MrzSuggestion,
    StoredForm,
    SubmissionDetail,
    SubmissionForm,
    SubmissionSummary,
)
from tipstream.vault.keys import DecryptionFailed, KeyringError
from tipstream.vault.service import ObjectGone, Vault
from tipstream.vault.storage import StorageUnavailable

IMAGE_FIELDS = ("front", "back", "selfie")
OPEN_STATUSES = frozenset({"submitted"})
FORM_KIND = "kyc.form"


class KycRequired(Forbidden):
    slug, title = "kyc-required", "Approved identity verification required"


class KycState409(Conflict):
    slug, title = "kyc-state", "The verification is not in a state that allows this"


class InvalidMrz(InvalidInput):
    slug, title = "invalid-mrz", "Invalid MRZ"


class DocumentExpired(InvalidInput):
    slug, title = "document-expired", "The identity document has expired"


class VaultUnavailable(Problem):
    status, slug, title = 503, "vault-unavailable", "Document vault not configured"


class VaultIntegrity(Conflict):
    """The request is fine; the stored object is not what was sealed (tampered, swapped or
    corrupted). 409: the resource's current state prevents serving it. The vault logs it at error
    level and counts it (tipstream_vault_integrity_failures_total); read_object audits it."""

    slug, title = "vault-integrity", "A stored document failed its integrity check"


class ImageNotFound(NotFound):
    title = "No such image in this submission"


def today() -> date:
    return datetime.now(UTC).date()


def open_vault(settings: Settings) -> Vault:
    try:
        return Vault.from_settings(settings)
    except KeyringError as exc:
        raise VaultUnavailable(str(exc)) from None


def _index(settings: Settings, form: SubmissionForm) -> str:
    try:
        return checks.document_index(
            settings, form.document_type, form.country, form.document_number
        )
    except checks.IndexKeyMissing as exc:
        raise VaultUnavailable(str(exc)) from None


# --------------------------------------------------------------------------- the performer


async def state(conn: Conn, settings: Settings, user_id: int) -> KycState:
    row = await queries.kyc_of(conn, user_id)
    submission = None
    if row is not None and row.submission_id is not None:
        submission = await queries.get_submission(conn, row.submission_id)
    status = "not_started" if row is None else row.status
    expires = None if row is None else row.document_expires_on
    if status == "approved" and expires is not None and expires < today():
        status = "expired"
    return KycState(
        status=status,  # type: ignore[arg-type]
        submission_id=None if row is None else row.submission_id,
        reason=None if row is None else row.reason,
        submitted_at=None if submission is None else submission.submitted_at,
        decided_at=None if submission is None else submission.decided_at,
        document_expires_on=expires,
        may_publish=status == "approved",
        agreement_version=settings.kyc.agreement_version,
    )


async def is_approved(conn: Conn, user_id: int) -> bool:
    """Approved KYC whose document has not expired: what publishing and payouts need."""
    row = await queries.kyc_of(conn, user_id)
    if row is None or row.status != "approved":
        return False
    return row.document_expires_on is None or row.document_expires_on >= today()


async def require_approved(conn: Conn, user_id: int) -> None:
    if not await is_approved(conn, user_id):
        raise KycRequired(
            "verify your identity first (POST /api/kyc/submission) and wait for approval; "
            "an expired document needs a new submission"
        )


def parse_form(fields: dict[str, Any]) -> SubmissionForm:
    try:
        form = msgspec.convert(fields, SubmissionForm, strict=False)
    except msgspec.ValidationError as exc:
        raise InvalidInput(str(exc)) from None
    return msgspec.structs.replace(
        form, country=form.country.upper(), legal_name=" ".join(form.legal_name.split())
    )


async def submit(
    conn: Conn,
    settings: Settings,
    *,
    user_id: int,
    form: SubmissionForm,
    files: dict[str, bytes],
    ip: str | None,
) -> KycState:
    """Check and store one onboarding submission. A date of birth under the minimum age is
    rejected at once (recorded and audited, no images kept) and answered with 422."""
    vault = open_vault(settings)
    now = datetime.now(UTC)
    day = now.date()
    if form.agreement_version != settings.kyc.agreement_version:
        raise InvalidInput(
            f"accept the current performer agreement (version {settings.kyc.agreement_version})"
        )
    if not form.accept_agreement:
        raise InvalidInput("accept_agreement must be true")
    if form.date_of_birth >= day:
        raise InvalidInput("date_of_birth must be in the past")
    unknown = set(files) - set(IMAGE_FIELDS)
    if unknown:
        raise InvalidInput(f"unknown file fields: {', '.join(sorted(unknown))}")
    needed = ["front", "selfie"] + ([] if form.document_type == "passport" else ["back"])
    missing = [name for name in needed if name not in files]
    if missing:
        raise InvalidInput(f"missing images: {', '.join(missing)}")
    flags: list[str] = []
    found: dict[str, Any] = {}
    # The age is judged on the youngest date of birth the document data gives.
    born = form.date_of_birth
    if form.mrz and form.mrz.strip():
        try:
            mrz_flags, mrz_checks = checks.mrz_findings(form, form.mrz, day)
            born = max(born, mrz.parse(form.mrz, today=day).birth_date)
        except MrzError as exc:
            raise InvalidMrz(f"mrz: {exc}") from None
        flags += mrz_flags
        found.update(mrz_checks)
    index = _index(settings, form)
    user = await accounts_queries.user_by_id(conn, user_id)
    stored = StoredForm(
        legal_name=form.legal_name,
        date_of_birth=form.date_of_birth,
        country=form.country,
        document_type=form.document_type,
        document_number=form.document_number,
        document_expiry=form.document_expiry,
        agreement_version=form.agreement_version,
        agreement_accepted_at=now,
        mrz=form.mrz,
    )
    minimum = checks.minimum_age(settings, form.country)
    if not checks.is_old_enough(settings, born, form.country, day):
        age = age_on(born, day)
        await _reject_underage(conn, vault, user_id, form, stored, index, minimum, age, ip)
        raise Underage(
            f"performers must be at least {minimum} years old in {form.country}; "
            "the submission was rejected"
        )
    if form.document_expiry < day:
        raise DocumentExpired(f"the document expired on {form.document_expiry.isoformat()}")
    if user.date_of_birth != form.date_of_birth:
        flags.append("dob_differs_from_registration")
    images = {
        name: await asyncio.to_thread(uploads.sanitize_image, files[name], settings.kyc, field=name)
        for name in IMAGE_FIELDS
        if name in files
    }
    written: list[UUID] = []
    try:
        await _insert_submission(
            conn, settings, vault, user_id, form, stored, images, index, flags, found, minimum,
            now, written, ip,
        )  # fmt: skip
    except BaseException:
        # The transaction rolled back: the ciphertext written for it has no key anywhere.
        for object_id in written:
            await vault.remove_ciphertext(object_id)
        raise
    return await state(conn, settings, user_id)


async def _insert_submission(
    conn: Conn,
    settings: Settings,
    vault: Vault,
    user_id: int,
    form: SubmissionForm,
    stored: StoredForm,
    images: dict[str, bytes],
    index: str,
    flags: list[str],
    found: dict[str, Any],
    minimum: int,
    now: datetime,
    written: list[UUID],
    ip: str | None,
) -> None:
    day = now.date()
    async with conn.transaction():
        kyc = await queries.ensure_kyc_row(conn, user_id)
        if kyc.status == "submitted":
            raise KycState409("a submission is already waiting for review")
        if kyc.status == "approved" and await is_approved(conn, user_id):
            raise KycState409("your identity is already verified")
        others = await queries.users_with_document(conn, index, except_user=user_id)
        if others:
            flags.append("duplicate_document")
            found["duplicate_document_users"] = others
        found["age"] = {"minimum": minimum, "age": age_on(form.date_of_birth, day)}
        objects = await _store(conn, vault, user_id, stored, images, written)
        submission = await queries.insert_submission(
            conn,
            user_id=user_id,
            status="submitted",
            country=form.country,
            document_type=form.document_type,
            document_expires_on=form.document_expiry,
            document_index=index,
            agreement_version=form.agreement_version,
            agreement_accepted_at=now,
            flags=flags,
            checks=found,
            decision_reason=None,
            **objects,
        )
        await queries.set_kyc_state(
            conn,
            user_id,
            status="submitted",
            submission_id=submission.id,
            reason=None,
            reviewed_by=None,
            document_expires_on=form.document_expiry,
            reviewed=False,
        )
        await audit.record(
            conn,
            "kyc.submit",
            actor_id=user_id,
            target_type="kyc_submission",
            target_id=submission.id,
            ip=ip,
            details={
                "flags": flags,
                "document_type": form.document_type,
                "country": form.country,
                "agreement_version": form.agreement_version,
            },
        )


async def _store(
    conn: Conn,
    vault: Vault,
    user_id: int,
    stored: StoredForm,
    images: dict[str, bytes],
    written: list[UUID] | None = None,
) -> dict[str, UUID | None]:
    """Put the form and the images in the vault; their ids go to `written` as they land."""
    written = [] if written is None else written
    form_row = await vault.put(
        conn,
        owner_id=user_id,
        kind=FORM_KIND,
        content_type="application/json",
        data=msgspec.json.encode(stored),
    )
    written.append(form_row.id)
    objects: dict[str, UUID | None] = {"form_object": form_row.id}
    for name in IMAGE_FIELDS:
        row = None
        if name in images:
            row = await vault.put(
                conn,
                owner_id=user_id,
                kind=f"kyc.{name}",
                content_type=uploads.OUTPUT_TYPE,
                data=images[name],
            )
            written.append(row.id)
        objects[f"{name}_object"] = None if row is None else row.id
    return objects


async def _reject_underage(
    conn: Conn,
    vault: Vault,
    user_id: int,
    form: SubmissionForm,
    stored: StoredForm,
    index: str,
    minimum: int,
    age: int,
    ip: str | None,
) -> None:
    reason = f"under the minimum age of {minimum} for {form.country}"
    async with conn.transaction():
        kyc = await queries.ensure_kyc_row(conn, user_id)
        objects = await _store(conn, vault, user_id, stored, {})
        submission = await queries.insert_submission(
            conn,
            user_id=user_id,
            status="rejected",
            country=form.country,
            document_type=form.document_type,
            document_expires_on=form.document_expiry,
            document_index=index,
            agreement_version=form.agreement_version,
            agreement_accepted_at=stored.agreement_accepted_at,
            flags=["underage"],
            checks={"age": {"minimum": minimum, "age": age}},
            decision_reason=reason,
            **objects,
        )
        # An approved performer stays approved and an open application stays open for its
        # reviewer (who sees this attempt next to it): only the record changes then.
        if kyc.status not in ("approved", "submitted"):
            await queries.set_kyc_state(
                conn,
                user_id,
                status="rejected",
                submission_id=submission.id,
                reason=reason,
                reviewed_by=None,
                document_expires_on=None,
                reviewed=True,
            )
        await audit.record(
            conn,
            "kyc.reject_underage",
            actor_id=user_id,
            target_type="kyc_submission",
            target_id=submission.id,
            ip=ip,
            details={"minimum_age": minimum, "country": form.country, "automatic": True},
        )


# --------------------------------------------------------------------------- reviewers


def summary(row: SubmissionRow) -> SubmissionSummary:
    return SubmissionSummary(
        id=row.id,
        user_id=row.user_id,
        status=row.status,
        country=row.country,
        document_type=row.document_type,
        document_expires_on=row.document_expires_on,
        flags=list(row.flags),
        submitted_at=row.submitted_at,
        decided_at=row.decided_at,
        decision_reason=row.decision_reason,
        purged=row.purged_at is not None,
    )


async def queue(
    conn: Conn,
    *,
    status: str | None = "submitted",
    user_id: int | None = None,
    limit: int = 50,
    after_id: int = 0,
) -> list[SubmissionSummary]:
    rows = await queries.list_submissions(
        conn, status=status, user_id=user_id, limit=limit, after_id=after_id
    )
    return [summary(r) for r in rows]


async def read_object(conn: Conn, vault: Vault, object_id: UUID) -> bytes:
    try:
        _, data = await vault.get(conn, object_id)
    except DecryptionFailed as exc:
        await audit.record(
            conn,
            "vault.integrity_failure",
            target_type="vault_object",
            target_id=str(object_id),
            details={"error": str(exc)},
        )
        raise VaultIntegrity(str(exc)) from None
    except KeyringError as exc:
        raise VaultUnavailable(str(exc)) from None
    return data


async def detail(
    conn: Conn, settings: Settings, submission_id: int, *, actor_id: int | None, ip: str | None
) -> SubmissionDetail:
    """One submission with its decrypted form; the view is audited before anything is shown."""
    row = await queries.get_submission(conn, submission_id)
    vault = open_vault(settings)
    await audit.record(
        conn,
        "kyc.view",
        actor_id=actor_id,
        target_type="kyc_submission",
        target_id=row.id,
        ip=ip,
        details={"user_id": row.user_id},
    )
    form = None
    if row.purged_at is None and row.form_object is not None:
        try:
            data = await read_object(conn, vault, row.form_object)
            form = msgspec.json.decode(data, type=StoredForm)
        except ObjectGone:
            form = None
    return SubmissionDetail(
        id=row.id,
        user_id=row.user_id,
        user_email=await queries.user_email(conn, row.user_id),
        status=row.status,
        form=form,
        flags=list(row.flags),
        checks=row.checks,
        images=[] if row.purged_at else sorted(row.image_objects),
        submitted_at=row.submitted_at,
        decided_at=row.decided_at,
        decided_by=row.decided_by,
        decision_reason=row.decision_reason,
        purged=row.purged_at is not None,
    )


async def image(
    conn: Conn,
    settings: Settings,
    submission_id: int,
    name: str,
    *,
    actor_id: int | None,
    ip: str | None,
) -> tuple[str, bytes]:
    """(content type, bytes) of one decrypted image; the view is audited."""
    row = await queries.get_submission(conn, submission_id)
    object_id = row.image_objects.get(name)
    if object_id is None or row.purged_at is not None:
        raise ImageNotFound(f"submission {submission_id} has no {name} image")
    vault = open_vault(settings)
    await audit.record(
        conn,
        "kyc.view_image",
        actor_id=actor_id,
        target_type="kyc_submission",
        target_id=row.id,
        ip=ip,
        details={"image": name, "user_id": row.user_id},
    )
    try:
        data = await read_object(conn, vault, object_id)
    except ObjectGone:
        raise ImageNotFound(f"the {name} image of submission {submission_id} is gone") from None
    return uploads.OUTPUT_TYPE, data


DECISION_STATUS = {
    "approve": "approved",
    "reject": "rejected",
    "needs_resubmission": "needs_resubmission",
}


async def decide(
    conn: Conn,
    submission_id: int,
    decision: str,
    *,
    reason: str | None,
    actor_id: int | None,
    ip: str | None,
) -> SubmissionSummary:
    """Approve, reject or send back one submitted application; the performer sees the outcome
    (and the reason) at GET /api/kyc/me."""
    if decision not in DECISION_STATUS:
        raise InvalidInput("decision must be approve, reject or needs_resubmission")
    if decision != "approve" and not (reason and reason.strip()):
        raise InvalidInput("a rejection or a request to resubmit needs a reason")
    status = DECISION_STATUS[decision]
    async with conn.transaction():
        row = await queries.get_submission(conn, submission_id, for_update=True)
        if actor_id is not None and row.user_id == actor_id:
            raise Forbidden("you cannot review your own submission")
        if row.status != "submitted":
            raise KycState409(f"submission {submission_id} is already {row.status}")
        if decision == "approve" and row.document_expires_on < today():
            raise DocumentExpired("the document has expired since it was submitted")
        row = await queries.decide_submission(
            conn, submission_id, status=status, decided_by=actor_id, reason=reason
        )
        await queries.ensure_kyc_row(conn, row.user_id)
        await queries.set_kyc_state(
            conn,
            row.user_id,
            status=status,
            submission_id=row.id,
            reason=reason,
            reviewed_by=actor_id,
            document_expires_on=row.document_expires_on,
            reviewed=True,
        )
        await audit.record(
            conn,
            f"kyc.{decision}",
            actor_id=actor_id,
            target_type="kyc_submission",
            target_id=row.id,
            ip=ip,
            details={"user_id": row.user_id, "reason": reason, "flags": list(row.flags)},
        )
    return summary(row)


async def _stored_form(conn: Conn, vault: Vault, form_object: UUID) -> SubmissionForm:
    stored = msgspec.json.decode(await read_object(conn, vault, form_object), type=StoredForm)
    return SubmissionForm(
        legal_name=stored.legal_name,
        date_of_birth=stored.date_of_birth,
        country=stored.country,
        document_type=stored.document_type,  # type: ignore[arg-type]
        document_number=stored.document_number,
        document_expiry=stored.document_expiry,
        agreement_version=stored.agreement_version,
        accept_agreement=True,
    )


async def mrz_suggestion(
    conn: Conn, settings: Settings, submission_id: int, *, actor_id: int | None, ip: str | None
) -> MrzSuggestion:
    """The MRZ OCR reads off the front (then back) image, validated by its check digits and
    cross-checked against the form: a suggestion the reviewer confirms with check_mrz. Reading
    the documents is a view of personal data, so it is audited."""
    row = await queries.get_submission(conn, submission_id)
    if row.purged_at is not None or row.form_object is None:
        raise KycState409("the submission was purged")
    if ocr.tesseract() is None:
        return MrzSuggestion(
            ocr_available=False,
            found=False,
            note="OCR (tesseract) is not installed on this host: type the MRZ",
        )
    vault = open_vault(settings)
    await audit.record(
        conn,
        "kyc.ocr",
        actor_id=actor_id,
        target_type="kyc_submission",
        target_id=row.id,
        ip=ip,
        details={"user_id": row.user_id},
    )
    form = await _stored_form(conn, vault, row.form_object)
    for name in ("front", "back"):
        object_id = row.image_objects.get(name)
        if object_id is None:
            continue
        try:
            data = await read_object(conn, vault, object_id)
            reading = await asyncio.to_thread(ocr.read_mrz, data, today=today())
        except ObjectGone:
            continue
        except ocr.OcrUnavailable:
            break
        if reading is not None:
            return MrzSuggestion(
                ocr_available=True,
                found=True,
                mrz=reading.text,
                image=name,
                corrections=reading.corrections,
                unconfirmed_corrections=reading.unconfirmed,
                fields=reading.parsed,
                mismatches=checks.cross_check(form, reading.parsed),
            )
    return MrzSuggestion(
        ocr_available=True,
        found=False,
        note="no MRZ with valid check digits was read off the images: type it",
    )


async def check_mrz(
    conn: Conn,
    settings: Settings,
    submission_id: int,
    text: str,
    *,
    actor_id: int | None,
    ip: str | None,
) -> SubmissionSummary:
    """A reviewer types the MRZ they read off the image: it is validated and cross-checked
    against the form, and the findings join the submission's flags."""
    row = await queries.get_submission(conn, submission_id)
    if row.purged_at is not None or row.form_object is None:
        raise KycState409("the submission was purged")
    form = await _stored_form(conn, open_vault(settings), row.form_object)
    try:
        flags, found = checks.mrz_findings(form, text, today())
    except MrzError as exc:
        raise InvalidMrz(f"mrz: {exc}") from None
    async with conn.transaction():
        row = await queries.get_submission(conn, submission_id, for_update=True)
        kept = [f for f in row.flags if not f.startswith("mrz_")]
        merged = {**row.checks, **found, "mrz_typed_by": actor_id}
        await queries.update_checks(conn, row.id, flags=kept + flags, checks=merged)
        await audit.record(
            conn,
            "kyc.mrz_check",
            actor_id=actor_id,
            target_type="kyc_submission",
            target_id=row.id,
            ip=ip,
            details={"flags": flags},
        )
    return summary(await queries.get_submission(conn, submission_id))


# --------------------------------------------------------------------------- retention


@dataclass(frozen=True)
class PurgeResult:
    submissions: list[int]
    objects_shredded: int
    failed: int


async def purge(
    conn: Conn,
    settings: Settings,
    *,
    dry_run: bool = False,
    progress: Callable[[int, int], None] | None = None,
    actor_id: int | None = None,
) -> PurgeResult:
    """Crypto-shred the objects of submissions past their retention (settings.kyc) and mark the
    submissions purged; each purge is audited. The summary rows stay (no personal data)."""
    rows = await queries.purgeable_submissions(
        conn,
        rejected_days=settings.kyc.rejected_retention_days,
        closed_days=settings.kyc.closed_account_retention_days,
        limit=100_000,
    )
    if dry_run:
        return PurgeResult([r.id for r in rows], 0, 0)
    vault = open_vault(settings)
    shredded = failed = 0
    done: list[int] = []
    if progress:
        progress(0, len(rows))
    for number, row in enumerate(rows, 1):
        try:
            async with conn.transaction():
                count = 0
                for object_id in row.objects:
                    count += await vault.shred(conn, object_id)
                await queries.mark_purged(conn, row.id)
                await audit.record(
                    conn,
                    "kyc.purge",
                    actor_id=actor_id,
                    target_type="kyc_submission",
                    target_id=row.id,
                    details={"user_id": row.user_id, "status": row.status, "objects": count},
                )
            shredded += count
            done.append(row.id)
            for object_id in row.objects:
                await vault.remove_ciphertext(object_id)
        except (OSError, StorageUnavailable):
            # Keys already destroyed are destroyed (the leftover ciphertext is noise); counted
            # so the operator sees that storage needs a look.
            failed += 1
        if progress:
            progress(number, len(rows))
    return PurgeResult(done, shredded, failed)


async def expire_documents(conn: Conn) -> list[int]:
    """Approved verifications past their document's expiry become 'expired' (audited)."""
    async with conn.transaction():
        users = await queries.expire_documents(conn)
        for user_id in users:
            await audit.record(conn, "kyc.expired", target_type="user", target_id=user_id)
    return users


__all__ = ["ObjectGone", "SubmissionNotFound"]
