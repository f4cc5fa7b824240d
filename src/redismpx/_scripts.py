"""The server-side scripts of history, and calling them (EVALSHA, EVAL after NOSCRIPT).

Both run atomically on the node that owns the channel's slot; their keys and channels are
named by :mod:`redismpx._envelope`. The publish script appends to the history and publishes
the envelope and then the payload, so that no subscriber sees a publication the history
lacks (or the reverse). Its cost on the server is measured by the benchmark suite (S13).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final

from ._protocol import encode_command
from .errors import ServerError

# KEYS: meta, log. ARGV: channel, envelope channel, payload, size, ttl (ms), a new epoch
# (used when the history starts), PUBLISH or SPUBLISH, a random tag. The entry's id is
# ``<offset>-<tag>``: a history that lost its last writes (a failover to a lagging replica)
# and gave their offsets to new publications is told apart by the tag. A history whose
# counter was lost starts a new epoch and drops a log that outlived it (eviction removes keys
# one by one); so does a log ahead of the counter (the hash was rolled back or rewritten
# without it), which refuses the entry. Offsets are Lua numbers: exact up to 1e14
# publications per epoch ("%.14g" in ``..``).
PUBLISH_SOURCE: Final = b"""\
local o = redis.call('HINCRBY', KEYS[1], 'o', 1)
local e = redis.call('HGET', KEYS[1], 'e')
if o == 1 or not e then
  e = ARGV[6]
  redis.call('HSET', KEYS[1], 'e', e)
  redis.call('DEL', KEYS[2])
end
local id = o .. '-' .. ARGV[8]
if redis.pcall('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], id, 'd', ARGV[3]).err then
  e = ARGV[6]
  redis.call('HSET', KEYS[1], 'e', e)
  redis.call('DEL', KEYS[2])
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], id, 'd', ARGV[3])
end
redis.call('PEXPIRE', KEYS[1], ARGV[5])
redis.call('PEXPIRE', KEYS[2], ARGV[5])
redis.call(ARGV[7], ARGV[2], '1:' .. e .. ':' .. id .. ':' .. ARGV[3])
return {redis.call(ARGV[7], ARGV[1], ARGV[3]), e, o}
"""

# KEYS: meta, log. ARGV: "tail" (the last COUNT) or "from" (from an offset on, that one
# included: its tag is checked), the epoch of that offset, the offset, COUNT. Replies
# {epoch, last offset, entries}; an epoch that is not the history's reads it from its start.
# No history: {false, 0, {}}.
READ_SOURCE: Final = b"""\
local m = redis.call('HMGET', KEYS[1], 'e', 'o')
local e = m[1]
if not e then return {false, 0, {}} end
local entries
if ARGV[1] == 'tail' then
  entries = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', ARGV[4])
else
  local from = 0
  if e == ARGV[2] then from = tonumber(ARGV[3]) end
  entries = redis.call('XRANGE', KEYS[2], from .. '-0', '+', 'COUNT', ARGV[4])
end
return {e, tonumber(m[2]), entries}
"""

#: How long the calls after a ``NOSCRIPT`` send the whole source (seconds).
WHOLE_FOR: Final = 1.0

Call = Callable[[bytes, str], Awaitable[Any]]
"""Send an encoded command to the node that owns the keys; returns the reply."""


class Script:
    """A Lua script called by its SHA1, sent whole when the server does not know it."""

    def __init__(self, name: str, source: bytes) -> None:
        self.name = name
        self.source = source
        self.sha = hashlib.sha1(source, usedforsecurity=False).hexdigest().encode()
        self._whole_until = -1.0  # after a NOSCRIPT: send the source for a while

    async def run(self, call: Call, keys: Sequence[bytes], args: Sequence[bytes]) -> Any:
        nkeys = b"%d" % len(keys)
        if time.monotonic() >= self._whole_until:
            try:
                command = encode_command(b"EVALSHA", self.sha, nkeys, *keys, *args)
                return await call(command, self.name)
            except ServerError as exc:
                if exc.code != "NOSCRIPT":  # a new server, a restart, a failover, SCRIPT FLUSH
                    raise
                # Until one EVAL has loaded it, the calls send the source (for a second at
                # most): 10,000 recovery reads after a restart must not each be refused.
                self._whole_until = time.monotonic() + WHOLE_FOR
        reply = await call(encode_command(b"EVAL", self.source, nkeys, *keys, *args), self.name)
        self._whole_until = -1.0  # loaded (on that node; another one says NOSCRIPT in turn)
        return reply


PUBLISH: Final = Script("history publish", PUBLISH_SOURCE)
READ: Final = Script("history read", READ_SOURCE)
