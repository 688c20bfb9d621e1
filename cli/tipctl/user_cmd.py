"""tipctl user create|list|show|set-role|disable|enable|reset-2fa|unlock"""

from __future__ import annotations

import sys
from datetime import date
from pathlib import Path

import typer
from valkey.asyncio import Valkey

from tipctl.common import (
    EXIT_NOTHING_TO_DO,
    EXIT_USAGE,
    confirm,
    fail,
    out,
    print_json,
    print_table,
    read_secret_file,
    run,
    settings,
    with_conn,
    with_conn_kv,
)
from tipstream.accounts import queries, service
from tipstream.accounts.schemas import User
from tipstream.db import Conn

app = typer.Typer(help="Users: create, list, roles, disable, 2FA reset.", no_args_is_help=True)
ROLES = ("viewer", "performer", "moderator", "admin")


def _role(value: str) -> str:
    if value not in ROLES:
        raise typer.BadParameter(f"must be one of {', '.join(ROLES)}")
    return value


def _print_user(user: User) -> None:
    print_table(
        ["field", "value"],
        [
            ("id", user.id),
            ("email", user.email),
            ("display name", user.display_name),
            ("role", user.role),
            ("permissions", ", ".join(user.permissions) or "-"),
            ("2FA", "enabled" if user.totp_enabled else "off"),
            ("status", "DISABLED" if user.disabled else "active"),
            ("created", user.created_at.strftime("%Y-%m-%d %H:%M:%S %Z")),
        ],
    )


def _password(password_file: Path | None) -> str:
    if password_file is not None:
        return read_secret_file(password_file)
    if not sys.stdin.isatty():
        fail("no terminal to ask for the password: pass --password-file FILE", EXIT_USAGE)
    first = typer.prompt("Password", hide_input=True)
    if first != typer.prompt("Again", hide_input=True):
        fail("the passwords differ", EXIT_USAGE)
    return str(first)


