"""Ledger benchmark: tips per second and p50/p99 latency through the ledger core and through the
HTTP API, for one hot performer and for many, beside pgbench's TPS for an equivalent
single-row-update transaction on the same Postgres in the same run.

Runs against a fresh scratch database it creates and drops (needs a Postgres superuser URL,
default postgresql://postgres@127.0.0.1:5432/postgres, and Valkey at redis://127.0.0.1:6379/0).

    .venv/bin/python bench/ledger/bench_ledger.py --seconds 10 --clients 16 --tippers 512

The ledger core is measured twice: through the tip batcher (group commit: many tips per
transaction, ledger/batcher.py) and one tip per transaction (ledger_post_tip).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "cli"), str(Path(__file__).resolve().parent)]

from tipstream import db as tsdb  # noqa: E402
from tipstream.config import Settings, load_settings  # noqa: E402
from tipstream.ledger import service, tips, verify  # noqa: E402
from tipstream.ledger.batcher import TipBatcher, post_alone  # noqa: E402

VIEWERS = 2_000
TOKENS_EACH = 1_000_000


@dataclass
class Result:
    name: str
    count: int
    seconds: float
    latencies: list[float]

    @property
    def rate(self) -> float:
        return self.count / self.seconds

    def line(self) -> str:
        lat = sorted(self.latencies) or [0.0]
        p50 = lat[len(lat) // 2] * 1000
        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000
        return f"{self.name:<44} {self.rate:>9.0f} /s   p50 {p50:6.2f} ms   p99 {p99:6.2f} ms"


def with_db(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


def make_settings(db_url: str, kv_url: str, workdir: Path) -> Settings:
    secrets = workdir / "secrets"
    secrets.mkdir(exist_ok=True)
    (secrets / "session_key").write_text(uuid.uuid4().hex * 2)
    config = workdir / "tipstream.toml"
    config.write_text(
        f'secrets_dir = "{secrets}"\n[database]\nurl = "{db_url}"\npool_min = 1\npool_max = 40\n'
        f'[valkey]\nurl = "{kv_url}"\nkey_prefix = "bench:{uuid.uuid4().hex[:8]}:"\n'
        '[security]\ncookie_secure = false\n[logging]\nlevel = "ERROR"\n'
        "[ledger]\ntips_per_minute = 100000000\n"
    )
    os.environ["TIPSTREAM_CONFIG"] = str(config)
    return load_settings(config, environ={})


async def setup(settings: Settings, performers: int) -> tuple[list[int], list[int]]:
    async with tsdb.connect(settings) as conn:
        await tsdb.migrate(conn)
        cur = await conn.execute(
            """
            INSERT INTO users (email, display_name, password_hash, date_of_birth, role)
            SELECT 'bench-' || g || '@example.test', 'Viewer ' || g, 'x', '1990-01-01', 'viewer'
            FROM generate_series(1, %s) g RETURNING id
            """,
            (VIEWERS,),
        )
        viewers = [int(r["id"]) for r in await cur.fetchall()]
        cur = await conn.execute(
            """
            INSERT INTO users (email, display_name, password_hash, date_of_birth, role)
            SELECT 'perf-' || g || '@example.test', 'Performer ' || g, 'x', '1990-01-01',
                   'performer'
            FROM generate_series(1, %s) g RETURNING id
            """,
            (performers,),
        )
        stars = [int(r["id"]) for r in await cur.fetchall()]
        streams = []
        for i, performer in enumerate(stars):
            cur = await conn.execute(
                """
                INSERT INTO streams (performer_id, title, status, started_at, janus_room_id,
                                     janus_room_secret, janus_room_pin)
                VALUES (%s, 'bench', 'live', now(), %s, 's', 'p') RETURNING id
                """,
                (performer, 1_000_000 + i),
            )
            row = await cur.fetchone()
            assert row is not None
            streams.append(int(row["id"]))
        for viewer in viewers:
            await service.grant_tokens(
                conn,
                settings,
                user_id=viewer,
                tokens=TOKENS_EACH,
                grant_id=f"bench-{viewer}",
                reason="bench",
                actor_id=None,
            )
    return viewers, streams


@dataclass(frozen=True)
class CoreJob:
    """One process's share of a ledger-core run."""

    config: str
    viewers: list[int]
    streams: list[int]
    seconds: float
    tippers: int
    start_at: float
    batched: bool
    batch_workers: int
    max_batch: int
    linger: float


