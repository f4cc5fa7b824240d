"""An in-process asyncio TCP proxy that injects network faults between a client and a server.

    proxy = FaultProxy(target_port=server.port)
    port = await proxy.start()        # listens on 127.0.0.1:<port>, forwards to the target
    proxy.stall()                     # stop forwarding both ways; sockets stay open (a blackhole)
    proxy.resume()                    # forward again; the bytes held meanwhile are delivered
    proxy.cut()                       # close every connection, both sides, with FIN (clean EOF)
    proxy.cut(rst=True)               # ... with RST (the client reads ConnectionResetError)
    proxy.refuse(True)                # reset every new connection at once; refuse(False) undoes it
    proxy.connections                 # connections being proxied now
    await proxy.close()

While stalled the proxy reads at most one chunk per direction and then stops reading, so TCP
back-pressure builds up as it would on a dead link. A connection whose target refuses it is
reset. Cutting closes the server side too, so the server drops that client (and its
subscriptions) as well.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from types import TracebackType
from typing import Self

_CHUNK = 65536


def _abort(writer: asyncio.StreamWriter, *, rst: bool) -> None:
    """Close a connection: with RST (SO_LINGER 0, then abort) or with FIN after the buffer."""
    if rst:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()
    else:
        writer.close()


class _Link:
    """One proxied connection: the client side, the server side and the two pumps."""

    def __init__(self, client: asyncio.StreamWriter, server: asyncio.StreamWriter) -> None:
        self.client = client
        self.server = server
        self.pumps: list[asyncio.Task[None]] = []
        self.closed = False

    def close(self, *, rst: bool = False) -> None:
        if self.closed:
            return
        self.closed = True
        _abort(self.client, rst=rst)
        _abort(self.server, rst=rst)
        current = asyncio.current_task()
        for task in self.pumps:
            if task is not current:
                task.cancel()


class FaultProxy:
    """A TCP proxy from ``listen_host:listen_port`` (0: any free port) to the target."""

    def __init__(
        self,
        target_port: int,
        *,
        target_host: str = "127.0.0.1",
        listen_host: str = "127.0.0.1",
        listen_port: int = 0,
    ) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.listen_host = listen_host
        self._port = listen_port
        self._server: asyncio.Server | None = None
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._refusing = False
        self._links: set[_Link] = set()
        self._handlers: set[asyncio.Task[None]] = set()
        self._accepted = 0

    # -- control ------------------------------------------------------------------------------

    async def start(self) -> int:
        """Start listening; return the port."""
        if self._server is not None:
            raise RuntimeError("the proxy is already started")
        self._server = await asyncio.start_server(self._handle, self.listen_host, self._port)
        self._port = int(self._server.sockets[0].getsockname()[1])
        return self._port

    @property
    def port(self) -> int:
        """The listening port (known after :meth:`start`)."""
        return self._port

    @property
    def url(self) -> str:
        """``redis://HOST:PORT`` of the proxy."""
        return f"redis://{self.listen_host}:{self._port}"

    @property
    def connections(self) -> int:
        """How many connections are being proxied now."""
        return len(self._links)

    @property
    def accepted(self) -> int:
        """How many connections were accepted in total (refused ones included)."""
        return self._accepted

    @property
    def stalled(self) -> bool:
        """Whether forwarding is stopped."""
        return not self._flowing.is_set()

    def stall(self) -> None:
        """Stop forwarding in both directions; connections stay open."""
        self._flowing.clear()

    def resume(self) -> None:
        """Forward again, delivering what was held."""
        self._flowing.set()

    def refuse(self, on: bool = True) -> None:
        """While on, every new connection is reset as soon as it is accepted."""
        self._refusing = on

    def cut(self, *, rst: bool = False) -> int:
        """Close every current connection on both sides (FIN, or RST with ``rst``); return
        how many were cut. New connections are still accepted."""
        links = list(self._links)
        self._links.clear()
        for link in links:
            link.close(rst=rst)
        return len(links)

    async def close(self) -> None:
        """Stop listening and drop every connection. Idempotent."""
        if self._server is not None:
            self._server.close()
        self.cut()
        self._flowing.set()
        handlers = list(self._handlers)
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5):
                    await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- forwarding ---------------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._accepted += 1
        if self._refusing:
            _abort(writer, rst=True)
            return
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            try:
                up_reader, up_writer = await asyncio.open_connection(
                    self.target_host, self.target_port
                )
            except OSError:
                _abort(writer, rst=True)  # like a server that is down
                return
            link = _Link(writer, up_writer)
            self._links.add(link)
            link.pumps = [
                asyncio.create_task(self._pump(reader, up_writer, link)),
                asyncio.create_task(self._pump(up_reader, writer, link)),
            ]
            try:
                await asyncio.gather(*link.pumps, return_exceptions=True)
            finally:
                self._links.discard(link)
                link.close()
        finally:
            self._handlers.discard(task)

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, link: _Link
    ) -> None:
        try:
            while not link.closed:
                data = await reader.read(_CHUNK)
                if not data:
                    break
                await self._flowing.wait()
                if link.closed:
                    break
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            # one side ended: end the other side too (Redis never half-closes)
            self._links.discard(link)
            link.close()
