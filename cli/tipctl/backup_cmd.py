"""tipctl backup keygen|create|list|verify|restore, and tipctl restore (the same command).

Archives are encrypted to age public keys (recipients) listed in the file backup_recipients
beside the config (or given with --recipient); the private key (identity) that opens them stays
with the operator and is only ever read from a file given with --identity."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from tipctl.common import (
    EXIT_ERROR,
    EXIT_NOTHING_TO_DO,
    EXIT_USAGE,
    config_path,
    confirm,
    err,
    fail,
    out,
    print_json,
    print_table,
    run,
    settings,
)
from tipstream.backup import age
from tipstream.backup import service as backup
from tipstream.backup.archive import ArchiveError
from tipstream.backup.postgres import ToolError
from tipstream.backup.schemas import ArchiveCheck, RestoreReport
from tipstream.config import DEFAULT_CONFIG_PATH, Settings

T = TypeVar("T")
DEFAULT_DIR = Path("/var/backups/tipstream")
RECIPIENTS_FILE = "backup_recipients"
BYTE_STAGES = {"dump", "pack", "encrypt", "decrypt"}

app = typer.Typer(
    help="Encrypted backups (database, vault, vault keys) and restore into an empty system.",
    no_args_is_help=True,
)
IDENTITY_OPTION = typer.Option(
    ..., "--identity", "-i", help="age identity file (private key) that opens the archive."
)


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


@contextmanager
def progress_bars() -> Iterator[backup.Progress]:
    """A rich bar per stage, made when the stage first reports."""
    with Progress(
        TextColumn("{task.description:<12}"),
        BarColumn(),
        TextColumn("{task.fields[shown]}"),
        TimeElapsedColumn(),
        console=err,
    ) as bars:
        tasks: dict[str, TaskID] = {}

        def report(stage: str, done: int, total: int | None) -> None:
            if stage not in tasks:
                tasks[stage] = bars.add_task(stage, total=total, shown="")
            if stage in BYTE_STAGES:
                shown = _size(done) + (f" / {_size(total)}" if total else "")
            else:
                shown = f"{done}" + (f"/{total}" if total else "")
            bars.update(tasks[stage], completed=done, total=total, shown=shown)

        yield report


def guarded(coro: Coroutine[Any, Any, T]) -> T:
    """run(), with the backup domain's failures as one line and their exit codes."""
    try:
        return run(coro)
    except backup.RestoreRefused as exc:
        fail(str(exc), EXIT_USAGE)
    except age.AgeKeyError as exc:
        fail(str(exc), EXIT_USAGE)
    except (age.ArchiveUnreadable, ArchiveError, ToolError) as exc:
        fail(str(exc), EXIT_ERROR)


def _identities(path: Path) -> list[Any]:
    try:
        found = age.read_identities(path)
    except age.AgeKeyError as exc:
        fail(str(exc), EXIT_USAGE)
    if path.stat().st_mode & 0o077:
        err.print(f"tipctl: warning: {path} is readable by others; chmod 600 it", markup=False)
    return found


def recipients_file() -> Path:
    return (config_path() or DEFAULT_CONFIG_PATH).parent / RECIPIENTS_FILE


# tipctl doctor fails the backup check when the newest archive is older than this.
STALE_HOURS = 48


def backup_freshness(directory: Path, recipients: Path, now: float | None = None) -> str:
    """How recent the newest archive is, on a host set up for backups (a recipients file)."""
    if not recipients.exists():
        return f"not set up on this host (no {recipients})"
    now = time.time() if now is None else now
    archives = _archives(directory) if directory.is_dir() else []
    if not archives:
        hours = (now - recipients.stat().st_mtime) / 3600
        if hours > STALE_HOURS:
            raise RuntimeError(
                f"no archive in {directory}, {hours:.0f} h after {recipients.name} was set: "
                "see systemctl status tipstream-backup.timer"
            )
        return f"no archive in {directory} yet (the nightly timer makes the first)"
    newest = archives[0]
    stat = newest.stat()
    hours = (now - stat.st_mtime) / 3600
    if hours > STALE_HOURS:
        raise RuntimeError(
            f"newest archive {newest.name} is {hours:.0f} h old: see journalctl -u tipstream-backup"
        )
    return f"newest archive {newest.name}, {hours:.0f} h old, {_size(stat.st_size)}"


async def doctor_check(_settings: Settings) -> str:
    """tipctl doctor: backups are being made (where this host makes them)."""
    return await asyncio.to_thread(backup_freshness, DEFAULT_DIR, recipients_file())


