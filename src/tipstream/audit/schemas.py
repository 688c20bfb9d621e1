from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec


class AuditEntry(msgspec.Struct, kw_only=True):
    id: int
    at: datetime
    actor_id: int | None
    action: str
    target_type: str | None
    target_id: str | None
    ip: str | None
    details: dict[str, Any]
    prev_hash: str
    hash: str


class VerifyResult(msgspec.Struct, kw_only=True):
    ok: bool
    checked: int
    broken_id: int | None = None
    reason: str | None = None
    # The last verified entry: an operator who records it off the box can later prove that
    # nothing up to it was rewritten, even by someone who recomputed every hash after it.
    head_id: int | None = None
    head_hash: str | None = None
