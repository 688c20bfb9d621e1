"""The vault's rules: store an object encrypted, read it back authenticated, crypto-shred it,
re-wrap data keys under a new key-encryption key.

Callers own the transaction: ``put`` writes the ciphertext first and the row (with the wrapped
key) in the caller's transaction, so a rollback leaves at most an orphan file whose key was never
stored, which nobody can decrypt.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar
from uuid import UUID

import structlog
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from prometheus_client import Counter

from tipstream.config import Settings
from tipstream.db import Conn
from tipstream.vault import keys, queries
from tipstream.vault.keys import DecryptionFailed, Keyring, KeyringError
from tipstream.vault.queries import ObjectNotFound, ObjectRow
from tipstream.vault.storage import ObjectMissing, Storage, storage_for

__all__ = [
    "DecryptionFailed",
    "KeyringError",
    "ObjectGone",
    "ObjectNotFound",
    "ObjectRow",
    "RotationResult",
    "Vault",
]


log = structlog.get_logger("tipstream.vault")

# Tampering or corruption of stored ciphertext, keys or metadata: never expected, always alarming.
INTEGRITY_FAILURES = Counter(
    "tipstream_vault_integrity_failures_total",
    "Vault objects that failed authentication when read (tampered, swapped or corrupted)",
    ["kind"],
)


def _integrity_alarm(row: ObjectRow, exc: DecryptionFailed) -> None:
    """Counted and logged at error level (no traceback: the cause is the data, not the code)."""
    INTEGRITY_FAILURES.labels(kind=row.kind).inc()
    log.error("vault.integrity_failure", object_id=str(row.id), kind=row.kind, error=str(exc))


class ObjectGone(Exception):
    """The object was crypto-shredded (or its ciphertext is missing)."""


@dataclass(frozen=True)
class RotationResult:
    rewrapped: int
    failed: int
    remaining: int


RowId = TypeVar("RowId")
Row = TypeVar("Row")


async def rewrap_in_batches(
    conn: Conn,
    next_batch: Callable[[int], Awaitable[list[tuple[RowId, Row]]]],
    rewrap: Callable[[Row], Awaitable[None]],
    *,
    batch: int,
    total: int,
    progress: Callable[[int, int], None] | None,
) -> tuple[int, int]:
    """The loop of a key rotation, for anything wrapped by a key-encryption key (vault objects,
    sealed TOTP secrets): ``next_batch(limit)`` locks up to limit (id, row) pairs still under an
    older key, ``rewrap(row)`` re-wraps one (raising KeyringError or DecryptionFailed when it
    cannot). Each batch commits on its own, so an interrupted rotation resumes where it stopped;
    rows that failed are passed over. Returns (re-wrapped, failed)."""
    done = failed = 0
    failed_ids: set[RowId] = set()
    if progress:
        progress(0, total)
    while True:
        async with conn.transaction():
            pairs = [
                (row_id, row)
                for row_id, row in await next_batch(batch + len(failed_ids))
                if row_id not in failed_ids
            ]
            for row_id, row in pairs[:batch]:
                try:
                    await rewrap(row)
                except (KeyringError, DecryptionFailed):
                    failed_ids.add(row_id)
                    failed += 1
                    continue
                done += 1
        if progress:
            progress(done + failed, total)
        if not pairs:
            return done, failed


class Vault:
    def __init__(self, keyring: Keyring, storage: Storage) -> None:
        self.keyring = keyring
        self.storage = storage

    @classmethod
    def from_settings(cls, settings: Settings) -> Vault:
        return cls(Keyring.parse(settings.secrets.vault_keys), storage_for(settings))

    async def put(
        self, conn: Conn, *, owner_id: int | None, kind: str, content_type: str, data: bytes
    ) -> ObjectRow:
        object_id = uuid.uuid4()
        data_key = AESGCM.generate_key(bit_length=256)
        aad = keys.metadata_aad(str(object_id), owner_id, kind)
        await self.storage.put(str(object_id), keys.seal(data_key, aad, data))
        wrapped = keys.wrap(self.keyring.active, self.keyring.active_id, str(object_id), data_key)
        try:
            return await queries.insert_object(
                conn,
                object_id=object_id,
                owner_id=owner_id,
                kind=kind,
                content_type=content_type,
                size=len(data),
                kek_id=self.keyring.active_id,
                wrapped_key=wrapped,
            )
        except BaseException:
            await self.storage.delete(str(object_id))
            raise

    async def get(self, conn: Conn, object_id: UUID) -> tuple[ObjectRow, bytes]:
        """The object's row and plaintext; DecryptionFailed when anything was tampered with."""
        row = await queries.get_object(conn, object_id)
        if row.wrapped_key is None or row.kek_id is None:
            raise ObjectGone(f"object {object_id} was purged")
        kek = self.keyring.key(row.kek_id)
        try:
            blob = await self.storage.get(str(row.id))
        except ObjectMissing:
            raise ObjectGone(f"object {object_id}: its ciphertext is missing") from None
        aad = keys.metadata_aad(str(row.id), row.owner_id, row.kind)
        try:
            data_key = keys.unwrap(kek, row.kek_id, str(row.id), row.wrapped_key)
            return row, keys.open_sealed(data_key, aad, blob, str(row.id))
        except DecryptionFailed as exc:
            _integrity_alarm(row, exc)
            raise

    async def shred(self, conn: Conn, object_id: UUID) -> bool:
        """Destroy the data key (in the caller's transaction); True if the object was live.
        Without its key the ciphertext is noise; call remove_ciphertext after the commit."""
        return await queries.shred_object(conn, object_id) is not None

    async def remove_ciphertext(self, object_id: UUID) -> None:
        await self.storage.delete(str(object_id))

    async def rotate(
        self,
        conn: Conn,
        *,
        batch: int = 200,
        progress: Callable[[int, int], None] | None = None,
    ) -> RotationResult:
        """Re-wrap every data key not wrapped by the active key, one committed batch at a time,
        so an interrupted rotation resumes where it stopped. Files are not touched."""
        target = self.keyring.active_id
        counts = await queries.count_by_key(conn)
        total = sum(n for kek, n in counts.items() if kek != target)

        async def next_batch(limit: int) -> list[tuple[UUID, ObjectRow]]:
            rows = await queries.objects_not_wrapped_by(conn, target, limit=limit)
            return [(row.id, row) for row in rows]

        async def rewrap(row: ObjectRow) -> None:
            assert row.kek_id is not None and row.wrapped_key is not None
            data_key = keys.unwrap(
                self.keyring.key(row.kek_id), row.kek_id, str(row.id), row.wrapped_key
            )
            wrapped = keys.wrap(self.keyring.active, target, str(row.id), data_key)
            await queries.set_wrapped_key(conn, row.id, target, wrapped)

        done, failed = await rewrap_in_batches(
            conn, next_batch, rewrap, batch=batch, total=total, progress=progress
        )
        remaining = sum(n for kek, n in (await queries.count_by_key(conn)).items() if kek != target)
        return RotationResult(done, failed, remaining)

    async def keys_in_use(self, conn: Conn) -> dict[str, int]:
        return await queries.count_by_key(conn)
