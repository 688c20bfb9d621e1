"""Key-encryption keys (KEKs): the keyring file and the two AES-256-GCM layers.

The keyring is the secret file ``vault_keys``: one ``<key id> <base64 32-byte key>`` a line, the
last line is the active key (new objects are wrapped by it; older keys stay until no object is
wrapped by them). Each object has its own random data key; the data key is wrapped by a KEK with
the object id and key id as associated data, and the object is sealed by the data key with its
metadata (object id, owner, kind) as associated data, so a file moved to another object, a wrapped
key copied to another row or an edited owner/kind fails authentication instead of decrypting.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY_BYTES = 32
NONCE_BYTES = 12
FILE_MAGIC = b"TSV1"
KEY_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class KeyringError(Exception):
    """The keyring is missing, malformed, or lacks a key an object needs."""


class DecryptionFailed(Exception):
    """Ciphertext, wrapped key or metadata were altered (or belong to another object)."""


@dataclass(frozen=True)
class Keyring:
    keys: dict[str, bytes]
    active_id: str

    @property
    def active(self) -> bytes:
        return self.keys[self.active_id]

    def key(self, kek_id: str) -> bytes:
        try:
            return self.keys[kek_id]
        except KeyError:
            raise KeyringError(
                f"key-encryption key {kek_id!r} is not in the keyring (vault_keys)"
            ) from None

    @classmethod
    def parse(cls, text: str | None) -> Keyring:
        if not text or not text.strip():
            raise KeyringError(
                "the vault keyring is missing: create the secret file vault_keys with "
                "`tipctl keys init`"
            )
        keys: dict[str, bytes] = {}
        last = ""
        for number, raw in enumerate(text.splitlines(), 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            parts = line.split()
            if len(parts) != 2 or not KEY_ID.match(parts[0]):
                raise KeyringError(f"vault_keys line {number}: expected '<key id> <base64 key>'")
            try:
                key = base64.b64decode(parts[1], validate=True)
            except binascii.Error:
                raise KeyringError(f"vault_keys line {number}: the key is not base64") from None
            if len(key) != KEY_BYTES:
                raise KeyringError(f"vault_keys line {number}: the key is not 32 bytes")
            if parts[0] in keys:
                raise KeyringError(f"vault_keys line {number}: key id {parts[0]} repeated")
            keys[parts[0]] = key
            last = parts[0]
        if not keys:
            raise KeyringError("vault_keys holds no key")
        return cls(keys, last)

    def format(self) -> str:
        """The file text, the active key last."""
        order = [k for k in self.keys if k != self.active_id] + [self.active_id]
        lines = [f"{k} {base64.b64encode(self.keys[k]).decode()}" for k in order]
        return "\n".join(lines) + "\n"

    def with_new_key(self) -> Keyring:
        kek_id = new_key_id()
        return Keyring({**self.keys, kek_id: AESGCM.generate_key(bit_length=256)}, kek_id)

    def without(self, kek_ids: set[str]) -> Keyring:
        if self.active_id in kek_ids:
            raise KeyringError("the active key cannot be removed")
        return Keyring({k: v for k, v in self.keys.items() if k not in kek_ids}, self.active_id)


def new_key_id() -> str:
    return f"{datetime.now(UTC):%Y%m%d}-{secrets.token_hex(4)}"


def new_keyring() -> Keyring:
    kek_id = new_key_id()
    return Keyring({kek_id: AESGCM.generate_key(bit_length=256)}, kek_id)


def metadata_aad(object_id: str, owner_id: int | None, kind: str) -> bytes:
    return (
        FILE_MAGIC
        + json.dumps(
            {"id": object_id, "kind": kind, "owner": owner_id},
            sort_keys=True,
            separators=(",", ":"),
        ).encode()
    )


def _wrap_aad(object_id: str, kek_id: str) -> bytes:
    return f"tipstream-vault-key:v1:{object_id}:{kek_id}".encode()


def wrap(kek: bytes, kek_id: str, object_id: str, data_key: bytes) -> bytes:
    nonce = os.urandom(NONCE_BYTES)
    return nonce + AESGCM(kek).encrypt(nonce, data_key, _wrap_aad(object_id, kek_id))


def unwrap(kek: bytes, kek_id: str, object_id: str, wrapped: bytes) -> bytes:
    try:
        return AESGCM(kek).decrypt(
            wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:], _wrap_aad(object_id, kek_id)
        )
    except (InvalidTag, ValueError):
        raise DecryptionFailed(
            f"the data key of object {object_id} does not authenticate"
        ) from None


def seal(data_key: bytes, aad: bytes, plaintext: bytes) -> bytes:
    nonce = os.urandom(NONCE_BYTES)
    return FILE_MAGIC + nonce + AESGCM(data_key).encrypt(nonce, plaintext, aad)


def open_sealed(data_key: bytes, aad: bytes, blob: bytes, object_id: str) -> bytes:
    header = len(FILE_MAGIC)
    if blob[:header] != FILE_MAGIC or len(blob) < header + NONCE_BYTES + 16:
        raise DecryptionFailed(f"object {object_id}: not a vault file")
    nonce = blob[header : header + NONCE_BYTES]
    try:
        return AESGCM(data_key).decrypt(nonce, blob[header + NONCE_BYTES :], aad)
    except InvalidTag:
        raise DecryptionFailed(f"object {object_id}: ciphertext or metadata altered") from None
