"""A TCP proxy a test can cut: a server's outage as its clients see it, without stopping
the server itself (the shared PostgreSQL goes on serving every other test).

Up, it relays each connection to the target. `cut()` closes the listening socket and
resets every relayed connection, so clients get "connection refused" for new connections
and a reset on the ones they hold, as when the database host goes away; `restore()`
listens again on the same port."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from .conftest import free_port

CHUNK = 65_536


class TcpProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self._target = (target_host, target_port)
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._relays: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def up(self) -> bool:
        return self._server is not None

    async def restore(self) -> None:
        assert self._server is None, "the proxy is already up"
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)

    async def cut(self) -> None:
        self.cut_now()
        await asyncio.gather(*self._relays, return_exceptions=True)

    def cut_now(self) -> None:
        """Cut without waiting for the relays to wind down: from code that cannot await
        (an engine's event hook), at the very moment it runs."""
        assert self._server is not None, "the proxy is already cut"
        self._server.close()
        self._server = None
        for writer in self._writers:
            # A reset, not a polite FIN: the client learns at once that the peer is gone.
            writer.transport.abort()

    async def _relay(
        self, client_reader: asyncio.StreamReader, client: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._relays.add(task)
        self._writers.add(client)
        try:
            try:
                target_reader, target = await asyncio.open_connection(*self._target)
            except OSError:
                client.transport.abort()
                return
            self._writers.add(target)
            try:
                await asyncio.gather(_pipe(client_reader, target), _pipe(target_reader, client))
            finally:
                self._writers.discard(target)
                target.transport.abort()
        finally:
            self._writers.discard(client)
            client.transport.abort()
            self._relays.discard(task)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        # Either side ending ends the pair: the other direction's reader sees it too.
        writer.transport.abort()


@contextlib.asynccontextmanager
async def tcp_proxy(target_host: str, target_port: int) -> AsyncIterator[TcpProxy]:
    """A proxy to the target, up; cut when the test ends, whatever state it was left in."""
    proxy = TcpProxy(target_host, target_port)
    await proxy.restore()
    try:
        yield proxy
    finally:
        if proxy.up:
            await proxy.cut()
