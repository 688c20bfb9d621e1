"""Moderation rules: cases (automated flags and viewers' reports) with evidence sealed in the
vault, the review queue, and what moderators do about a case.

Evidence is a JSON document captured at the moment of the flag or report (the stream, the
room's recent chat lines, the message, who and when), encrypted in the vault as one object, and
its SHA-256 kept on the case: what a moderator opens later is byte for byte what was captured.
"""

from __future__ import annotations

import base64
import hashlib
import time
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import msgspec
import structlog
from valkey.asyncio import Valkey

from tipstream import kv as kvmod
from tipstream.accounts import service as accounts
from tipstream.accounts.queries import UserRow
from tipstream.audit import service as audit
from tipstream.config import Settings
from tipstream.db import Conn
from tipstream.errors import Conflict, InvalidInput, NotFound, Problem
from tipstream.ledger import service as ledger
from tipstream.moderation import queries
from tipstream.moderation.queries import CaseRow
from tipstream.moderation.schemas import (
    CaseAction,
    CaseDetail,
    CaseSummary,
    Notification,
    ReportCreated,
    ReportRequest,
)
from tipstream.rooms import chat as room_chat
from tipstream.rooms import queries as rooms_queries
from tipstream.rooms import service as rooms
from tipstream.rooms.queries import StreamNotFound, StreamRow
from tipstream.rooms.sfu import Sfu
from tipstream.vault.keys import DecryptionFailed, KeyringError
from tipstream.vault.service import ObjectGone, Vault

log = structlog.get_logger("tipstream.moderation")

EVIDENCE_KIND = "moderation.evidence"
# Severity of each source's cases (1..5); a report of a stream outranks one of a message.
SEVERITY = {"chat": 2, "report_message": 2, "report_user": 3, "report_stream": 3, "hash": 5}
DEFAULT_MUTE_SECONDS = 600


class VaultUnavailable(Problem):
    status, slug, title = 503, "vault-unavailable", "Evidence vault not configured"


class EvidenceIntegrity(Problem):
    # 409 like kyc's vault-integrity: the stored evidence, not the request, is wrong (the vault
    # logs it at error level and counts it in tipstream_vault_integrity_failures_total).
    status, slug, title = 409, "evidence-integrity", "Stored evidence failed its integrity check"


class MessageNotFound(NotFound):
    title = "Chat message not found"


def open_vault(settings: Settings) -> Vault:
    try:
        return Vault.from_settings(settings)
    except KeyringError:
        raise VaultUnavailable(
            "the vault has no keys (vault_keys in the secrets dir): evidence cannot be sealed"
        ) from None


# --------------------------------------------------------------------------- evidence


def _stream_facts(stream: StreamRow) -> dict[str, Any]:
    return {
        "id": stream.id,
        "performer_id": stream.performer_id,
        "title": stream.title,
        "adult": stream.adult,
        "status": stream.status,
        "started_at": stream.started_at.isoformat() if stream.started_at else None,
    }


async def recent_chat(kv: Valkey, settings: Settings, stream_id: int) -> list[dict[str, Any]]:
    lines = await room_chat.history(kv, settings, stream_id)
    keep = settings.moderation.evidence_chat_lines
    decoded = [msgspec.json.decode(line, type=dict[str, Any]) for line in lines]
    return decoded[-keep:] if keep else []


async def seal_evidence(
    conn: Conn, settings: Settings, *, owner_id: int | None, document: dict[str, Any]
) -> tuple[UUID, bytes]:
    """Encrypt the evidence document in the vault (in the caller's transaction); returns the
    object id and the SHA-256 of the exact bytes sealed."""
    data = msgspec.json.encode(document)
    row = await open_vault(settings).put(
        conn, owner_id=owner_id, kind=EVIDENCE_KIND, content_type="application/json", data=data
    )
    return row.id, hashlib.sha256(data).digest()


async def open_evidence(conn: Conn, settings: Settings, case: CaseRow) -> bytes | None:
    """The evidence bytes, checked against the hash recorded when they were captured."""
    if case.evidence_id is None:
        return None
    try:
        _, data = await open_vault(settings).get(conn, case.evidence_id)
    except (DecryptionFailed, ObjectGone) as exc:
        raise EvidenceIntegrity(f"case {case.id}: {exc}") from None
    if hashlib.sha256(data).digest() != case.evidence_sha256:
        raise EvidenceIntegrity(f"case {case.id}: the evidence does not match its hash")
    return data


