"""Backups: create one encrypted archive, verify it, restore it into an empty system.

create: a repeatable-read snapshot is exported; the manifest's figures (row counts, the audit
chain's head) are read in it and pg_dump dumps exactly it; then the vault's object files (written
before their rows, so every row in the dump has its file) and the vault's keys are packed with
the dump into a tar stream that is encrypted to the operator's age recipients as it is written.

restore: the target must hold no data (its tables, if any, empty; the vault directory empty)
unless forced; the archive is decrypted into a private staging directory and every checksum
checked before anything is touched; then the public schema is recreated and pg_restore runs in
one transaction, vault files and keys are moved into place, and the ledger and audit checks run
on the result.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import BinaryIO
from uuid import UUID

import psycopg
from pyrage import x25519

from tipstream import db
from tipstream.accounts import service as accounts_service
from tipstream.audit import service as audit
from tipstream.backup import age, archive, postgres, queries
from tipstream.backup.archive import CARRIED_SECRETS, DUMP, ArchiveError, Packer, Unpacked
from tipstream.backup.schemas import (
    FORMAT,
    FORMAT_VERSION,
    ArchiveCheck,
    CheckResult,
    DatabaseInfo,
    Manifest,
    RestoreReport,
)
from tipstream.config import SECRET_FILES, Settings
from tipstream.db import Conn
from tipstream.ledger import verify as ledger_verify
from tipstream.vault import keys
from tipstream.vault import queries as vault_queries
from tipstream.vault.keys import Keyring
from tipstream.vault.service import Vault
from tipstream.vault.storage import LocalDiskStorage, ObjectMissing, Storage, storage_for

# (stage, done, total or None): stages are dump, pack, encrypt, decrypt, restore, vault, verify.
Progress = Callable[[str, int, int | None], None]


class RestoreRefused(Exception):
    """The target is not empty, or cannot take this archive; nothing was changed."""


def _silent(_stage: str, _done: int, _total: int | None) -> None:
    return None


def app_version() -> str:
    try:
        return metadata.version("tipstream")
    except metadata.PackageNotFoundError:
        return "unknown"


def default_archive_name(now: datetime | None = None) -> str:
    return f"tipstream-{(now or datetime.now(UTC)):%Y%m%dT%H%M%SZ}.tar.age"


def _carried_secrets(settings: Settings) -> dict[str, bytes]:
    values = {name: getattr(settings.secrets, name) for name in CARRIED_SECRETS}
    return {name: (value.strip() + "\n").encode() for name, value in values.items() if value}


# --------------------------------------------------------------------------- create


async def create(
    settings: Settings,
    *,
    recipients: list[x25519.Recipient],
    output: Path,
    progress: Progress = _silent,
) -> Manifest:
    """Write the encrypted archive to output (via output.partial, renamed when complete)."""
    started = datetime.now(UTC)
    secrets = _carried_secrets(settings)
    output.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".tipstream-backup-", dir=output.parent) as work:
        dump_path = Path(work) / DUMP
        async with db.connect(settings) as conn:
            server_version, server_num = await queries.server_version(conn)
            pg_dump, pg_dump_version = postgres.find_tool("pg_dump", server_num)
            async with conn.transaction():
                await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                snapshot = await queries.export_snapshot(conn)
                figures = await queries.figures(conn)
                migrations = await queries.applied_migrations(conn)
                name = await queries.database_name(conn)
                objects = await queries.live_vault_objects(conn)
                # Sealed 2FA secrets need the same keys: a restore without them would lock
                # every staff account out of its second factor.
                sealed_totp = sum((await accounts_service.totp_secrets_by_key(conn)).values())
                if (objects or sealed_totp) and "vault_keys" not in secrets:
                    raise age.AgeKeyError(
                        "the vault's objects or sealed 2FA secrets need its keys (vault_keys), "
                        "which are not readable here"
                    )
                await postgres.dump(
                    settings,
                    pg_dump,
                    snapshot=snapshot,
                    target=dump_path,
                    progress=lambda size: progress("dump", size, None),
                )
        manifest = Manifest(
            format=FORMAT,
            format_version=FORMAT_VERSION,
            created_at=started.isoformat(timespec="seconds"),
            app_version=app_version(),
            database=DatabaseInfo(
                name=name,
                server_version=server_version,
                pg_dump_version=pg_dump_version,
                migration_head=max(migrations, default=0),
                migrations=migrations,
            ),
            figures=figures,
            secrets=sorted(secrets),
            files=[],
        )
        members, total = _vault_members(settings, objects, asyncio.get_running_loop())
        members.insert(0, (DUMP, dump_path))
        total += dump_path.stat().st_size + sum(map(len, secrets.values()))
        await asyncio.to_thread(
            _write_encrypted, output, members, secrets, manifest, recipients, total, progress
        )
    size = await asyncio.to_thread(lambda: output.stat().st_size)
    async with db.connect(settings) as conn:
        await audit.record(
            conn,
            "backup.created",
            target_type="backup",
            target_id=output.name,
            details={
                "files": len(manifest.files),
                "bytes": size,
                "migration_head": manifest.database.migration_head,
                "audit_head_id": figures.audit_head_id,
                "recipients": [str(r) for r in recipients],
            },
        )
    return manifest


Source = Path | Callable[[], bytes]
# A sealed vault file: magic, nonce, ciphertext, GCM tag (for the progress bar's total).
SEALED_OVERHEAD = len(keys.FILE_MAGIC) + keys.NONCE_BYTES + 16


def _vault_members(
    settings: Settings, objects: list[tuple[UUID, int]], loop: asyncio.AbstractEventLoop
) -> tuple[list[tuple[str, Source]], int]:
    """(member name, file or fetcher) of every live object in the snapshot, and their bytes.
    Local files are read straight from disk; other backends' objects are fetched one at a time
    from the packing thread through the event loop."""
    storage = storage_for(settings)
    members: list[tuple[str, Source]] = []
    total = 0
    for object_id, size in objects:
        name = str(object_id)
        member = f"{archive.VAULT_PREFIX}{name[:2]}/{name}"
        if isinstance(storage, LocalDiskStorage):
            members.append((member, storage.path(name)))
        else:

            def fetch(name: str = name) -> bytes:
                return asyncio.run_coroutine_threadsafe(storage.get(name), loop).result()

            members.append((member, fetch))
        total += size + SEALED_OVERHEAD
    return members, total


def _write_encrypted(
    output: Path,
    members: list[tuple[str, Source]],
    secrets: dict[str, bytes],
    manifest: Manifest,
    recipients: list[x25519.Recipient],
    total: int,
    progress: Progress,
) -> None:
    partial = output.with_name(output.name + ".partial")
    packed = [0]
    encrypted = [0]

    def pack_counted(n: int) -> None:
        packed[0] += n
        progress("pack", packed[0], total)

    def encrypt_counted(n: int) -> None:
        encrypted[0] += n
        progress("encrypt", encrypted[0], None)

    def produce(writer: BinaryIO) -> None:
        packer = Packer.open(writer, pack_counted)
        for name, source in members:
            try:
                if isinstance(source, Path):
                    packer.add_file(name, source)
                else:
                    packer.add_bytes(name, source())
            except (FileNotFoundError, ObjectMissing):
                if name == DUMP:
                    raise
                manifest.vault_missing.append(name.rsplit("/", 1)[-1])
        for secret, data in sorted(secrets.items()):
            packer.add_bytes(archive.secret_member(secret), data)
        manifest.files = packer.entries
        packer.finish(manifest)

    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as target:
            age.encrypt_stream(produce, target, recipients, encrypt_counted)
            target.flush()
            os.fsync(target.fileno())
        partial.replace(output)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


# --------------------------------------------------------------------------- verify


def _unpack(
    archive_path: Path,
    identities: list[x25519.Identity],
    sink: Callable[[str], BinaryIO | None],
    progress: Progress,
) -> Unpacked:
    """Decrypt and hash every member (copying those sink wants); ArchiveUnreadable when it does
    not decrypt, ArchiveError when the plaintext is not a backup."""
    size = archive_path.stat().st_size
    read = [0]
    files = [0]
    result: list[Unpacked] = []

    def counted(n: int) -> None:
        read[0] += n
        progress("decrypt", read[0], size)

    def file_done(_name: str) -> None:
        files[0] += 1

    def consume(reader: BinaryIO) -> None:
        result.append(archive.read_members(reader, sink, file_done))

    with archive_path.open("rb") as source:
        age.decrypt_stream(source, consume, identities, counted)
    return result[0]


def verify(
    archive_path: Path, identities: list[x25519.Identity], progress: Progress = _silent
) -> ArchiveCheck:
    """Decrypt in memory (nothing written) and check every member against the manifest."""
    try:
        unpacked = _unpack(archive_path, identities, lambda _name: None, progress)
    except ArchiveError as exc:
        return ArchiveCheck(
            ok=False,
            archive=str(archive_path),
            files_checked=0,
            bytes_checked=0,
            problems=[str(exc)],
            manifest=None,
        )
    return ArchiveCheck(
        ok=not unpacked.problems,
        archive=str(archive_path),
        files_checked=len(unpacked.seen),
        bytes_checked=sum(e.size for e in unpacked.seen.values()),
        problems=unpacked.problems,
        manifest=unpacked.manifest,
    )


# --------------------------------------------------------------------------- restore


@dataclass
class Target:
    """What the restore target holds now."""

    database: str
    tables: list[str]
    tables_with_data: list[str]
    vault_dir: Path
    vault_entries: list[str]
    secrets_dir: Path

    @property
    def empty(self) -> bool:
        return not self.tables_with_data and not self.vault_entries

    def refusal(self) -> str | None:
        why = []
        if self.tables_with_data:
            why.append(
                f"database {self.database} holds data (rows in {', '.join(self.tables_with_data)})"
            )
        if self.vault_entries:
            shown = ", ".join(self.vault_entries[:3])
            why.append(f"the vault directory {self.vault_dir} is not empty ({shown})")
        if not why:
            return None
        return (
            "; ".join(why)
            + ": restore goes into an empty system (a fresh install); pass --force to replace it"
        )


def _entries(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.is_dir() else []


async def inspect_target(settings: Settings) -> Target:
    if not settings.secrets_dir:
        raise RestoreRefused(
            "secrets_dir is not set in the config: restore writes the vault's keys there"
        )
    vault_dir = Path(settings.vault.dir)
    # An S3 bucket is not listed: restored objects go under their own random ids.
    local = settings.vault.backend == "local"
    entries = await asyncio.to_thread(_entries, vault_dir) if local else []
    async with db.connect(settings) as conn:
        tables = await queries.user_tables(conn)
        present = await queries.existing_tables(conn, queries.DATA_TABLES)
        with_data = [t for t in present if await queries.has_rows(conn, t)]
        name = await queries.database_name(conn)
    return Target(
        database=name,
        tables=tables,
        tables_with_data=with_data,
        vault_dir=vault_dir,
        vault_entries=entries,
        secrets_dir=Path(settings.secrets_dir),
    )


@dataclass
class Staged:
    """An archive decrypted and checked into a private directory next to the vault."""

    root: Path
    manifest: Manifest

    def cleanup(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def stage(
    settings: Settings,
    archive_path: Path,
    identities: list[x25519.Identity],
    progress: Progress = _silent,
) -> Staged:
    """Decrypt into a 0700 directory beside the vault (same file system: objects are renamed
    into place) and check every checksum; raises ArchiveError naming the bad files."""
    # Beside a local vault directory (objects are then renamed into place); for an S3 vault
    # in the temporary directory.
    near: Path | None = None
    if settings.vault.backend == "local":
        near = Path(settings.vault.dir).parent
        near.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix=".tipstream-restore-", dir=near))

    def sink(name: str) -> BinaryIO:
        target = archive.member_target(name)
        assert target is not None  # read_members refuses every other name first
        path = root / target
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        return os.fdopen(fd, "wb")

    try:
        unpacked = _unpack(archive_path, identities, sink, progress)
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise
    if unpacked.problems or unpacked.manifest is None:
        shutil.rmtree(root, ignore_errors=True)
        raise ArchiveError(
            "the archive does not match its manifest, nothing was restored: "
            + "; ".join(unpacked.problems)
        )
    return Staged(root=root, manifest=unpacked.manifest)


async def apply(
    settings: Settings,
    staged: Staged,
    *,
    force: bool,
    progress: Progress = _silent,
) -> RestoreReport:
    """Put a staged archive in place and check the result."""
    manifest = staged.manifest
    known = max((m.version for m in db.migrations_on_disk()), default=0)
    if manifest.database.migration_head > known:
        raise RestoreRefused(
            f"the backup's database is at migration {manifest.database.migration_head}, this "
            f"release knows migrations up to {known}: restore with the release that made it "
            f"({manifest.app_version}) or a newer one"
        )
    async with db.connect(settings) as conn:
        _, server_num = await queries.server_version(conn)
        pg_restore, _ = postgres.find_tool("pg_restore", server_num)
        await _empty_database(conn, force=force)
    ticks = [0]

    def tick() -> None:
        ticks[0] += 1
        progress("restore", ticks[0], None)

    await postgres.restore(settings, pg_restore, source=staged.root / DUMP, tick=tick)
    vault_dir = Path(settings.vault.dir)
    storage = storage_for(settings)
    if isinstance(storage, LocalDiskStorage):
        placed = await asyncio.to_thread(_place_vault, staged.root, vault_dir, progress)
    else:
        placed = await _upload_vault(staged.root, storage, progress)
    written = await asyncio.to_thread(
        _place_secrets, staged.root, Path(str(settings.secrets_dir)), manifest.secrets
    )
    async with db.connect(settings) as conn:
        checks = await _check_restored(conn, staged, storage, progress)
        pending = len(
            set(m.version for m in db.migrations_on_disk())
            - set(await queries.applied_migrations(conn))
        )
        ok = all(c.ok for c in checks)
        if ok:
            await audit.record(
                conn,
                "backup.restored",
                target_type="backup",
                target_id=manifest.created_at,
                details={
                    "created_at": manifest.created_at,
                    "app_version": manifest.app_version,
                    "migration_head": manifest.database.migration_head,
                    "vault_objects": placed,
                },
            )
    return RestoreReport(
        ok=ok,
        archive=manifest.created_at,
        created_at=manifest.created_at,
        migration_head=manifest.database.migration_head,
        vault_objects_placed=placed,
        secrets_written=written,
        checks=checks,
        pending_migrations=pending,
    )


async def _empty_database(conn: Conn, *, force: bool) -> None:
    """Make the public schema empty: a fresh install has migrated tables (with no data) that
    the dump would collide with. Checked again under lock, so nothing slips in meanwhile."""
    async with conn.transaction():
        tables = await queries.user_tables(conn)
        if not tables:
            return
        await conn.execute("SET LOCAL lock_timeout = '10s'")
        try:
            await queries.lock_tables(conn, tables)
        except psycopg.errors.LockNotAvailable:
            raise RestoreRefused(
                "the database is in use: stop the tipstream services (api, worker, moderator) "
                "before a restore"
            ) from None
        if not force:
            present = await queries.existing_tables(conn, queries.DATA_TABLES)
            full = [t for t in present if await queries.has_rows(conn, t)]
            if full:
                raise RestoreRefused(
                    f"the database holds data (rows in {', '.join(full)}); pass --force to "
                    "replace it"
                )
        await queries.recreate_public_schema(conn)


def _owner_of(path: Path) -> tuple[int, int] | None:
    """Files placed by root belong to whoever owns their directory (the service user)."""
    if os.geteuid() != 0:
        return None
    stat = path.stat()
    return stat.st_uid, stat.st_gid


def _place_vault(staging: Path, vault_dir: Path, progress: Progress) -> int:
    sources = list(archive.vault_files(staging / "vault"))
    if not vault_dir.exists():
        vault_dir.mkdir(mode=0o700, parents=True)
        owner = _owner_of(vault_dir.parent)
        if owner:
            os.chown(vault_dir, *owner)
    owner = _owner_of(vault_dir)
    for done, (name, source) in enumerate(sources, 1):
        target = vault_dir / name.removeprefix(archive.VAULT_PREFIX)
        if not target.parent.exists():
            target.parent.mkdir(mode=0o700)
            if owner:
                os.chown(target.parent, *owner)
        source.chmod(0o600)
        if owner:
            os.chown(source, *owner)
        source.replace(target)
        progress("vault", done, len(sources))
    return len(sources)


async def _upload_vault(staging: Path, storage: Storage, progress: Progress) -> int:
    sources = list(archive.vault_files(staging / "vault"))
    for done, (name, source) in enumerate(sources, 1):
        blob = await asyncio.to_thread(source.read_bytes)
        await storage.put(name.rsplit("/", 1)[-1], blob)
        progress("vault", done, len(sources))
    return len(sources)


def _place_secrets(staging: Path, secrets_dir: Path, names: list[str]) -> list[str]:
    """Write the carried secrets (0600, atomically). A different file already there (the
    fresh install's own keys, which wrap nothing yet) is kept as <name>.before-restore-<time>."""
    written = []
    stamp = f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}"
    for name in names:
        if name not in CARRIED_SECRETS:
            continue
        data = (staging / archive.secret_member(name)).read_bytes()
        target = secrets_dir / SECRET_FILES[name]
        owner = _owner_of(secrets_dir)
        if target.exists():
            if target.read_bytes().strip() == data.strip():
                continue
            stat = target.stat()
            owner = (stat.st_uid, stat.st_gid) if os.geteuid() == 0 else None
            target.replace(target.with_name(f"{target.name}.before-restore-{stamp}"))
        temporary = target.with_name(f".{target.name}.restore")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if owner:
            os.chown(temporary, *owner)
        temporary.replace(target)
        written.append(name)
    return written


