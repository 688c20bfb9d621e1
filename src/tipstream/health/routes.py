"""Liveness, readiness and metrics endpoints for load balancers, systemd and Prometheus."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
from litestar import Controller, Request, Response, get
from litestar.plugins.prometheus import PrometheusController
from valkey.asyncio import Valkey

from tipstream.accounts import guards
from tipstream.db import Pool
from tipstream.errors import problem_response


class Health(msgspec.Struct):
    status: str
    checks: dict[str, str] = msgspec.field(default_factory=dict)


async def _check_postgres(pool: Pool) -> None:
    async with pool.connection(timeout=2) as conn:
        await conn.execute("SELECT 1")


async def _check_valkey(kv: Valkey) -> None:
    await kv.ping()


async def readiness(pool: Pool, kv: Valkey) -> dict[str, str]:
    checks: dict[str, str] = {}
    for name, probe in (("postgres", _check_postgres(pool)), ("valkey", _check_valkey(kv))):
        try:
            await asyncio.wait_for(probe, timeout=3)
            checks[name] = "ok"
        except Exception as exc:  # any failure means "not ready"; the name says which
            checks[name] = f"fail: {type(exc).__name__}"
    return checks


class HealthController(Controller):
    tags = ["health"]
    guards = [guards.public]

    @get("/healthz")
    async def healthz(self) -> Health:
        """The process is up."""
        return Health(status="ok")

    @get("/readyz")
    async def readyz(self, request: Request[Any, Any, Any]) -> Response[Any]:
        """Postgres and Valkey answer; otherwise a 503 problem naming what failed."""
        checks = await readiness(request.app.state.pool, request.app.state.kv)
        failing = {name: result for name, result in checks.items() if result != "ok"}
        if not failing:
            return Response(Health(status="ok", checks=checks))
        return problem_response(
            request,
            status=503,
            slug="unavailable",
            title="Not ready",
            detail="not ready: " + ", ".join(f"{n} ({r})" for n, r in failing.items()),
            extra={"checks": checks},
        )


class MetricsController(PrometheusController):
    path = "/metrics"
    # Scraped from the monitoring host; nginx does not expose /metrics publicly.
    guards = [guards.public]
    # Prometheus text for the scraper, not an operation of the API its document describes.
    include_in_schema = False


ROUTES = [HealthController, MetricsController]
