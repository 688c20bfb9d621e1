"""Sealed TOTP secrets without a database: bound to their user, re-wrapped by a rotation,
unreadable without their key."""

from __future__ import annotations

from dataclasses import replace

import pytest

from tipstream.accounts import credentials
from tipstream.vault.keys import DecryptionFailed, KeyringError, new_keyring


def test_a_sealed_secret_opens_for_its_user_only() -> None:
    keyring = new_keyring()
    secret = credentials.new_totp_secret()
    sealed = credentials.seal_totp_secret(keyring, 41, secret)
    assert secret.encode() not in sealed.sealed + sealed.wrapped_key
    assert sealed.kek_id == keyring.active_id
    assert credentials.open_totp_secret(keyring, 41, sealed) == secret
    with pytest.raises(DecryptionFailed):
        credentials.open_totp_secret(keyring, 42, sealed)
    # The other user's wrapped key with this sealed secret (or the reverse) does not open either.
    other = credentials.seal_totp_secret(keyring, 42, secret)
    with pytest.raises(DecryptionFailed):
        credentials.open_totp_secret(keyring, 41, replace(sealed, wrapped_key=other.wrapped_key))
    with pytest.raises(DecryptionFailed):
        credentials.open_totp_secret(keyring, 42, replace(other, sealed=sealed.sealed))


def test_rotation_rewraps_the_key_and_keeps_the_secret() -> None:
    old = new_keyring()
    secret = credentials.new_totp_secret()
    sealed = credentials.seal_totp_secret(old, 7, secret)
    rotated = old.with_new_key()
    rewrapped = credentials.rewrap_totp_secret(rotated, 7, sealed)
    assert rewrapped.kek_id == rotated.active_id != old.active_id
    assert rewrapped.sealed == sealed.sealed
    pruned = rotated.without({old.active_id})
    assert credentials.open_totp_secret(pruned, 7, rewrapped) == secret
    with pytest.raises(KeyringError, match="not in the keyring"):
        credentials.open_totp_secret(pruned, 7, sealed)
    # The same key id with other key bytes (a keyring from another box) does not open it.
    with pytest.raises(DecryptionFailed):
        credentials.open_totp_secret(
            replace(pruned, keys={rotated.active_id: new_keyring().active}), 7, rewrapped
        )