def _frame_key(settings: Settings, stream_id: int) -> str:
    return kvmod.key(settings, "moderation", "frame", stream_id)


async def keep_current_frame(kv: Valkey, settings: Settings, stream_id: int, jpeg: bytes) -> None:
    """The moderator worker's latest sampled frame of a room (JPEG), for reports; it lapses
    after three sampling intervals so a stale frame is never taken for the current one."""
    ttl = max(1, round(3 * settings.moderation.sample_interval_seconds))
    await kv.set(_frame_key(settings, stream_id), str(time.time()).encode() + b"\n" + jpeg, ex=ttl)


async def current_frame(kv: Valkey, settings: Settings, stream_id: int) -> dict[str, Any] | None:
    raw = await kv.get(_frame_key(settings, stream_id))
    if not raw:
        return None
    stamp, _, jpeg = bytes(raw).partition(b"\n")
    return {
        "jpeg_base64": base64.b64encode(jpeg).decode(),
        "sha256": hashlib.sha256(jpeg).hexdigest(),
        "sampled_at": datetime.fromtimestamp(float(stamp), UTC).isoformat(),
    }


def _now() -> str:
    return datetime.now(UTC).isoformat()


# --------------------------------------------------------------------------- flags and reports


async def flag_chat(
    conn: Conn,
    kv: Valkey,
    settings: Settings,
    stream: StreamRow,
    *,
    user_id: int,
    text: str,
    score: float,
    reason: str,
    message_id: int | None = None,
    facts: dict[str, Any] | None = None,
) -> CaseRow:
    """An automated flag on a chat message (held, its sender auto-muted, or found toxic by the
    Detoxify tier after it was published: message_id), with evidence."""
    document = {
        "kind": "chat_flag",
        "captured_at": _now(),
        "stream": _stream_facts(stream),
        "message": {
            "id": message_id, "user_id": user_id, "text": text, "score": score, "ts": time.time(),
        },
        "chat": await recent_chat(kv, settings, stream.id),
        "reason": reason,
        **({"facts": facts} if facts else {}),
    }  # fmt: skip
    async with conn.transaction():
        evidence_id, digest = await seal_evidence(
            conn, settings, owner_id=user_id, document=document
        )
        case = await queries.insert_case(
            conn,
            source="chat",
            target_type="message",
            severity=SEVERITY["chat"],
            stream_id=stream.id,
            message_id=message_id,
            subject_user_id=user_id,
            reporter_id=None,
            reason=reason,
            score=score,
            evidence_id=evidence_id,
            evidence_sha256=digest,
        )
        await audit.record(
            conn,
            "moderation.flag",
            target_type="moderation_case",
            target_id=case.id,
            details={"source": "chat", "stream_id": stream.id, "user_id": user_id},
        )
    return case


async def report(
    conn: Conn,
    kv: Valkey,
    settings: Settings,
    reporter: UserRow,
    request: ReportRequest,
    *,
    ip: str | None,
) -> ReportCreated:
    """A viewer's report; the evidence is captured now and sealed with the case."""
    stream: StreamRow | None = None
    message: dict[str, Any] | None = None
    subject: int | None = None
    if request.target in ("stream", "message") and request.stream_id is None:
        raise InvalidInput(f"a report of a {request.target} needs stream_id")
    if request.target == "message" and request.message_id is None:
        raise InvalidInput("a report of a message needs message_id")
    if request.target == "user" and request.user_id is None:
        raise InvalidInput("a report of a user needs user_id")
    if request.stream_id is not None:
        try:
            stream = await rooms_queries.get_stream(conn, request.stream_id)
        except StreamNotFound:
            raise NotFound(f"no stream {request.stream_id}") from None
        subject = stream.performer_id
    chat_lines = await recent_chat(kv, settings, stream.id) if stream else []
    if request.target == "message":
        message = next((m for m in chat_lines if m.get("id") == request.message_id), None)
        if message is None:
            raise MessageNotFound(
                f"no message {request.message_id} in the recent chat of stream {request.stream_id}"
            )
        subject = int(message["user_id"]) if "user_id" in message else None
    if request.target == "user":
        assert request.user_id is not None
        await accounts.get_user(conn, request.user_id)  # 404 for an unknown user
        subject = request.user_id
    if subject == reporter.id:
        raise InvalidInput("you cannot report yourself")
    document = {
        "kind": f"report_{request.target}",
        "captured_at": _now(),
        "reporter_id": reporter.id,
        "subject_user_id": subject,
        "reason": request.reason,
        "stream": _stream_facts(stream) if stream else None,
        "message": message,
        "chat": chat_lines,
        # The current frame, when the moderator worker watches the room.
        "frame": await current_frame(kv, settings, stream.id) if stream else None,
    }
    async with conn.transaction():
        evidence_id, digest = await seal_evidence(
            conn, settings, owner_id=subject, document=document
        )
        case = await queries.insert_case(
            conn,
            source="report",
            target_type=request.target,
            severity=SEVERITY[f"report_{request.target}"],
            stream_id=stream.id if stream else None,
            message_id=request.message_id,
            subject_user_id=subject,
            reporter_id=reporter.id,
            reason=request.reason,
            score=None,
            evidence_id=evidence_id,
            evidence_sha256=digest,
        )
        await audit.record(
            conn,
            "moderation.report",
            actor_id=reporter.id,
            target_type="moderation_case",
            target_id=case.id,
            ip=ip,
            details={"target": request.target, "subject_user_id": subject},
        )
    return ReportCreated(id=case.id, evidence_sha256=digest.hex())


