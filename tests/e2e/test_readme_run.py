"""Issue 7's "done when", as a new user meets it: the README's run command (`./appliance/up`, in a
copy of this tree, with its --port/--database/--detach options), then the URL and demo logins it
prints, in real Chromium with no flags beyond the fake camera: the performer goes live in one
browser, the viewer on a phone-sized window in another watches moving video, buys tokens through
the dev processor's hosted page, tips and sees the tip land on the performer's page, reports the
stream, and the printed admin (2FA with the printed TOTP secret) finds the report in the queue.
Then the printed `tipctl doctor` line is all ok and `./appliance/down` stops what up started.

appliance/up starts Janus and coturn on their fixed ports (8188, 3478) on this host's address,
as a user's run does: an appliance already running here must be stopped first."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyotp
import pytest

from tests.conftest import drop_database
from tests.e2e.conftest import DESKTOP, PHONE, ROOT, SCREENSHOTS, Person
from tests.e2e.pages import video_frames

pytestmark = pytest.mark.slow

MEDIA_PORTS = (8188, 3478)  # Janus's API and coturn, as appliance/janus and appliance/coturn set
COPY_IGNORE = shutil.ignore_patterns(
    ".git", ".venv", "var", "node_modules", "__pycache__", "*.egg-info", "build",
    ".mypy_cache", ".ruff_cache", ".pytest_cache",
)  # fmt: skip


@dataclass
class Login:
    email: str
    password: str


@dataclass
class Appliance:
    root: Path
    url: str
    banner: str
    logins: dict[str, Login]
    admin_totp_secret: str
    doctor_command: str


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _runner_env(admin_url: str, valkey_url: str) -> dict[str, str]:
    """The caller's environment without tipstream settings, pointed at the suite's services."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIPSTREAM_")}
    env.update(TIPSTREAM_PG_ADMIN_URL=admin_url, TIPSTREAM_VALKEY_URL=valkey_url)
    for knob in ("TIPSTREAM_VENV_CACHE", "TIPSTREAM_PYTHON_BASE"):
        if knob in os.environ:
            env[knob] = os.environ[knob]
    return env


def parse_banner(banner: str, root: Path) -> Appliance:
    """What a user reads off appliance/up's output."""
    url = re.search(r"tipstream is running: (http://\S+?)/?$", banner, re.M)
    assert url, banner
    logins = {
        who: Login(email, password)
        for who, email, password in re.findall(
            r"^  (admin|performer|viewer)\s+(\S+@\S+)\s+password (\S+)$", banner, re.M
        )
    }
    assert set(logins) == {"admin", "performer", "viewer"}, banner
    secret = re.search(r"admin TOTP secret: ([A-Z2-7]+)", banner)
    assert secret, banner
    doctor = re.search(r"tipctl:\s+(TIPSTREAM_CONFIG=\S+ \S+ doctor)$", banner, re.M)
    assert doctor, banner
    return Appliance(root, url[1], banner, logins, secret[1], doctor[1])


