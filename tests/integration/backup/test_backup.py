"""tipctl backup / restore as an operator runs them: a box with real data (users, a purchase
through the dev processor, tips, an audit trail, a KYC document in the vault) is backed up,
restored into a fresh install elsewhere, and everything checks out; damaged archives, wrong keys
and non-empty targets are refused without changing anything."""

from __future__ import annotations

import io
import json
import os
import tarfile
import uuid
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import pyrage
import pytest
from pyrage import x25519

from tests.helpers import PASSWORD
from tests.integration.backup.conftest import Box, NewBox
from tests.integration.ledger.conftest import insert_stream
from tipstream import db as tsdb
from tipstream.accounts import service as accounts
from tipstream.accounts.schemas import User
from tipstream.backup.queries import FIGURE_TABLES
from tipstream.config import Settings
from tipstream.ledger import tips
from tipstream.vault.service import Vault


@dataclass
class BackedUp:
    source: Box
    archive: Path
    identity: Path
    recipient: str
    document: bytes
    object_id: uuid.UUID


async def person(conn: tsdb.Conn, settings: Settings, name: str, role: str) -> User:
    return await accounts.create_user(
        conn,
        settings,
        email=f"{role}-{uuid.uuid4().hex[:8]}@example.test",
        password=PASSWORD,
        date_of_birth=date(1990, 5, 17),
        display_name=name,
        role=role,
    )


async def populate(box: Box) -> tuple[bytes, uuid.UUID]:
    settings = box.settings()
    async with tsdb.connect(settings) as conn:
        viewer = await person(conn, settings, "Vera Viewer", "viewer")
        performer = await person(conn, settings, "Perry Former", "performer")
        stream = await insert_stream(conn, performer.id)
    code, out, err = await box.tipctl("ledger", "buy", viewer.email, "tkn-550")
    assert code == 0, (out, err)
    document = os.urandom(40_000)
    async with tsdb.connect(settings) as conn:
        for tokens in (25, 40):
            await tips.post_tip(
                conn,
                settings,
                viewer_id=viewer.id,
                stream_id=stream,
                tokens=tokens,
                message="great show",
                private=False,
                idempotency_key=uuid.uuid4().hex,
            )
        row = await Vault.from_settings(settings).put(
            conn, owner_id=performer.id, kind="kyc.front", content_type="image/jpeg", data=document
        )
    return document, row.id


async def state(box: Box) -> dict[str, Any]:
    """What an operator would compare: row counts, every account's balance, the audit head."""
    async with tsdb.connect(box.settings()) as conn:
        counts = {}
        for table in FIGURE_TABLES:
            cur = await conn.execute(f"SELECT count(*) AS n FROM {table}")
            row = await cur.fetchone()
            assert row is not None
            counts[table] = int(row["n"])
        cur = await conn.execute(
            "SELECT id, asset, kind, owner_id, debits_posted, credits_posted, debits_pending,"
            " credits_pending FROM ledger_accounts ORDER BY id"
        )
        balances = [dict(r) for r in await cur.fetchall()]
        cur = await conn.execute("SELECT id, hash FROM audit_logs ORDER BY id DESC LIMIT 1")
        head = await cur.fetchone()
    return {"counts": counts, "balances": balances, "audit_head": dict(head or {})}


def tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


@pytest.fixture(scope="module")
async def backed_up(new_box: NewBox, tmp_path_factory: pytest.TempPathFactory) -> BackedUp:
    source = await new_box("source")
    document, object_id = await populate(source)
    keys = tmp_path_factory.mktemp("operator")
    identity = keys / "backup-identity.txt"
    code, out, err = await source.tipctl("backup", "keygen", "--output", str(identity))
    assert code == 0, err
    recipient = next(w for w in out.split() if w.startswith("age1"))
    assert "AGE-SECRET-KEY" not in out + err  # the private key is never printed
    assert oct(identity.stat().st_mode & 0o777) == "0o600"
    (source.config.parent / "backup_recipients").write_text(f"# operator\n{recipient}\n")
    backups = tmp_path_factory.mktemp("backups")
    code, out, err = await source.tipctl("backup", "create", "--output", str(backups), "--json")
    assert code == 0, (out, err)
    made = json.loads(out)
    archive = Path(made["archive"])
    assert archive.parent == backups and archive.name.endswith(".tar.age")
    assert oct(archive.stat().st_mode & 0o777) == "0o600"
    for bar in ("dump", "pack", "encrypt"):
        assert bar in err  # progress bars on stderr
    return BackedUp(source, archive, identity, recipient, document, object_id)


