"""Cluster helpers for tests: who serves which slot, and names that land on a given node."""

from __future__ import annotations

from redismpx.server import ClusterNode, RedisCluster, key_slot


def slot_owners(cluster: RedisCluster, ask: ClusterNode | None = None) -> dict[int, ClusterNode]:
    """slot -> primary, read once (``node_for_slot`` asks the cluster on every call), as
    ``ask`` sees it (by default the first running node)."""
    by_port = {n.port: n for n in cluster.nodes}
    node = ask or next(n for n in cluster.nodes if n.running)
    reply = node.command("CLUSTER", "SLOTS")
    owners: dict[int, ClusterNode] = {}
    for lo, hi, primary, *_ in reply:
        for slot in range(lo, hi + 1):
            owners[slot] = by_port[primary[1]]
    return owners


def rejected_calls(node: ClusterNode, command: str) -> int:
    """How often ``node`` refused ``command`` before running it (``MOVED``, ``TRYAGAIN``)."""
    line = node.info("commandstats").get(f"cmdstat_{command}", "")
    fields = dict(field.split("=", 1) for field in line.split(",") if "=" in field)
    return int(fields.get("rejected_calls", 0))


def names_on(owners: dict[int, ClusterNode], node: ClusterNode, prefix: str, n: int) -> list[str]:
    """``n`` channel names whose slots ``node`` serves (each in a slot of its own)."""
    out: list[str] = []
    seen: set[int] = set()
    i = 0
    while len(out) < n:
        name = f"{prefix}{i}"
        slot = key_slot(name)
        if owners[slot] is node and slot not in seen:
            seen.add(slot)
            out.append(name)
        i += 1
    return out
