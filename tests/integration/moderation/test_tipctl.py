"""tipctl moderation queue|show|act, run as the operator runs them (the real CLI in a
subprocess, with the app's config and credentials)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

from tests.integration.moderation.conftest import ModWorld
from tests.integration.rooms.conftest import settings_toml
from tests.integration.rooms.people import sign_up


def tipctl(world: ModWorld, config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(Path(sys.executable).parent / "tipctl"), "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, **world.env},
    )


async def test_queue_show_act(mod_world: ModWorld, tmp_path: Path) -> None:
    config = tmp_path / "tipstream.toml"
    config.write_text(settings_toml(mod_world.settings, "http://127.0.0.1:8000"))
    viewer = await sign_up(mod_world.server, tag="viewer")
    subject = await sign_up(mod_world.server, tag="subject")
    created = await viewer.post(
        "/api/moderation/reports",
        json={"target": "user", "user_id": subject.id, "reason": "cli report"},
    )
    case_id = created.json()["id"]

    listed = tipctl(mod_world, config, "moderation", "queue", "--json")
    assert listed.returncode == 0, listed.stderr
    assert case_id in [c["id"] for c in json.loads(listed.stdout)]
    table = tipctl(mod_world, config, "moderation", "queue")
    assert "cli report" in table.stdout

    shown = tipctl(mod_world, config, "moderation", "show", str(case_id), "--json")
    assert shown.returncode == 0, shown.stderr
    detail = json.loads(shown.stdout)
    evidence = detail["evidence"].encode()
    assert hashlib.sha256(evidence).hexdigest() == created.json()["evidence_sha256"]

    refused = tipctl(mod_world, config, "moderation", "act", str(case_id), "warn")
    assert refused.returncode == 2 and "--yes" in refused.stdout + refused.stderr
    dry = tipctl(mod_world, config, "moderation", "act", str(case_id), "warn", "--dry-run")
    assert dry.returncode == 0 and "would warn" in dry.stdout
    bad = tipctl(mod_world, config, "moderation", "act", str(case_id), "explode", "--yes")
    assert bad.returncode == 2
    done = tipctl(
        mod_world, config, "moderation", "act", str(case_id), "warn", "--note", "be nice", "--yes"
    )
    assert done.returncode == 0, done.stderr
    assert "closed" in done.stdout
    told = (await subject.http.get("/api/notifications")).json()
    assert told[0]["kind"] == "moderation.warn" and "be nice" in told[0]["body"]
    again = tipctl(mod_world, config, "moderation", "act", str(case_id), "warn", "--yes")
    assert again.returncode == 3
    # A reversal still goes through on the closed case.
    reversed_ = tipctl(
        mod_world, config, "moderation", "act", str(case_id), "unfreeze_payouts", "--yes"
    )
    assert reversed_.returncode == 0, reversed_.stderr
    told = (await subject.http.get("/api/notifications")).json()
    assert told[0]["kind"] == "moderation.unfreeze_payouts"
