"""Periodic jobs without a scheduler daemon: every worker process runs this loop, and a Valkey
``SET NX`` on (job, time slot) makes sure each slot is enqueued by one of them only, however many
workers and hosts run. A missed slot (every worker down) is simply skipped; the jobs are
written to catch up on their own (the outbox relay takes everything unpublished; the payout
batch takes every open request)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import redis
import structlog

from tipstream.config import Settings
from tipstream.kv import key

log = structlog.get_logger("tipstream.workers.scheduler")


@dataclass(frozen=True)
class Periodic:
    name: str
    every_seconds: int
    enqueue: Callable[[], object]
    # Seconds into each period the job is due (e.g. Monday 06:00 UTC for a weekly batch).
    offset_seconds: int = 0


def due_slot(job: Periodic, now: float) -> int:
    return int((now - job.offset_seconds) // job.every_seconds)


def run_forever(settings: Settings, jobs: list[Periodic], stop: threading.Event) -> None:
    url = settings.valkey.url.replace("valkey://", "redis://", 1)
    password = settings.secrets.valkey_password
    client = redis.Redis.from_url(url, **({"password": password} if password else {}))
    while not stop.is_set():
        now = time.time()
        for job in jobs:
            slot = due_slot(job, now)
            claim = key(settings, "periodic", job.name, slot)
            try:
                if client.set(claim, b"1", nx=True, ex=max(job.every_seconds * 2, 60)):
                    job.enqueue()
                    log.info("periodic_enqueued", job=job.name, slot=slot)
            except redis.RedisError as exc:
                log.warning("periodic_failed", job=job.name, error=type(exc).__name__)
        stop.wait(1.0)
    client.close()
