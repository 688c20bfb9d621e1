"""The vault against real Postgres and real files: only ciphertext on disk, tampering of any
part refused, crypto-shredding, and key rotation (complete, interrupted and resumed)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import scalar
from tipstream.accounts import service as accounts
from tipstream.config import Settings
from tipstream.db import Conn
from tipstream.vault import queries
from tipstream.vault.health import check_vault
from tipstream.vault.keys import DecryptionFailed, Keyring, KeyringError
from tipstream.vault.service import ObjectGone, Vault
from tipstream.vault.storage import LocalDiskStorage

SECRET = b"Anna Maria Eriksson, passport L898902C3, born 1974-08-12 " * 20


async def owner(conn: Conn) -> int:
    email = f"vault-{os.urandom(6).hex()}@example.test"
    return int(
        await scalar(
            conn,
            "INSERT INTO users (email, display_name, password_hash, date_of_birth)"
            " VALUES (%s, 'V', 'x', '1990-01-01') RETURNING id",
            (email,),
        )
    )


def file_of(vault: Vault, object_id: object) -> Path:
    assert isinstance(vault.storage, LocalDiskStorage)
    return vault.storage.path(str(object_id))


async def test_round_trip_and_only_ciphertext_on_disk(vault: Vault, kyc_db: Conn) -> None:
    user = await owner(kyc_db)
    row = await vault.put(
        kyc_db, owner_id=user, kind="test.doc", content_type="text/plain", data=SECRET
    )
    on_disk = file_of(vault, row.id).read_bytes()
    assert SECRET[:16] not in on_disk and b"Eriksson" not in on_disk
    assert oct(file_of(vault, row.id).stat().st_mode & 0o777) == "0o600"
    got, plain = await vault.get(kyc_db, row.id)
    assert plain == SECRET and got.owner_id == user and got.kind == "test.doc"


async def test_a_flipped_byte_fails_to_decrypt(vault: Vault, kyc_db: Conn) -> None:
    row = await vault.put(
        kyc_db, owner_id=None, kind="test.doc", content_type="text/plain", data=SECRET
    )
    path = file_of(vault, row.id)
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 0x01
    path.write_bytes(bytes(blob))
    with pytest.raises(DecryptionFailed):
        await vault.get(kyc_db, row.id)


async def test_a_swapped_file_fails_to_decrypt(vault: Vault, kyc_db: Conn) -> None:
    user = await owner(kyc_db)
    mine = await vault.put(kyc_db, owner_id=user, kind="kyc.front", content_type="x/y", data=b"A")
    theirs = await vault.put(kyc_db, owner_id=user, kind="kyc.front", content_type="x/y", data=b"B")
    file_of(vault, mine.id).write_bytes(file_of(vault, theirs.id).read_bytes())
    with pytest.raises(DecryptionFailed):
        await vault.get(kyc_db, mine.id)


async def test_edited_metadata_or_a_copied_key_fails(vault: Vault, kyc_db: Conn) -> None:
    user, other = await owner(kyc_db), await owner(kyc_db)
    row = await vault.put(kyc_db, owner_id=user, kind="kyc.selfie", content_type="x/y", data=SECRET)
    await kyc_db.execute("UPDATE vault_objects SET owner_id = %s WHERE id = %s", (other, row.id))
    with pytest.raises(DecryptionFailed):
        await vault.get(kyc_db, row.id)
    await kyc_db.execute("UPDATE vault_objects SET owner_id = %s WHERE id = %s", (user, row.id))
    await kyc_db.execute("UPDATE vault_objects SET kind = 'kyc.front' WHERE id = %s", (row.id,))
    with pytest.raises(DecryptionFailed):
        await vault.get(kyc_db, row.id)
    await kyc_db.execute("UPDATE vault_objects SET kind = 'kyc.selfie' WHERE id = %s", (row.id,))
    assert (await vault.get(kyc_db, row.id))[1] == SECRET
    # Another object's wrapped key (even for the same owner) does not open this one.
    donor = await vault.put(kyc_db, owner_id=user, kind="kyc.selfie", content_type="x/y", data=b"x")
    await kyc_db.execute(
        "UPDATE vault_objects SET wrapped_key = (SELECT wrapped_key FROM vault_objects"
        " WHERE id = %s) WHERE id = %s",
        (donor.id, row.id),
    )
    with pytest.raises(DecryptionFailed):
        await vault.get(kyc_db, row.id)
    await kyc_db.execute(
        "UPDATE vault_objects SET wrapped_key = %s WHERE id = %s", (row.wrapped_key, row.id)
    )
    assert (await vault.get(kyc_db, row.id))[1] == SECRET


async def test_shredding_destroys_the_key_then_the_file(vault: Vault, kyc_db: Conn) -> None:
    row = await vault.put(kyc_db, owner_id=None, kind="test.doc", content_type="x/y", data=SECRET)
    async with kyc_db.transaction():
        assert await vault.shred(kyc_db, row.id)
    await vault.remove_ciphertext(row.id)
    assert not file_of(vault, row.id).exists()
    gone = await queries.get_object(kyc_db, row.id)
    assert gone.wrapped_key is None and gone.shredded_at is not None
    with pytest.raises(ObjectGone):
        await vault.get(kyc_db, row.id)
    async with kyc_db.transaction():
        assert not await vault.shred(kyc_db, row.id)


async def test_rotation_rewraps_everything_and_keeps_it_readable(
    vault: Vault, kyc_db: Conn
) -> None:
    stored = {}
    for n in range(5):
        row = await vault.put(
            kyc_db, owner_id=None, kind="test.rot", content_type="x/y", data=b"doc %d" % n
        )
        stored[row.id] = b"doc %d" % n
    before = {oid: file_of(vault, oid).read_bytes() for oid in stored}
    rotated = Vault(vault.keyring.with_new_key(), vault.storage)
    seen: list[tuple[int, int]] = []
    result = await rotated.rotate(kyc_db, batch=2, progress=lambda d, t: seen.append((d, t)))
    assert result.failed == 0 and result.remaining == 0 and result.rewrapped >= 5
    assert seen[-1][0] == seen[-1][1]
    counts = await rotated.keys_in_use(kyc_db)
    assert set(counts) == {rotated.keyring.active_id}
    for oid, plain in stored.items():
        assert (await rotated.get(kyc_db, oid))[1] == plain
        assert file_of(vault, oid).read_bytes() == before[oid]  # files untouched
    # The retired key alone opens nothing any more.
    retired_only = Keyring({vault.keyring.active_id: vault.keyring.active}, vault.keyring.active_id)
    with pytest.raises(KeyringError, match="not in the keyring"):
        await Vault(retired_only, vault.storage).get(kyc_db, next(iter(stored)))
    await rotate_back(rotated, vault, kyc_db)


async def rotate_back(rotated: Vault, original: Vault, conn: Conn) -> None:
    """Other tests share the database and know only the configured keyring."""
    await rewrap_all(Keyring(rotated.keyring.keys, original.keyring.active_id), original, conn)


async def rewrap_all(both: Keyring, original: Vault, conn: Conn) -> None:
    """Every data key back under ``both``'s active key: vault objects and the TOTP secrets
    (which tipctl keys rotate re-wraps too)."""
    result = await Vault(both, original.storage).rotate(conn)
    assert result.remaining == 0
    totp = await accounts.rewrap_totp_secrets(conn, both)
    assert totp.remaining == 0 and totp.failed == 0


async def test_an_interrupted_rotation_resumes(vault: Vault, kyc_db: Conn) -> None:
    for n in range(6):
        await vault.put(
            kyc_db, owner_id=None, kind="test.resume", content_type="x/y", data=b"r%d" % n
        )
    rotated = Vault(vault.keyring.with_new_key(), vault.storage)

    class Interrupted(Exception):
        pass

    def stop_after_first_batch(done: int, total: int) -> None:
        if done > 0:  # after the first committed batch
            raise Interrupted

    with pytest.raises(Interrupted):
        await rotated.rotate(kyc_db, batch=3, progress=stop_after_first_batch)
    partway = await rotated.keys_in_use(kyc_db)
    assert partway.get(rotated.keyring.active_id, 0) >= 3
    assert sum(n for k, n in partway.items() if k != rotated.keyring.active_id) > 0
    result = await rotated.rotate(kyc_db, batch=3)
    assert result.remaining == 0 and result.failed == 0
    assert set(await rotated.keys_in_use(kyc_db)) == {rotated.keyring.active_id}
    await rotate_back(rotated, vault, kyc_db)


async def test_the_doctor_check(
    kyc_settings: Settings, kyc_settings_factory: Any, tmp_path: Path
) -> None:
    assert "active key" in await check_vault(kyc_settings)
    bare = tmp_path / "bare-secrets"
    bare.mkdir()
    (bare / "session_key").write_text("s" * 64)
    with pytest.raises(KeyringError, match="tipctl keys init"):
        await check_vault(kyc_settings_factory(secrets=bare))
