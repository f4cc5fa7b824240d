"""A plain redis-py client for tests: publishing and asking the server what it holds."""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError


class Admin:
    """A plain redis-py client for publishing and for asking the server what it holds."""

    def __init__(self, url: str) -> None:
        # Retries: fault tests restart the server under this client's feet.
        self.client = aioredis.Redis.from_url(
            url,
            retry=Retry(ExponentialBackoff(cap=0.5, base=0.01), 20),
            retry_on_error=[RedisConnectionError, OSError],
        )

    async def publish(self, channel: bytes | str, data: bytes | str) -> int:
        return int(await self.client.publish(channel, data))

    async def numsub(self, channel: bytes | str) -> int:
        reply = await self.client.pubsub_numsub(channel)
        return int(reply[0][1])

    async def channels(self) -> set[bytes]:
        return set(await self.client.pubsub_channels())

    async def numpat(self) -> int:
        return int(await self.client.pubsub_numpat())

    async def calls(self, command: str) -> int:
        """How often the server ran ``command`` since the last ``reset_stats``."""
        stats: dict[str, Any] = await self.client.info("commandstats")
        return int(stats.get(f"cmdstat_{command.lower()}", {}).get("calls", 0))

    async def reset_stats(self) -> None:
        await self.client.config_resetstat()

    async def pubsub_clients(self) -> list[dict[str, Any]]:
        return list(await self.client.client_list(_type="pubsub"))

    async def kill_pubsub(self) -> int:
        return int(await self.client.execute_command("CLIENT", "KILL", "TYPE", "pubsub"))

    async def close(self) -> None:
        await self.client.aclose()