async def tipper(
    job: CoreJob,
    settings: Settings,
    viewers: list[int],
    deadline: float,
    latencies: list[float],
    batcher: TipBatcher | None,
) -> int:
    """One client: tips of 1 token from its viewers in turn, each awaited before the next."""
    done = 0
    async with contextlib.AsyncExitStack() as stack:
        conn = None if batcher else await stack.enter_async_context(tsdb.connect(settings))
        i = 0
        while time.perf_counter() < deadline:
            viewer = viewers[i % len(viewers)]
            stream = job.streams[(viewer + i) % len(job.streams)]
            i += 1
            start = time.perf_counter()
            order = tips.make_order(
                settings,
                viewer_id=viewer,
                stream_id=stream,
                tokens=1,
                message=None,
                private=False,
                idempotency_key=uuid.uuid4().hex,
            )
            if batcher is not None:
                await batcher.submit(order)
            else:
                assert conn is not None
                await post_alone(conn, settings, order)
            latencies.append(time.perf_counter() - start)
            done += 1
    return done


def backend_cpu_seconds(pids: list[int]) -> float:
    """CPU time Postgres backends have used (read from /proc: Postgres runs on this box)."""
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / os.sysconf("SC_CLK_TCK")


def core_process(job: CoreJob) -> tuple[int, list[float], int, float, float]:
    """Tips, latencies, batches, this process's CPU seconds and its Postgres backends'."""
    settings = load_settings(Path(job.config), environ={})
    app_name = f"bench-ledger-{os.getpid()}"

    async def connect() -> tsdb.Conn:
        conn = await psycopg.AsyncConnection.connect(
            tsdb.conninfo(settings),
            autocommit=True,
            row_factory=psycopg.rows.dict_row,
            application_name=app_name,
        )
        return conn

    async def main() -> tuple[int, list[float], int, float, float]:
        async with contextlib.AsyncExitStack() as stack:
            batcher = None
            if job.batched:
                batcher = await stack.enter_async_context(
                    TipBatcher(
                        settings,
                        workers=job.batch_workers,
                        max_batch=job.max_batch,
                        linger=job.linger,
                        connect=connect,
                    )
                )
            # Every process starts at the same moment.
            await asyncio.sleep(max(0.0, job.start_at - time.time()))
            deadline = time.perf_counter() + job.seconds
            cpu_before = time.process_time()
            latencies: list[float] = []
            counts = await asyncio.gather(
                *[
                    tipper(
                        job, settings, job.viewers[k :: job.tippers], deadline, latencies, batcher
                    )
                    for k in range(job.tippers)
                ]
            )
            client_cpu = time.process_time() - cpu_before
            server_cpu = 0.0
            if batcher is not None:
                async with tsdb.connect(settings) as conn:
                    cur = await conn.execute(
                        "SELECT pid FROM pg_stat_activity WHERE application_name = %s",
                        (app_name,),
                    )
                    server_cpu = backend_cpu_seconds([r["pid"] for r in await cur.fetchall()])
            return (
                sum(counts),
                latencies,
                batcher.batches if batcher else 0,
                client_cpu,
                server_cpu,
            )

    return asyncio.run(main())


def run_core(
    name: str,
    viewers: list[int],
    streams: list[int],
    args: argparse.Namespace,
    *,
    batched: bool,
) -> Result:
    start_at = time.time() + 1.5
    tippers = args.tippers if batched else args.clients
    jobs = [
        CoreJob(
            config=os.environ["TIPSTREAM_CONFIG"],
            viewers=viewers[p :: args.processes],
            streams=streams,
            seconds=args.seconds,
            tippers=tippers // args.processes,
            start_at=start_at,
            batched=batched,
            batch_workers=args.batch_workers,
            max_batch=args.max_batch,
            linger=args.linger_ms / 1000,
        )
        for p in range(args.processes)
    ]
    with multiprocessing.get_context("spawn").Pool(args.processes) as pool:
        results = pool.map(core_process, jobs)
    count = sum(r[0] for r in results)
    latencies = [x for r in results for x in r[1]]
    batches = sum(r[2] for r in results)
    if batches:
        client_us = sum(r[3] for r in results) / count * 1e6
        server_us = sum(r[4] for r in results) / count * 1e6
        print(
            f"# {name}: {count / batches:.0f} tips a batch; CPU per tip: Python {client_us:.0f} us"
            f" (callers and batcher), Postgres {server_us:.0f} us",
            flush=True,
        )
    return Result(name, count, args.seconds, latencies)


