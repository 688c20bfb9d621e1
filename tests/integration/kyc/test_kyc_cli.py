"""tipctl kyc: the queue, decisions, retention purges (only what is due, crypto-shredded, audit
chain intact) and the lawful export package, run as the operator runs them."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

from tests.helpers import Browser, UserFactory, scalar
from tests.integration.kyc.conftest import Tipctl, form_fields, submit
from tipstream.db import Conn
from tipstream.vault.storage import LocalDiskStorage


async def applicant(performer: UserFactory, tag: str, **fields: str) -> tuple[Browser, int]:
    person = await performer(tag)
    response = await submit(person, form_fields(**fields))
    assert response.status_code == 201, response.text
    return person, int(response.json()["submission_id"])


async def test_list_show_and_decide(performer: UserFactory, tipctl: Tipctl, kyc_db: Conn) -> None:
    person, sid = await applicant(performer, "cli", legal_name="Grace Hopper")
    code, out, err = await tipctl("kyc", "list", "--json", "--limit", "10000")
    assert code == 0, err
    assert sid in [row["id"] for row in json.loads(out)]

    code, out, err = await tipctl("kyc", "show", str(sid))
    assert code == 0, err
    assert "Grace Hopper" in out
    viewed = await scalar(
        kyc_db,
        "SELECT count(*) FROM audit_logs WHERE action = 'kyc.view' AND target_id = %s"
        " AND actor_id IS NULL",
        (str(sid),),
    )
    assert viewed == 1

    code, _, err = await tipctl("kyc", "reject", str(sid))
    assert code == 2  # --reason is required
    code, out, err = await tipctl("kyc", "approve", str(sid))
    assert code == 0, err
    assert "approved" in out
    assert (await person.get("/api/kyc/me")).json()["status"] == "approved"
    code, _, err = await tipctl("kyc", "approve", str(sid))
    assert code == 1 and "already approved" in err
    code, _, err = await tipctl("kyc", "show", "999999999")
    assert code == 1 and "no KYC submission" in err


async def test_purge_shreds_what_is_due_and_nothing_else(
    performer: UserFactory,
    tipctl: Tipctl,
    kyc_db: Conn,
    vault_dir: Path,
) -> None:
    _, old_rejected = await applicant(performer, "old-rejected")
    _, new_rejected = await applicant(performer, "new-rejected")
    _, approved = await applicant(performer, "approved")
    closed, closed_sid = await applicant(performer, "closed")
    for sid in (old_rejected, new_rejected):
        assert (await tipctl("kyc", "reject", str(sid), "--reason", "blurred"))[0] == 0
    assert (await tipctl("kyc", "approve", str(approved)))[0] == 0
    await kyc_db.execute(
        "UPDATE kyc_submissions SET decided_at = now() - interval '91 days' WHERE id = %s",
        (old_rejected,),
    )
    await kyc_db.execute(
        "UPDATE users SET disabled_at = now() - interval '8 years', disabled_reason = 'closed'"
        " WHERE id = %s",
        (closed.user_id,),
    )
    due = {old_rejected, closed_sid}

    code, out, err = await tipctl("kyc", "purge", "--dry-run", "--json")
    assert code == 0, err
    assert set(json.loads(out)["would_purge"]) == due
    code, out, _ = await tipctl("kyc", "purge")
    assert code == 2 and "--yes" in out

    storage = LocalDiskStorage(vault_dir)

    async def objects(sid: int) -> list[str]:
        row = await (
            await kyc_db.execute(
                "SELECT form_object, front_object, selfie_object FROM kyc_submissions"
                " WHERE id = %s",
                (sid,),
            )
        ).fetchone()
        assert row is not None
        return [str(v) for v in row.values() if v is not None]

    before = {sid: await objects(sid) for sid in (old_rejected, new_rejected, approved, closed_sid)}
    code, out, err = await tipctl("kyc", "purge", "--yes", "--json")
    assert code == 0, (out, err)
    result = json.loads(out)
    assert set(result["purged"]) == due and result["failed"] == 0
    assert result["objects_shredded"] == 6
    assert "purging" in err  # the progress bar

    for sid, object_ids in before.items():
        shredded = await scalar(
            kyc_db,
            "SELECT count(*) FROM vault_objects WHERE id = ANY(%s::uuid[]) AND wrapped_key IS NULL",
            (object_ids,),
        )
        files = [storage.path(o).exists() for o in object_ids]
        if sid in due:
            assert shredded == len(object_ids) and not any(files)
            assert await scalar(
                kyc_db, "SELECT purged_at IS NOT NULL FROM kyc_submissions WHERE id = %s", (sid,)
            )
        else:
            assert shredded == 0 and all(files)
    purges = await scalar(
        kyc_db,
        "SELECT count(*) FROM audit_logs WHERE action = 'kyc.purge' AND target_id = ANY(%s)",
        ([str(s) for s in due],),
    )
    assert purges == 2
    code, _, _ = await tipctl("kyc", "purge", "--yes")
    assert code == 3  # nothing left to do
    code, out, err = await tipctl("audit", "verify")
    assert code == 0, (out, err)


async def test_lawful_export_package(
    performer: UserFactory, tipctl: Tipctl, kyc_db: Conn, tmp_path: Path
) -> None:
    person, sid = await applicant(performer, "exported", legal_name="Ada Byron")
    phrase = tmp_path / "phrase"
    phrase.write_text("a long export passphrase\n")
    package = tmp_path / "case-42.tskyc"
    code, out, err = await tipctl(
        "kyc", "export", person.email, "--case", "LE-2026-42", "--out", str(package),
        "--passphrase-file", str(phrase),
    )  # fmt: skip
    assert code == 0, err
    blob = package.read_bytes()
    assert b"Ada Byron" not in blob and b"JFIF" not in blob
    checksum = Path(str(package) + ".sha256").read_text().split()[0]
    assert checksum in out
    audited = await (
        await kyc_db.execute(
            "SELECT details FROM audit_logs WHERE action = 'kyc.export' AND target_id = %s",
            (str(person.user_id),),
        )
    ).fetchone()
    assert audited is not None
    assert audited["details"]["case_reference"] == "LE-2026-42"
    assert audited["details"]["sha256"] == checksum

    opened = tmp_path / "case.tar"
    code, _, err = await tipctl(
        "kyc", "open-export", str(package), "--case", "LE-2026-42", "--out", str(opened),
        "--passphrase-file", str(phrase),
    )  # fmt: skip
    assert code == 0, err
    with tarfile.open(opened) as tar:
        names = set(tar.getnames())
        assert {
            "manifest.json",
            f"submission-{sid}/form.json",
            f"submission-{sid}/front.jpg",
            f"submission-{sid}/selfie.jpg",
        } <= names
        manifest = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
        form = json.load(tar.extractfile(f"submission-{sid}/form.json"))  # type: ignore[arg-type]
        front = tar.extractfile(f"submission-{sid}/front.jpg").read()  # type: ignore[union-attr]
    assert manifest["case_reference"] == "LE-2026-42" and manifest["user"]["id"] == person.user_id
    assert form["legal_name"] == "Ada Byron"
    assert front.startswith(b"\xff\xd8\xff")

    wrong = tmp_path / "wrong"
    wrong.write_text("not the passphrase at all\n")
    code, _, err = await tipctl(
        "kyc", "open-export", str(package), "--case", "LE-2026-42", "--out",
        str(tmp_path / "x.tar"), "--passphrase-file", str(wrong),
    )  # fmt: skip
    assert code == 1 and "wrong passphrase" in err
