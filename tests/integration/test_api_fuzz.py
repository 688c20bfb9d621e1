"""The whole HTTP API, fuzzed by schemathesis from the app's own OpenAPI document.

Every operation in /api/schema/openapi.json is sent generated requests, ones the document allows
and deliberately broken ones, by each kind of user: anonymous, viewer, performer, moderator and
admin (the last two signed in with 2FA, the admin also holding the finance permission). A third
kind of request aims at things that exist (a stream, its performer, a moderation case, the dev
payment processor), so the handlers get past "not found". Whatever comes back must not be a
5xx, every 4xx must be RFC 9457 problem+json, and status, Content-Type and body must be what
the document says of that operation.

The fuzz has a database, a vault and a Valkey prefix of its own: an admin sending random ids
may disable or demote whoever they name, which must not be another test's user. Generation is
derandomized and bounded (TIPSTREAM_FUZZ_EXAMPLES per operation and kind of request, default
8), so a run sends the same requests every time.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pyotp
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from litestar import Litestar
from schemathesis.checks import CheckContext, not_a_server_error
from schemathesis.core.transport import Response
from schemathesis.generation import GenerationMode
from schemathesis.generation.case import Case
from schemathesis.python.asgi import ASGIClient, shutdown_lifespans
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from valkey.asyncio import Valkey

from tests.conftest import create_database, drop_database, make_settings
from tests.helpers import ADULT_DOB, PASSWORD, PROBLEM, unique_email
from tests.integration.kyc.approved import approve_kyc
from tests.integration.kyc.conftest import form_fields, image_files, photo, write_keyring
from tipstream import db as tsdb
from tipstream.accounts import service as accounts
from tipstream.app import create_app
from tipstream.config import Settings, generate_secret

pytestmark = pytest.mark.slow

SCHEMA_PATH = "/api/schema/openapi.json"
WHO = ("anonymous", "viewer", "performer", "moderator", "admin")
EXAMPLES = int(os.environ.get("TIPSTREAM_FUZZ_EXAMPLES", "8"))


@pytest.fixture(scope="module")
async def fuzz_settings(
    service_urls: tuple[str, str], tmp_path_factory: pytest.TempPathFactory, key_prefix: str
) -> AsyncIterator[Settings]:
    admin_url, valkey_url = service_urls
    name = f"tipstream_test_{uuid.uuid4().hex[:12]}_fuzz"
    url = await create_database(admin_url, name)
    secrets = tmp_path_factory.mktemp("fuzz-secrets")
    (secrets / "session_key").write_text(generate_secret() + "\n")
    write_keyring(secrets)
    secrets.chmod(0o700)
    vault_dir: Path = tmp_path_factory.mktemp("fuzz-vault")
    settings = make_settings(
        url, valkey_url, secrets, f"{key_prefix}fuzz:", vault={"dir": str(vault_dir)}
    )
    try:
        async with tsdb.connect(settings) as conn:
            await tsdb.migrate(conn)
        yield settings
    finally:
        await drop_database(admin_url, name)


@pytest.fixture(scope="module")
def fuzz_app(fuzz_settings: Settings) -> Litestar:
    return create_app(fuzz_settings)


@dataclass
class World:
    """Signed-in clients per kind of user, their ids, and things that exist to aim at."""

    clients: dict[str, ASGIClient]
    ids: dict[str, int] = field(default_factory=dict)
    decoy_id: int = 0
    known: dict[str, Any] = field(default_factory=dict)


def _client(app: Litestar) -> ASGIClient:
    client = ASGIClient(app)
    client.__enter__()
    return client


def _sign_up(app: Litestar, tag: str, role: str = "viewer") -> tuple[ASGIClient, dict[str, Any]]:
    client = _client(app)
    email = unique_email(f"fuzz-{tag}")
    body = {
        "email": email,
        "password": PASSWORD,
        "date_of_birth": ADULT_DOB,
        "display_name": f"Fuzz {tag}",
        "role": role,
    }
    registered = client.post("/api/auth/register", json=body)
    assert registered.status_code == 201, registered.text
    return client, {"email": email, **registered.json()}


def _sign_in(client: ASGIClient, email: str) -> None:
    response = client.post("/api/auth/login", json={"email": email, "password": PASSWORD})
    assert response.status_code == 200, response.text
    client.headers["x-csrf-token"] = response.json()["csrf_token"]


def _enroll_2fa(client: ASGIClient) -> None:
    enrolled = client.post("/api/auth/2fa/enroll")
    assert enrolled.status_code == 200, enrolled.text
    code = pyotp.TOTP(enrolled.json()["secret"]).now()
    confirmed = client.post("/api/auth/2fa/confirm", json={"code": code})
    assert confirmed.status_code == 200, confirmed.text


def _furnish(world: World, conn_ids: dict[str, int]) -> None:
    """A stream of the performer's, tokens in the viewer's wallet, a report on the stream, an
    identity verification waiting for review."""
    viewer, performer = world.clients["viewer"], world.clients["performer"]
    stream = performer.post("/api/streams", json={"title": "Fuzz show", "tags": ["fuzz"]})
    assert stream.status_code == 201, stream.text
    world.known["stream_id"] = stream.json()["id"]
    world.known["performer_id"] = conn_ids["performer"]
    checkout = viewer.post("/api/purchases", json={"package_id": "tkn-100"})
    assert checkout.status_code == 201, checkout.text
    page = urlsplit(checkout.json()["redirect_url"])
    token = re.sub(r"^token=", "", page.query)
    paid = viewer.post(page.path, data={"token": token, "outcome": "sale"}, allow_redirects=False)
    assert paid.status_code == 303, paid.text
    report = viewer.post(
        "/api/moderation/reports",
        json={"target": "stream", "reason": "fuzz", "stream_id": world.known["stream_id"]},
    )
    assert report.status_code == 201, report.text
    queue = world.clients["moderator"].get("/api/moderation/queue")
    assert queue.status_code == 200, queue.text
    cases = queue.json()
    assert cases, "the report opened no case"
    world.known["case_id"] = cases[0]["id"]
    world.known["processor"] = "dev"
    applicant, user = _sign_up(viewer.app, "applicant", "performer")
    try:
        _sign_in(applicant, user["email"])
        submitted = applicant.post(
            "/api/kyc/submission", data=form_fields(), files=image_files(back=photo())
        )
        assert submitted.status_code == 201, submitted.text
        world.known["submission_id"] = submitted.json()["submission_id"]
        world.known["name"] = "front"
    finally:
        applicant.__exit__()


@pytest.fixture(scope="module")
async def world(fuzz_app: Litestar, fuzz_settings: Settings) -> AsyncIterator[World]:
    world = World(clients={"anonymous": _client(fuzz_app)})
    kv = Valkey.from_url(fuzz_settings.valkey.url.replace("valkey://", "redis://", 1))
    try:
        async with tsdb.connect(fuzz_settings) as conn:
            for who in WHO[1:]:
                client, user = _sign_up(
                    fuzz_app, who, "performer" if who == "performer" else "viewer"
                )
                world.ids[who] = user["id"]
                if who in ("moderator", "admin"):
                    await accounts.set_role(conn, kv, fuzz_settings, user["id"], who, actor_id=None)
                if who == "admin":
                    await accounts.set_permissions(conn, user["id"], ["finance"], actor_id=None)
                if who == "performer":
                    await approve_kyc(conn, user["id"])
                _sign_in(client, user["email"])
                if who in ("moderator", "admin"):
                    _enroll_2fa(client)
                world.clients[who] = client
        decoy, decoy_user = _sign_up(fuzz_app, "decoy")
        decoy.__exit__()
        world.decoy_id = decoy_user["id"]
        _furnish(world, world.ids)
        yield world
    finally:
        await kv.aclose()
        for client in world.clients.values():
            client.__exit__()
        # The app's lifespan (pool, Valkey, background tasks) ends before its database goes.
        shutdown_lifespans()


@pytest.fixture(scope="module")
def api_schema(fuzz_app: Litestar, world: World) -> Any:
    schema = schemathesis.openapi.from_asgi(SCHEMA_PATH, fuzz_app)
    # Generated Authorization headers and session cookies would replace the users' own.
    schema.config.generation.update(with_security_parameters=False)
    return schema


@pytest.fixture(scope="module")
def api_schema_with_credentials(fuzz_app: Litestar, world: World) -> Any:
    """The same document, with generated (junk) Authorization headers and session cookies."""
    return schemathesis.openapi.from_asgi(SCHEMA_PATH, fuzz_app)


def problem_json_for_errors(ctx: CheckContext, response: Response, case: Case) -> bool | None:
    if 400 <= response.status_code < 500:
        content_type = (response.headers.get("content-type") or [""])[0]
        assert content_type.startswith(PROBLEM), (
            f"{response.status_code} answered as {content_type!r}, not {PROBLEM}"
        )
    return None


CHECKS = [
    not_a_server_error,
    problem_json_for_errors,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
FUZZ = settings(
    max_examples=EXAMPLES,
    derandomize=True,
    deadline=None,
    database=None,
    # Shrinking would replay a failure many times over; the report shows the request as sent.
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)


def _strategies(operation: Any, world: World) -> list[Any]:
    strategies = [
        operation.as_strategy(GenerationMode.POSITIVE),
        operation.as_strategy(GenerationMode.NEGATIVE),
    ]
    names = re.findall(r"\{(\w+)\}", operation.path)
    known = {name: world.known[name] for name in names if name in world.known}
    if len(known) == len(names):
        aimed = operation.as_strategy(GenerationMode.POSITIVE, path_parameters=known)
        if names:
            strategies.append(aimed)
        # Text the database cannot store, in every string of an otherwise valid body.
        strategies.append(aimed.map(_with_nul_in_strings))
    return strategies


def _nul_in_strings(value: Any) -> Any:
    if isinstance(value, str):
        return value + "\x00"
    if isinstance(value, list):
        return [_nul_in_strings(item) for item in value]
    if isinstance(value, dict):
        return {key: _nul_in_strings(item) for key, item in value.items()}
    return value


def _with_nul_in_strings(case: Case) -> Case:
    if isinstance(case.body, dict | list):
        case.body = _nul_in_strings(case.body)
    return case


def _fuzz(operation: Any, strategy: Any, world: World, who_sends: tuple[str, ...] = WHO) -> None:
    @FUZZ
    @given(case=strategy)
    def run(case: Case) -> None:
        if case.path_parameters and case.path_parameters.get("user_id") in world.ids.values():
            # An admin disabling or demoting the fuzz's own users would sign them out.
            case.path_parameters["user_id"] = world.decoy_id
        for who in who_sends:
            response = case.call(session=world.clients[who])
            try:
                case.validate_response(response, checks=CHECKS)
            except BaseExceptionGroup as exc:
                raise AssertionError(f"as {who}: {exc}") from None

    run()


def _fuzz_all(schema: Any, world: World, who_sends: tuple[str, ...] = WHO) -> list[str]:
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) > 50, [o.label for o in operations]
    # Signing out ends the users' sessions: last.
    operations.sort(key=lambda operation: operation.path == "/api/auth/logout")
    failures = []
    for operation in operations:
        for strategy in _strategies(operation, world):
            try:
                _fuzz(operation, strategy, world, who_sends)
            except Unsatisfiable:
                continue  # nothing to break: no parameters, no body
            except AssertionError as exc:
                failures.append(f"{operation.label}: {exc}")
                break
    return failures


def test_no_operation_answers_5xx_or_off_the_document(api_schema: Any, world: World) -> None:
    failures = _fuzz_all(api_schema, world)
    assert not failures, "\n\n".join(failures)


def test_junk_credentials_are_401_problems_never_5xx(
    api_schema_with_credentials: Any, world: World
) -> None:
    """Generated Authorization headers and session cookies, sent by a client with none."""
    failures = _fuzz_all(api_schema_with_credentials, world, ("anonymous",))
    assert not failures, "\n\n".join(failures)
