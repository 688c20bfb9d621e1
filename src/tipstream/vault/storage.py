"""Where vault ciphertext lives. Local disk by default; a backend only stores and returns opaque
bytes by name, so another one (S3-compatible) can stand behind the same three calls."""

from __future__ import annotations

import asyncio
import os
import re
from pathlib import Path
from typing import Protocol

from tipstream.config import Settings

OBJECT_NAME = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


class ObjectMissing(Exception):
    """The backend holds no ciphertext under this name."""


class Storage(Protocol):
    async def put(self, name: str, blob: bytes) -> None: ...
    async def get(self, name: str) -> bytes: ...
    async def delete(self, name: str) -> None: ...


class LocalDiskStorage:
    """Files at <dir>/<first 2 hex>/<name>, written to a temporary file, fsynced and renamed so a
    crash never leaves half an object; directories 0700, files 0600."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def path(self, name: str) -> Path:
        if not OBJECT_NAME.match(name):
            raise ValueError(f"not a vault object name: {name!r}")
        return self.root / name[:2] / name

    def _put(self, name: str, blob: bytes) -> None:
        target = self.path(name)
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        temporary = target.with_suffix(".tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, blob)
            os.fsync(fd)
        finally:
            os.close(fd)
        temporary.replace(target)

    def _get(self, name: str) -> bytes:
        try:
            return self.path(name).read_bytes()
        except FileNotFoundError:
            raise ObjectMissing(name) from None

    def _delete(self, name: str) -> None:
        self.path(name).unlink(missing_ok=True)

    async def put(self, name: str, blob: bytes) -> None:
        await asyncio.to_thread(self._put, name, blob)

    async def get(self, name: str) -> bytes:
        return await asyncio.to_thread(self._get, name)

    async def delete(self, name: str) -> None:
        await asyncio.to_thread(self._delete, name)


def storage_for(settings: Settings) -> Storage:
    return LocalDiskStorage(settings.vault.dir)
