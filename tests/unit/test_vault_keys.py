"""The vault's key handling without a database: the keyring file, wrapping, sealing, storage."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from tipstream.vault import keys
from tipstream.vault.keys import DecryptionFailed, Keyring, KeyringError
from tipstream.vault.storage import LocalDiskStorage, ObjectMissing

OID = "0f1e2d3c-4b5a-4697-8877-665544332211"


def test_keyring_round_trips_with_the_active_key_last() -> None:
    ring = keys.new_keyring().with_new_key()
    again = Keyring.parse(ring.format())
    assert again == ring
    assert ring.format().strip().splitlines()[-1].startswith(ring.active_id + " ")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (None, "missing"),
        ("   \n", "missing"),
        ("onlyone\n", "expected"),
        ("k1 not-base64!!\n", "not base64"),
        ("k1 " + base64.b64encode(b"short").decode(), "32 bytes"),
        ("bad/id " + base64.b64encode(bytes(32)).decode(), "expected"),
    ],
)
def test_bad_keyrings_are_named(text: str | None, message: str) -> None:
    with pytest.raises(KeyringError, match=message):
        Keyring.parse(text)


def test_a_repeated_key_id_is_refused() -> None:
    line = "k1 " + base64.b64encode(bytes(32)).decode()
    with pytest.raises(KeyringError, match="repeated"):
        Keyring.parse(f"{line}\n{line}\n")


def test_the_active_key_cannot_be_removed() -> None:
    ring = keys.new_keyring()
    with pytest.raises(KeyringError):
        ring.without({ring.active_id})


def test_wrapping_is_bound_to_the_object_and_the_key_id() -> None:
    ring = keys.new_keyring()
    data_key = bytes(range(32))
    wrapped = keys.wrap(ring.active, ring.active_id, OID, data_key)
    assert keys.unwrap(ring.active, ring.active_id, OID, wrapped) == data_key
    with pytest.raises(DecryptionFailed):
        keys.unwrap(ring.active, ring.active_id, OID.replace("0f", "1f"), wrapped)
    with pytest.raises(DecryptionFailed):
        keys.unwrap(ring.active, "other", OID, wrapped)
    with pytest.raises(DecryptionFailed):
        keys.unwrap(ring.with_new_key().active, ring.active_id, OID, wrapped)


def test_sealed_blobs_refuse_edits_and_other_metadata() -> None:
    data_key = bytes(32)
    aad = keys.metadata_aad(OID, 7, "kyc.front")
    blob = keys.seal(data_key, aad, b"plain text")
    assert b"plain text" not in blob
    assert keys.open_sealed(data_key, aad, blob, OID) == b"plain text"
    for other in (
        keys.metadata_aad(OID, 8, "kyc.front"),
        keys.metadata_aad(OID, 7, "kyc.back"),
        keys.metadata_aad(OID.replace("0f", "1f"), 7, "kyc.front"),
    ):
        with pytest.raises(DecryptionFailed):
            keys.open_sealed(data_key, other, blob, OID)
    flipped = bytearray(blob)
    flipped[-1] ^= 1
    with pytest.raises(DecryptionFailed):
        keys.open_sealed(data_key, aad, bytes(flipped), OID)
    with pytest.raises(DecryptionFailed, match="not a vault file"):
        keys.open_sealed(data_key, aad, b"%PDF-1.7 hello", OID)


async def test_local_storage_names_files_itself(tmp_path: Path) -> None:
    storage = LocalDiskStorage(tmp_path / "vault")
    await storage.put(OID, b"ciphertext")
    path = storage.path(OID)
    assert path.read_bytes() == b"ciphertext"
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert oct(path.parent.stat().st_mode & 0o777) == "0o700"
    assert await storage.get(OID) == b"ciphertext"
    await storage.delete(OID)
    with pytest.raises(ObjectMissing):
        await storage.get(OID)
    for hostile in ("../../etc/passwd", "a" * 36, OID + "/x", ""):
        with pytest.raises(ValueError, match="not a vault object name"):
            storage.path(hostile)
