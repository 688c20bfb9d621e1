"""Options of the web benchmark (run with -p tests.conftest for the suite's fixtures)."""

from __future__ import annotations

import pytest

# Fixtures: the browser tests' (Chromium, people, an app with Janus/coturn and a vault).
from tests.e2e.conftest import (  # noqa: F401
    app_server_factory,
    chromium,
    janus_server,
    media_net,
    media_secrets,
    new_person,
    rooms_settings,
    rooms_settings_factory,
    turn_server,
    web_server,
)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--runs", type=int, default=10, help="go-live runs")
    parser.addoption(
        "--tips", type=int, default=5, help="tips per run (the API allows 60 a minute)"
    )
