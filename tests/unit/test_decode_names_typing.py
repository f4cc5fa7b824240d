"""The overloads of ``decode_names``: what a user's type checker sees (mypy, strict)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from mypy import api

import redismpx

USER_CODE = """
from redismpx import Multiplexer, Message

async def main(mpx: Multiplexer) -> None:
    def text(channel: str, data: bytes) -> None: ...
    def raw(channel: bytes, data: bytes) -> None: ...
    def text_active(name: str) -> None: ...

    mpx.new_channel_subscription(text, None, text_active, decode_names=True)
    mpx.new_pattern_subscription("p*", text, decode_names=True)
    mpx.new_channel_subscription(raw)
    async with mpx.subscribe("a", decode_names=True) as s:
        async for m in s:
            name: str = m.channel
    async with mpx.subscribe("a") as b:
        async for n in b:
            bname: bytes = n.channel
    async with mpx.psubscribe("p*", decode_names=True) as p:
        async for pm in p:
            pattern: str | None = pm.pattern

    def legacy(m: Message) -> bytes:  # a bare Message still means Message[bytes]
        return m.channel
"""

# Each line a type checker must reject, with what it gets wrong.
WRONG = {
    "mpx.new_channel_subscription(text)": "a str callback without decode_names",
    "mpx.new_channel_subscription(raw, decode_names=True)": "a bytes callback with decode_names",
    "wrong: str = wm.channel": "a str name from a bytes iterator's message",
}


def test_decode_names_is_typed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The redismpx under test (a worktree's src/), not whatever the venv's .pth points at.
    monkeypatch.setenv("MYPYPATH", str(Path(redismpx.__file__).parent.parent))
    lines = textwrap.dedent(USER_CODE).splitlines()
    lines += [
        "    async with mpx.subscribe('a') as w:",
        "        async for wm in w:",
        "            wrong: str = wm.channel",
        "    mpx.new_channel_subscription(text)",
        "    mpx.new_channel_subscription(raw, decode_names=True)",
    ]
    path = tmp_path / "user_code.py"
    path.write_text("\n".join(lines) + "\n")
    out, err, _ = api.run(["--strict", "--no-incremental", "--no-error-summary", str(path)])
    errors = {int(e.split(":")[1]) for e in out.splitlines() if ": error:" in e}
    expected = {i + 1 for i, line in enumerate(lines) if line.strip() in WRONG}
    assert len(expected) == len(WRONG)
    assert errors == expected, f"mypy's errors are not exactly the wrong lines:\n{out}{err}"
