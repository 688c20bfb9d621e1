"""tipctl run api: what the systemd units (and the one-box runner) start."""

from __future__ import annotations

import os
import tempfile

import typer

from tipctl.common import fail, settings

app = typer.Typer(help="Run a tipstream process in the foreground.", no_args_is_help=True)


@app.command("api")
def api(
    host: str | None = typer.Option(None, "--host", help="Default: server.host."),
    port: int | None = typer.Option(None, "--port", help="Default: server.port."),
    workers: int | None = typer.Option(None, "--workers", help="Default: server.workers."),
) -> None:
    """Serve the app with granian (ASGI, several worker processes)."""
    cfg = settings()  # fail here, with the setting's name, rather than in every worker
    from granian.constants import Interfaces
    from granian.server import Server

    # Workers are separate processes: Prometheus counters must be aggregated through files.
    if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="tipstream-metrics-")
    server = Server(
        "tipstream.app:create_app",
        address=host or cfg.server.host,
        port=port or cfg.server.port,
        interface=Interfaces.ASGI,
        workers=workers or cfg.server.workers,
        factory=True,
        log_access=False,
    )
    server.serve()


@app.command("worker")
def worker(
    threads: int = typer.Option(4, "--threads", min=1, max=64, help="dramatiq worker threads."),
) -> None:
    """Run the dramatiq worker (payouts, webhooks, the outbox relay) and the periodic scheduler."""
    cfg = settings()
    from tipstream.moderation import detox
    from tipstream.observability import configure_logging
    from tipstream.workers.main import run_worker

    # The worker loads the configured Detoxify tier at start and refuses to run without it:
    # say why in one line here rather than in a traceback from each worker process.
    paths = detox.configured(cfg)
    if paths is not None:
        try:
            detox.check_files(paths)
            detox.require_extra()
        except detox.DetoxifyUnavailable as exc:
            fail(f"the Detoxify tier is configured but cannot load: {exc}")
    configure_logging(cfg)
    run_worker(cfg, threads=threads)


@app.command("moderator")
def moderator() -> None:
    """Run the moderator worker: a hidden subscriber in every live room (NudeNet, PDQ)."""
    cfg = settings()
    import asyncio

    from tipstream.moderation.sampler import run_moderator
    from tipstream.observability import configure_logging

    configure_logging(cfg)
    asyncio.run(run_moderator(cfg))
