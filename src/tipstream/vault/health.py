"""tipctl doctor's look at the vault: keys readable, storage (directory or S3 bucket) writable,
every object's key in the keyring."""

from __future__ import annotations

from tipstream import db
from tipstream.config import Settings
from tipstream.vault import queries
from tipstream.vault.keys import Keyring
from tipstream.vault.storage import StorageUnavailable, storage_for


async def check_vault(settings: Settings) -> str:
    keyring = Keyring.parse(settings.secrets.vault_keys)
    if not settings.secrets.kyc_index_key:
        raise RuntimeError("secret kyc_index_key missing: run tipctl keys init")
    try:
        await storage_for(settings).probe()
    except StorageUnavailable as exc:
        raise RuntimeError(exc.detail) from None
    async with db.connect(settings) as conn:
        counts = await queries.count_by_key(conn)
    unknown = sorted(set(counts) - set(keyring.keys))
    if unknown:
        raise RuntimeError(f"objects wrapped by keys missing from the keyring: {unknown}")
    behind = sum(n for k, n in counts.items() if k != keyring.active_id)
    note = f", {behind} under older keys (tipctl keys rotate)" if behind else ""
    return f"{sum(counts.values())} objects, active key {keyring.active_id}{note}"
