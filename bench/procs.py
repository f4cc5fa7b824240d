"""Orchestrator-side handles on the two child processes: the publisher and a subscriber worker.

Both are ``multiprocessing`` *spawn* children talking over a ``Pipe``: a fresh interpreter per
subscriber run (clean heap for S6, no state carried between contenders). Every wait has a
timeout; a worker that misses it is SIGKILLed and its scenario is reported as failed.
"""

from __future__ import annotations

import multiprocessing as mp
import multiprocessing.connection
import time
from typing import Any

from bench.publisher import publisher_main
from bench.worker import worker_main

_CTX = mp.get_context("spawn")


class ScenarioError(RuntimeError):
    """A scenario could not run to completion (error, timeout or a dead child)."""


def _wait(conn: mp.connection.Connection, proc: Any, timeout: float, what: str) -> tuple[Any, ...]:
    deadline = time.monotonic() + timeout
    while True:
        if conn.poll(min(0.5, max(0.0, deadline - time.monotonic()))):
            try:
                msg: tuple[Any, ...] = conn.recv()
            except EOFError as exc:
                raise ScenarioError(f"{what}: pipe closed (exit code {proc.exitcode})") from exc
            return msg
        if not proc.is_alive():
            raise ScenarioError(f"{what}: process died (exit code {proc.exitcode})")
        if time.monotonic() >= deadline:
            raise ScenarioError(f"{what}: timed out after {timeout:.0f}s")


class Publisher:
    """The long-lived publisher process (one per bench run).

    If it misses a deadline it is killed and a new one started, so that a late reply can never
    be taken for the answer to the next command.
    """

    def __init__(self) -> None:
        self._spawn()

    def _spawn(self) -> None:
        self.conn, child = _CTX.Pipe()
        self.proc = _CTX.Process(target=publisher_main, args=(child,), daemon=True)
        self.proc.start()
        child.close()

    def _respawn(self) -> None:
        self.proc.kill()
        self.proc.join(5)
        self.conn.close()
        self._spawn()

    def _recv(self, timeout: float, what: str) -> tuple[Any, ...]:
        try:
            return _wait(self.conn, self.proc, timeout, f"publisher {what}")
        except ScenarioError:
            self._respawn()
            raise

    def call(self, *cmd: Any, timeout: float = 120.0) -> dict[str, Any]:
        self.conn.send(cmd)
        return self._reply(timeout, str(cmd[0]))

    def _reply(self, timeout: float, what: str) -> dict[str, Any]:
        kind, payload = self._recv(timeout, what)
        if kind == "error":
            raise ScenarioError(f"publisher {what} failed:\n{payload}")
        result: dict[str, Any] = payload
        return result

    def bulk(self, port: int, prefix: bytes, count: int, n: int, size: int) -> dict[str, Any]:
        result = self.call("bulk", port, prefix, count, n, size)
        if result["zero"]:
            raise ScenarioError(f"{result['zero']} of {n} PUBLISH had no receiver")
        return result

    def start_probe(
        self, port: int, prefix: bytes, indices: list[int], interval: float, size: int
    ) -> None:
        self.conn.send(("probe", port, prefix, indices, interval, size))
        kind, payload = self._recv(10.0, "probe")
        if kind != "started":
            raise ScenarioError(f"publisher probe failed:\n{payload}")

    def stop_probe(self) -> dict[str, Any]:
        self.conn.send(("stop",))
        return self._reply(10.0, "probe")

    def close(self) -> None:
        if self.proc.is_alive():
            try:
                self.conn.send(("quit",))
            except OSError:
                pass
            self.proc.join(5)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(5)
        self.conn.close()


class Worker:
    """One subscriber process running one scenario body for one contender."""

    def __init__(
        self, func: str, contender: str, params: dict[str, Any], use_uvloop: bool = False
    ) -> None:
        self.what = f"{func} [{contender}{' uvloop' if use_uvloop else ''}]"
        self.conn, child = _CTX.Pipe()
        self.proc = _CTX.Process(
            target=worker_main,
            args=(child, func, contender, params, use_uvloop),
            daemon=True,
        )
        self.proc.start()
        child.close()

    def send(self, *msg: Any) -> None:
        self.conn.send(msg)

    def expect(self, kind: str, timeout: float) -> tuple[Any, ...]:
        msg = _wait(self.conn, self.proc, timeout, self.what)
        if msg[0] == "error":
            raise ScenarioError(f"{self.what} failed:\n{msg[1]}")
        if msg[0] != kind:
            raise ScenarioError(f"{self.what}: expected {kind!r}, got {msg!r:.200}")
        return msg

    def result(self, timeout: float) -> dict[str, Any]:
        msg = self.expect("result", timeout)
        self.proc.join(10)
        out: dict[str, Any] = msg[1]
        return out

    def kill(self) -> None:
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join(5)
        self.conn.close()

    def __enter__(self) -> Worker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()
