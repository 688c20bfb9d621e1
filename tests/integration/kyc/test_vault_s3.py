"""The vault on its S3 backend, against a real S3-compatible server on loopback (tests/s3server:
objects are files on its disk, SigV4 checked): KYC documents land there as ciphertext only and
reviewers read them back; a swapped or edited object fails to decrypt (409); tipctl keys rotate
(resumable) and tipctl kyc purge work over it; a server that is down or refuses our credentials
is a 503 problem that changes nothing and reveals no secret."""

from __future__ import annotations

import io
import json
import shutil
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import Browser, UserFactory, assert_problem, running_app, scalar
from tests.integration.kyc.conftest import (
    S3Server,
    SetRole,
    Tipctl,
    form_fields,
    operator_tipctl,
    submit,
)
from tests.integration.kyc.test_vault import rotate_back
from tipstream.config import Settings
from tipstream.db import Conn
from tipstream.vault.health import check_vault
from tipstream.vault.keys import DecryptionFailed, Keyring
from tipstream.vault.service import ObjectGone, Vault
from tipstream.vault.storage import LocalDiskStorage, ObjectMissing, S3Storage

SECRET = b"Anna Maria Eriksson, passport L898902C3, born 1974-08-12 " * 10


def secrets_with(kyc_secrets: Path, target: Path, s3_secret: str) -> Path:
    shutil.copytree(kyc_secrets, target, dirs_exist_ok=True)
    (target / "vault_s3_secret_key").write_text(s3_secret + "\n")
    return target


