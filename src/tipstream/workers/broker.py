"""The dramatiq broker: dramatiq's Redis broker on a redis-py client pointed at Valkey.

Every process that enqueues or runs actors calls ``setup(settings)`` once, before importing the
actor modules (dramatiq binds an actor to the broker in force when it is declared). Actors read
the settings with ``settings()``.
"""

from __future__ import annotations

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import (
    AgeLimit,
    Callbacks,
    Pipelines,
    Retries,
    ShutdownNotifications,
    TimeLimit,
)

from tipstream.config import Settings

_settings: Settings | None = None
_broker: RedisBroker | None = None


def create_broker(settings: Settings) -> RedisBroker:
    url = settings.valkey.url.replace("valkey://", "redis://", 1)
    password = settings.secrets.valkey_password
    extra = {"password": password} if password else {}
    client = redis.Redis.from_url(url, health_check_interval=30, **extra)
    return RedisBroker(  # type: ignore[no-untyped-call]
        client=client,
        # Queues live beside the rest of this install's keys.
        namespace=f"{settings.valkey.key_prefix}dramatiq",
        middleware=[
            AgeLimit(),
            TimeLimit(time_limit=10 * 60 * 1000),
            ShutdownNotifications(),
            Callbacks(),
            Pipelines(),
            Retries(max_retries=5, min_backoff=1_000, max_backoff=60_000),
        ],
    )


def setup(settings: Settings) -> RedisBroker:
    """Make this install's broker the global one (idempotent for the same settings)."""
    global _settings, _broker  # one broker per process, as dramatiq expects
    if _broker is None or _settings is not settings:
        _broker = create_broker(settings)
        _settings = settings
        dramatiq.set_broker(_broker)
    return _broker


def settings() -> Settings:
    """The settings the worker was started with (actors run in its threads)."""
    if _settings is None:
        from tipstream.config import load_settings

        setup(load_settings())
    assert _settings is not None
    return _settings
