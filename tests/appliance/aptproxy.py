"""A tiny forwarding HTTP proxy for the converge test's container.

The container lives in its own network namespace (198.18.0.0/15 addresses only); its one way
out is this proxy on the host side of the veth pair, which forwards plain HTTP requests and
CONNECT tunnels to an allow-list of hosts only (the Debian mirror the host's apt uses), and
refuses everything else with 403.

    python -m tests.appliance.aptproxy 198.18.0.1 3128 deb.debian.org [more hosts ...]
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from urllib.parse import urlsplit


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while chunk := await reader.read(65536):
            writer.write(chunk)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


async def _refuse(writer: asyncio.StreamWriter, status: str) -> None:
    writer.write(f"HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode())
    with contextlib.suppress(Exception):
        await writer.drain()
        writer.close()


async def _handle(
    allowed: set[str], client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter
) -> None:
    try:
        head = await client_r.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
        client_w.close()
        return
    lines = head.decode("latin-1").split("\r\n")
    method, target, version = lines[0].split(" ", 2)
    if method == "CONNECT":
        host, _, port = target.rpartition(":")
        if host not in allowed or port != "443":
            await _refuse(client_w, "403 Forbidden")
            return
        try:
            up_r, up_w = await asyncio.open_connection(host, 443)
        except OSError:
            await _refuse(client_w, "502 Bad Gateway")
            return
        client_w.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await client_w.drain()
    else:
        url = urlsplit(target)
        if url.scheme != "http" or url.hostname not in allowed:
            await _refuse(client_w, "403 Forbidden")
            return
        try:
            up_r, up_w = await asyncio.open_connection(url.hostname, url.port or 80)
        except OSError:
            await _refuse(client_w, "502 Bad Gateway")
            return
        path = (url.path or "/") + (f"?{url.query}" if url.query else "")
        headers = [
            line
            for line in lines[1:]
            if line and not line.lower().startswith(("proxy-connection:", "connection:"))
        ]
        # One request per connection keeps the forwarding a plain byte pipe.
        request = "\r\n".join([f"{method} {path} {version}", *headers, "Connection: close"])
        up_w.write(request.encode("latin-1") + b"\r\n\r\n")
        await up_w.drain()
    await asyncio.gather(_pipe(client_r, up_w), _pipe(up_r, client_w))


async def serve(address: str, port: int, allowed: set[str]) -> None:
    server = await asyncio.start_server(
        lambda r, w: _handle(allowed, r, w), address, port, reuse_address=True
    )
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(serve(sys.argv[1], int(sys.argv[2]), set(sys.argv[3:])))
