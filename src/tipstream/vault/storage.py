"""Where vault ciphertext lives: local disk by default, or an S3-compatible service on the
operator's own hardware (``vault.backend = "s3"``). A backend only stores and returns opaque
bytes by name; encryption and authentication happen above it, so neither backend ever sees a
plaintext byte or a key."""

from __future__ import annotations

import asyncio
import io
import os
import re
import uuid
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

import certifi
import structlog
import urllib3
from minio import Minio
from minio.error import MinioException, S3Error
from prometheus_client import Counter

from tipstream.config import Settings
from tipstream.errors import Problem

OBJECT_NAME = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


log = structlog.get_logger("tipstream.vault")
STORAGE_FAILURES = Counter(
    "tipstream_vault_storage_failures_total",
    "Vault storage calls that failed (backend down, credentials refused, bucket missing)",
    ["backend"],
)


class ObjectMissing(Exception):
    """The backend holds no ciphertext under this name."""


class StorageUnavailable(Problem):
    """The storage backend cannot be reached or refuses us (down, wrong credentials, no bucket).
    Nothing was changed; the operator has to act. The detail names the backend, never a secret."""

    status, slug, title = 503, "vault-storage-unavailable", "Document storage unavailable"

    def __init__(self, detail: str) -> None:
        super().__init__(detail, headers={"Retry-After": "30"})


class Storage(Protocol):
    async def put(self, name: str, blob: bytes) -> None: ...
    async def get(self, name: str) -> bytes: ...
    async def delete(self, name: str) -> None: ...
    async def probe(self) -> None:
        """Write and delete a probe object: what tipctl doctor checks."""


class BlockingStorage:
    """A backend whose client blocks (file system calls, the S3 client): each call runs in a
    thread so the event loop never waits on storage."""

    def _put(self, name: str, blob: bytes) -> None:
        raise NotImplementedError

    def _get(self, name: str) -> bytes:
        raise NotImplementedError

    def _delete(self, name: str) -> None:
        raise NotImplementedError

    def _probe(self) -> None:
        raise NotImplementedError

    async def put(self, name: str, blob: bytes) -> None:
        await asyncio.to_thread(self._put, name, blob)

    async def get(self, name: str) -> bytes:
        return await asyncio.to_thread(self._get, name)

    async def delete(self, name: str) -> None:
        await asyncio.to_thread(self._delete, name)

    async def probe(self) -> None:
        await asyncio.to_thread(self._probe)


class LocalDiskStorage(BlockingStorage):
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

    def _probe(self) -> None:
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        probe = self.root / f".doctor-{uuid.uuid4().hex}"
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
        probe.unlink()


class S3Storage(BlockingStorage):
    """Objects at <prefix><name> in one bucket of an S3-compatible service, through the MinIO
    client (SigV4). Every failure other than "no such key" is StorageUnavailable: a 503 for the
    API, one line for tipctl, with the endpoint and the S3 error code but never a credential."""

    def __init__(
        self,
        *,
        endpoint: str,
        bucket: str,
        region: str,
        access_key_id: str,
        secret_key: str,
        prefix: str = "",
        ca_file: str = "",
        timeout_seconds: float = 10.0,
    ) -> None:
        url = urlsplit(endpoint)
        self.endpoint = f"{url.scheme}://{url.netloc}"
        self.bucket = bucket
        self.prefix = prefix
        # Few, quick retries: a request waits for this, and a dead endpoint must answer soon.
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=timeout_seconds, read=timeout_seconds),
            maxsize=10,
            cert_reqs="CERT_REQUIRED",
            ca_certs=ca_file or certifi.where(),
            retries=urllib3.Retry(total=2, backoff_factor=0.1, status_forcelist=[502, 503, 504]),
        )
        self.client = Minio(
            url.netloc,
            access_key=access_key_id,
            secret_key=secret_key,
            secure=url.scheme == "https",
            region=region,
            http_client=http,
        )

    def key(self, name: str) -> str:
        if not OBJECT_NAME.match(name):
            raise ValueError(f"not a vault object name: {name!r}")
        return self.prefix + name

    def _unavailable(self, action: str, exc: Exception) -> StorageUnavailable:
        if isinstance(exc, S3Error):
            why = f"{exc.code}"
        elif isinstance(exc, urllib3.exceptions.MaxRetryError) and exc.reason is not None:
            why = type(exc.reason).__name__
        else:
            why = type(exc).__name__
        STORAGE_FAILURES.labels(backend="s3").inc()
        detail = f"S3 vault storage {self.endpoint} (bucket {self.bucket}): {action} failed: {why}"
        log.error("vault.storage_unavailable", detail=detail)
        return StorageUnavailable(detail)

    def _put(self, name: str, blob: bytes) -> None:
        try:
            self.client.put_object(
                self.bucket,
                self.key(name),
                io.BytesIO(blob),
                len(blob),
                content_type="application/octet-stream",
            )
        except (MinioException, urllib3.exceptions.HTTPError) as exc:
            raise self._unavailable("storing an object", exc) from None

    def _get(self, name: str) -> bytes:
        response = None
        try:
            response = self.client.get_object(self.bucket, self.key(name))
            return bytes(response.read())
        except S3Error as exc:
            if exc.code == "NoSuchKey":
                raise ObjectMissing(name) from None
            raise self._unavailable("reading an object", exc) from None
        except (MinioException, urllib3.exceptions.HTTPError) as exc:
            raise self._unavailable("reading an object", exc) from None
        finally:
            if response is not None:
                response.close()
                response.release_conn()

    def _delete(self, name: str) -> None:
        try:
            self.client.remove_object(self.bucket, self.key(name))
        except (MinioException, urllib3.exceptions.HTTPError) as exc:
            raise self._unavailable("deleting an object", exc) from None

    def _probe(self) -> None:
        probe = f"{self.prefix}.doctor-{uuid.uuid4().hex}"
        try:
            self.client.put_object(self.bucket, probe, io.BytesIO(b""), 0)
            self.client.remove_object(self.bucket, probe)
        except (MinioException, urllib3.exceptions.HTTPError) as exc:
            raise self._unavailable("the probe", exc) from None


def storage_for(settings: Settings) -> Storage:
    vault = settings.vault
    if vault.backend == "local":
        return LocalDiskStorage(vault.dir)
    secret = settings.secrets.vault_s3_secret_key
    if not secret:
        raise StorageUnavailable(
            "the S3 vault storage needs its secret key: put it in the secret file "
            "vault_s3_secret_key"
        )
    return S3Storage(
        endpoint=vault.s3.endpoint,
        bucket=vault.s3.bucket,
        region=vault.s3.region,
        access_key_id=vault.s3.access_key_id,
        secret_key=secret,
        prefix=vault.s3.prefix,
        ca_file=vault.s3.ca_file,
        timeout_seconds=vault.s3.timeout_seconds,
    )
