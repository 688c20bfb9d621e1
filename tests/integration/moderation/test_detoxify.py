"""The optional Detoxify tier with a checkpoint the test builds itself (tiny_detoxify.py):
loaded offline from the two configured paths only, per-label scores, clear errors for wrong
paths (in tipctl doctor too), and the real worker (`tipctl run worker`) re-scoring a message
published through a real room and applying the room's policy after the fact."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import msgspec
import pytest
import torch
from valkey.asyncio import Valkey

from tests.helpers import scalar
from tests.integration.moderation.conftest import (
    MakeModerator,
    ModWorld,
    decode,
    inline_table,
    start_app_with_env,
)
from tests.integration.moderation.tiny_detoxify import (
    CLEAN_BIASES,
    LABELS,
    TOXIC_BIASES,
    build_checkpoint,
    build_config_dir,
    sigmoid,
)
from tests.integration.rooms.conftest import AppServerFactory, settings_toml
from tests.integration.rooms.people import Person, live_stream, sign_up
from tipstream import db as tsdb
from tipstream.config import Settings
from tipstream.moderation import chatpolicy, detox
from tipstream.rooms import chat as room_chat

# Any attempt to reach the Hugging Face hub fails at once (nothing listens there).
NO_HUB = {"HF_ENDPOINT": "http://127.0.0.1:9", "HF_HOME": "/nonexistent/hf-home"}


@dataclass
class TinyModel:
    config_dir: Path
    toxic: Path
    clean: Path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> TinyModel:
    root = tmp_path_factory.mktemp("detoxify")
    config_dir = build_config_dir(root / "bert-tiny")
    return TinyModel(
        config_dir,
        build_checkpoint(root / "toxic.ckpt", config_dir, TOXIC_BIASES),
        build_checkpoint(root / "clean.ckpt", config_dir, CLEAN_BIASES),
    )


@pytest.fixture
def no_hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name, value in NO_HUB.items():
        monkeypatch.setenv(name, value)
    yield


def with_detoxify(settings: Settings, checkpoint: Path | None, config_dir: Path | None,
                  **moderation: object) -> Settings:  # fmt: skip
    return msgspec.structs.replace(
        settings,
        moderation=msgspec.structs.replace(
            settings.moderation,
            detoxify_checkpoint=str(checkpoint) if checkpoint else None,
            detoxify_config_dir=str(config_dir) if config_dir else None,
            **moderation,
        ),
    )


def test_the_loader_loads_offline_and_scores_per_label(tiny: TinyModel, no_hub: None) -> None:
    scorer = detox.load(detox.DetoxifyPaths(tiny.toxic, tiny.config_dir))
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    scores = scorer.score(["you are an idiot", "hello world", ""])
    assert len(scores) == 3
    for one in scores:
        assert list(one) == LABELS
        assert all(isinstance(v, float) and 0 <= v <= 1 for v in one.values())
        for label, bias in zip(LABELS, TOXIC_BIASES, strict=True):
            assert one[label] == pytest.approx(sigmoid(bias), abs=1e-4)
    assert detox.top(scores[0], []) == ("toxicity", pytest.approx(sigmoid(4.0), abs=1e-4))
    # Only the labels the operator lists count.
    assert detox.top(scores[0], ["insult", "threat"])[0] == "insult"
    clean = detox.load(detox.DetoxifyPaths(tiny.clean, tiny.config_dir))
    assert max(clean.score(["you are an idiot"])[0].values()) < 0.05


def test_wrong_or_missing_paths_fail_with_a_clear_error(
    tiny: TinyModel, tmp_path: Path, mod_world: ModWorld, no_hub: None
) -> None:
    def fails(checkpoint: Path, config_dir: Path) -> str:
        with pytest.raises(detox.DetoxifyUnavailable) as caught:
            detox.load(detox.DetoxifyPaths(checkpoint, config_dir))
        return str(caught.value)

    missing = tmp_path / "nowhere.ckpt"
    assert f"no checkpoint file at {missing}" in fails(missing, tiny.config_dir)
    assert "no directory at" in fails(tiny.toxic, tmp_path / "no-config")
    empty = tmp_path / "empty-config"
    empty.mkdir()
    assert "has no config.json" in fails(tiny.toxic, empty)
    not_detoxify = tmp_path / "other.ckpt"
    torch.save({"weights": [1, 2, 3]}, not_detoxify)
    assert "is not a Detoxify checkpoint" in fails(not_detoxify, tiny.config_dir)
    # A config of another shape than the checkpoint's weights.
    wider = build_config_dir(tmp_path / "wider", hidden_size=32)
    assert "does not fit" in fails(tiny.toxic, wider)
    # Half a configuration.
    with pytest.raises(detox.DetoxifyUnavailable, match="go together"):
        detox.configured(with_detoxify(mod_world.settings, tiny.toxic, None))
    assert detox.configured(mod_world.settings) is None


def doctor(world: ModWorld, config: Path, env: dict[str, str]) -> dict[str, dict[str, object]]:
    done = subprocess.run(
        [str(Path(sys.executable).parent / "tipctl"), "--config", str(config), "doctor", "--json"],
        capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, **world.env, **NO_HUB, **env},
    )  # fmt: skip
    return {c["check"]: c for c in json.loads(done.stdout)}


def test_tipctl_doctor_reports_the_tier(
    tiny: TinyModel, tmp_path: Path, mod_world: ModWorld
) -> None:
    config = tmp_path / "tipstream.toml"
    config.write_text(settings_toml(mod_world.settings, "http://127.0.0.1:8000"))
    off = doctor(mod_world, config, {})["detoxify"]
    assert off["ok"] is True and "off" in str(off["detail"])
    paths = {
        "TIPSTREAM_MODERATION__DETOXIFY_CHECKPOINT": str(tiny.toxic),
        "TIPSTREAM_MODERATION__DETOXIFY_CONFIG_DIR": str(tiny.config_dir),
    }
    good = doctor(mod_world, config, paths)["detoxify"]
    assert good["ok"] is True and str(tiny.toxic) in str(good["detail"])
    wrong = {**paths, "TIPSTREAM_MODERATION__DETOXIFY_CHECKPOINT": str(tmp_path / "gone.ckpt")}
    bad = doctor(mod_world, config, wrong)["detoxify"]
    assert bad["ok"] is False and f"no checkpoint file at {tmp_path / 'gone.ckpt'}" in str(
        bad["detail"]
    )


async def test_rescore_allow_room_flags_without_deleting_and_clean_passes(
    tiny: TinyModel, mod_world: ModWorld, mod_db: tsdb.Conn, mod_kv: Valkey, no_hub: None
) -> None:
    performer = await sign_up(mod_world.server, "performer", "allowing")
    stream_id = await live_stream(performer, "allow room")
    viewer = await sign_up(mod_world.server, tag="viewer")
    room = await viewer.room(stream_id)
    await room.send({"type": "chat", "text": "you are a nice person"})
    message = await room.expect("chat")
    policy = {str(performer.id): "allow"}
    clean = with_detoxify(mod_world.settings, tiny.clean, tiny.config_dir,
                          chat_policy_by_room=policy)  # fmt: skip
    found = await chatpolicy.rescore(mod_db, mod_kv, clean, stream_id, message)
    assert found.action == "clean" and found.case_id is None
    toxic = with_detoxify(mod_world.settings, tiny.toxic, tiny.config_dir,
                          chat_policy_by_room=policy, detoxify_threshold=0.9)  # fmt: skip
    flagged = await chatpolicy.rescore(mod_db, mod_kv, toxic, stream_id, message)
    assert (flagged.action, flagged.label) == ("allow", "toxicity")
    assert flagged.case_id is not None
    case = await scalar(
        mod_db,
        "SELECT source || ' ' || message_id || ' ' || reason FROM moderation_cases WHERE id = %s",
        (flagged.case_id,),
    )
    assert case == f"chat {message['id']} detoxify: toxicity 0.98 (allow)"
    # Allowed: still in the room's history.
    history = await room_chat.history(mod_kv, mod_world.settings, stream_id)
    assert any(decode(line)["id"] == message["id"] for line in history)


@pytest.fixture
async def detox_world(
    tiny: TinyModel,
    mod_world: ModWorld,
    app_server_factory: AppServerFactory,
    tmp_path: Path,
) -> AsyncIterator[tuple[ModWorld, Person]]:
    """An app process and a `tipctl run worker` with the tier on (the toxic model) and a
    performer whose room holds what it finds."""
    performer = await sign_up(mod_world.server, "performer", "holding")
    by_room = {str(performer.id): "hold"}
    env = {
        **mod_world.env,
        **NO_HUB,
        "TIPSTREAM_MODERATION__DETOXIFY_CHECKPOINT": str(tiny.toxic),
        "TIPSTREAM_MODERATION__DETOXIFY_CONFIG_DIR": str(tiny.config_dir),
        "TIPSTREAM_MODERATION__CHAT_POLICY_BY_ROOM": inline_table(by_room),
    }
    server = await start_app_with_env(app_server_factory, mod_world.settings, env)
    performer.server = server
    performer.http.base_url = server.base_url  # type: ignore[assignment]
    config = tmp_path / "worker.toml"
    config.write_text(settings_toml(mod_world.settings, server.base_url).replace(
        'level = "WARNING"', 'level = "INFO"'))  # fmt: skip
    worker = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "tipctl"), "--config", str(config),
        "run", "worker", "--threads", "1",
        env={**os.environ, **env},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    world = ModWorld(server, mod_world.settings, mod_world.vault, mod_world.rooms, env)
    try:
        yield world, performer
    finally:
        if worker.returncode is None:
            worker.send_signal(signal.SIGTERM)
        output, _ = await asyncio.wait_for(worker.communicate(), timeout=60)
        print(output.decode()[-3000:])


async def test_the_worker_holds_a_published_message_the_model_finds_toxic(
    detox_world: tuple[ModWorld, Person],
    mod_db: tsdb.Conn,
    make_moderator: MakeModerator,
) -> None:
    world, performer = detox_world
    stream_id = await live_stream(performer, "hold room")
    viewer = await sign_up(world.server, tag="viewer")
    watcher = await sign_up(world.server, tag="watcher")
    viewer_room = await viewer.room(stream_id)
    watcher_room = await watcher.room(stream_id)
    # Clean for the fast classifier: published at once, seen by everyone.
    await viewer_room.send({"type": "chat", "text": "you are a nice person"})
    seen = await watcher_room.expect("chat")
    assert seen["text"] == "you are a nice person"
    # The worker re-scores it (loading the model first) and the hold policy takes it down.
    deleted = await watcher_room.expect("deleted", timeout=90)
    assert deleted["message_id"] == seen["id"]
    case_id = None
    for _ in range(100):  # the case is filed right after the takedown
        cur = await mod_db.execute(
            "SELECT id FROM moderation_cases WHERE stream_id = %s AND message_id = %s"
            " AND reason = 'held'",
            (stream_id, seen["id"]),
        )
        row = await cur.fetchone()
        if row is not None:
            case_id = row["id"]
            break
        await asyncio.sleep(0.1)
    assert case_id is not None, "no case filed for the held message"
    moderator = await make_moderator()
    detail = (await moderator.http.get(f"/api/moderation/cases/{case_id}")).json()
    evidence = decode(detail["evidence"])
    facts = evidence["facts"]
    assert isinstance(facts, dict) and facts["scorer"] == "detoxify"
    assert facts["scores"]["toxicity"] == pytest.approx(sigmoid(4.0), abs=1e-3)
    assert evidence["message"]["text"] == "you are a nice person"  # type: ignore[index]
    # A moderator finds it harmless and releases it: it is published again.
    released = await moderator.post(
        f"/api/moderation/cases/{case_id}/actions", json={"action": "release"}
    )
    assert released.status_code == 200, released.text
    again = await watcher_room.expect("chat")
    assert again["text"] == "you are a nice person" and again["id"] != seen["id"]


def test_the_worker_refuses_to_start_with_a_wrong_path(
    tiny: TinyModel, mod_world: ModWorld, tmp_path: Path
) -> None:
    config = tmp_path / "worker.toml"
    config.write_text(settings_toml(mod_world.settings, "http://127.0.0.1:8000"))
    gone = tmp_path / "gone.ckpt"
    done = subprocess.run(
        [str(Path(sys.executable).parent / "tipctl"), "--config", str(config),
         "run", "worker", "--threads", "1"],
        capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, **mod_world.env, **NO_HUB, "COLUMNS": "400",
             "TIPSTREAM_MODERATION__DETOXIFY_CHECKPOINT": str(gone),
             "TIPSTREAM_MODERATION__DETOXIFY_CONFIG_DIR": str(tiny.config_dir)},
    )  # fmt: skip
    assert done.returncode == 1
    assert f"moderation.detoxify_checkpoint: no checkpoint file at {gone}" in done.stderr
    assert "Traceback" not in done.stderr  # one line for the operator, not a stack