@app.command("keygen")
def keygen(
    output: Path = typer.Option(
        ..., "--output", "-o", help="Identity file to create (0600); keep it off this box."
    ),
) -> None:
    """Make an age key pair for backups: the identity (private key) goes to --output, 0600,
    never printed; the public key is printed, for backup_recipients on the box."""
    text, recipient = age.new_identity()
    try:
        fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        fail(f"{output} exists already; not overwriting an identity", EXIT_USAGE)
    except OSError as exc:
        fail(f"cannot create {output}: {exc.strerror}", EXIT_USAGE)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    out.print(f"identity written to {output} (keep it safe: without it no backup opens)")
    out.print(f"public key: {recipient}")
    out.print(f"on the box, add it to {recipients_file()} (one public key a line)", markup=False)


@app.command("create")
def create(
    output: Path | None = typer.Option(
        None, "--output", "-o", help=f"Archive file or directory (default: {DEFAULT_DIR}/)."
    ),
    recipient: list[str] = typer.Option(
        [], "--recipient", "-r", help="age public key to encrypt to (repeatable)."
    ),
    recipients_path: Path | None = typer.Option(
        None,
        "--recipients-file",
        help=f"File of age public keys (default: {RECIPIENTS_FILE} beside the config).",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the manifest as JSON."),
) -> None:
    """Back up the database (pg_dump), the vault's files and keys into one archive with a
    manifest of checksums, encrypted to the backup recipients."""
    cfg = settings()
    try:
        keys = age.parse_recipients(recipient, "--recipient")
        path = recipients_path or recipients_file()
        if recipients_path is not None or (not keys and path.exists()):
            keys += age.read_recipients_file(path)
    except age.AgeKeyError as exc:
        fail(str(exc), EXIT_USAGE)
    if not keys:
        fail(
            f"no backup recipient: run `tipctl backup keygen -o FILE` where you keep keys and put "
            f"the public key it prints in {recipients_file()} (or pass --recipient)",
            EXIT_USAGE,
        )
    target = output or DEFAULT_DIR
    if target.is_dir() or output is None:
        target = target / backup.default_archive_name()
    with progress_bars() as report:
        manifest = guarded(backup.create(cfg, recipients=keys, output=target, progress=report))
    size = target.stat().st_size
    if as_json:
        print_json({"archive": str(target), "bytes": size, "manifest": manifest})
        raise typer.Exit(EXIT_ERROR if manifest.vault_missing else 0)
    figures = manifest.figures
    out.print(f"backup written: {target} ({_size(size)}, {len(manifest.files)} files)")
    out.print(
        f"database {manifest.database.name} at migration {manifest.database.migration_head}; "
        + ", ".join(f"{t} {n}" for t, n in figures.rows.items())
    )
    out.print(f"audit chain head: entry {figures.audit_head_id} {figures.audit_head_hash}")
    if manifest.vault_missing:
        fail(
            f"{len(manifest.vault_missing)} vault objects had no ciphertext to back up (lost "
            f"before this backup): {', '.join(manifest.vault_missing[:5])}"
        )


@app.command("list")
def list_archives(
    directory: Path = typer.Option(DEFAULT_DIR, "--dir", help="Where the archives are."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Archives in the backup directory, newest first (no key needed: names, sizes, times)."""
    rows = [
        {
            "archive": str(p),
            "bytes": p.stat().st_size,
            "modified": datetime.fromtimestamp(p.stat().st_mtime, UTC),
        }
        for p in _archives(directory)
    ]
    if as_json:
        print_json(rows)
        return
    print_table(
        ["archive", "size", "modified"],
        [(r["archive"], _size(int(str(r["bytes"]))), r["modified"]) for r in rows],
    )


def _archives(directory: Path) -> list[Path]:
    """Complete archives, newest first (.partial files are unfinished or failed writes)."""
    return sorted(directory.glob("*.tar.age"), key=lambda p: p.stat().st_mtime, reverse=True)


@app.command("prune")
def prune(
    keep: int = typer.Option(..., "--keep", min=1, help="How many of the newest to keep."),
    directory: Path = typer.Option(DEFAULT_DIR, "--dir", help="Where the archives are."),
    yes: bool = typer.Option(False, "--yes", help="Do it (without: say what would happen)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Only list what would go."),
) -> None:
    """Delete all but the newest --keep archives in the backup directory (the nightly timer
    runs this after each backup)."""
    old = _archives(directory)[keep:]
    if not old:
        out.print(f"at most {keep} archives in {directory}: nothing to delete")
        raise typer.Exit(EXIT_NOTHING_TO_DO)
    if confirm(
        f"delete {len(old)} archives: {', '.join(p.name for p in old)}", yes=yes, dry_run=dry_run
    ):
        for path in old:
            path.unlink()
        out.print(f"done: {len(old)} deleted, {keep} kept")


def _print_check(check: ArchiveCheck) -> None:
    manifest = check.manifest
    if manifest is not None:
        out.print(
            f"backup of {manifest.created_at} by tipstream {manifest.app_version}: database "
            f"{manifest.database.name} at migration {manifest.database.migration_head}, "
            f"{len(manifest.files)} files"
        )
    if check.ok:
        out.print(
            f"archive intact: {check.files_checked} files, {_size(check.bytes_checked)} "
            "match the manifest"
        )
    for problem in check.problems:
        err.print(f"tipctl: {problem}", markup=False, highlight=False)


@app.command("verify")
def verify(
    archive: Path = typer.Argument(..., help="The .tar.age archive."),
    identity: Path = IDENTITY_OPTION,
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Decrypt (in memory, nothing written) and check every file against the manifest; exit 1
    naming each file that does not match."""
    keys = _identities(identity)
    if not archive.is_file():
        fail(f"{archive}: no such file", EXIT_USAGE)
    try:
        with progress_bars() as report:
            check = backup.verify(archive, keys, report)
    except age.ArchiveUnreadable as exc:
        fail(f"{archive}: {exc}")
    if as_json:
        print_json(check)
    else:
        _print_check(check)
    if not check.ok:
        raise typer.Exit(EXIT_ERROR)


def _plan(target: backup.Target, archive: Path) -> str:
    wipe = (
        f"drop the {len(target.tables)} tables now in database {target.database} and restore"
        if target.tables
        else f"restore into the empty database {target.database}"
    )
    return (
        f"{wipe} {archive.name}, put its vault objects in {target.vault_dir} and its vault "
        f"keys in {target.secrets_dir}"
    )


def _print_report(report: RestoreReport) -> None:
    out.print(
        f"restored the backup of {report.created_at} (migration {report.migration_head}): "
        f"{report.vault_objects_placed} vault objects, keys written: "
        f"{', '.join(report.secrets_written) or 'unchanged'}"
    )
    for check in report.checks:
        mark = "ok  " if check.ok else "FAIL"
        (out if check.ok else err).print(f"{mark} {check.name}: {check.detail}", markup=False)
    if report.pending_migrations:
        out.print(
            f"{report.pending_migrations} newer migrations pending: run `tipctl db migrate` "
            "(the playbook does) before starting the services"
        )
    if report.secrets_written:
        out.print(
            "the vault keys changed: restart the services, and on a cluster rerun the playbook "
            "so every app host gets them"
        )


def restore(
    archive: Path = typer.Argument(..., help="The .tar.age archive."),
    identity: Path = IDENTITY_OPTION,
    force: bool = typer.Option(
        False, "--force", help="Replace a database with data and fill a non-empty vault dir."
    ),
    yes: bool = typer.Option(False, "--yes", help="Do it (without: say what would happen)."),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Check the target and the archive; change nothing."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Restore a backup into an empty system (a fresh install): checks the archive before
    touching anything, restores the database in one transaction, puts the vault objects and
    keys in place, then runs the ledger and audit verification; exit 1 if any check fails."""
    cfg = settings()
    keys = _identities(identity)
    if not archive.is_file():
        fail(f"{archive}: no such file", EXIT_USAGE)
    target = guarded(backup.inspect_target(cfg))
    refusal = target.refusal()
    if refusal and not force:
        fail(refusal, EXIT_USAGE)
    if not confirm(_plan(target, archive), yes=yes, dry_run=dry_run):
        with progress_bars() as report:
            try:
                check = backup.verify(archive, keys, report)
            except age.ArchiveUnreadable as exc:
                fail(f"{archive}: {exc}")
        _print_check(check)
        raise typer.Exit(0 if check.ok else EXIT_ERROR)
    with progress_bars() as report:
        try:
            staged = backup.stage(cfg, archive, keys, report)
        except (age.ArchiveUnreadable, ArchiveError) as exc:
            fail(f"{archive}: {exc}")
        try:
            result = guarded(backup.apply(cfg, staged, force=force, progress=report))
        finally:
            staged.cleanup()
    if as_json:
        print_json(result)
    else:
        _print_report(result)
    if not result.ok:
        raise typer.Exit(EXIT_ERROR)


app.command("restore")(restore)
