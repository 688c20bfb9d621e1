"""Check that coturn answers and accepts the credentials the app issues, by doing what a
browser does: a TURN Allocate over UDP with a TURN REST credential.

A wrong shared secret makes browsers (and aiortc) silently gather no relay candidate; nothing
raises. This check turns that into a clear failure (``tipctl doctor``, tests).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import struct
from dataclasses import dataclass

MAGIC = 0x2112A442
BINDING, ALLOCATE, REFRESH, CREATE_PERMISSION = 0x0001, 0x0003, 0x0004, 0x0008
SUCCESS, ERROR = 0x0100, 0x0110
ATTR_USERNAME, ATTR_INTEGRITY, ATTR_ERROR = 0x0006, 0x0008, 0x0009
ATTR_LIFETIME, ATTR_REALM, ATTR_NONCE = 0x000D, 0x0014, 0x0015
ATTR_RELAYED, ATTR_TRANSPORT, ATTR_XOR_MAPPED = 0x0016, 0x0019, 0x0020
ATTR_XOR_PEER = 0x0012


class TurnCheckFailed(Exception):
    pass


@dataclass
class _Message:
    method_class: int
    transaction: bytes
    attrs: dict[int, bytes]


def _attr(kind: int, value: bytes) -> bytes:
    pad = (4 - len(value) % 4) % 4
    return struct.pack("!HH", kind, len(value)) + value + b"\0" * pad


def _encode(method_class: int, transaction: bytes, attrs: bytes, key: bytes | None) -> bytes:
    if key is None:
        return struct.pack("!HHI", method_class, len(attrs), MAGIC) + transaction + attrs
    # MESSAGE-INTEGRITY covers the header with the length including itself (24 bytes).
    header = struct.pack("!HHI", method_class, len(attrs) + 24, MAGIC) + transaction
    digest = hmac.new(key, header + attrs, hashlib.sha1).digest()
    return header + attrs + _attr(ATTR_INTEGRITY, digest)


def _decode(data: bytes) -> _Message:
    if len(data) < 20:
        raise TurnCheckFailed("short STUN reply")
    method_class, length, magic = struct.unpack("!HHI", data[:8])
    if magic != MAGIC:
        raise TurnCheckFailed("not a STUN reply")
    attrs: dict[int, bytes] = {}
    offset = 20
    while offset + 4 <= 20 + length:
        kind, size = struct.unpack("!HH", data[offset : offset + 4])
        attrs.setdefault(kind, data[offset + 4 : offset + 4 + size])
        offset += 4 + size + (4 - size % 4) % 4
    return _Message(method_class, data[8:20], attrs)


def _xor_address(value: bytes) -> str:
    port = struct.unpack("!H", value[2:4])[0] ^ (MAGIC >> 16)
    raw = struct.unpack("!I", value[4:8])[0] ^ MAGIC
    return f"{'.'.join(str(b) for b in raw.to_bytes(4, 'big'))}:{port}"


class _Client(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.replies: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self.replies.put_nowait(data)


async def _ask(
    transport: asyncio.DatagramTransport, client: _Client, packet: bytes, wait: float
) -> _Message:
    for _ in range(3):
        transport.sendto(packet)
        try:
            return _decode(await asyncio.wait_for(client.replies.get(), wait))
        except TimeoutError:
            continue
    raise TurnCheckFailed("no answer (is coturn running and reachable?)")


async def check_turn(
    host: str, port: int, username: str, password: str, *, wait: float = 1.0
) -> str:
    """Allocate a relay with these credentials, release it, and return the relayed address."""
    relayed, _ = await _allocate(host, port, username, password, wait=wait, peers=[])
    return relayed


async def peer_permissions(
    host: str, port: int, username: str, password: str, peers: list[str], *, wait: float = 1.0
) -> dict[str, bool]:
    """May this allocation relay to each peer (IPv4)? Asks coturn for a permission per peer
    (CreatePermission): nothing is ever sent to the peers themselves."""
    _, allowed = await _allocate(host, port, username, password, wait=wait, peers=peers)
    return allowed


async def _allocate(
    host: str, port: int, username: str, password: str, *, wait: float, peers: list[str]
) -> tuple[str, dict[str, bool]]:
    loop = asyncio.get_running_loop()
    transport, client = await loop.create_datagram_endpoint(_Client, remote_addr=(host, port))
    try:
        transport_attr = _attr(ATTR_TRANSPORT, bytes([17, 0, 0, 0]))  # UDP
        first = await _ask(
            transport,
            client,
            _encode(ALLOCATE, secrets.token_bytes(12), transport_attr, None),
            wait,
        )
        if first.method_class != ALLOCATE | ERROR or ATTR_NONCE not in first.attrs:
            raise TurnCheckFailed("the server did not ask for credentials: not a TURN server?")
        realm, nonce = first.attrs[ATTR_REALM], first.attrs[ATTR_NONCE]
        key = hashlib.md5(  # noqa: S324 (the TURN long-term credential key is MD5 by RFC 5389)
            username.encode() + b":" + realm + b":" + password.encode()
        ).digest()
        auth = (
            _attr(ATTR_USERNAME, username.encode())
            + _attr(ATTR_REALM, realm)
            + _attr(ATTR_NONCE, nonce)
        )
        reply = await _ask(
            transport,
            client,
            _encode(ALLOCATE, secrets.token_bytes(12), transport_attr + auth, key),
            wait,
        )
        if reply.method_class != ALLOCATE | SUCCESS:
            code, reason = _error(reply)
            raise TurnCheckFailed(
                f"TURN refused the app's credential ({code} {reason}): "
                "turn_secret differs from coturn's static-auth-secret?"
            )
        relayed = _xor_address(reply.attrs[ATTR_RELAYED])
        allowed = {}
        for peer in peers:
            permission = _attr(ATTR_XOR_PEER, _xor_encode(peer)) + auth
            answer = await _ask(
                transport,
                client,
                _encode(CREATE_PERMISSION, secrets.token_bytes(12), permission, key),
                wait,
            )
            allowed[peer] = answer.method_class == CREATE_PERMISSION | SUCCESS
        release = _attr(ATTR_LIFETIME, struct.pack("!I", 0)) + auth
        transport.sendto(_encode(REFRESH, secrets.token_bytes(12), release, key))
        return relayed, allowed
    finally:
        transport.close()


def _error(reply: _Message) -> tuple[int, str]:
    error = reply.attrs.get(ATTR_ERROR, b"\0\0\0\0")
    return (error[2] & 7) * 100 + error[3], error[4:].decode(errors="replace")


def _xor_encode(ip: str) -> bytes:
    """XOR-PEER-ADDRESS value for an IPv4 peer (port 9, discard: never contacted)."""
    raw = int.from_bytes(bytes(int(part) for part in ip.split(".")), "big") ^ MAGIC
    return struct.pack("!BBHI", 0, 1, 9 ^ (MAGIC >> 16), raw)


def parse_turn_url(url: str) -> tuple[str, int]:
    """("host", port) of a stun:/turn: URL such as turn:198.18.0.1:3478?transport=udp."""
    rest = url.split(":", 1)[1].split("?", 1)[0]
    host, _, port = rest.rpartition(":")
    if not host:
        return rest, 3478
    return host.strip("[]"), int(port)