@pytest.fixture(scope="session")
def s3_secrets(
    kyc_secrets: Path, s3_server: S3Server, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    return secrets_with(kyc_secrets, tmp_path_factory.mktemp("s3-secrets"), s3_server.secret_key)


@pytest.fixture(scope="session")
def s3_settings(
    kyc_settings: Settings,  # the database is migrated
    kyc_settings_factory: Callable[..., Settings],
    s3_server: S3Server,
    s3_secrets: Path,
) -> Settings:
    return kyc_settings_factory(
        secrets=s3_secrets,
        vault=s3_server.vault_section(),
        security={"min_age_by_country": {"US": 21}},
    )


@pytest.fixture(scope="session")
async def s3_client(s3_settings: Settings) -> AsyncIterator[AsyncTestClient[Litestar]]:
    async with running_app(s3_settings) as client:
        yield client


@pytest.fixture
def s3_vault(s3_settings: Settings) -> Vault:
    vault = Vault.from_settings(s3_settings)
    assert isinstance(vault.storage, S3Storage)
    return vault


@pytest.fixture
def tipctl_s3(
    kyc_settings: Settings, s3_server: S3Server, s3_secrets: Path, tmp_path: Path
) -> Tipctl:
    """tipctl as an operator of an S3-backed vault runs it."""
    return operator_tipctl(kyc_settings, s3_secrets, s3_server.vault_section(), tmp_path)


async def object_ids(conn: Conn, submission_id: int) -> list[str]:
    row = await (
        await conn.execute(
            "SELECT form_object, front_object, selfie_object FROM kyc_submissions WHERE id = %s",
            (submission_id,),
        )
    ).fetchone()
    assert row is not None
    return [str(v) for v in row.values() if v is not None]


async def s3_reviewer(make_user: UserFactory, client: Any, set_role: SetRole) -> Browser:
    person = await make_user("s3-moderator", client=client)
    await set_role(person, "moderator")
    await person.enroll_totp()
    return person


def storage_alarms(metrics: Any) -> float:
    """tipstream_vault_storage_failures_total{backend="s3"} as Prometheus scrapes it."""
    for family in text_string_to_metric_families(metrics.text):
        for sample in family.samples:
            if sample.name == "tipstream_vault_storage_failures_total":
                return float(sample.value)
    return 0.0


def closed_port() -> int:
    """A loopback port nothing listens on: the S3 server "down"."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_documents_are_ciphertext_on_the_s3_server_and_reviewers_read_them(
    make_user: UserFactory,
    s3_client: AsyncTestClient[Litestar],
    kyc_set_role: SetRole,
    kyc_db: Conn,
    s3_server: S3Server,
    vault_dir: Path,
) -> None:
    performer = await make_user("s3-applicant", client=s3_client, role="performer")
    fields = form_fields(legal_name="Ada Lovelace", document_number="S3DOC4711")
    response = await submit(performer, fields)
    assert response.status_code == 201, response.text
    sid = int(response.json()["submission_id"])
    objects = await object_ids(kyc_db, sid)
    assert len(objects) == 3  # form, front, selfie
    for object_id in objects:
        stored = s3_server.file_of(object_id).read_bytes()
        assert stored.startswith(b"TSV1")
        for plain in (b"Lovelace", b"S3DOC4711", b"1990-05-17", b"\xff\xd8\xff", b"JFIF"):
            assert plain not in stored
        assert not LocalDiskStorage(vault_dir).path(object_id).exists()

    moderator = await s3_reviewer(make_user, s3_client, kyc_set_role)
    detail = await moderator.get(f"/api/kyc/review/{sid}")
    assert detail.status_code == 200, detail.text
    assert detail.json()["form"]["document_number"] == "S3DOC4711"
    image = await moderator.get(f"/api/kyc/review/{sid}/images/front")
    assert image.status_code == 200 and image.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(image.content)).size == (640, 400)

    # An object edited on the server's disk is refused, audited, and not a 500.
    selfie = s3_server.file_of(
        str(await scalar(kyc_db, "SELECT selfie_object FROM kyc_submissions WHERE id = %s", (sid,)))
    )
    blob = bytearray(selfie.read_bytes())
    blob[64] ^= 0x20
    selfie.write_bytes(bytes(blob))
    assert_problem(
        await moderator.get(f"/api/kyc/review/{sid}/images/selfie"), 409, "vault-integrity"
    )
    assert (await moderator.get(f"/api/kyc/review/{sid}/images/front")).status_code == 200


async def test_round_trip_swap_edit_and_shred_over_s3(
    s3_vault: Vault, kyc_db: Conn, s3_server: S3Server
) -> None:
    mine = await s3_vault.put(
        kyc_db, owner_id=None, kind="test.s3", content_type="x/y", data=SECRET
    )
    theirs = await s3_vault.put(
        kyc_db, owner_id=None, kind="test.s3", content_type="x/y", data=b"B"
    )
    assert (await s3_vault.get(kyc_db, mine.id))[1] == SECRET
    listed = [
        o.object_name
        for o in s3_vault.storage.client.list_objects(s3_server.bucket)  # type: ignore[attr-defined]
    ]
    assert str(mine.id) in listed and str(theirs.id) in listed

    original = await s3_vault.storage.get(str(mine.id))
    # Swapped through the S3 API: another object's (valid) ciphertext under this name.
    await s3_vault.storage.put(str(mine.id), await s3_vault.storage.get(str(theirs.id)))
    with pytest.raises(DecryptionFailed):
        await s3_vault.get(kyc_db, mine.id)
    # Edited on the server's disk.
    edited = bytearray(original)
    edited[-1] ^= 0x01
    s3_server.file_of(str(mine.id)).write_bytes(bytes(edited))
    with pytest.raises(DecryptionFailed):
        await s3_vault.get(kyc_db, mine.id)
    await s3_vault.storage.put(str(mine.id), original)
    assert (await s3_vault.get(kyc_db, mine.id))[1] == SECRET

    async with kyc_db.transaction():
        assert await s3_vault.shred(kyc_db, mine.id)
    await s3_vault.remove_ciphertext(mine.id)
    assert not s3_server.file_of(str(mine.id)).exists()
    with pytest.raises(ObjectMissing):
        await s3_vault.storage.get(str(mine.id))
    with pytest.raises(ObjectGone):
        await s3_vault.get(kyc_db, mine.id)


async def test_tipctl_keys_rotate_over_s3_resumes_after_an_interruption(
    s3_vault: Vault, kyc_db: Conn, tipctl_s3: Tipctl, s3_server: S3Server
) -> None:
    stored = {}
    for n in range(4):
        row = await s3_vault.put(
            kyc_db, owner_id=None, kind="test.s3rot", content_type="x/y", data=b"s3 doc %d" % n
        )
        stored[row.id] = b"s3 doc %d" % n
    on_server = {oid: s3_server.file_of(str(oid)).read_bytes() for oid in stored}
    # A rotation that died after its first batch: new key written, some keys re-wrapped.
    rotated = Vault(s3_vault.keyring.with_new_key(), s3_vault.storage)
    (tipctl_s3.secrets / "vault_keys").write_text(rotated.keyring.format())

    class Interrupted(Exception):
        pass

    def die_after_first_batch(done: int, total: int) -> None:
        if done > 0:
            raise Interrupted

    with pytest.raises(Interrupted):
        await rotated.rotate(kyc_db, batch=1, progress=die_after_first_batch)

    code, out, err = await tipctl_s3("keys", "rotate", "--yes")
    assert code == 0, (out, err)
    assert "failed 0" in out and "re-wrapping" in err
    keyring = Keyring.parse((tipctl_s3.secrets / "vault_keys").read_text())
    assert keyring.active_id == rotated.keyring.active_id  # resumed, no third key
    assert set(await rotated.keys_in_use(kyc_db)) == {keyring.active_id}
    for oid, plain in stored.items():
        assert (await rotated.get(kyc_db, oid))[1] == plain
        assert s3_server.file_of(str(oid)).read_bytes() == on_server[oid]  # objects untouched
    await rotate_back(rotated, s3_vault, kyc_db)


async def test_tipctl_kyc_purge_deletes_from_s3(
    make_user: UserFactory,
    s3_client: AsyncTestClient[Litestar],
    kyc_db: Conn,
    tipctl_s3: Tipctl,
    s3_server: S3Server,
) -> None:
    sids = []
    for tag in ("s3-old-rejected", "s3-new-rejected"):
        person = await make_user(tag, client=s3_client, role="performer")
        response = await submit(person)
        assert response.status_code == 201, response.text
        sids.append(int(response.json()["submission_id"]))
        code, _, err = await tipctl_s3("kyc", "reject", str(sids[-1]), "--reason", "blurred")
        assert code == 0, err
    due, kept = sids
    await kyc_db.execute(
        "UPDATE kyc_submissions SET decided_at = now() - interval '91 days' WHERE id = %s", (due,)
    )
    before = {sid: await object_ids(kyc_db, sid) for sid in sids}
    assert all(s3_server.file_of(o).exists() for o in before[due] + before[kept])

    code, out, err = await tipctl_s3("kyc", "purge", "--yes", "--json")
    assert code == 0, (out, err)
    result = json.loads(out)
    assert due in result["purged"] and kept not in result["purged"] and result["failed"] == 0
    assert not any(s3_server.file_of(o).exists() for o in before[due])
    assert all(s3_server.file_of(o).exists() for o in before[kept])
    code, out, err = await tipctl_s3("audit", "verify")
    assert code == 0, (out, err)


async def test_s3_down_or_refusing_is_a_503_that_changes_nothing(
    make_user: UserFactory,
    s3_client: AsyncTestClient[Litestar],
    kyc_set_role: SetRole,
    kyc_db: Conn,
    kyc_secrets: Path,
    kyc_settings_factory: Callable[..., Settings],
    s3_server: S3Server,
    s3_settings: Settings,
    s3_secrets: Path,
    tmp_path: Path,
) -> None:
    # A document stored while the server was up.
    stored_by = await make_user("s3-before", client=s3_client, role="performer")
    response = await submit(stored_by)
    assert response.status_code == 201, response.text
    stored_sid = int(response.json()["submission_id"])

    endpoint = f"http://127.0.0.1:{closed_port()}"
    down = kyc_settings_factory(
        secrets=s3_secrets, vault=s3_server.vault_section(endpoint=endpoint)
    )
    wrong_secret = kyc_settings_factory(
        secrets=secrets_with(kyc_secrets, tmp_path / "wrong", "not-the-secret-key-0123456789"),
        vault=s3_server.vault_section(),
    )
    for settings, why in ((down, "NewConnectionError"), (wrong_secret, "SignatureDoesNotMatch")):
        async with running_app(settings) as client:
            person = await make_user("s3-down", client=client, role="performer")
            attempt = await submit(person)
            refused = assert_problem(attempt, 503, "vault-storage-unavailable")
            assert attempt.headers["retry-after"] == "30"
            assert s3_server.secret_key not in json.dumps(refused)
            assert "not-the-secret-key" not in json.dumps(refused)
            assert why in refused["detail"], refused
            assert storage_alarms(await person.get("/metrics")) > 0
            assert (await person.get("/api/kyc/me")).json()["status"] == "not_started"
            rows = await scalar(
                kyc_db, "SELECT count(*) FROM kyc_submissions WHERE user_id = %s", (person.user_id,)
            )
            assert rows == 0

            moderator = await s3_reviewer(make_user, client, kyc_set_role)
            assert_problem(
                await moderator.get(f"/api/kyc/review/{stored_sid}/images/front"),
                503,
                "vault-storage-unavailable",
            )
    assert "active key" in await check_vault(s3_settings)
    with pytest.raises(RuntimeError, match="S3 vault storage"):
        await check_vault(down)
