"""The web UI's static files, loaded once per process and served under a content-hashed prefix.

One hash over the whole static tree goes into every asset URL (``/static/<hash>/js/room.js``):
ES modules import each other by relative path, so a per-file hash would leave an unchanged
importer pointing at a stale import. Any change to any file changes every URL, and the files
can be cached for a year as immutable."""

from __future__ import annotations

import hashlib
import mimetypes
from dataclasses import dataclass
from functools import cache
from pathlib import Path

STATIC_DIR = Path(__file__).parent / "static"
PREFIX = "/static"
TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".txt": "text/plain; charset=utf-8",
    ".png": "image/png",
    ".ico": "image/x-icon",
}


@dataclass(frozen=True)
class Asset:
    body: bytes
    media_type: str


@dataclass(frozen=True)
class Assets:
    version: str
    files: dict[str, Asset]

    def url(self, path: str) -> str:
        if path not in self.files:
            raise KeyError(f"no static file {path}")
        return f"{PREFIX}/{self.version}/{path}"


def load(directory: Path = STATIC_DIR) -> Assets:
    files: dict[str, Asset] = {}
    digest = hashlib.sha256()
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        name = path.relative_to(directory).as_posix()
        body = path.read_bytes()
        media_type = TYPES.get(path.suffix) or (
            mimetypes.guess_type(name)[0] or "application/octet-stream"
        )
        files[name] = Asset(body, media_type)
        digest.update(name.encode() + b"\0" + hashlib.sha256(body).digest())
    return Assets(digest.hexdigest()[:16], files)


@cache
def current() -> Assets:
    return load()
