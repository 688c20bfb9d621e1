"""The archive's manifest and what verify and restore report."""

from __future__ import annotations

import msgspec

FORMAT = "tipstream-backup"
FORMAT_VERSION = 1


class FileEntry(msgspec.Struct, kw_only=True):
    path: str
    size: int
    sha256: str


class Figures(msgspec.Struct, kw_only=True):
    """Counts and heads taken in the same snapshot as the dump, so a restore can prove it
    brought back exactly what was saved."""

    rows: dict[str, int]
    audit_head_id: int | None
    audit_head_hash: str | None


class DatabaseInfo(msgspec.Struct, kw_only=True):
    name: str
    server_version: str
    pg_dump_version: str
    migration_head: int
    migrations: list[int]


class Manifest(msgspec.Struct, kw_only=True):
    format: str
    format_version: int
    created_at: str
    app_version: str
    database: DatabaseInfo
    figures: Figures
    # Secret files of secrets_dir carried in the archive (the vault's keys).
    secrets: list[str]
    files: list[FileEntry]
    # Live vault objects whose ciphertext was missing when the backup was made (lost already).
    vault_missing: list[str] = msgspec.field(default_factory=list)


class ArchiveCheck(msgspec.Struct, kw_only=True):
    """What `tipctl backup verify` found: ok when every file matches the manifest."""

    ok: bool
    archive: str
    files_checked: int
    bytes_checked: int
    problems: list[str]
    manifest: Manifest | None


class CheckResult(msgspec.Struct, kw_only=True):
    name: str
    ok: bool
    detail: str


class RestoreReport(msgspec.Struct, kw_only=True):
    ok: bool
    archive: str
    created_at: str
    migration_head: int
    vault_objects_placed: int
    secrets_written: list[str]
    checks: list[CheckResult]
    pending_migrations: int
