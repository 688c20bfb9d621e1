"""appliance/up's demo data: one report in the moderation queue (appliance/lib/
demo_moderation.py, run as the runner runs it), made once."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.integration.moderation.conftest import MakeModerator, ModWorld
from tests.integration.rooms.conftest import settings_toml
from tests.integration.rooms.people import sign_up

SCRIPT = Path(__file__).parents[3] / "appliance/lib/demo_moderation.py"


async def test_the_demo_seeds_one_report_in_the_queue(
    mod_world: ModWorld, make_moderator: MakeModerator, tmp_path: Path
) -> None:
    viewer = await sign_up(mod_world.server, tag="demo-viewer")
    performer = await sign_up(mod_world.server, "performer", "demo-performer")
    config = tmp_path / "tipstream.toml"
    config.write_text(settings_toml(mod_world.settings, "http://127.0.0.1:8000"))

    def seed() -> int:
        done = subprocess.run(
            [sys.executable, str(SCRIPT), viewer.email, performer.email],
            capture_output=True, text=True, timeout=120, check=False,
            env={**os.environ, **mod_world.env, "TIPSTREAM_CONFIG": str(config)},
        )  # fmt: skip
        assert done.returncode in (0, 3), done.stderr[-2000:]
        return done.returncode

    assert seed() == 0
    assert seed() == 3  # once
    moderator = await make_moderator()
    queue = (await moderator.http.get("/api/moderation/queue")).json()
    seeded = [c for c in queue if c["reporter_id"] == viewer.id]
    assert len(seeded) == 1
    assert seeded[0]["subject_user_id"] == performer.id
    assert seeded[0]["reason"].startswith("Demo report")
    detail = (await moderator.http.get(f"/api/moderation/cases/{seeded[0]['id']}")).json()
    assert detail["evidence"] and detail["evidence_unavailable"] is None
