"""The archive's plaintext: a tar stream of database.dump, secrets/<name>, vault/<xx>/<object
id> and, last, manifest.json with every other member's size and SHA-256.

Members are hashed as they stream through, so writing reads each file once and checking needs
no second pass. Reading accepts only the member names above, as regular files: an archive
cannot place a file anywhere else.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import tarfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import msgspec

from tipstream.backup.schemas import FORMAT, FORMAT_VERSION, FileEntry, Manifest
from tipstream.vault.storage import OBJECT_NAME

MANIFEST = "manifest.json"
DUMP = "database.dump"
SECRETS_PREFIX = "secrets/"
VAULT_PREFIX = "vault/"
CHUNK = 1 << 20
# The secret files of secrets_dir a backup carries: what the vault needs to open its objects
# and KYC number lookups. Everything else (session key, database, Valkey, Janus, TURN and
# processor secrets) belongs to the box and is made anew by the installer.
CARRIED_SECRETS = ("vault_keys", "kyc_index_key")
VAULT_MEMBER = re.compile(r"^vault/([0-9a-f]{2})/([0-9a-f-]{36})$")


class ArchiveError(Exception):
    """The plaintext is not a tipstream backup (wrong member, no manifest, unknown format)."""


def vault_files(root: Path) -> Iterator[tuple[str, Path]]:
    """(member name, path) of every object file under the vault directory, sorted; temporary
    files of writes in progress and anything else are left out."""
    if not root.is_dir():
        return
    for shard in sorted(p for p in root.iterdir() if p.is_dir()):
        for path in sorted(shard.iterdir()):
            if path.is_file() and OBJECT_NAME.match(path.name) and path.name[:2] == shard.name:
                yield f"{VAULT_PREFIX}{shard.name}/{path.name}", path


def secret_member(name: str) -> str:
    return f"{SECRETS_PREFIX}{name}"


def member_target(name: str) -> Path | None:
    """Where a member lives below an extraction root; None for a name no backup has."""
    if name in (DUMP, MANIFEST):
        return Path(name)
    if name.startswith(SECRETS_PREFIX) and name.removeprefix(SECRETS_PREFIX) in CARRIED_SECRETS:
        return Path(name)
    match = VAULT_MEMBER.match(name)
    if match and OBJECT_NAME.match(match[2]) and match[2][:2] == match[1]:
        return Path(name)
    return None


class _Hashing:
    """Reads a file for tarfile while hashing it."""

    def __init__(self, raw: BinaryIO, counted: Callable[[int], None]) -> None:
        self.raw = raw
        self.digest = hashlib.sha256()
        self.counted = counted

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size)
        self.digest.update(data)
        self.counted(len(data))
        return data


@dataclass
class Packer:
    """Writes members to a tar stream and remembers their checksums for the manifest."""

    tar: tarfile.TarFile
    counted: Callable[[int], None]
    entries: list[FileEntry] = field(default_factory=list)

    @classmethod
    def open(cls, writer: BinaryIO, counted: Callable[[int], None]) -> Packer:
        return cls(tarfile.open(fileobj=writer, mode="w|", format=tarfile.PAX_FORMAT), counted)

    def _info(self, name: str, size: int, mtime: float) -> tarfile.TarInfo:
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = size, int(mtime), 0o600
        return info

    def add_file(self, name: str, path: Path) -> None:
        # One open file: a vault object replaced meanwhile (rename) is read as it was opened.
        with path.open("rb") as raw:
            stat = os.fstat(raw.fileno())
            hashing = _Hashing(raw, self.counted)
            self.tar.addfile(self._info(name, stat.st_size, stat.st_mtime), hashing)
        self.entries.append(
            FileEntry(path=name, size=stat.st_size, sha256=hashing.digest.hexdigest())
        )

    def add_bytes(self, name: str, data: bytes) -> None:
        self.tar.addfile(self._info(name, len(data), time.time()), io.BytesIO(data))
        self.entries.append(
            FileEntry(path=name, size=len(data), sha256=hashlib.sha256(data).hexdigest())
        )
        self.counted(len(data))

    def finish(self, manifest: Manifest) -> None:
        data = msgspec.json.format(msgspec.json.encode(manifest), indent=2)
        self.tar.addfile(self._info(MANIFEST, len(data), time.time()), io.BytesIO(data))
        self.tar.close()


@dataclass
class Unpacked:
    """What a pass over the plaintext found."""

    manifest: Manifest | None
    seen: dict[str, FileEntry]
    problems: list[str]


def read_members(
    reader: BinaryIO,
    sink: Callable[[str], BinaryIO | None],
    file_done: Callable[[str], None],
) -> Unpacked:
    """Hash every member; sink(name) may give a file to copy it to (closed here)."""
    seen: dict[str, FileEntry] = {}
    manifest: Manifest | None = None
    problems: list[str] = []
    with tarfile.open(fileobj=reader, mode="r|") as tar:
        for member in tar:
            if not member.isfile() or member_target(member.name) is None:
                raise ArchiveError(f"unexpected member {member.name!r}: not a tipstream backup")
            if member.name in seen:
                raise ArchiveError(f"member {member.name!r} appears twice")
            source = tar.extractfile(member)
            assert source is not None
            digest = hashlib.sha256()
            target = sink(member.name)
            kept = bytearray() if member.name == MANIFEST else None
            try:
                while chunk := source.read(CHUNK):
                    digest.update(chunk)
                    if target is not None:
                        target.write(chunk)
                    if kept is not None:
                        kept += chunk
            finally:
                if target is not None:
                    target.close()
            seen[member.name] = FileEntry(
                path=member.name, size=member.size, sha256=digest.hexdigest()
            )
            if kept is not None:
                manifest = _decode_manifest(bytes(kept))
            file_done(member.name)
    if manifest is None:
        problems.append(f"{MANIFEST}: missing (the archive is cut off, or not a tipstream backup)")
    else:
        problems += compare(manifest, seen)
    return Unpacked(manifest=manifest, seen=seen, problems=problems)


def _decode_manifest(data: bytes) -> Manifest:
    try:
        manifest = msgspec.json.decode(data, type=Manifest)
    except msgspec.ValidationError as exc:
        raise ArchiveError(f"{MANIFEST} is not a tipstream backup manifest ({exc})") from None
    if manifest.format != FORMAT or manifest.format_version > FORMAT_VERSION:
        raise ArchiveError(
            f"{MANIFEST}: format {manifest.format} version {manifest.format_version}; this "
            f"release reads {FORMAT} up to version {FORMAT_VERSION}"
        )
    return manifest


def compare(manifest: Manifest, seen: dict[str, FileEntry]) -> list[str]:
    problems = []
    listed = {entry.path: entry for entry in manifest.files}
    for path, entry in listed.items():
        found = seen.get(path)
        if found is None:
            problems.append(f"{path}: listed in the manifest, missing from the archive")
        elif found.size != entry.size:
            problems.append(f"{path}: {found.size} bytes, the manifest says {entry.size}")
        elif found.sha256 != entry.sha256:
            problems.append(f"{path}: checksum does not match the manifest")
    for path in sorted(set(seen) - set(listed) - {MANIFEST}):
        problems.append(f"{path}: in the archive but not in the manifest")
    if DUMP not in listed:
        problems.append(f"{DUMP}: not in the manifest (no database in this backup)")
    return problems
