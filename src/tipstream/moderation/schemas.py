"""Requests and responses of the moderation API."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec

PositiveId = Annotated[int, msgspec.Meta(gt=0, le=2**63 - 1)]
Reason = Annotated[str, msgspec.Meta(min_length=1, max_length=500)]
Note = Annotated[str, msgspec.Meta(max_length=500)]
ReportTarget = Literal["stream", "message", "user"]
Action = Literal[
    "dismiss",
    "warn",
    "release",
    "delete_message",
    "mute",
    "ban",
    "suspend",
    "hide",
    "unhide",
    "end_stream",
    "freeze_payouts",
    "unfreeze_payouts",
    "escalate",
]
ACTIONS: tuple[str, ...] = Action.__args__  # type: ignore[attr-defined]


class ReportRequest(msgspec.Struct, forbid_unknown_fields=True):
    """Report a stream, a chat message (stream_id + message_id) or a user (user_id, and the
    stream_id of the room you saw them in, if any)."""

    target: ReportTarget
    reason: Reason
    stream_id: PositiveId | None = None
    message_id: PositiveId | None = None
    user_id: PositiveId | None = None


class ActionRequest(msgspec.Struct, forbid_unknown_fields=True):
    action: Action
    note: Note | None = None
    # For mute: how long (default 10 minutes).
    seconds: Annotated[int, msgspec.Meta(ge=1, le=30 * 24 * 3600)] | None = None


class CaseSummary(msgspec.Struct):
    id: int
    source: str
    target_type: str
    severity: int
    status: str
    stream_id: int | None
    message_id: int | None
    subject_user_id: int | None
    reporter_id: int | None
    reason: str
    score: float | None
    evidence_sha256: str | None
    resolution: str | None
    created_at: datetime
    age_seconds: int
    # Display names, so a moderator sees who rather than a bare id (queue listings only).
    subject_name: str | None = None
    reporter_name: str | None = None


class CaseAction(msgspec.Struct):
    action: str
    actor_id: int | None
    note: str | None
    created_at: datetime


class CaseDetail(msgspec.Struct):
    case: CaseSummary
    actions: list[CaseAction]
    # The decrypted evidence document (JSON), exactly as captured; its SHA-256 is
    # case.evidence_sha256.
    evidence: str | None
    # Why the evidence cannot be shown (e.g. the vault has no keys on this host), if so.
    evidence_unavailable: str | None = None


class ReportCreated(msgspec.Struct):
    id: int
    evidence_sha256: str


class Notification(msgspec.Struct):
    id: int
    kind: str
    body: str
    case_id: int | None
    created_at: datetime