def pgbench_env(admin_url: str) -> dict[str, str]:
    parts = urlsplit(admin_url)
    return dict(
        os.environ,
        PGHOST=parts.hostname or "127.0.0.1",
        PGPORT=str(parts.port or 5432),
        PGUSER=parts.username or "postgres",
    )


def pgbench_tps(admin_url: str, dbname: str, script: str, seconds: float, clients: int) -> float:
    """Transactions per second of a custom pgbench script."""
    pgbench = shutil.which("pgbench")
    if pgbench is None:
        raise SystemExit("pgbench not found (Debian: postgresql-client)")
    path = Path(tempfile.mkdtemp()) / "script.sql"
    path.write_text(script)
    command = [pgbench, "-n", "-f", str(path), "-c", str(clients), "-j", "2"]
    out = subprocess.run(
        [*command, "-T", str(int(seconds)), dbname],
        check=True,
        env=pgbench_env(admin_url),
        capture_output=True,
        text=True,
    ).stdout
    match = re.search(r"tps = ([0-9.]+)", out)
    assert match, out
    return float(match.group(1))


def run_pgbench(admin_url: str, dbname: str, seconds: float, clients: int) -> float:
    """TPS of one single-row UPDATE per transaction (pgbench's own accounts table), the same
    shape as the minimum a tip must do: lock and change a balance row, commit."""
    pgbench = shutil.which("pgbench")
    if pgbench is None:
        raise SystemExit("pgbench not found (Debian: postgresql-client)")
    subprocess.run(
        [pgbench, "-i", "-q", "-s", "10", dbname],
        check=True,
        env=pgbench_env(admin_url),
        capture_output=True,
    )
    script = (
        "\\set aid random(1, 1000000)\n"
        "UPDATE pgbench_accounts SET abalance = abalance - 1 WHERE aid = :aid;\n"
    )
    return pgbench_tps(admin_url, dbname, script, seconds, clients)


def run_pgbench_tips(
    admin_url: str, dbname: str, seconds: float, clients: int, viewers: list[int], stream: int
) -> float:
    """Tips/s of the tip statement itself (ledger_post_tip) driven by pgbench, a C client: the
    database's share of a tip, without Python."""
    script = (
        f"\\set v random({min(viewers)}, {max(viewers)})\n"
        "\\set s random(0, 31)\n"
        f"SELECT outbox_id FROM ledger_post_tip(:v, {stream}, 1, NULL, false, "
        "md5(random()::text || :v), 'pgbench', 'USD', 100, 100, 3000, :s::smallint, 'bench');\n"
    )
    return pgbench_tps(admin_url, dbname, script, seconds, clients)


def run_pgbench_batches(
    admin_url: str,
    dbname: str,
    seconds: float,
    clients: int,
    viewers: list[int],
    stream: int,
    size: int,
) -> float:
    """Tips/s of the batch statement (ledger_post_tips, `size` tips of distinct viewers per
    transaction) driven by pgbench: the database's share of a batched tip."""
    assert viewers == list(range(viewers[0], viewers[0] + len(viewers)))
    script = (
        f"\\set v random({viewers[0]}, {viewers[-1] - size + 1})\n"
        "\\set s random(0, 31)\n"
        "SELECT count(*) FROM ledger_post_tips("
        f"ARRAY(SELECT generate_series(:v, :v + {size - 1}))::bigint[], "
        f"array_fill({stream}::bigint, ARRAY[{size}]), array_fill(1::bigint, ARRAY[{size}]), "
        f"array_fill(NULL::text, ARRAY[{size}]), array_fill(false, ARRAY[{size}]), "
        f"ARRAY(SELECT md5(random()::text) FROM generate_series(1, {size})), "
        f"array_fill('pgbench'::text, ARRAY[{size}]), array_fill('bench'::text, ARRAY[{size}]), "
        "'USD', 100, 100, 3000, :s::smallint);\n"
    )
    return pgbench_tps(admin_url, dbname, script, seconds, clients) * size


