"""The hash-chained audit log: append inside the caller's transaction, verify the whole chain.

Each entry's hash is SHA-256 over the previous entry's hash and the entry's own fields in a
canonical JSON form, so editing, deleting or reordering any row breaks the chain at that row.
Details must hold JSON strings, integers, booleans, lists and objects (no floats), which
round-trip through jsonb unchanged.
"""

from __future__ import annotations

import hashlib
import json
from contextlib import aclosing
from datetime import UTC, datetime
from typing import Any, NamedTuple

from tipstream.audit import queries
from tipstream.audit.schemas import AuditEntry, VerifyResult
from tipstream.db import Conn

GENESIS_HASH = "0" * 64


def entry_hash(
    prev_hash: str,
    *,
    at: datetime,
    actor_id: int | None,
    action: str,
    target_type: str | None,
    target_id: str | None,
    ip: str | None,
    details: dict[str, Any],
) -> str:
    canonical = json.dumps(
        [
            at.astimezone(UTC).isoformat(),
            actor_id,
            action,
            target_type,
            target_id,
            ip,
            details,
        ],
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256((prev_hash + canonical).encode()).hexdigest()


async def record(
    conn: Conn,
    action: str,
    *,
    actor_id: int | None = None,
    target_type: str | None = None,
    target_id: str | int | None = None,
    ip: str | None = None,
    details: dict[str, Any] | None = None,
) -> AuditEntry:
    """Append one entry. Call inside the transaction of the change it records."""
    details = details or {}
    target = None if target_id is None else str(target_id)
    async with conn.transaction():
        await queries.lock_chain(conn)
        prev = await queries.last_hash(conn) or GENESIS_HASH
        at = datetime.now(UTC)
        digest = entry_hash(
            prev,
            at=at,
            actor_id=actor_id,
            action=action,
            target_type=target_type,
            target_id=target,
            ip=ip,
            details=details,
        )
        row = await queries.insert_entry(
            conn,
            at=at,
            actor_id=actor_id,
            action=action,
            target_type=target_type,
            target_id=target,
            ip=ip,
            details=details,
            prev_hash=prev,
            hash=digest,
        )
    return AuditEntry(**row.__dict__)


class AuditAnchor(NamedTuple):
    """An entry id and hash the operator recorded earlier, outside this box."""

    entry_id: int
    hash: str


async def verify(conn: Conn, anchor: AuditAnchor | None = None) -> VerifyResult:
    """Walk the chain; report the first entry whose link or content does not check out.

    A self-consistent chain can still have been rewritten from some entry on, with every later
    hash recomputed; only a hash recorded elsewhere catches that, hence the optional anchor.
    """
    prev = GENESIS_HASH
    checked = 0
    head_id: int | None = None
    anchor_seen = False
    # aclosing: returning at a broken link must end the generator's transaction and cursor now,
    # not whenever it is garbage-collected (by then the connection may serve someone else).
    async with aclosing(queries.iter_entries(conn)) as entries:
        async for row in entries:
            if row.prev_hash != prev:
                return VerifyResult(
                    ok=False,
                    checked=checked,
                    broken_id=row.id,
                    reason="prev_hash does not match the entry before it (a row was removed or "
                    "reordered)",
                )
            expected = entry_hash(
                prev,
                at=row.at,
                actor_id=row.actor_id,
                action=row.action,
                target_type=row.target_type,
                target_id=row.target_id,
                ip=row.ip,
                details=row.details,
            )
            if expected != row.hash:
                return VerifyResult(
                    ok=False,
                    checked=checked,
                    broken_id=row.id,
                    reason="content does not match its hash (the row was edited)",
                )
            if anchor is not None and row.id == anchor.entry_id:
                if row.hash != anchor.hash:
                    return VerifyResult(
                        ok=False,
                        checked=checked,
                        broken_id=row.id,
                        reason="hash differs from the recorded anchor (the log was rewritten "
                        "up to this entry)",
                    )
                anchor_seen = True
            prev = row.hash
            head_id = row.id
            checked += 1
    if anchor is not None and not anchor_seen:
        return VerifyResult(
            ok=False,
            checked=checked,
            broken_id=anchor.entry_id,
            reason="the recorded anchor entry is no longer in the log",
        )
    return VerifyResult(
        ok=True,
        checked=checked,
        head_id=head_id,
        head_hash=prev if head_id is not None else None,
    )


async def tail(
    conn: Conn, *, limit: int = 20, actor_id: int | None = None, action: str | None = None
) -> list[AuditEntry]:
    rows = await queries.recent_entries(conn, limit=limit, actor_id=actor_id, action=action)
    return [AuditEntry(**row.__dict__) for row in rows]
