"""tipctl streams list|show|end, rooms stats and doctor's Janus/coturn checks, run as the
operator runs them (the real CLI in a subprocess, with a config file)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.integration.rooms.conftest import AppServer, settings_toml
from tests.integration.rooms.people import live_stream, sign_up
from tipstream.config import Settings


def tipctl(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(Path(sys.executable).parent / "tipctl"), "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def write_config(settings: Settings, tmp_path: Path) -> Path:
    path = tmp_path / "tipstream.toml"
    path.write_text(settings_toml(settings, "http://127.0.0.1:8000"))
    return path


async def test_streams_list_show_end_and_rooms_stats(
    app_server: AppServer, rooms_settings: Settings, tmp_path: Path
) -> None:
    config = write_config(rooms_settings, tmp_path)
    performer = await sign_up(app_server, "performer", "performer")
    stream_id = await live_stream(performer, "CLI show")
    viewer_room = await (await sign_up(app_server)).room(stream_id)

    listed = tipctl(config, "streams", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    row = next(s for s in json.loads(listed.stdout) if s["id"] == stream_id)
    assert row["status"] == "live" and row["viewers"] >= 1
    api = (await performer.http.get(f"/api/streams/{stream_id}")).json()
    assert set(row) == set(api)

    table = tipctl(config, "streams", "show", str(stream_id))
    assert table.returncode == 0 and "CLI show" in table.stdout

    stats = tipctl(config, "rooms", "stats", "--json")
    assert stats.returncode == 0, stats.stderr
    room = next(r for r in json.loads(stats.stdout) if r["stream_id"] == stream_id)
    assert room["viewers"] >= 1 and room["janus_publishers"] == 0

    refused = tipctl(config, "streams", "end", str(stream_id))
    assert refused.returncode == 2 and "--yes" in refused.stderr
    dry = tipctl(config, "streams", "end", str(stream_id), "--dry-run")
    assert dry.returncode == 0 and "would end" in dry.stdout
    assert (await performer.http.get(f"/api/streams/{stream_id}")).json()["status"] == "live"

    ended = tipctl(config, "streams", "end", str(stream_id), "--yes", "--reason", "takedown")
    assert ended.returncode == 0, ended.stderr
    assert (await viewer_room.expect("stream_ended"))["reason"] == "takedown"
    assert await viewer_room.wait_closed() == 4409
    assert tipctl(config, "streams", "end", str(stream_id), "--yes").returncode == 3
    missing = tipctl(config, "streams", "show", "999999999")
    assert missing.returncode == 1 and "no stream 999999999" in missing.stderr


async def test_doctor_checks_janus_and_coturn(
    rooms_settings: Settings, rooms_settings_factory: object, tmp_path: Path
) -> None:
    config = write_config(rooms_settings, tmp_path)
    doctor = tipctl(config, "doctor", "--json")
    checks = {c["check"]: c for c in json.loads(doctor.stdout)}
    assert checks["janus"]["ok"], checks["janus"]
    assert "rooms locked by admin_key" in checks["janus"]["detail"]
    assert checks["coturn"]["ok"], checks["coturn"]

    # Janus unreachable, or coturn with another secret: each is a named failure.
    broken = tmp_path / "broken"
    broken.mkdir()
    secrets_dir = Path(str(rooms_settings.secrets_dir))
    for item in secrets_dir.iterdir():
        (broken / item.name).write_text(item.read_text())
    (broken / "turn_secret").write_text("not-the-secret-coturn-has-0123456789\n")
    text = settings_toml(rooms_settings, "http://127.0.0.1:8000")
    text = text.replace(str(secrets_dir), str(broken))
    text = text.replace(rooms_settings.janus.ws_url, "ws://127.0.0.1:9")
    (tmp_path / "broken.toml").write_text(text)
    doctor = tipctl(tmp_path / "broken.toml", "doctor", "--json")
    assert doctor.returncode == 1
    checks = {c["check"]: c for c in json.loads(doctor.stdout)}
    assert not checks["janus"]["ok"] and "cannot reach Janus" in checks["janus"]["detail"]
    assert not checks["coturn"]["ok"] and "refused" in checks["coturn"]["detail"]
