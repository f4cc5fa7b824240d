"""Finding the primary: ask the sentinels in turn, then confirm with ``ROLE``."""

from __future__ import annotations

import asyncio
from typing import Any

from .._connection import Connection, connect
from ..errors import ConnectError, ConnectionLost, ServerError
from ._config import Address, SentinelConfig, is_number, where

_PRIMARY_ROLES = (b"master", b"primary")


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


class Sentinels:
    """The sentinels of one service, and the primary they name.

    ``known`` starts with the configured sentinels and grows with those ``SENTINEL
    SENTINELS`` reports; the one that answered last is asked first next time.
    """

    def __init__(self, config: SentinelConfig) -> None:
        self.config = config
        self.known: list[Address] = list(dict.fromkeys(config.sentinels))
        self.primary: Address | None = None  # the last primary confirmed by ROLE
        self.announced: Address | None = None  # the primary a +switch-master named, tried first
        self._legacy: set[Address] = set()  # sentinels without GET-PRIMARY-ADDR-BY-NAME

    async def connect_primary(self) -> tuple[Connection, Address]:
        """A connection to the primary, handshake done and ``ROLE`` confirmed.

        Raises :class:`ConnectError` saying why when no sentinel names a reachable primary
        (the text is stable from one attempt to the next, so it is logged once).
        """
        failures: list[str] = []
        unknown: list[str] = []
        tried: dict[Address, str] = {}  # primaries already tried this round, and the outcome
        announced = self.announced
        if announced is not None:
            # A failover was just announced: the sentinel asked first may not know yet and
            # name the old primary (which still says "master" until it is demoted).
            try:
                conn = await self._confirm(announced)
            except (ConnectionLost, ServerError, TimeoutError) as exc:
                conn = f"unreachable: {_reason(exc)}"
            if not isinstance(conn, str):
                self.primary = announced
                return conn, announced
            self.announced = None
            tried[announced] = f"{where(announced)} ({conn})"
        for sentinel in list(self.known):
            try:
                named = await self.ask(sentinel)
            except (ConnectionLost, ServerError, TimeoutError) as exc:
                failures.append(f"{where(sentinel)}: {_reason(exc)}")
                continue
            if named is None:
                unknown.append(where(sentinel))
                continue
            if named in tried:
                continue  # another sentinel with the same answer: same outcome
            try:
                conn = await self._confirm(named)
            except (ConnectionLost, ServerError, TimeoutError) as exc:
                tried[named] = f"{where(named)} ({_reason(exc)})"
                continue
            if isinstance(conn, str):
                tried[named] = f"{where(named)} ({conn})"
                continue
            self.known.remove(sentinel)
            self.known.insert(0, sentinel)
            self.primary = named
            return conn, named
        raise ConnectError(self._explain(failures, unknown, list(tried.values())))

    def _explain(self, failures: list[str], unknown: list[str], tried: list[str]) -> str:
        service = self.config.service_name
        parts = []
        if tried:
            parts.append(f"the primary the sentinels name is not usable: {'; '.join(tried)}")
        if unknown:
            parts.append(f"unknown to sentinel {', '.join(unknown)}")
        if failures:
            parts.append(f"no answer from sentinel {'; '.join(failures)}")
        if not tried and not failures:
            return f"no sentinel knows the service {service!r} (asked {', '.join(unknown)})"
        return f"no primary for {service!r}: " + "; ".join(parts)

    async def ask(self, sentinel: Address) -> Address | None:
        """The primary ``sentinel`` names (None: it does not know the service); learns the
        other sentinels on the way."""
        opts = self.config.sentinel_options(sentinel)
        conn = await connect(opts)
        try:
            async with asyncio.timeout(opts.connect_timeout):
                reply = await self._get_primary(conn, sentinel)
                if reply is None:
                    return None
                try:
                    self._learn(await conn.request(b"SENTINEL", b"SENTINELS", self._name))
                except ServerError:
                    pass  # an ACL may deny it: the configured sentinels still work
        finally:
            conn.close()
        return _text(reply[0]), int(reply[1])

    @property
    def _name(self) -> bytes:
        return self.config.service_name.encode()

    async def _get_primary(self, conn: Connection, sentinel: Address) -> Any:
        if sentinel not in self._legacy:
            try:
                return await conn.request(b"SENTINEL", b"GET-PRIMARY-ADDR-BY-NAME", self._name)
            except ServerError as exc:
                if "unknown subcommand" not in exc.reply.lower():
                    raise
                self._legacy.add(sentinel)  # older servers: the MASTER spelling
        return await conn.request(b"SENTINEL", b"GET-MASTER-ADDR-BY-NAME", self._name)

    def _learn(self, reply: Any) -> None:
        for entry in reply or ():
            fields = [_text(x) for x in entry]
            info = dict(zip(fields[::2], fields[1::2], strict=False))
            ip, port = info.get("ip"), info.get("port", "")
            if ip and is_number(port) and (ip, int(port)) not in self.known:
                self.known.append((ip, int(port)))

    async def is_primary(self, address: Address) -> bool:
        """Whether the node at ``address`` says it is a primary (False if unreachable)."""
        try:
            conn = await self._confirm(address)
        except (ConnectionLost, ServerError, TimeoutError):
            return False
        if isinstance(conn, str):
            return False
        conn.close()
        return True

    async def _confirm(self, address: Address) -> Connection | str:
        """The connection, if the node says it is a primary; else why not (the connection is
        then closed)."""
        opts = self.config.data.with_address(*address)
        conn = await connect(opts)
        try:
            async with asyncio.timeout(opts.connect_timeout):
                role = await conn.request(b"ROLE")
        except BaseException:
            conn.close()
            raise
        kind = role[0] if isinstance(role, list) and role else b"?"
        if kind in _PRIMARY_ROLES:
            return conn
        conn.close()
        return f"ROLE says {_text(kind)}"


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    return str(exc)