def load() -> str:
    """The 1-, 5- and 15-minute load averages (the box is shared: every figure depends on it)."""
    one, five, fifteen = os.getloadavg()
    return f"{one:.1f} {five:.1f} {fifteen:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--admin-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--valkey-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument(
        "--clients", type=int, default=16, help="unbatched core, HTTP and pgbench clients"
    )
    parser.add_argument(
        "--tippers", type=int, default=512, help="concurrent callers of the batched core"
    )
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--batch-workers", type=int, default=2, help="batcher connections")
    parser.add_argument("--max-batch", type=int, default=200)
    parser.add_argument("--linger-ms", type=float, default=2.0)
    parser.add_argument("--performers", type=int, default=200)
    parser.add_argument("--pgbench-batch", type=int, default=100, help="tips per pgbench batch")
    parser.add_argument("--skip-http", action="store_true")
    parser.add_argument("--skip-unbatched", action="store_true")
    args = parser.parse_args()

    dbname = f"tipstream_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(args.admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
    workdir = Path(tempfile.mkdtemp(prefix="tipstream-bench-"))
    try:
        settings = make_settings(with_db(args.admin_url, dbname), args.valkey_url, workdir)
        viewers, streams = asyncio.run(setup(settings, args.performers))
        load_before = load()
        results = [
            run_core("core batched, one hot performer", viewers, streams[:1], args, batched=True),
            run_core(
                f"core batched, {len(streams)} performers", viewers, streams, args, batched=True
            ),
        ]
        if not args.skip_unbatched:
            results.append(
                run_core(
                    "core 1 tip/txn, one hot performer", viewers, streams[:1], args, batched=False
                )
            )
        if not args.skip_http:
            import http_bench  # beside this script

            results += [
                Result(name, count, seconds, latencies)
                for name, count, seconds, latencies in http_bench.run(
                    settings, viewers, streams, args
                )
            ]
        tps = run_pgbench(args.admin_url, dbname, args.seconds, args.clients)
        sql_tips = run_pgbench_tips(
            args.admin_url, dbname, args.seconds, args.clients, viewers, streams[0]
        )
        sql_batches = run_pgbench_batches(
            args.admin_url, dbname, args.seconds, 4, viewers, streams[0], args.pgbench_batch
        )
        load_after = load()

        async def check() -> bool:
            async with tsdb.connect(settings) as conn:
                return (await verify.verify(conn)).ok

        ok = asyncio.run(check())
        print(
            f"# {os.cpu_count()} cores; load average {load_before} before, {load_after} after;"
            f" {args.seconds:.0f} s each; batched core: {args.tippers} callers in"
            f" {args.processes} processes, {args.batch_workers} batch connections each,"
            f" linger {args.linger_ms:g} ms, max batch {args.max_batch}; others:"
            f" {args.clients} clients"
        )
        for r in results:
            print(f"{r.line()}   {r.rate / tps:5.2f}x pgbench")
        print(
            f"{'ledger_post_tip via pgbench (no Python)':<44} {sql_tips:>9.0f} /s"
            f"{'':<35}{sql_tips / tps:5.2f}x pgbench"
        )
        print(
            f"{f'ledger_post_tips via pgbench ({args.pgbench_batch}/batch)':<44}"
            f" {sql_batches:>9.0f} /s{'':<35}{sql_batches / tps:5.2f}x pgbench"
        )
        print(f"{'pgbench single-row UPDATE':<44} {tps:>9.0f} /s")
        print(f"ledger verify after the run: {'ok' if ok else 'FAILED'}")
        if not ok:
            raise SystemExit(1)
    finally:
        with psycopg.connect(args.admin_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname))
            )
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