# --------------------------------------------------------------------------- the queue


def summary(case: CaseRow) -> CaseSummary:
    age = int((datetime.now(UTC) - case.created_at).total_seconds())
    return CaseSummary(
        id=case.id,
        source=case.source,
        target_type=case.target_type,
        severity=case.severity,
        status=case.status,
        stream_id=case.stream_id,
        message_id=case.message_id,
        subject_user_id=case.subject_user_id,
        reporter_id=case.reporter_id,
        reason=case.reason,
        score=case.score,
        evidence_sha256=case.evidence_sha256.hex() if case.evidence_sha256 else None,
        resolution=case.resolution,
        created_at=case.created_at,
        age_seconds=max(age, 0),
    )


async def queue(conn: Conn, *, status: str, limit: int) -> list[CaseSummary]:
    statuses = ["open", "escalated"] if status == "pending" else [status]
    cases = [summary(c) for c in await queries.queue(conn, statuses=statuses, limit=limit)]
    ids = [i for c in cases for i in (c.subject_user_id, c.reporter_id) if i is not None]
    names = await accounts.display_names(conn, ids)
    for case in cases:
        case.subject_name = names.get(case.subject_user_id or 0)
        case.reporter_name = names.get(case.reporter_id or 0)
    return cases


async def detail(
    conn: Conn, settings: Settings, case_id: int, *, actor_id: int | None, ip: str | None
) -> CaseDetail:
    """A case with its decrypted evidence; opening evidence is audited."""
    case = await queries.get_case(conn, case_id)
    unavailable = None
    try:
        data = await open_evidence(conn, settings, case)
    except VaultUnavailable as exc:
        # The case is still worth showing; the operator fixes the vault to see its evidence.
        data, unavailable = None, exc.detail
    if data is not None:
        await audit.record(
            conn,
            "moderation.evidence_view",
            actor_id=actor_id,
            target_type="moderation_case",
            target_id=case.id,
            ip=ip,
        )
    actions = [
        CaseAction(action=a.action, actor_id=a.actor_id, note=a.note, created_at=a.created_at)
        for a in await queries.actions_of(conn, case_id)
    ]
    return CaseDetail(
        case=summary(case),
        actions=actions,
        evidence=data.decode() if data is not None else None,
        evidence_unavailable=unavailable,
    )


# --------------------------------------------------------------------------- actions

NOTICES = {
    "warn": "A moderator warned you about {what}: {note}",
    "delete_message": "A moderator deleted your chat message in stream {stream}: {note}",
    "mute": "You are muted in stream {stream}'s chat for {seconds} seconds: {note}",
    "ban": "You are banned from this performer's room (stream {stream}): {note}",
    "suspend": "Your account is suspended: {note}",
    "end_stream": "A moderator ended your stream {stream}: {note}",
    "freeze_payouts": "Your payouts are on hold while a moderator reviews your account: {note}",
    "unfreeze_payouts": "Your payouts are released: {note}",
    "hide": "Your stream {stream} is hidden from the room listings while a moderator reviews "
    "it (viewers in your room can stay): {note}",
    "unhide": "Your stream {stream} is listed again: {note}",
}
# Actions that undo an earlier one: they may follow on a closed case (the case stays closed).
REVERSALS = frozenset({"unhide", "unfreeze_payouts"})


