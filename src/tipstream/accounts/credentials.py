"""Password hashing (argon2id), TOTP codes and their sealed storage, and the random secrets
handed to users."""

from __future__ import annotations

import hashlib
import hmac
import io
import secrets
import time
from dataclasses import dataclass

import pyotp
import qrcode
import qrcode.image.svg
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from tipstream.vault import keys as vault_keys
from tipstream.vault.keys import Keyring

# argon2-cffi's defaults are RFC 9106's "low memory" argon2id profile.
_hasher = PasswordHasher()
# Verified against when the email is unknown, so a miss costs the same time as a wrong password.
_DUMMY_HASH = _hasher.hash("not-a-real-password-" + secrets.token_hex(8))

TOTP_PERIOD = 30
RECOVERY_CODE_COUNT = 10


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
    except (VerificationError, InvalidHashError):
        return False


def password_needs_rehash(password_hash: str) -> bool:
    return _hasher.check_needs_rehash(password_hash)


def sha256_hex(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def new_totp_secret() -> str:
    return pyotp.random_base32()


# The purpose bound into a sealed secret's associated data (with the user id).
TOTP_SEAL_KIND = "accounts.totp_secret"


@dataclass(frozen=True)
class SealedTotpSecret:
    """A TOTP secret as stored: the vault's envelope (a data key wrapped by key-encryption key
    kek_id, the secret sealed by the data key), bound to one user."""

    kek_id: str
    wrapped_key: bytes
    sealed: bytes


def _totp_object_id(user_id: int) -> str:
    return f"users/{user_id}/totp_secret"


def seal_totp_secret(keyring: Keyring, user_id: int, secret: str) -> SealedTotpSecret:
    object_id = _totp_object_id(user_id)
    data_key = AESGCM.generate_key(bit_length=256)
    aad = vault_keys.metadata_aad(object_id, user_id, TOTP_SEAL_KIND)
    return SealedTotpSecret(
        kek_id=keyring.active_id,
        wrapped_key=vault_keys.wrap(keyring.active, keyring.active_id, object_id, data_key),
        sealed=vault_keys.seal(data_key, aad, secret.encode()),
    )


def open_totp_secret(keyring: Keyring, user_id: int, stored: SealedTotpSecret) -> str:
    """The clear secret; DecryptionFailed when it was altered or belongs to another user,
    KeyringError when its key-encryption key is not in this keyring."""
    object_id = _totp_object_id(user_id)
    data_key = vault_keys.unwrap(
        keyring.key(stored.kek_id), stored.kek_id, object_id, stored.wrapped_key
    )
    aad = vault_keys.metadata_aad(object_id, user_id, TOTP_SEAL_KIND)
    return vault_keys.open_sealed(data_key, aad, stored.sealed, object_id).decode()


def rewrap_totp_secret(
    keyring: Keyring, user_id: int, stored: SealedTotpSecret
) -> SealedTotpSecret:
    """The same sealed secret with its data key wrapped by the keyring's active key."""
    object_id = _totp_object_id(user_id)
    data_key = vault_keys.unwrap(
        keyring.key(stored.kek_id), stored.kek_id, object_id, stored.wrapped_key
    )
    wrapped = vault_keys.wrap(keyring.active, keyring.active_id, object_id, data_key)
    return SealedTotpSecret(kek_id=keyring.active_id, wrapped_key=wrapped, sealed=stored.sealed)


def totp_uri(secret: str, *, account: str, issuer: str) -> str:
    return pyotp.TOTP(secret).provisioning_uri(name=account, issuer_name=issuer)


def qr_svg(data: str) -> str:
    image = qrcode.make(data, image_factory=qrcode.image.svg.SvgPathImage)
    buffer = io.BytesIO()
    image.save(buffer)
    return buffer.getvalue().decode()


def totp_match_step(secret: str, code: str, *, now: float | None = None) -> int | None:
    """The time step whose code matches (allowing one step of clock drift), or None."""
    totp = pyotp.TOTP(secret, interval=TOTP_PERIOD)
    moment = time.time() if now is None else now
    current = int(moment // TOTP_PERIOD)
    for step in (current, current - 1, current + 1):
        if hmac.compare_digest(totp.at(step * TOTP_PERIOD), code):
            return step
    return None


def new_recovery_codes() -> list[str]:
    # 10 groups of 4+4 base32 characters: 80 bits each, so a plain SHA-256 is enough to store.
    alphabet = "abcdefghjkmnpqrstuvwxyz23456789"
    codes = []
    for _ in range(RECOVERY_CODE_COUNT):
        raw = "".join(secrets.choice(alphabet) for _ in range(16))
        codes.append(f"{raw[:8]}-{raw[8:]}")
    return codes


def normalize_recovery_code(code: str) -> str:
    raw = code.strip().lower().replace("-", "").replace(" ", "")
    return f"{raw[:8]}-{raw[8:]}"


def new_api_token() -> str:
    return "tsk_" + secrets.token_urlsafe(32)


def new_session_id() -> str:
    return secrets.token_urlsafe(32)