@app.command("create")
def create(
    email: str = typer.Argument(..., help="Login email."),
    role: str = typer.Option("viewer", "--role", callback=_role, help="|".join(ROLES)),
    display_name: str = typer.Option(..., "--display-name", help="Shown to other users."),
    date_of_birth: str = typer.Option(..., "--date-of-birth", help="YYYY-MM-DD (18+)."),
    password_file: Path | None = typer.Option(
        None, "--password-file", help="File holding the password; otherwise asked for."
    ),
    enable_2fa: bool = typer.Option(
        False, "--enable-2fa", help="Turn on TOTP now and print its secret and recovery codes."
    ),
    if_missing: bool = typer.Option(
        False, "--if-missing", help="Exit 3 (nothing to do) if the email exists already."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Create a user (admins and moderators should get --enable-2fa)."""
    try:
        born = date.fromisoformat(date_of_birth)
    except ValueError:
        fail("--date-of-birth must be YYYY-MM-DD", EXIT_USAGE)
    cfg = settings()

    async def exists(conn: Conn) -> bool:
        return await queries.user_by_email(conn, email) is not None

    if if_missing and run(with_conn(cfg, exists)):
        out.print(f"user {email} exists already; nothing to do")
        raise typer.Exit(EXIT_NOTHING_TO_DO)
    password = _password(password_file)

    async def create_it(conn: Conn) -> dict[str, object]:
        user = await service.create_user(
            conn,
            cfg,
            email=email,
            password=password,
            date_of_birth=born,
            display_name=display_name,
            role=role,
            actor_id=None,
        )
        result: dict[str, object] = {"user": user}
        if enable_2fa:
            enrollment, codes = await service.provision_totp(conn, cfg, user.id, actor_id=None)
            result["totp_secret"] = enrollment.secret
            result["otpauth_uri"] = enrollment.otpauth_uri
            result["recovery_codes"] = codes.recovery_codes
            result["user"] = await service.get_user(conn, user.id)
        return result

    result = run(with_conn(cfg, create_it))
    if as_json:
        print_json(result)
        return
    user = result["user"]
    assert isinstance(user, User)
    out.print(f"created user {user.id} {user.email} ({user.role})")
    if enable_2fa:
        out.print(f"TOTP secret: {result['totp_secret']}")
        out.print(f"otpauth URI: {result['otpauth_uri']}")
        codes = result["recovery_codes"]
        assert isinstance(codes, list)
        out.print("recovery codes (each works once): " + " ".join(codes))


@app.command("list")
def list_users(
    role: str | None = typer.Option(None, "--role", help="Only this role."),
    search: str | None = typer.Option(None, "--search", help="Match email or display name."),
    limit: int = typer.Option(100, "--limit", min=1, max=10_000),
    offset: int = typer.Option(0, "--offset", min=0),
    as_json: bool = typer.Option(False, "--json", help="Print JSON (keys as the API's)."),
) -> None:
    """List users."""
    if role is not None:
        _role(role)

    async def fetch(conn: Conn) -> list[User]:
        return await service.list_users(conn, role=role, search=search, limit=limit, offset=offset)

    users = run(with_conn(settings(), fetch))
    if as_json:
        print_json(users)
        return
    print_table(
        ["id", "email", "display name", "role", "2FA", "status", "created"],
        [
            (
                u.id,
                u.email,
                u.display_name,
                u.role + (f" [{','.join(u.permissions)}]" if u.permissions else ""),
                "on" if u.totp_enabled else "-",
                "DISABLED" if u.disabled else "active",
                u.created_at.strftime("%Y-%m-%d"),
            )
            for u in users
        ],
    )


@app.command("show")
def show(
    user: str = typer.Argument(..., help="User id or email."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Show one user."""

    async def fetch(conn: Conn) -> User:
        return await service.find_user(conn, user)

    found = run(with_conn(settings(), fetch))
    if as_json:
        print_json(found)
    else:
        _print_user(found)


@app.command("set-role")
def set_role(
    user: str = typer.Argument(..., help="User id or email."),
    role: str = typer.Argument(..., callback=_role, help="|".join(ROLES)),
) -> None:
    """Change a user's role (audited). Moderators and admins must then enrol 2FA."""
    cfg = settings()

    async def change(conn: Conn, kv: Valkey) -> tuple[str, User]:
        before = await service.find_user(conn, user)
        after = await service.set_role(conn, kv, cfg, before.id, role, actor_id=None)
        return before.role, after

    before, after = run(with_conn_kv(cfg, change))
    if before == after.role:
        out.print(f"user {after.id} is already {role}; nothing to do")
        raise typer.Exit(EXIT_NOTHING_TO_DO)
    out.print(f"user {after.id} {after.email}: role {before} -> {after.role}")


@app.command("disable")
def disable(
    user: str = typer.Argument(..., help="User id or email."),
    reason: str = typer.Option(..., "--reason", help="Why (kept in the audit log)."),
    yes: bool = typer.Option(False, "--yes", help="Do it without asking."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Only say what would happen."),
) -> None:
    """Disable an account: sign-in refused, every session and API token ended at once."""
    cfg = settings()
    target = run(with_conn(cfg, lambda conn: service.find_user(conn, user)))
    if target.disabled:
        out.print(f"user {target.id} is already disabled; nothing to do")
        raise typer.Exit(EXIT_NOTHING_TO_DO)
    what = (
        f"disable user {target.id} {target.email} ({target.role}), end all their sessions "
        f"and revoke their API tokens; reason: {reason}"
    )
    if not confirm(what, yes=yes, dry_run=dry_run):
        return
    run(
        with_conn_kv(
            cfg,
            lambda conn, kv: service.set_disabled(
                conn, kv, cfg, target.id, reason=reason, actor_id=None
            ),
        )
    )
    out.print(f"user {target.id} disabled")


@app.command("enable")
def enable(user: str = typer.Argument(..., help="User id or email.")) -> None:
    """Re-enable a disabled account."""
    cfg = settings()
    target = run(with_conn(cfg, lambda conn: service.find_user(conn, user)))
    if not target.disabled:
        out.print(f"user {target.id} is not disabled; nothing to do")
        raise typer.Exit(EXIT_NOTHING_TO_DO)
    run(
        with_conn_kv(
            cfg,
            lambda conn, kv: service.set_disabled(
                conn, kv, cfg, target.id, reason=None, actor_id=None
            ),
        )
    )
    out.print(f"user {target.id} enabled")


@app.command("reset-2fa")
def reset_2fa(
    user: str = typer.Argument(..., help="User id or email."),
    yes: bool = typer.Option(False, "--yes", help="Do it without asking."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Only say what would happen."),
) -> None:
    """Remove a user's 2FA (lost phone); they must enrol again. Ends their sessions."""
    cfg = settings()
    target = run(with_conn(cfg, lambda conn: service.find_user(conn, user)))
    if not target.totp_enabled:
        out.print(f"user {target.id} has no 2FA; nothing to do")
        raise typer.Exit(EXIT_NOTHING_TO_DO)
    what = f"remove 2FA of user {target.id} {target.email} and end their sessions"
    if not confirm(what, yes=yes, dry_run=dry_run):
        return
    run(
        with_conn_kv(
            cfg, lambda conn, kv: service.reset_totp(conn, kv, cfg, target.id, actor_id=None)
        )
    )
    out.print(f"2FA removed for user {target.id}")


@app.command("unlock")
def unlock(email: str = typer.Argument(..., help="Login email.")) -> None:
    """Lift a login lockout after too many failed attempts."""
    cfg = settings()

    async def go() -> None:
        from tipstream import kv as kv_module

        client = kv_module.create_client(cfg)
        try:
            await service.unlock_login(client, cfg, email)
        finally:
            await client.aclose()

    run(go())
    out.print(f"login unlocked for {email}")