async def act(
    conn: Conn,
    kv: Valkey,
    sfu: Sfu | None,
    settings: Settings,
    case_id: int,
    action: str,
    *,
    actor: UserRow | None,
    note: str | None,
    seconds: int | None = None,
    ip: str | None = None,
) -> CaseSummary:
    """Do one action on a case, record it and tell the affected user. Every action but
    escalate closes the case; a closed case takes no more actions but the reversals (unhide,
    unfreeze_payouts)."""
    case = await queries.get_case(conn, case_id)
    if case.status == "closed" and action not in REVERSALS:
        raise Conflict(f"case {case_id} is closed ({case.resolution})")
    actor_id = actor.id if actor else None
    subject = case.subject_user_id
    stream = await _stream_of(conn, case)
    why = note or case.reason
    if action in ("mute", "ban", "delete_message", "release") and stream is None:
        raise InvalidInput(f"{action} needs a case about a room (this one has no stream)")
    if action in ("hide", "unhide"):
        if stream is None:
            raise InvalidInput(f"{action} needs a case about a stream")
        subject = stream.performer_id
    freezes = ("freeze_payouts", "unfreeze_payouts")
    if action in ("warn", "mute", "ban", "suspend", *freezes) and subject is None:
        raise InvalidInput(f"{action} needs a case about a user")
    if action == "delete_message":
        if case.message_id is None:
            raise InvalidInput("this case is not about a published chat message")
        assert stream is not None
        await room_chat.mark_deleted(kv, settings, stream.id, case.message_id)
        await rooms.publish_room_event(
            kv, settings, stream.id, {"type": "deleted", "message_id": case.message_id}
        )
    elif action == "release":
        await _release_held(conn, kv, settings, case)
    elif action == "mute":
        assert stream is not None and subject is not None
        seconds = seconds or DEFAULT_MUTE_SECONDS
        await room_chat.mute(kv, settings, stream.id, subject, seconds)
        await rooms.publish_room_event(
            kv, settings, stream.id, {"type": "muted", "user_id": subject, "seconds": seconds}
        )
    elif action == "ban":
        assert stream is not None and subject is not None
        if subject == stream.performer_id:
            raise InvalidInput("the performer cannot be banned from their own room")
        await rooms_queries.upsert_ban(
            conn,
            performer_id=stream.performer_id,
            user_id=subject,
            banned_by=actor_id,
            reason=why,
            expires_at=None,
        )
        await rooms.publish_room_event(
            kv, settings, stream.id, {"type": "banned", "user_id": subject}
        )
    elif action == "suspend":
        assert subject is not None
        await accounts.set_disabled(
            conn, kv, settings, subject, reason=f"moderation case {case.id}: {why}",
            actor_id=actor_id, ip=ip,
        )  # fmt: skip
    elif action == "end_stream":
        if stream is None:
            raise InvalidInput("end_stream needs a case about a stream")
        if stream.status != "live":
            raise Conflict(f"stream {stream.id} is {stream.status}")
        if sfu is None:
            raise InvalidInput("ending a stream needs the SFU")
        await rooms.end_stream(
            conn, sfu, kv, settings, actor, stream.id, reason=f"moderation: {why}", ip=ip
        )
        subject = stream.performer_id
    elif action in freezes:
        assert subject is not None
        await ledger.set_earnings_frozen(
            conn, subject, frozen=action == "freeze_payouts", reason=f"moderation case {case.id}",
            actor_id=actor_id, ip=ip,
        )  # fmt: skip
    async with conn.transaction():
        if action in ("hide", "unhide"):
            assert stream is not None
            hidden = f"moderation case {case.id}: {why}" if action == "hide" else None
            await queries.set_stream_hidden(conn, stream.id, reason=hidden)
        await queries.get_case(conn, case_id, for_update=True)
        await queries.insert_action(
            conn, case_id=case_id, action=action, actor_id=actor_id, note=note
        )
        status = "escalated" if action == "escalate" else "closed"
        resolved = await queries.resolve_case(
            conn, case_id, status=status, resolution=action, resolved_by=actor_id
        )
        template = NOTICES.get(action)
        if template is not None and subject is not None:
            body = template.format(
                what=f"case {case.id} ({case.target_type})",
                stream=case.stream_id,
                seconds=seconds,
                note=why,
            )
            await queries.insert_notification(
                conn, user_id=subject, kind=f"moderation.{action}", body=body[:1000],
                case_id=case.id,
            )  # fmt: skip
        await audit.record(
            conn,
            f"moderation.{action}",
            actor_id=actor_id,
            target_type="moderation_case",
            target_id=case.id,
            ip=ip,
            details={"subject_user_id": subject, "stream_id": case.stream_id, "note": note or ""},
        )
    return summary(resolved)