async def test_manifest_and_archive(backed_up: BackedUp) -> None:
    # Only the identity opens it: the box wrote it with the public key alone.
    raw = backed_up.archive.read_bytes()
    assert raw.startswith(b"age-encryption.org/v1")
    assert backed_up.document not in raw
    code, out, err = await backed_up.source.tipctl(
        "backup", "verify", str(backed_up.archive), "--identity", str(backed_up.identity), "--json"
    )
    assert code == 0, (out, err)
    check = json.loads(out)
    assert check["ok"] and check["problems"] == []
    manifest = check["manifest"]
    paths = {f["path"] for f in manifest["files"]}
    shard = str(backed_up.object_id)[:2]
    assert {
        "database.dump",
        "secrets/vault_keys",
        "secrets/kyc_index_key",
        f"vault/{shard}/{backed_up.object_id}",
    } <= paths
    assert all(len(f["sha256"]) == 64 and f["size"] > 0 for f in manifest["files"])
    before = await state(backed_up.source)
    figures = manifest["figures"]
    assert figures["rows"]["tips"] == 2 and figures["rows"]["purchases"] == 1
    assert figures["rows"]["users"] == before["counts"]["users"]
    assert manifest["database"]["migration_head"] >= 10
    assert manifest["format"] == "tipstream-backup" and manifest["format_version"] == 1
    # The backup itself is audited (after the snapshot, so the manifest's head is the one before).
    code, out, _ = await backed_up.source.tipctl("audit", "tail", "-n", "1", "--json")
    [entry] = json.loads(out)
    assert entry["action"] == "backup.created"
    assert figures["audit_head_id"] == entry["id"] - 1
    code, out, _ = await backed_up.source.tipctl(
        "backup", "list", "--dir", str(backed_up.archive.parent), "--json"
    )
    assert code == 0 and json.loads(out)[0]["archive"] == str(backed_up.archive)


async def test_restore_into_a_fresh_install(backed_up: BackedUp, new_box: NewBox) -> None:
    # A new box as the playbook leaves it: migrated, its own (different) vault keys, no data.
    target = await new_box("restored")
    fresh_keys = (target.secrets / "vault_keys").read_text()
    args = ("restore", str(backed_up.archive), "--identity", str(backed_up.identity))

    code, out, err = await target.tipctl(*args)
    assert code == 2 and "would drop the" in out and "--yes" in err
    code, out, err = await target.tipctl(*args, "--dry-run")
    assert code == 0 and "archive intact" in out, (out, err)
    assert tree(target.vault) == []  # neither changed anything

    code, out, err = await target.tipctl(*args, "--yes")
    assert code == 0, (out, err)
    assert "ok   ledger verify" in out and "ok   audit verify" in out
    assert "ok   figures match the manifest" in out and "ok   vault objects open: 1 of 1" in out
    assert "AGE-SECRET-KEY" not in out + err

    # The operator's own checks are green on the new box.
    for command in (("ledger", "verify"), ("audit", "verify")):
        code, out, err = await target.tipctl(*command)
        assert code == 0, (command, out, err)

    # Same books, same rows. Each side has one audit entry more than the snapshot: the source
    # its backup.created, the new box its backup.restored.
    before, after = await state(backed_up.source), await state(target)
    assert after["balances"] == before["balances"]
    assert after["counts"] == before["counts"]
    code, out, _ = await target.tipctl("audit", "tail", "-n", "1", "--json")
    assert json.loads(out)[0]["action"] == "backup.restored"

    # The KYC document opens with the restored keys, from the restored file.
    assert (target.secrets / "vault_keys").read_text() == (
        backed_up.source.secrets / "vault_keys"
    ).read_text()
    [kept] = target.secrets.glob("vault_keys.before-restore-*")
    assert kept.read_text() == fresh_keys
    settings = target.settings()
    async with tsdb.connect(settings) as conn:
        _, plain = await Vault.from_settings(settings).get(conn, backed_up.object_id)
    assert plain == backed_up.document
    placed = target.vault / str(backed_up.object_id)[:2] / str(backed_up.object_id)
    assert oct(placed.stat().st_mode & 0o777) == "0o600"
    assert oct(placed.parent.stat().st_mode & 0o777) == "0o700"
    for name in ("vault_keys", "kyc_index_key"):
        assert oct((target.secrets / name).stat().st_mode & 0o777) == "0o600"
    assert [p.name for p in target.vault.parent.iterdir()] == ["vault"]  # staging cleaned up

    # Now it holds data: a second restore is refused and changes nothing.
    code, out, err = await target.tipctl(*args, "--yes")
    assert code == 2, (out, err)
    assert "holds data" in err and "vault directory" in err and "--force" in err
    assert await state(target) == after

    # --force replaces it: the same books again, the old vault files overwritten in place.
    code, out, err = await target.tipctl(*args, "--force", "--yes")
    assert code == 0, (out, err)
    assert (await state(target))["balances"] == before["balances"]
    code, out, err = await target.tipctl("ledger", "verify")
    assert code == 0, (out, err)


