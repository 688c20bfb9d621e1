"""Lawful-request export: one user's KYC records, decrypted from the vault and re-encrypted
into a single package for the requesting authority.

The package is a tar (manifest.json, forms, images) sealed with AES-256-GCM under a key derived
from a passphrase with scrypt; the file starts with a magic, the salt and the nonce, and the
case reference is bound as associated data. Its SHA-256 is printed, written next to it and
recorded in the audit log with the case reference, so the copy handed over can be proven."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import msgspec
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from tipstream.accounts import queries as accounts_queries
from tipstream.audit import service as audit
from tipstream.config import Settings
from tipstream.db import Conn
from tipstream.errors import InvalidInput
from tipstream.kyc import queries
from tipstream.kyc.service import ObjectGone, open_vault, read_object, summary

MAGIC = b"TSKYCX1\n"
SALT_BYTES = 16
NONCE_BYTES = 12


class ExportError(InvalidInput):
    slug, title = "export-error", "Export package cannot be opened"


@dataclass(frozen=True)
class ExportPackage:
    data: bytes
    sha256: str
    submissions: int
    files: int


def _key(passphrase: str, salt: bytes) -> bytes:
    return Scrypt(salt=salt, length=32, n=2**15, r=8, p=1).derive(passphrase.encode())


def seal_package(payload: bytes, passphrase: str, case_ref: str) -> bytes:
    salt, nonce = os.urandom(SALT_BYTES), os.urandom(NONCE_BYTES)
    sealed = AESGCM(_key(passphrase, salt)).encrypt(nonce, payload, case_ref.encode())
    return MAGIC + salt + nonce + sealed


def open_package(blob: bytes, passphrase: str, case_ref: str) -> bytes:
    head = len(MAGIC)
    if not blob.startswith(MAGIC) or len(blob) < head + SALT_BYTES + NONCE_BYTES + 16:
        raise ExportError("not a tipstream KYC export")
    salt = blob[head : head + SALT_BYTES]
    nonce = blob[head + SALT_BYTES : head + SALT_BYTES + NONCE_BYTES]
    try:
        return AESGCM(_key(passphrase, salt)).decrypt(
            nonce, blob[head + SALT_BYTES + NONCE_BYTES :], case_ref.encode()
        )
    except InvalidTag:
        raise ExportError("wrong passphrase or case reference, or the file was altered") from None


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = int(time.time())
    info.mode = 0o600
    tar.addfile(info, io.BytesIO(data))


async def export_user(
    conn: Conn,
    settings: Settings,
    user_id: int,
    *,
    case_ref: str,
    passphrase: str,
    actor_id: int | None,
) -> ExportPackage:
    if not case_ref.strip() or len(case_ref) > 200:
        raise InvalidInput("a case reference (1 to 200 characters) is required")
    if len(passphrase) < 12:
        raise InvalidInput("the export passphrase must be at least 12 characters")
    user = await accounts_queries.user_by_id(conn, user_id)
    vault = open_vault(settings)
    rows = await queries.submissions_of_user(conn, user_id)
    buffer = io.BytesIO()
    files = 0
    manifest: dict[str, object] = {
        "case_reference": case_ref,
        "exported_at": datetime.now(UTC).isoformat(),
        "user": {
            "id": user.id,
            "email": user.email,
            "display_name": user.display_name,
            "registered_date_of_birth": user.date_of_birth.isoformat(),
            "created_at": user.created_at.isoformat(),
            "disabled_at": user.disabled_at.isoformat() if user.disabled_at else None,
        },
        "submissions": [msgspec.to_builtins(summary(r)) for r in rows],
    }
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for row in rows:
            if row.purged_at is not None:
                continue
            named = {"form.json": row.form_object} | {
                f"{name}.jpg": oid for name, oid in row.image_objects.items()
            }
            for name, object_id in named.items():
                if object_id is None:
                    continue
                try:
                    data = await read_object(conn, vault, object_id)
                except ObjectGone:
                    continue
                _add(tar, f"submission-{row.id}/{name}", data)
                files += 1
        _add(tar, "manifest.json", json.dumps(manifest, indent=2, default=str).encode())
    package = seal_package(buffer.getvalue(), passphrase, case_ref)
    digest = hashlib.sha256(package).hexdigest()
    await audit.record(
        conn,
        "kyc.export",
        actor_id=actor_id,
        target_type="user",
        target_id=user_id,
        details={"case_reference": case_ref, "sha256": digest, "files": files},
    )
    return ExportPackage(package, digest, len(rows), files)