async def _stream_of(conn: Conn, case: CaseRow) -> StreamRow | None:
    if case.stream_id is None:
        return None
    return await rooms_queries.get_stream(conn, case.stream_id)


async def _release_held(conn: Conn, kv: Valkey, settings: Settings, case: CaseRow) -> None:
    """Publish a held chat message after all, as its sender wrote it."""
    data = await open_evidence(conn, settings, case)
    document = msgspec.json.decode(data or b"{}", type=dict[str, Any])
    if case.source != "chat" or document.get("reason") != "held" or case.stream_id is None:
        raise InvalidInput("only a held chat message can be released")
    message = document["message"]
    user = await accounts.get_user(conn, int(message["user_id"]))
    await room_chat.publish_sequenced(
        kv,
        settings,
        case.stream_id,
        {
            "type": "chat",
            "user_id": user.id,
            "name": user.display_name,
            "performer": False,
            "text": message["text"],
            "ts": round(time.time(), 3),
        },
    )


async def notifications(conn: Conn, user_id: int, *, limit: int = 50) -> list[Notification]:
    return [
        Notification(id=n.id, kind=n.kind, body=n.body, case_id=n.case_id, created_at=n.created_at)
        for n in await queries.notifications_of(conn, user_id, limit=limit)
    ]


async def flag_video(
    conn: Conn,
    kv: Valkey,
    settings: Settings,
    stream: StreamRow,
    *,
    source: str,
    reason: str,
    score: float | None,
    frame_jpeg: bytes,
    facts: dict[str, Any],
    hide: bool = False,
) -> CaseRow:
    """An automated flag from the moderator worker (NudeNet or a hash-list match), with the
    frame (JPEG, base64) and the detections as evidence. hide: the room's video policy also
    hides the stream from the listings (in the same transaction; audited, the performer told);
    the case stays open for a moderator to confirm or unhide."""
    document = {
        "kind": f"video_{source}",
        "captured_at": _now(),
        "stream": _stream_facts(stream),
        "frame_jpeg_base64": base64.b64encode(frame_jpeg).decode(),
        "frame_sha256": hashlib.sha256(frame_jpeg).hexdigest(),
        "facts": facts,
        "chat": await recent_chat(kv, settings, stream.id),
        "reason": reason,
    }
    async with conn.transaction():
        evidence_id, digest = await seal_evidence(
            conn, settings, owner_id=stream.performer_id, document=document
        )
        case = await queries.insert_case(
            conn,
            source=source,
            target_type="stream",
            severity=SEVERITY["hash"] if source == "hash" else 4,
            stream_id=stream.id,
            message_id=None,
            subject_user_id=stream.performer_id,
            reporter_id=None,
            reason=reason[:500],
            score=score,
            evidence_id=evidence_id,
            evidence_sha256=digest,
        )
        await audit.record(
            conn,
            "moderation.flag",
            target_type="moderation_case",
            target_id=case.id,
            details={"source": source, "stream_id": stream.id},
        )
        if hide:
            await queries.set_stream_hidden(
                conn, stream.id, reason=f"moderation case {case.id}: {reason}"
            )
            body = NOTICES["hide"].format(stream=stream.id, note=reason)
            await queries.insert_notification(
                conn, user_id=stream.performer_id, kind="moderation.hide", body=body[:1000],
                case_id=case.id,
            )  # fmt: skip
            await audit.record(
                conn,
                "moderation.hide",
                target_type="moderation_case",
                target_id=case.id,
                details={"subject_user_id": stream.performer_id, "stream_id": stream.id,
                         "policy": "video"},
            )  # fmt: skip
    return case