async def test_restore_into_an_empty_database(backed_up: BackedUp, new_box: NewBox) -> None:
    # Not even migrated, and no keys yet: the archive brings the schema and the keys. The app
    # connects as its own role (owner of the database, no superuser), as on an installed node,
    # while the source's objects belonged to another role.
    target = await new_box("bare", migrate=False, keys=False, own_role=True)
    code, out, err = await target.tipctl(
        "restore", str(backed_up.archive), "-i", str(backed_up.identity), "--yes", "--json"
    )
    assert code == 0, (out, err)
    report = json.loads(out)
    assert report["ok"] and report["pending_migrations"] == 0
    assert sorted(report["secrets_written"]) == ["kyc_index_key", "vault_keys"]
    assert {c["name"]: c["ok"] for c in report["checks"]} == {
        "ledger verify": True,
        "audit verify": True,
        "figures match the manifest": True,
        "vault objects open": True,
    }
    assert (await state(target))["balances"] == (await state(backed_up.source))["balances"]
    async with tsdb.connect(target.settings()) as conn:
        cur = await conn.execute(
            "SELECT count(*) AS n FROM pg_tables WHERE schemaname = 'public'"
            " AND tableowner <> current_user"
        )
        row = await cur.fetchone()
    assert row is not None and row["n"] == 0  # every table is the app role's


