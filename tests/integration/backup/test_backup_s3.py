"""Backups of a vault on its S3 backend (a real S3-compatible server on loopback): the objects
are read from the bucket into the archive and restored into another box's bucket prefix."""

from __future__ import annotations

import json
import uuid

from tests.integration.backup.conftest import NewBox
from tests.integration.backup.test_backup import populate, state
from tests.integration.kyc.conftest import S3Server
from tipstream import db as tsdb
from tipstream.vault.service import Vault


async def test_an_s3_vault_is_backed_up_and_restored(new_box: NewBox, s3_server: S3Server) -> None:
    secret = {"vault_s3_secret_key": s3_server.secret_key}
    source = await new_box(
        "s3src",
        vault=s3_server.vault_section(prefix=f"src-{uuid.uuid4().hex[:6]}/"),
        secrets=secret,
    )
    document, object_id = await populate(source)
    identity = source.root / "identity.txt"
    code, out, err = await source.tipctl("backup", "keygen", "-o", str(identity))
    assert code == 0, err
    recipient = next(w for w in out.split() if w.startswith("age1"))
    code, out, err = await source.tipctl(
        "backup", "create", "-o", str(source.root), "-r", recipient, "--json"
    )
    assert code == 0, (out, err)
    made = json.loads(out)
    shard = str(object_id)[:2]
    assert f"vault/{shard}/{object_id}" in {f["path"] for f in made["manifest"]["files"]}

    prefix = f"dst-{uuid.uuid4().hex[:6]}/"
    target = await new_box("s3dst", vault=s3_server.vault_section(prefix=prefix), secrets=secret)
    code, out, err = await target.tipctl("restore", made["archive"], "-i", str(identity), "--yes")
    assert code == 0, (out, err)
    assert "ok   vault objects open: 1 of 1" in out
    assert s3_server.file_of(f"{prefix}{object_id}").exists()
    settings = target.settings()
    async with tsdb.connect(settings) as conn:
        _, plain = await Vault.from_settings(settings).get(conn, object_id)
    assert plain == document
    assert (await state(target))["balances"] == (await state(source))["balances"]
