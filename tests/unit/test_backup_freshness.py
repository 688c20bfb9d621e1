"""tipctl doctor's backup check: quiet where backups are not set up, patient before the first
night, loud when the newest archive is stale."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tipctl.backup_cmd import backup_freshness

DAY = 86_400


def test_a_host_without_recipients_is_not_checked(tmp_path: Path) -> None:
    assert "not set up on this host" in backup_freshness(tmp_path, tmp_path / "backup_recipients")


def test_before_the_first_night_and_after(tmp_path: Path) -> None:
    recipients = tmp_path / "backup_recipients"
    recipients.write_text("age1...\n")
    archives = tmp_path / "backups"
    assert "yet" in backup_freshness(archives, recipients)
    os.utime(recipients, (time.time() - 3 * DAY,) * 2)
    with pytest.raises(RuntimeError, match="no archive"):
        backup_freshness(archives, recipients)


def test_the_newest_archive_decides(tmp_path: Path) -> None:
    recipients = tmp_path / "backup_recipients"
    recipients.write_text("age1...\n")
    old = tmp_path / "tipstream-20260101T031500Z.tar.age"
    new = tmp_path / "tipstream-20260102T031500Z.tar.age"
    for path, age in ((old, 4 * DAY), (new, DAY / 2)):
        path.write_bytes(b"x" * 2048)
        os.utime(path, (time.time() - age,) * 2)
    assert backup_freshness(tmp_path, recipients).startswith(f"newest archive {new.name}, 12 h")
    with pytest.raises(RuntimeError, match=f"{new.name} is 60 h old"):
        backup_freshness(tmp_path, recipients, now=time.time() + 2 * DAY)