async def test_a_damaged_archive_is_refused(
    backed_up: BackedUp, new_box: NewBox, tmp_path: Path
) -> None:
    damaged = tmp_path / "damaged.tar.age"
    data = bytearray(backed_up.archive.read_bytes())
    data[len(data) // 2] ^= 0x01
    damaged.write_bytes(bytes(data))
    target = await new_box("damaged")
    before = await state(target)
    code, out, err = await target.tipctl(
        "backup", "verify", str(damaged), "-i", str(backed_up.identity)
    )
    assert code == 1 and "damaged or was altered" in err, (out, err)
    code, out, err = await target.tipctl(
        "restore", str(damaged), "-i", str(backed_up.identity), "--yes"
    )
    assert code == 1 and "damaged or was altered" in err, (out, err)
    assert await state(target) == before
    assert tree(target.vault) == [] and [p.name for p in target.vault.parent.iterdir()] == []

    # Cut off: the end of the stream is authenticated too.
    short = tmp_path / "short.tar.age"
    short.write_bytes(backed_up.archive.read_bytes()[:-100])
    code, out, err = await target.tipctl(
        "backup", "verify", str(short), "-i", str(backed_up.identity)
    )
    assert code == 1 and "damaged or was altered" in err, (out, err)


async def test_a_wrong_identity_is_refused(
    backed_up: BackedUp, new_box: NewBox, tmp_path: Path
) -> None:
    target = await new_box("wrongkey")
    other = tmp_path / "other-identity.txt"
    code, _, err = await target.tipctl("backup", "keygen", "-o", str(other))
    assert code == 0, err
    code, _, err = await target.tipctl("backup", "keygen", "-o", str(other))
    assert code == 2 and "exists already" in err  # never overwrites a key
    before = await state(target)
    code, out, err = await target.tipctl(
        "backup", "verify", str(backed_up.archive), "-i", str(other)
    )
    assert code == 1 and "identity does not open this archive" in err, (out, err)
    code, out, err = await target.tipctl(
        "restore", str(backed_up.archive), "-i", str(other), "--yes"
    )
    assert code == 1 and "identity does not open this archive" in err, (out, err)
    assert await state(target) == before and tree(target.vault) == []
    not_a_key = tmp_path / "not-a-key.txt"
    not_a_key.write_text(backed_up.recipient + "\n")
    code, _, err = await target.tipctl(
        "backup", "verify", str(backed_up.archive), "-i", str(not_a_key)
    )
    assert code == 2 and "not an age identity" in err


def _rewrite(
    archive: Path,
    identity: Path,
    recipient: str,
    change: Any,
    extra: tuple[str, bytes] | None = None,
) -> bytes:
    """The archive's plaintext with one member changed by change(name, data), encrypted again
    to the same recipient (what anyone holding the box's public key could do)."""
    [key] = [line for line in identity.read_text().splitlines() if line.startswith("AGE-")]
    plain = pyrage.decrypt(archive.read_bytes(), [x25519.Identity.from_str(key)])
    rebuilt = io.BytesIO()
    with (
        tarfile.open(fileobj=io.BytesIO(plain), mode="r:") as old,
        tarfile.open(fileobj=rebuilt, mode="w:", format=tarfile.PAX_FORMAT) as new,
    ):
        for member in old:
            source = old.extractfile(member)
            assert source is not None
            data = change(member.name, source.read())
            member.size = len(data)
            new.addfile(member, io.BytesIO(data))
        if extra is not None:
            added = tarfile.TarInfo(extra[0])
            added.size = len(extra[1])
            new.addfile(added, io.BytesIO(extra[1]))
    return pyrage.encrypt(rebuilt.getvalue(), [x25519.Recipient.from_str(recipient)])


async def test_a_file_that_does_not_match_its_checksum_is_named(
    backed_up: BackedUp, new_box: NewBox, tmp_path: Path
) -> None:
    shard = str(backed_up.object_id)[:2]
    wanted = f"vault/{shard}/{backed_up.object_id}"

    def flip(name: str, data: bytes) -> bytes:
        return data[:-1] + bytes([data[-1] ^ 1]) if name == wanted else data

    forged = tmp_path / "forged.tar.age"
    forged.write_bytes(_rewrite(backed_up.archive, backed_up.identity, backed_up.recipient, flip))
    target = await new_box("forged")
    before = await state(target)
    code, out, err = await target.tipctl(
        "backup", "verify", str(forged), "-i", str(backed_up.identity)
    )
    assert code == 1, (out, err)
    assert f"{wanted}: checksum does not match the manifest" in err
    code, out, err = await target.tipctl(
        "backup", "verify", str(forged), "-i", str(backed_up.identity), "--json"
    )
    assert code == 1 and json.loads(out)["problems"] == [
        f"{wanted}: checksum does not match the manifest"
    ]
    code, out, err = await target.tipctl(
        "restore", str(forged), "-i", str(backed_up.identity), "--yes"
    )
    assert code == 1 and wanted in err and "nothing was restored" in err, (out, err)
    assert await state(target) == before and tree(target.vault) == []

    # A member no backup has (a path outside the staging directory) is refused by name.
    escaping = tmp_path / "escaping.tar.age"
    escaping.write_bytes(
        _rewrite(
            backed_up.archive,
            backed_up.identity,
            backed_up.recipient,
            lambda name, data: data,
            extra=("../../outside", b"x"),
        )
    )
    code, out, err = await target.tipctl(
        "restore", str(escaping), "-i", str(backed_up.identity), "--yes"
    )
    assert code == 1 and "unexpected member '../../outside'" in err, (out, err)
    assert not (target.vault.parent.parent / "outside").exists()
    assert await state(target) == before and tree(target.vault) == []


async def test_restore_into_a_box_with_data_is_refused(backed_up: BackedUp) -> None:
    source = backed_up.source
    before = await state(source)
    vault_before = tree(source.vault)
    code, out, err = await source.tipctl(
        "restore", str(backed_up.archive), "-i", str(backed_up.identity), "--yes"
    )
    assert code == 2, (out, err)
    assert "holds data (rows in users" in err
    after = await state(source)
    assert after == before and tree(source.vault) == vault_before

    # --force while the app still holds the tables (services not stopped): refused after a
    # short wait, nothing changed.
    async with tsdb.connect(source.settings()) as app_conn, app_conn.transaction():
        await app_conn.execute("SELECT count(*) FROM users")
        code, out, err = await source.tipctl(
            "restore", str(backed_up.archive), "-i", str(backed_up.identity), "--yes", "--force"
        )
    assert code == 2 and "stop the tipstream services" in err, (out, err)
    assert await state(source) == before and tree(source.vault) == vault_before
    assert [p.name for p in source.vault.parent.iterdir()] == ["vault"]


async def test_create_needs_a_recipient(new_box: NewBox, tmp_path: Path) -> None:
    box = await new_box("norecipient")
    code, _, err = await box.tipctl("backup", "create", "--output", str(tmp_path))
    assert code == 2 and "no backup recipient" in err and "backup keygen" in err
    code, _, err = await box.tipctl(
        "backup", "create", "--output", str(tmp_path), "--recipient", "age1notakey"
    )
    assert code == 2 and "not a valid age public key" in err
    assert list(tmp_path.iterdir()) == []


async def test_prune_keeps_the_newest(backed_up: BackedUp, tmp_path: Path) -> None:
    names = [f"tipstream-2026010{n}T031500Z.tar.age" for n in range(1, 5)]
    for age, name in enumerate(reversed(names)):
        path = tmp_path / name
        path.write_bytes(b"x")
        os.utime(path, (1_700_000_000 - age * 86_400,) * 2)
    (tmp_path / "unfinished.tar.age.partial").write_bytes(b"x")
    box = backed_up.source
    code, out, err = await box.tipctl("backup", "prune", "--keep", "2", "--dir", str(tmp_path))
    assert code == 2 and "would delete 2 archives" in out, (out, err)
    code, out, _ = await box.tipctl(
        "backup", "prune", "--keep", "2", "--dir", str(tmp_path), "--dry-run"
    )
    assert code == 0 and names[0] in out and names[1] in out
    assert len(list(tmp_path.iterdir())) == 5
    code, out, err = await box.tipctl(
        "backup", "prune", "--keep", "2", "--dir", str(tmp_path), "--yes"
    )
    assert code == 0, (out, err)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        *names[2:],
        "unfinished.tar.age.partial",
    ]
    code, _, _ = await box.tipctl("backup", "prune", "--keep", "2", "--dir", str(tmp_path))
    assert code == 3


async def test_create_refuses_without_the_keys_that_seal_2fa_secrets(
    new_box: NewBox, tmp_path: Path
) -> None:
    """A box whose staff 2FA secrets are sealed under the vault's keys must carry those keys:
    an archive without them would restore into a system where no admin can sign in."""
    box = await new_box("sealed2fa")
    password = tmp_path / "password"
    password.write_text(PASSWORD + "\n")
    code, out, err = await box.tipctl(
        "user",
        "create",
        "ada@example.test",
        "--role",
        "admin",
        "--enable-2fa",
        "--display-name",
        "Ada",
        "--date-of-birth",
        "1980-01-02",
        "--password-file",
        str(password),
    )
    assert code == 0, (out, err)
    (box.secrets / "vault_keys").rename(tmp_path / "vault_keys.elsewhere")
    recipient = x25519.Identity.generate().to_public()
    code, _, err = await box.tipctl(
        "backup", "create", "--output", str(tmp_path / "out"), "--recipient", str(recipient)
    )
    assert code == 2, err
    assert "sealed 2FA secrets" in err and "vault_keys" in err
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []
