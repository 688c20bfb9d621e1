"""tipctl kyc list|show|ocr|approve|reject|resubmit|purge|export|open-export"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import msgspec
import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from tipctl.common import (
    EXIT_NOTHING_TO_DO,
    EXIT_USAGE,
    err,
    fail,
    out,
    print_json,
    print_table,
    read_secret_file,
    run,
    settings,
    with_conn,
)
from tipstream.accounts import service as accounts
from tipstream.db import Conn
from tipstream.kyc import export as kyc_export
from tipstream.kyc import service
from tipstream.kyc.schemas import MrzSuggestion, SubmissionDetail, SubmissionSummary

app = typer.Typer(
    help="KYC: the review queue, decisions, retention purges, lawful exports.",
    no_args_is_help=True,
)
STATUSES = ("submitted", "approved", "rejected", "needs_resubmission", "all")


def _status(value: str) -> str:
    if value not in STATUSES:
        raise typer.BadParameter(f"must be one of {', '.join(STATUSES)}")
    return value


@app.command("list")
def list_submissions(
    status: str = typer.Option("submitted", "--status", callback=_status, help="Or 'all'."),
    user: str | None = typer.Option(None, "--user", help="Only this user (id or email)."),
    limit: int = typer.Option(100, min=1, max=10_000),
    as_json: bool = typer.Option(False, "--json", help="Print JSON (the API's keys)."),
) -> None:
    """Submissions, oldest first (default: those waiting for review)."""
    cfg = settings()

    async def fetch(conn: Conn) -> list[SubmissionSummary]:
        user_id = None if user is None else (await accounts.find_user(conn, user)).id
        return await service.queue(
            conn, status=None if status == "all" else status, user_id=user_id, limit=limit
        )

    rows = run(with_conn(cfg, fetch))
    if as_json:
        print_json(rows)
        return
    print_table(
        ["id", "user", "status", "country", "document", "expires", "flags", "submitted"],
        [
            (
                r.id,
                r.user_id,
                r.status + (" (purged)" if r.purged else ""),
                r.country,
                r.document_type,
                r.document_expires_on.isoformat(),
                ", ".join(r.flags) or "-",
                r.submitted_at.strftime("%Y-%m-%d %H:%M"),
            )
            for r in rows
        ],
    )
    if not rows:
        raise typer.Exit(EXIT_NOTHING_TO_DO)


@app.command("show")
def show(
    submission_id: int = typer.Argument(..., min=1),
    as_json: bool = typer.Option(False, "--json", help="Print JSON (the API's keys)."),
) -> None:
    """One submission with its decrypted form (the view is audited)."""
    cfg = settings()

    async def fetch(conn: Conn) -> SubmissionDetail:
        return await service.detail(conn, cfg, submission_id, actor_id=None, ip=None)

    found = run(with_conn(cfg, fetch))
    if as_json:
        print_json(found)
        return
    form = found.form
    rows: list[tuple[str, object]] = [
        ("id", found.id),
        ("user", f"{found.user_id} <{found.user_email}>"),
        ("status", found.status + (" (purged)" if found.purged else "")),
        ("flags", ", ".join(found.flags) or "-"),
        ("images", ", ".join(found.images) or "-"),
        ("submitted", found.submitted_at.strftime("%Y-%m-%d %H:%M:%S %Z")),
        ("decided", found.decided_at.strftime("%Y-%m-%d %H:%M:%S %Z") if found.decided_at else "-"),
        ("reason", found.decision_reason or "-"),
    ]
    if form is not None:
        rows += [
            ("legal name", form.legal_name),
            ("date of birth", form.date_of_birth.isoformat()),
            ("country", form.country),
            ("document", f"{form.document_type} {form.document_number}"),
            ("document expiry", form.document_expiry.isoformat()),
            (
                "agreement",
                f"{form.agreement_version} at {form.agreement_accepted_at:%Y-%m-%d %H:%M}",
            ),
        ]
    rows.append(("checks", msgspec.json.encode(found.checks).decode()))
    print_table(["field", "value"], rows)


@app.command("ocr")
def ocr(
    submission_id: int = typer.Argument(..., min=1),
    as_json: bool = typer.Option(False, "--json", help="Print JSON (the API's keys)."),
) -> None:
    """The MRZ OCR (tesseract, where installed) reads off the document images, valid by its
    check digits, and the form fields it disagrees with (audited). Exit 3 when none was read."""
    cfg = settings()

    async def fetch(conn: Conn) -> MrzSuggestion:
        return await service.mrz_suggestion(conn, cfg, submission_id, actor_id=None, ip=None)

    found = run(with_conn(cfg, fetch))
    if as_json:
        print_json(found)
    elif found.found and found.mrz is not None:
        out.print(found.mrz, markup=False, highlight=False)
        out.print(
            f"from the {found.image} image, {found.corrections} characters corrected "
            f"({found.unconfirmed_corrections} where no check digit reaches); "
            f"disagrees with the form on: {', '.join(found.mismatches) or 'nothing'}"
        )
    else:
        out.print(found.note or "no MRZ read")
    if not found.found:
        raise typer.Exit(EXIT_NOTHING_TO_DO)


def _decide(submission_id: int, decision: str, reason: str | None) -> None:
    cfg = settings()

    async def go(conn: Conn) -> SubmissionSummary:
        return await service.decide(
            conn, submission_id, decision, reason=reason, actor_id=None, ip=None
        )

    result = run(with_conn(cfg, go))
    out.print(f"submission {result.id} of user {result.user_id}: {result.status}")


@app.command("approve")
def approve(submission_id: int = typer.Argument(..., min=1)) -> None:
    """Approve a submitted application (audited; the performer may then publish and be paid)."""
    _decide(submission_id, "approve", None)


@app.command("reject")
def reject(
    submission_id: int = typer.Argument(..., min=1),
    reason: str = typer.Option(..., "--reason", help="Told to the performer."),
) -> None:
    """Reject a submitted application with a reason (audited)."""
    _decide(submission_id, "reject", reason)


@app.command("resubmit")
def resubmit(
    submission_id: int = typer.Argument(..., min=1),
    reason: str = typer.Option(..., "--reason", help="What to fix; told to the performer."),
) -> None:
    """Send a submitted application back for resubmission (audited)."""
    _decide(submission_id, "needs_resubmission", reason)


@app.command("purge")
def purge(
    dry_run: bool = typer.Option(False, "--dry-run", help="List what would be purged."),
    yes: bool = typer.Option(False, "--yes", help="Required to purge."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Crypto-shred KYC records past their retention (settings kyc.rejected_retention_days,
    kyc.closed_account_retention_days) and expire lapsed verifications; each purge is audited."""
    cfg = settings()

    async def preview(conn: Conn) -> service.PurgeResult:
        return await service.purge(conn, cfg, dry_run=True)

    planned = run(with_conn(cfg, preview))
    if dry_run or not yes:
        if as_json:
            print_json({"would_purge": planned.submissions})
        else:
            out.print(
                f"would purge {len(planned.submissions)} submission(s)"
                + (f": {', '.join(map(str, planned.submissions))}" if planned.submissions else "")
                + ("" if dry_run else "; add --yes to purge")
            )
        raise typer.Exit(0 if dry_run else EXIT_USAGE)

    async def go(conn: Conn) -> tuple[list[int], service.PurgeResult]:
        expired = await service.expire_documents(conn)
        with Progress(
            TextColumn("purging"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=err,
        ) as bar:
            task = bar.add_task("purge", total=None)

            def progress(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)

            return expired, await service.purge(conn, cfg, progress=progress)

    expired, result = run(with_conn(cfg, go))
    if as_json:
        print_json(
            {
                "purged": result.submissions,
                "objects_shredded": result.objects_shredded,
                "failed": result.failed,
                "expired_users": expired,
            }
        )
    else:
        out.print(
            f"purged {len(result.submissions)}, shredded {result.objects_shredded} object(s), "
            f"failed {result.failed}; {len(expired)} verification(s) expired"
        )
    if result.failed:
        raise typer.Exit(1)
    if not result.submissions and not expired:
        raise typer.Exit(EXIT_NOTHING_TO_DO)


def _passphrase(path: Path | None) -> str:
    if path is not None:
        return read_secret_file(path)
    if not sys.stdin.isatty():
        fail("no terminal to ask for the passphrase: pass --passphrase-file FILE", EXIT_USAGE)
    first = typer.prompt("Export passphrase", hide_input=True)
    if typer.prompt("Again", hide_input=True) != first:
        fail("the passphrases differ", EXIT_USAGE)
    return str(first)


@app.command("export")
def export(
    user: str = typer.Argument(..., help="User id or email."),
    case: str = typer.Option(..., "--case", help="The lawful request's case reference."),
    output: Path = typer.Option(..., "--out", help="Package file to write (must not exist)."),
    passphrase_file: Path | None = typer.Option(None, "--passphrase-file"),
) -> None:
    """Write one user's KYC records (decrypted forms and images, a manifest) as an encrypted,
    checksummed package for a lawful request; audited with the case reference."""
    cfg = settings()
    if output.exists():
        fail(f"{output} exists; choose a new file", EXIT_USAGE)
    phrase = _passphrase(passphrase_file)

    async def go(conn: Conn) -> kyc_export.ExportPackage:
        target = await accounts.find_user(conn, user)
        return await kyc_export.export_user(
            conn, cfg, target.id, case_ref=case, passphrase=phrase, actor_id=None
        )

    package = run(with_conn(cfg, go))
    output.write_bytes(package.data)
    output.chmod(0o600)
    checksum = output.with_name(output.name + ".sha256")
    checksum.write_text(f"{package.sha256}  {output.name}\n")
    out.print(
        f"wrote {output} ({package.submissions} submission(s), {package.files} file(s)); "
        f"sha256 {package.sha256}"
    )


@app.command("open-export")
def open_export(
    package: Path = typer.Argument(..., exists=True, dir_okay=False),
    case: str = typer.Option(..., "--case"),
    output: Path = typer.Option(..., "--out", help="The decrypted tar to write."),
    passphrase_file: Path | None = typer.Option(None, "--passphrase-file"),
) -> None:
    """Check and decrypt an export package into a tar file (for the receiving side)."""
    blob = package.read_bytes()
    checksum = package.with_name(package.name + ".sha256")
    if checksum.exists() and checksum.read_text().split()[0] != hashlib.sha256(blob).hexdigest():
        fail(f"{package} does not match {checksum.name}")
    phrase = _passphrase(passphrase_file)
    try:
        plain = kyc_export.open_package(blob, phrase, case)
    except kyc_export.ExportError as exc:
        fail(exc.detail)
    output.write_bytes(plain)
    output.chmod(0o600)
    out.print(f"wrote {output}")
