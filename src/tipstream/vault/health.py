"""tipctl doctor's look at the vault: keys readable, directory writable, every object's key
in the keyring."""

from __future__ import annotations

import asyncio
import os
import uuid
from pathlib import Path

from tipstream import db
from tipstream.config import Settings
from tipstream.vault import queries
from tipstream.vault.keys import Keyring


def _probe_dir(root: Path) -> None:
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    probe = root / f".doctor-{uuid.uuid4().hex}"
    fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.close(fd)
    probe.unlink()


async def check_vault(settings: Settings) -> str:
    keyring = Keyring.parse(settings.secrets.vault_keys)
    if not settings.secrets.kyc_index_key:
        raise RuntimeError("secret kyc_index_key missing: run tipctl keys init")
    await asyncio.to_thread(_probe_dir, Path(settings.vault.dir))
    async with db.connect(settings) as conn:
        counts = await queries.count_by_key(conn)
    unknown = sorted(set(counts) - set(keyring.keys))
    if unknown:
        raise RuntimeError(f"objects wrapped by keys missing from the keyring: {unknown}")
    behind = sum(n for k, n in counts.items() if k != keyring.active_id)
    note = f", {behind} under older keys (tipctl keys rotate)" if behind else ""
    return f"{sum(counts.values())} objects, active key {keyring.active_id}{note}"
