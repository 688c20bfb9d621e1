"""tipctl keys init|status|rotate|prune: the vault's key-encryption keys, which wrap the
document vault's data keys and the staff's sealed TOTP secrets (docs/security.md).

The keyring is the secret file vault_keys in secrets_dir (root-only on installed nodes); the
services read it at start, so restart them after a rotation (the appliance's secrets role copies
it into their credentials). Until then they keep wrapping new objects under the old key: run
`tipctl keys rotate` again after the restart (it resumes) and `tipctl keys prune` last."""

from __future__ import annotations

import base64
import os
from collections.abc import Callable
from pathlib import Path

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
    run,
    settings,
    with_conn,
)
from tipstream.accounts import service as accounts
from tipstream.audit import service as audit
from tipstream.config import SECRET_FILES, Settings
from tipstream.db import Conn
from tipstream.vault.keys import Keyring, KeyringError, new_keyring
from tipstream.vault.service import RotationResult, Vault
from tipstream.vault.storage import StorageUnavailable, storage_for

app = typer.Typer(
    help="The document vault's key-encryption keys: init, status, rotate, prune.",
    no_args_is_help=True,
)


def secrets_path(cfg: Settings, name: str) -> Path:
    if not cfg.secrets_dir:
        fail("secrets_dir is not set in the config: the keyring file lives there", EXIT_USAGE)
    return Path(cfg.secrets_dir) / SECRET_FILES[name]


def write_secret(path: Path, text: str) -> None:
    """Replace a secret file atomically, 0600, keeping the old file's owner and group."""
    temporary = path.with_name(f".{path.name}.new")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    if path.exists():
        stat = path.stat()
        os.chown(temporary, stat.st_uid, stat.st_gid)
    temporary.replace(path)


async def keys_in_use(conn: Conn, vault: Vault) -> tuple[dict[str, int], dict[str, int]]:
    """(vault objects, sealed TOTP secrets) per key-encryption key."""
    return await vault.keys_in_use(conn), await accounts.totp_secrets_by_key(conn)


def merged(*counts: dict[str, int]) -> dict[str, int]:
    total: dict[str, int] = {}
    for count in counts:
        for key, n in count.items():
            total[key] = total.get(key, 0) + n
    return total


def keyring_of(cfg: Settings) -> Keyring:
    path = secrets_path(cfg, "vault_keys")
    try:
        return Keyring.parse(path.read_text() if path.exists() else None)
    except KeyringError as exc:
        fail(str(exc))


@app.command("init")
def init() -> None:
    """Create the vault keyring (vault_keys) and the KYC index key if they do not exist."""
    cfg = settings()
    made = []
    keyring_path = secrets_path(cfg, "vault_keys")
    if not keyring_path.exists():
        write_secret(keyring_path, new_keyring().format())
        made.append(keyring_path)
    index_path = secrets_path(cfg, "kyc_index_key")
    if not index_path.exists():
        write_secret(index_path, base64.b64encode(os.urandom(32)).decode() + "\n")
        made.append(index_path)
    if not made:
        err.print("tipctl: both keys exist already; nothing to do")
        raise typer.Exit(EXIT_NOTHING_TO_DO)
    for path in made:
        out.print(f"created {path}")


@app.command("status")
def status(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """The keys in the keyring, which is active, and how many vault objects and TOTP secrets
    each wraps."""
    cfg = settings()
    keyring = keyring_of(cfg)

    async def counts(conn: Conn) -> tuple[dict[str, int], dict[str, int]]:
        return await keys_in_use(conn, Vault(keyring, storage_for(cfg)))

    objects, totp = run(with_conn(cfg, counts))
    in_use = merged(objects, totp)
    unknown = sorted(set(in_use) - set(keyring.keys))
    rows: list[dict[str, object]] = [
        {
            "key_id": k,
            "active": k == keyring.active_id,
            "objects": objects.get(k, 0),
            "totp_secrets": totp.get(k, 0),
            **({"missing": True} if k in unknown else {}),
        }
        for k in [*keyring.keys, *unknown]
    ]
    if as_json:
        print_json(rows)
    else:
        print_table(
            ["key id", "active", "objects", "2FA secrets"],
            [
                (
                    f"{r['key_id']}{' (NOT IN KEYRING)' if r.get('missing') else ''}",
                    "yes" if r["active"] else "",
                    r["objects"],
                    r["totp_secrets"],
                )
                for r in rows
            ],
        )
    if unknown:
        raise typer.Exit(1)


@app.command("rotate")
def rotate(
    yes: bool = typer.Option(False, "--yes", help="Do it (without: say what would happen)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Only count what would be re-wrapped."),
    batch: int = typer.Option(200, min=1, max=10_000, help="Objects per committed batch."),
) -> None:
    """Add a new key-encryption key and re-wrap every data key under it: the vault objects' and
    the sealed TOTP secrets' (files untouched); TOTP secrets still in clear are sealed. Resumable:
    when anything is still wrapped by an older key after an interruption, the run continues with
    the current active key instead of adding another one."""
    cfg = settings()
    keyring = keyring_of(cfg)
    try:
        storage = storage_for(cfg)
    except StorageUnavailable as exc:
        fail(exc.detail)

    async def pending(conn: Conn) -> dict[str, int]:
        return merged(*await keys_in_use(conn, Vault(keyring, storage)))

    in_use = run(with_conn(cfg, pending))
    behind = sum(n for k, n in in_use.items() if k != keyring.active_id)
    resuming = behind > 0
    total = sum(in_use.values()) if not resuming else behind
    if dry_run or not yes:
        action = (
            f"resume: re-wrap {behind} data keys under the active key {keyring.active_id}"
            if resuming
            else f"add a new key-encryption key and re-wrap {total} data keys under it"
        )
        out.print(f"would {action}" + ("" if dry_run else "; pass --yes to do it"))
        raise typer.Exit(0 if dry_run else EXIT_USAGE)
    if not resuming:
        keyring = keyring.with_new_key()
        write_secret(secrets_path(cfg, "vault_keys"), keyring.format())
        out.print(f"new active key {keyring.active_id} written to the keyring")
    vault = Vault(keyring, storage)

    async def go(conn: Conn) -> RotationResult:
        with Progress(
            TextColumn("re-wrapping {task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=err,
        ) as bar:

            def progress_of(description: str) -> Callable[[int, int], None]:
                task = bar.add_task(description, total=None)
                return lambda done, total: bar.update(task, completed=done, total=total)

            objects = await vault.rotate(conn, batch=batch, progress=progress_of("vault objects"))
            totp = await accounts.rewrap_totp_secrets(
                conn, keyring, batch=batch, progress=progress_of("2FA secrets")
            )
        sealed = await accounts.seal_clear_totp_secrets(conn, keyring, batch=batch)
        result = RotationResult(
            objects.rewrapped + totp.rewrapped,
            objects.failed + totp.failed,
            objects.remaining + totp.remaining,
        )
        await audit.record(
            conn,
            "vault.keys_rotated",
            target_type="vault_key",
            target_id=keyring.active_id,
            details={
                "resumed": resuming,
                "rewrapped": result.rewrapped,
                "failed": result.failed,
                "remaining": result.remaining,
                "totp_secrets_rewrapped": totp.rewrapped,
                "totp_secrets_sealed": sealed,
            },
        )
        return result

    result = run(with_conn(cfg, go))
    out.print(
        f"re-wrapped {result.rewrapped}, failed {result.failed}, still under older keys "
        f"{result.remaining}; restart the services so they use key {keyring.active_id}, then "
        "run `tipctl keys rotate --yes` again (it resumes) and `tipctl keys prune --yes`"
    )
    if result.failed:
        raise typer.Exit(1)


@app.command("prune")
def prune(
    yes: bool = typer.Option(False, "--yes", help="Do it."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Only list the keys."),
) -> None:
    """Remove from the keyring every inactive key that no object or TOTP secret is wrapped by
    any more."""
    cfg = settings()
    keyring = keyring_of(cfg)

    async def counts(conn: Conn) -> dict[str, int]:
        return merged(*await keys_in_use(conn, Vault(keyring, storage_for(cfg))))

    in_use = run(with_conn(cfg, counts))
    unused = {k for k in keyring.keys if k != keyring.active_id and not in_use.get(k)}
    if not unused:
        err.print("tipctl: no unused key to remove")
        raise typer.Exit(EXIT_NOTHING_TO_DO)
    if dry_run or not yes:
        out.print(f"would remove {', '.join(sorted(unused))}" + ("" if dry_run else "; --yes"))
        raise typer.Exit(0 if dry_run else EXIT_USAGE)
    write_secret(secrets_path(cfg, "vault_keys"), keyring.without(unused).format())
    out.print(f"removed {len(unused)} key(s): {', '.join(sorted(unused))}")