@pytest.fixture
async def readme_appliance(
    tmp_path: Path, service_urls: tuple[str, str]
) -> AsyncIterator[Appliance]:
    taken = [port for port in MEDIA_PORTS if _listening(port)]
    if taken:
        pytest.fail(
            f"ports {taken} are in use: appliance/up runs Janus and coturn there; stop the "
            "appliance running on this machine (./appliance/down) and run this test again"
        )
    admin_url, valkey_url = service_urls
    root = tmp_path / "tipstream"
    shutil.copytree(ROOT, root, ignore=COPY_IGNORE, symlinks=True)
    database = f"tipstream_test_readme_{os.getpid()}"
    env = _runner_env(admin_url, valkey_url)
    up = subprocess.run(
        ["./appliance/up", "--detach", "--port", str(_free_port()), "--database", database],
        cwd=root, env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    credentials = root / "var" / "demo-credentials"
    try:
        assert up.returncode == 0, (up.stdout[-3000:], up.stderr[-3000:])
        yield parse_banner(up.stdout, root)
    finally:
        down = subprocess.run(
            ["./appliance/down"], cwd=root, env=env, capture_output=True, text=True,
            timeout=120, check=False,
        )  # fmt: skip
        # The demo logins are kept per database outside the tree (see appliance/up).
        if credentials.is_symlink():
            credentials.resolve().unlink(missing_ok=True)
        await drop_database(admin_url, database)
        assert down.returncode == 0, (down.stdout, down.stderr)
    # Nothing appliance/up started is left running.
    for pidfile in (root / "var" / "run").glob("*.pid"):
        pid = pidfile.read_text().strip()
        assert not Path(f"/proc/{pid}").exists(), f"{pidfile.name}: pid {pid} still runs"
    assert not any(_listening(port) for port in MEDIA_PORTS)


async def test_the_readme_run_command_end_to_end(
    readme_appliance: Appliance, new_person: Any
) -> None:
    app = readme_appliance
    logins = app.logins

    # The performer, in one browser, goes live from the studio.
    performer: Person = await new_person(app.url, viewport=DESKTOP)
    await performer.log_in(logins["performer"].email, logins["performer"].password, "/studio")
    page = performer.page
    await page.get_by_label("Title").fill("README show")
    await page.get_by_role("button", name="Go live").click()
    await page.wait_for_function(
        "() => document.querySelector('[data-live-state]').textContent.includes('You are live')",
        timeout=30000,
    )

    # The viewer, in another browser on a phone-sized window, finds the show and watches.
    viewer: Person = await new_person(app.url, viewport=PHONE)
    await viewer.log_in(logins["viewer"].email, logins["viewer"].password, "/")
    await viewer.page.get_by_role("link", name="README show").click()
    await viewer.page.wait_for_url("**/rooms/*")
    await viewer.page.wait_for_function(
        "() => document.querySelector('video').getVideoPlaybackQuality().totalVideoFrames > 5",
        timeout=30000,
    )
    first = await video_frames(viewer)
    await viewer.page.wait_for_timeout(1000)
    later = await video_frames(viewer)
    assert later["frames"] > first["frames"] + 5 and later["time"] > first["time"], (first, later)
    room_url = viewer.page.url

    # Buys tokens: package → the dev processor's hosted page → back with the new balance.
    await viewer.goto("/wallet")
    balance = viewer.page.locator("[data-wallet-balance]")
    await viewer.page.wait_for_function(
        "() => /^[0-9]+$/.test(document.querySelector('[data-wallet-balance]').textContent)"
    )
    before = int(await balance.inner_text())
    await viewer.page.locator("[data-package]").first.click()
    await viewer.page.wait_for_url("**/pay/dev/**")
    await viewer.page.get_by_role("button", name="Pay").click()
    await viewer.page.wait_for_url("**/wallet?purchase=*")
    await (
        viewer.page.locator("[data-purchase-status]")
        .filter(has_text="tokens added")
        .wait_for(timeout=15000)
    )
    await viewer.page.wait_for_function(
        f"() => Number(document.querySelector('[data-wallet-balance]').textContent) > {before}"
    )
    bought = int(await balance.inner_text())

    # Tips with a preset: the tip lands on the performer's page, the balance goes down.
    await viewer.page.goto(room_url)
    await viewer.page.locator("[data-balance]").filter(has_text=str(bought)).first.wait_for()
    await viewer.page.get_by_role("button", name="25", exact=True).click()
    await (
        performer.page.locator("[data-tip-burst]")
        .filter(has_text="25 tokens")
        .wait_for(timeout=10000)
    )
    await viewer.page.locator("[data-balance]").filter(has_text=str(bought - 25)).first.wait_for()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await viewer.page.screenshot(path=str(SCREENSHOTS / "readme-room-phone.png"))
    await performer.page.screenshot(path=str(SCREENSHOTS / "readme-studio-tip-desktop.png"))

    # Reports the stream; the printed admin signs in with 2FA and finds it in the queue.
    await viewer.page.get_by_role("button", name="Report stream").click()
    await viewer.page.get_by_label("What is wrong?").select_option("Spam or scam")
    await viewer.page.get_by_role("button", name="Send report").click()
    await viewer.page.get_by_role("button", name="Reported, thanks").wait_for()
    admin: Person = await new_person(app.url, viewport=PHONE)
    code = pyotp.TOTP(app.admin_totp_secret).now()
    await admin.log_in(
        logins["admin"].email, logins["admin"].password, "/staff/moderation", totp=code
    )
    case = admin.page.locator("[data-staff] tbody tr").filter(has_text="Spam or scam")
    await case.wait_for(timeout=10000)
    await admin.page.screenshot(path=str(SCREENSHOTS / "readme-staff-moderation-phone.png"))

    await performer.page.get_by_role("button", name="End stream").click()
    await (
        viewer.page.locator("[data-video-status]").filter(has_text="ended").wait_for(timeout=10000)
    )
    for person in (performer, viewer, admin):
        assert person.csp_violations() == [], person.csp_violations()

    # The printed doctor line: every check ok, Janus and coturn among them.
    config, tipctl, _ = app.doctor_command.split(" ")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIPSTREAM_")}
    env["TIPSTREAM_CONFIG"] = config.removeprefix("TIPSTREAM_CONFIG=")
    doctor = subprocess.run(
        [tipctl, "doctor"], cwd=app.root, env=env, capture_output=True, text=True, timeout=120,
        check=False,
    )  # fmt: skip
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    for check in ("postgres", "janus", "coturn"):
        assert re.search(rf"^ok\s+{check}\b", doctor.stdout, re.M), doctor.stdout
