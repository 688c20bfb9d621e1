"""Postgres chores of the one-box runner, run with the project's venv (psycopg).

    pgtool.py superuser URL
        exit 0 if URL connects as a superuser, 1 (reason on stderr) otherwise.
    pgtool.py provision ADMIN_URL APP_URL PASSWORD_FILE
        create APP_URL's role (LOGIN) and database (owned by it) if missing, then make sure
        APP_URL can log in: without a password where the server trusts loopback, else with the
        password in PASSWORD_FILE (generated there if absent), set on the role. Prints
        "trust" or "password".
    pgtool.py dbkey ADMIN_URL DBNAME
        print "<server system identifier>-<database oid>": names this one database on this one
        server, and changes when the database is dropped and created again.

Written in Python rather than psql so it works wherever the venv does, even against a server
whose client tools are not installed, and so identifiers and the password are quoted properly.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import sys
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

TIMEOUT = 5


def connect(url: str, password: str | None = None) -> psycopg.Connection[tuple[object, ...]]:
    extra: dict[str, object] = {"connect_timeout": TIMEOUT}
    if password is not None:
        extra["password"] = password
    return psycopg.connect(url, autocommit=True, **extra)  # type: ignore[arg-type]


def superuser(url: str) -> int:
    try:
        with connect(url) as conn:
            row = conn.execute(
                "SELECT rolsuper FROM pg_roles WHERE rolname = current_user"
            ).fetchone()
    except psycopg.Error as exc:
        print(f"pgtool: {url}: {str(exc).strip().splitlines()[0]}", file=sys.stderr)
        return 1
    if not row or not row[0]:
        print(f"pgtool: {url}: connects, but not as a superuser", file=sys.stderr)
        return 1
    return 0


def scram_verifier(password: str, iterations: int = 4096) -> str:
    """A SCRAM-SHA-256 verifier, so the plain password never reaches the server (or its logs)."""
    salt = os.urandom(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", "sha256").digest()
    b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


def is_auth_failure(exc: psycopg.Error) -> bool:
    text = str(exc).lower()
    return any(
        word in text
        for word in ("password", "authentication failed", "no pg_hba.conf entry", "fe_sendauth")
    )


def can_login(url: str, password: str | None) -> psycopg.Error | None:
    try:
        with connect(url, password) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return exc
    return None


def provision(admin_url: str, app_url: str, password_file: Path) -> int:
    params = conninfo_to_dict(app_url)
    role, dbname = str(params["user"]), str(params.get("dbname", params["user"]))
    with connect(admin_url) as conn:
        exists = conn.execute("SELECT rolcanlogin FROM pg_roles WHERE rolname = %s", (role,))
        found = exists.fetchone()
        if found is None:
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
            print(f"pgtool: created role {role}", file=sys.stderr)
        elif not found[0]:
            conn.execute(sql.SQL("ALTER ROLE {} LOGIN").format(sql.Identifier(role)))
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)).fetchone():
            conn.execute(
                sql.SQL("CREATE DATABASE {} OWNER {}").format(
                    sql.Identifier(dbname), sql.Identifier(role)
                )
            )
            print(f"pgtool: created database {dbname}", file=sys.stderr)

    # Trust on loopback (the dev default): no password at all.
    first = can_login(app_url, None)
    if first is None:
        print("trust")
        return 0
    if not is_auth_failure(first):
        print(f"pgtool: {role} cannot connect: {first}", file=sys.stderr)
        return 1

    # The server wants a password: keep one in the secrets dir (the app reads it from there).
    if not password_file.exists():
        fd = os.open(password_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(32) + "\n")
    password = password_file.read_text().strip()
    with connect(admin_url) as conn:
        conn.execute(
            sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                sql.Identifier(role), sql.Literal(scram_verifier(password))
            )
        )
    again = can_login(app_url, password)
    if again is not None:
        print(f"pgtool: {role} cannot log in even with a password: {again}", file=sys.stderr)
        return 1
    print("password")
    return 0


def dbkey(admin_url: str, dbname: str) -> int:
    with connect(admin_url) as conn:
        row = conn.execute(
            "SELECT (SELECT system_identifier FROM pg_control_system()), oid"
            " FROM pg_database WHERE datname = %s",
            (dbname,),
        ).fetchone()
    if row is None:
        print(f"pgtool: no database {dbname}", file=sys.stderr)
        return 1
    print(f"{row[0]}-{row[1]}")
    return 0


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "superuser":
        return superuser(argv[1])
    if len(argv) == 3 and argv[0] == "dbkey":
        return dbkey(argv[1], argv[2])
    if len(argv) == 4 and argv[0] == "provision":
        return provision(argv[1], argv[2], Path(argv[3]))
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
