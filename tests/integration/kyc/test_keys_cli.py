"""tipctl keys: init, status, rotate (progress, resumable), prune, against the real database."""

from __future__ import annotations

from tests.integration.kyc.conftest import Tipctl
from tests.integration.kyc.test_vault import rewrap_all
from tipstream.db import Conn
from tipstream.vault.keys import Keyring
from tipstream.vault.service import Vault


async def test_init_is_idempotent(tipctl: Tipctl) -> None:
    code, _, err = await tipctl("keys", "init")
    assert code == 3, err  # both exist already
    (tipctl.secrets / "vault_keys").unlink()
    code, out, err = await tipctl("keys", "init")
    assert code == 0, err
    assert "vault_keys" in out
    assert Keyring.parse((tipctl.secrets / "vault_keys").read_text())
    assert oct((tipctl.secrets / "vault_keys").stat().st_mode & 0o777) == "0o600"


async def test_rotate_rewraps_all_and_prune_retires_the_old_key(
    tipctl: Tipctl, vault: Vault, kyc_db: Conn
) -> None:
    stored = []
    for n in range(3):
        row = await vault.put(
            kyc_db, owner_id=None, kind="test.cli", content_type="x/y", data=b"cli %d" % n
        )
        stored.append((row.id, b"cli %d" % n))
    old = vault.keyring.active_id

    code, out, _ = await tipctl("keys", "rotate")
    assert code == 2 and "--yes" in out  # says what it would do, does nothing
    code, out, _ = await tipctl("keys", "rotate", "--dry-run")
    assert code == 0 and "would add a new key" in out
    assert Keyring.parse((tipctl.secrets / "vault_keys").read_text()).active_id == old

    code, out, err = await tipctl("keys", "rotate", "--yes")
    assert code == 0, (out, err)
    assert "re-wrapped" in out and "failed 0" in out
    assert "re-wrapping" in err  # the progress bar
    rotated = Keyring.parse((tipctl.secrets / "vault_keys").read_text())
    assert rotated.active_id != old and old in rotated.keys
    new_vault = Vault(rotated, vault.storage)
    for object_id, plain in stored:
        assert (await new_vault.get(kyc_db, object_id))[1] == plain
    assert set(await new_vault.keys_in_use(kyc_db)) == {rotated.active_id}

    code, out, err = await tipctl("audit", "verify")
    assert code == 0, (out, err)
    code, out, _ = await tipctl("keys", "status", "--json")
    assert code == 0 and rotated.active_id in out

    code, out, err = await tipctl("keys", "prune", "--yes")
    assert code == 0, err
    assert Keyring.parse((tipctl.secrets / "vault_keys").read_text()).keys.keys() == {
        rotated.active_id
    }
    # Back under the app's key: the other tests share this database.
    await rewrap_all(Keyring(rotated.keys | vault.keyring.keys, old), vault, kyc_db)