async def _check_restored(
    conn: Conn, staged: Staged, storage: Storage, progress: Progress
) -> list[CheckResult]:
    manifest = staged.manifest
    checks = []
    report = await ledger_verify.verify(
        conn, lambda task, done, total: progress("verify", done, total)
    )
    failed = [c for c in report.checks if not c.ok]
    checks.append(
        CheckResult(
            name="ledger verify",
            ok=report.ok,
            detail=f"{len(report.checks)} checks passed"
            if report.ok
            else "; ".join(f"{c.name}: {', '.join(c.problems[:3])}" for c in failed),
        )
    )
    chain = await audit.verify(conn)
    checks.append(
        CheckResult(
            name="audit verify",
            ok=chain.ok,
            detail=f"{chain.checked} entries intact"
            if chain.ok
            else f"broken at entry {chain.broken_id}: {chain.reason}",
        )
    )
    figures = await queries.figures(conn)
    differences = [
        f"{table}: {figures.rows.get(table)} rows, the backup had {count}"
        for table, count in manifest.figures.rows.items()
        if figures.rows.get(table) != count
    ]
    if figures.audit_head_hash != manifest.figures.audit_head_hash:
        differences.append("the audit chain's head differs from the backup's")
    checks.append(
        CheckResult(
            name="figures match the manifest",
            ok=not differences,
            detail="; ".join(differences)
            or ", ".join(f"{t} {n}" for t, n in manifest.figures.rows.items()),
        )
    )
    checks.append(await _check_vault(conn, staged, storage, progress))
    return checks


async def _check_vault(
    conn: Conn, staged: Staged, storage: Storage, progress: Progress
) -> CheckResult:
    """Every live vault object opens with the restored keys from the restored files."""
    keys_file = staged.root / archive.secret_member("vault_keys")
    counts = await vault_queries.count_by_key(conn)
    total = sum(counts.values())
    if not total:
        return CheckResult(name="vault objects open", ok=True, detail="no vault objects")
    if not keys_file.exists():
        return CheckResult(
            name="vault objects open", ok=False, detail=f"{total} objects, no keys in the backup"
        )
    vault = Vault(Keyring.parse(keys_file.read_text()), storage)
    failures = []
    opened = 0
    for object_id, _ in await queries.live_vault_objects(conn):
        try:
            await vault.get(conn, object_id)
            opened += 1
        except Exception as exc:  # reported by object, the restore goes on to report all
            failures.append(f"{object_id}: {type(exc).__name__}: {exc}")
        progress("vault check", opened + len(failures), total)
    return CheckResult(
        name="vault objects open",
        ok=not failures,
        detail=f"{opened} of {total} objects decrypt"
        + (f"; {'; '.join(failures[:5])}" if failures else ""),
    )
