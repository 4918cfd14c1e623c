"""What a compute host's spawner reads, named once for its runner, the lag it reports and the tests
that wait for it: the partitions of the log it is fed."""

from __future__ import annotations

from collections.abc import Callable

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
