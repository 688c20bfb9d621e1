"""tipctl ledger and payouts, as an operator runs them: buy through the dev processor, balance,
history, verify (with --json), refund with --dry-run and --yes, payouts list and batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.ledger.conftest import NewUser
from tipstream.config import Settings

TIPCTL = [sys.executable, "-c", "from tipctl.main import app; app()"]


@pytest.fixture
def tipctl(settings: Settings, tmp_path: Path):  # type: ignore[no-untyped-def]
    config = tmp_path / "tipctl.toml"
    config.write_text(
        f'secrets_dir = "{settings.secrets_dir}"\n[database]\nurl = "{settings.database.url}"\n'
        f'[valkey]\nurl = "{settings.valkey.url}"\nkey_prefix = "{settings.valkey.key_prefix}"\n'
    )
    env = dict(os.environ, TIPSTREAM_CONFIG=str(config), COLUMNS="200")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*TIPCTL, *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
            check=False,
        )

    return run


async def test_an_operator_buys_refunds_and_verifies(tipctl, new_user: NewUser) -> None:  # type: ignore[no-untyped-def]
    user = await new_user()
    bought = tipctl("ledger", "buy", str(user), "tkn-550")
    assert bought.returncode == 0, bought.stderr
    assert "now holds 550 tokens" in bought.stdout
    again = tipctl("ledger", "buy", str(user), "tkn-100", "--if-unfunded")
    assert again.returncode == 3, again.stdout

    balance = tipctl("ledger", "balance", str(user), "--json")
    assert balance.returncode == 0, balance.stderr
    [wallet] = [a for a in json.loads(balance.stdout) if a["kind"] == "wallet"]
    assert (wallet["asset"], wallet["balance"]) == ("TKN", 550)
    history = json.loads(tipctl("ledger", "history", str(user), "--json").stdout)
    [entry] = history["items"]
    assert (entry["kind"], entry["amount"], entry["reference"][:9]) == (
        "purchase",
        550,
        "purchase:",
    )
    purchase = entry["reference"].split(":")[1]

    dry = tipctl("ledger", "refund", purchase, "--reason", "fraud", "--dry-run")
    assert dry.returncode == 0 and "would take back 550 tokens" in dry.stdout, dry.stdout
    refused = tipctl("ledger", "refund", purchase, "--reason", "fraud")
    assert refused.returncode == 2
    done = tipctl("ledger", "refund", purchase, "--reason", "fraud", "--yes")
    assert done.returncode == 0 and "refunded" in done.stdout, done.stderr
    assert json.loads(tipctl("ledger", "balance", str(user), "--json").stdout)[0]["balance"] == 0

    verify = tipctl("ledger", "verify", "--json")
    assert verify.returncode == 0, verify.stdout
    report = json.loads(verify.stdout)
    assert report["ok"] and {c["name"] for c in report["checks"]} >= {
        "every asset sums to zero",
        "every balance equals its transfers",
        "no forbidden negative balance",
        "every tip has its split",
        "every purchase has its processor event",
    }
    human = tipctl("ledger", "verify")
    assert human.returncode == 0 and "checks passed, 0 failed" in human.stdout

    assert tipctl("payouts", "list", "--json").returncode == 0
    assert tipctl("payouts", "batch", "--dry-run").returncode == 0
    assert tipctl("payouts", "export", "999999", "--format", "csv").returncode == 1
    assert tipctl("payouts", "mark-paid", "1").returncode == 2  # needs --yes


async def test_adjustments_need_two_admins_with_2fa_on_the_cli(  # type: ignore[no-untyped-def]
    tipctl, db, new_user: NewUser, fund, tmp_path: Path
) -> None:
    import pyotp

    admins = []
    secrets = []
    for _ in range(2):
        admin = await new_user("admin")
        secret = pyotp.random_base32()
        await db.execute(
            "UPDATE users SET totp_secret = %s, totp_enabled_at = now() WHERE id = %s",
            (secret, admin),
        )
        code = tmp_path / f"code-{admin}"
        code.write_text(pyotp.TOTP(secret).now())
        admins.append((str(admin), str(code)))
        secrets.append(secret)
    viewer = await new_user()
    await fund(viewer, 40)
    (first, first_code), (second, second_code) = admins
    wrong = tmp_path / "wrong"
    wrong.write_text("000000")
    denied = tipctl(
        "ledger",
        "adjust",
        "propose",
        f"wallet:{viewer}",
        "platform:issuance",
        "15",
        "--reason",
        "duplicate",
        "--admin",
        first,
        "--totp-file",
        str(wrong),
    )
    assert denied.returncode == 1 and "2FA" in denied.stderr
    proposed = tipctl(
        "ledger",
        "adjust",
        "propose",
        f"wallet:{viewer}",
        "platform:issuance",
        "15",
        "--reason",
        "duplicate",
        "--admin",
        first,
        "--totp-file",
        first_code,
    )
    assert proposed.returncode == 0, proposed.stderr
    transfer_id = proposed.stdout.split()[1].rstrip(";")
    listed = json.loads(tipctl("ledger", "adjust", "list", "--json").stdout)
    assert transfer_id in [a["id"] for a in listed]
    # A 2FA code is single-use on the CLI as at login: the proposer's code cannot be replayed.
    replayed = tipctl(
        "ledger", "adjust", "approve", transfer_id, "--admin", first, "--totp-file", first_code
    )
    assert replayed.returncode == 1 and "already used" in replayed.stderr
    next_code = tmp_path / "next-code"
    next_code.write_text(pyotp.TOTP(secrets[0]).at(time.time() + 30))
    same = tipctl(
        "ledger", "adjust", "approve", transfer_id, "--admin", first, "--totp-file", str(next_code)
    )
    assert same.returncode == 1 and "cannot approve" in same.stderr
    other = tipctl(
        "ledger", "adjust", "approve", transfer_id, "--admin", second, "--totp-file", second_code
    )
    assert other.returncode == 0, other.stderr
    balance = json.loads(tipctl("ledger", "balance", str(viewer), "--json").stdout)
    assert [a["balance"] for a in balance if a["kind"] == "wallet"] == [25]
