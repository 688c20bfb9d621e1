"""tipctl doctor: is everything this node needs there and answering?"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import typer

from tipctl import backup_cmd
from tipctl.common import config_path, fail, out, print_json
from tipstream import db, kv
from tipstream.accounts import service as accounts
from tipstream.config import ConfigError, Settings, load_settings
from tipstream.moderation import detox
from tipstream.rooms import health as rooms_health

Check = Callable[[Settings], Awaitable[str]]


async def _postgres(settings: Settings) -> str:
    async with db.connect(settings) as conn:
        cur = await conn.execute("SHOW server_version")
        row = await cur.fetchone()
        version = row["server_version"] if row else "?"
        states = await db.migration_status(conn)
    # "changed"/"missing-file": this code and the database disagree about what was applied;
    # tipctl db migrate refuses those, so telling the operator to run it would send them in a
    # circle.
    drift = [s for s in states if s.state in ("changed", "missing-file")]
    if drift:
        raise RuntimeError(
            f"migrations differ from what this database applied: "
            f"{', '.join(f'{s.version:04d}({s.state})' for s in drift)} - run the code that"
            " migrated it, or a new database; tipctl db migrate refuses edited migrations"
        )
    pending = [s for s in states if s.state != "applied"]
    if pending:
        raise RuntimeError(
            f"migrations not applied: {', '.join(f'{s.version:04d}({s.state})' for s in pending)}"
            " - run tipctl db migrate"
        )
    return f"PostgreSQL {version}, {len(states)} migrations applied"


async def _valkey(settings: Settings) -> str:
    client = kv.create_client(settings)
    try:
        await client.ping()
        info = await client.info("server")
    finally:
        await client.aclose()
    name = "valkey" if "valkey_version" in info else "redis"
    version = info.get("valkey_version") or info.get("redis_version")
    return f"{name} {version}"


async def _audit(settings: Settings) -> str:
    from tipstream.audit import service

    async with db.connect(settings) as conn:
        result = await service.verify(conn)
    if not result.ok:
        raise RuntimeError(f"audit chain broken at entry {result.broken_id}")
    return f"audit chain intact ({result.checked} entries)"


async def _ccbill(settings: Settings) -> str:
    from tipstream.payments import reconcile

    async with db.connect(settings) as conn:
        return await reconcile.health(conn, settings)


CHECKS: list[tuple[str, Check]] = [
    ("postgres", _postgres),
    ("valkey", _valkey),
    ("audit log", _audit),
    ("2fa secrets", accounts.doctor_check),
    ("ccbill", _ccbill),
    ("janus", rooms_health.check_janus),
    ("coturn", rooms_health.check_coturn),
    ("detoxify", detox.doctor_check),
    ("backups", backup_cmd.doctor_check),
]


async def _run_checks(settings: Settings) -> list[tuple[str, bool, str]]:
    results = []
    for name, check in CHECKS:
        try:
            detail = await asyncio.wait_for(check(settings), timeout=10)
            results.append((name, True, detail))
        except Exception as exc:  # every failure is reported on its own line, not raised
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            results.append((name, False, message))
    return results


def doctor(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Check the config, Postgres, Valkey and the audit chain; one ok/fail line each."""
    try:
        settings = load_settings(config_path())
    except ConfigError as exc:
        if as_json:
            print_json([{"check": "config", "ok": False, "detail": str(exc)}])
        fail(f"config: {exc}")
    results = [("config", True, "valid"), *asyncio.run(_run_checks(settings))]
    if as_json:
        print_json([{"check": n, "ok": ok, "detail": d} for n, ok, d in results])
    else:
        width = max(len(name) for name, _, _ in results)  # details line up, whatever the names
        for name, ok, detail in results:
            mark = "[green]ok  [/green]" if ok else "[red]FAIL[/red]"
            out.print(f"{mark} {name:<{width}} {detail}", highlight=False)
    if not all(ok for _, ok, _ in results):
        raise typer.Exit(1)
