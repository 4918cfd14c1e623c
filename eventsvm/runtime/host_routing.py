"""What a compute host's spawner reads, named once for its runner, the lag it reports and the tests
that wait for it: the partitions of the log it is fed."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from eventsvm.events.model import HOST_ROUTED_TOPICS, Topic
from eventsvm.log.port import TopicPartition, partition_for
from eventsvm.state.names import IMAGES

# the topics a spawner reads part of, created before its first member joins
SPAWNER_TOPICS = (*HOST_ROUTED_TOPICS, Topic.DELETED, Topic.CATALOG)


def spawner_partitions(partitions_of: Callable[[str], int], slot: int) -> list[TopicPartition]:
    """What the spawner of the host in `slot` reads (`partitions_of` a topic: its partition count):
    its slot's partition of the host-routed topics, every deletion (a server's guest may be on a
    host no delete was routed to: a resize's other end), and the catalog's partition of images (a
    deleted snapshot's file goes from the host that made it)."""
    read = [(str(t), slot % partitions_of(str(t))) for t in HOST_ROUTED_TOPICS]
    read += [(str(Topic.DELETED), p) for p in range(partitions_of(str(Topic.DELETED)))]
    read.append((str(Topic.CATALOG), partition_for(IMAGES.encode(), partitions_of(str(Topic.CATALOG)))))
    return read


def spawner_pools(slots: Mapping[str, int], partitions_of: Callable[[str], int]) -> dict[str, list[str]]:
    """The hosts one reader serves, by the pool's name, for hosts in `slots` (name: slot): every
    host whose spawner reads the same partitions shares one pool, so ten thousand simulated hosts
    on four partitions are four readers, not ten thousand. A host alone on its partitions is a
    pool of one named after it, exactly the spawner `eventsvm run spawner --host` starts."""
    shared: dict[tuple[TopicPartition, ...], list[str]] = {}
    for host, slot in slots.items():
        shared.setdefault(tuple(spawner_partitions(partitions_of, slot)), []).append(host)
    pools: dict[str, list[str]] = {}
    for read, hosts in shared.items():
        if len(hosts) == 1:
            pools[hosts[0]] = hosts
        else:
            routed = sorted({p for t, p in read if t in _ROUTED_NAMES})
            pools[f"pool-{'-'.join(map(str, routed))}"] = hosts
    return pools


_ROUTED_NAMES = frozenset(str(t) for t in HOST_ROUTED_TOPICS)
