"""`tipctl run worker`: dramatiq worker threads plus the periodic scheduler, in one process."""

from __future__ import annotations

import importlib
import signal
import threading
from types import FrameType

import structlog
from dramatiq import Worker

from tipstream.config import Settings
from tipstream.workers import broker, scheduler

log = structlog.get_logger("tipstream.workers")

# Every domain's actor module; imported after the broker is set up.
ACTOR_MODULES = [
    "tipstream.ledger.actors",
    "tipstream.kyc.actors",
    "tipstream.payments.actors",
    "tipstream.moderation.actors",
]


def periodic_jobs() -> list[scheduler.Periodic]:
    from tipstream.kyc import actors as kyc_actors
    from tipstream.ledger import actors as ledger_actors
    from tipstream.payments import actors as payments_actors

    return [
        scheduler.Periodic(
            "ledger.relay_outbox",
            ledger_actors.RELAY_EVERY_SECONDS,
            ledger_actors.relay_outbox.send,
        ),
        scheduler.Periodic(
            "ledger.payout_batch",
            ledger_actors.PAYOUT_BATCH_EVERY_SECONDS,
            ledger_actors.payout_batch.send,
            offset_seconds=ledger_actors.PAYOUT_BATCH_OFFSET_SECONDS,
        ),
        scheduler.Periodic(
            "payments.reconcile_ccbill",
            payments_actors.RECONCILE_EVERY_SECONDS,
            payments_actors.reconcile_ccbill.send,
            offset_seconds=payments_actors.RECONCILE_OFFSET_SECONDS,
        ),
        scheduler.Periodic(
            "kyc.retention",
            kyc_actors.RETENTION_EVERY_SECONDS,
            kyc_actors.retention.send,
            offset_seconds=kyc_actors.RETENTION_OFFSET_SECONDS,
        ),
    ]


def run_worker(settings: Settings, *, threads: int = 4) -> None:
    the_broker = broker.setup(settings)
    for module in ACTOR_MODULES:
        importlib.import_module(module)
    worker = Worker(the_broker, worker_threads=threads)
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("worker_stopping", signal=signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    worker.start()
    ticker = threading.Thread(
        target=scheduler.run_forever, args=(settings, periodic_jobs(), stop), daemon=True
    )
    ticker.start()
    log.info("worker_started", threads=threads, queues=sorted(the_broker.get_declared_queues()))
    stop.wait()
    worker.stop(timeout=30_000)
    ticker.join(timeout=5)
    the_broker.close()
