"""age encryption (through pyrage, the Python bindings of the Rust `age` crate).

Archives are age files encrypted to X25519 recipients ("age1..." public keys); the identities
("AGE-SECRET-KEY-1..." private keys) stay with the operator, so the box writes backups it cannot
read. Files are interchangeable with the `age` command line tool (`age -d -i identity.txt`).

Encryption and decryption stream: the tar side runs in a thread joined to pyrage by a pipe, so
neither the plaintext archive nor the whole ciphertext is ever held in memory or written out.
"""

from __future__ import annotations

import io
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

import pyrage
from pyrage import x25519

# The ciphertext of one chunk (64 KiB of plaintext) is authenticated on its own: a flipped bit
# anywhere stops decryption at that chunk, a cut-off file at its end.
SECRET_KEY_PREFIX = "AGE-SECRET-KEY-1"  # noqa: S105 (the format's marker, not a key)
RECIPIENT_PREFIX = "age1"


class AgeKeyError(Exception):
    """An identity or recipient is missing or malformed; the message says which file or value."""


class ArchiveUnreadable(Exception):
    """The archive does not decrypt: wrong identity, or the ciphertext was damaged or altered."""


def new_identity() -> tuple[str, str]:
    """(identity file text, recipient) of a new X25519 key pair."""
    identity = x25519.Identity.generate()
    recipient = str(identity.to_public())
    text = (
        f"# created: {datetime.now(UTC).isoformat(timespec='seconds')}\n"
        f"# public key: {recipient}\n"
        f"{identity}\n"
    )
    return text, recipient


def _key_file(path: Path, what: str) -> list[str]:
    """The keys of an age key file: one a line, blank lines and # comments left out."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise AgeKeyError(f"cannot read the {what} file {path}: {exc.strerror}") from None
    lines = (line.strip() for line in text.splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def read_identities(path: Path) -> list[x25519.Identity]:
    identities = []
    for number, line in enumerate(_key_file(path, "identity"), 1):
        if not line.startswith(SECRET_KEY_PREFIX):
            raise AgeKeyError(f"{path}: key {number} is not an age identity (AGE-SECRET-KEY-1...)")
        try:
            identities.append(x25519.Identity.from_str(line))
        except pyrage.IdentityError:
            raise AgeKeyError(f"{path}: key {number} is not a valid age identity") from None
    if not identities:
        raise AgeKeyError(f"{path} holds no age identity")
    return identities


def parse_recipients(values: list[str], where: str) -> list[x25519.Recipient]:
    recipients = []
    for value in values:
        if not value.startswith(RECIPIENT_PREFIX):
            raise AgeKeyError(f"{where}: {value!r} is not an age public key (age1...)")
        try:
            recipients.append(x25519.Recipient.from_str(value))
        except pyrage.RecipientError:
            raise AgeKeyError(f"{where}: {value!r} is not a valid age public key") from None
    return recipients


def read_recipients_file(path: Path) -> list[x25519.Recipient]:
    return parse_recipients(_key_file(path, "recipients"), str(path))


class _Counting(io.RawIOBase):
    """A file wrapper that tells a callback how many bytes went through it."""

    def __init__(self, raw: BinaryIO, counted: Callable[[int], None]) -> None:
        self.raw = raw
        self.counted = counted

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self.raw.read(len(buffer))
        buffer[: len(data)] = data
        self.counted(len(data))
        return len(data)

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        written = self.raw.write(data)
        self.counted(len(data))
        return written


def _drain(reader: BinaryIO) -> None:
    while reader.read(1 << 16):
        pass


@contextmanager
def _piped(work: Callable[[BinaryIO], None], *, work_reads: bool, name: str) -> Iterator[BinaryIO]:
    """A pipe with work(one end) running in a thread; the other end is the caller's. Whichever
    side reads drains the pipe before it closes, so the writer never stays blocked on a full
    pipe when the other side gave up. work's exception is re-raised here once the caller's side
    is done without one of its own (the caller's error is the cause, work's only its echo)."""
    read_fd, write_fd = os.pipe()
    work_fd, own_fd = (read_fd, write_fd) if work_reads else (write_fd, read_fd)
    failure: list[BaseException] = []

    def run() -> None:
        with os.fdopen(work_fd, "rb" if work_reads else "wb") as end:
            try:
                work(end)
            except BaseException as exc:  # re-raised in the caller's thread
                failure.append(exc)
            finally:
                if work_reads:
                    _drain(end)

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    try:
        with os.fdopen(own_fd, "wb" if work_reads else "rb") as own:
            try:
                yield own
            finally:
                if not work_reads:
                    _drain(own)
    finally:
        thread.join()
    if failure:
        raise failure[0]


def encrypt_stream(
    produce: Callable[[BinaryIO], None],
    target: BinaryIO,
    recipients: list[x25519.Recipient],
    counted: Callable[[int], None],
) -> None:
    """Run produce(writer) in a thread; everything it writes is encrypted into target."""
    with _piped(produce, work_reads=False, name="backup-pack") as reader:
        pyrage.encrypt_io(reader, _Counting(target, counted), recipients)  # type: ignore[arg-type]


def decrypt_stream(
    source: BinaryIO,
    consume: Callable[[BinaryIO], None],
    identities: list[x25519.Identity],
    counted: Callable[[int], None],
) -> None:
    """Decrypt source into consume(reader), run in a thread. Raises ArchiveUnreadable when the
    identity does not fit or the ciphertext does not authenticate (before consume's error,
    which is then only its consequence)."""
    try:
        with _piped(consume, work_reads=True, name="backup-unpack") as writer:
            pyrage.decrypt_io(_Counting(source, counted), writer, identities)  # type: ignore[arg-type]
    except (pyrage.DecryptError, OSError) as exc:
        # Past the header, pyrage reports a chunk that fails authentication as an OSError
        # without an errno; one with an errno is the disk's, not the archive's.
        if isinstance(exc, OSError) and not isinstance(exc, pyrage.DecryptError) and exc.errno:
            raise
        if "no matching keys" in str(exc).lower():
            raise ArchiveUnreadable(
                "the identity does not open this archive (it was encrypted to another key)"
            ) from None
        raise ArchiveUnreadable(
            f"the archive is damaged or was altered: decryption failed ({exc})"
        ) from None
