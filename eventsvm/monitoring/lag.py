"""Consumer lag per group and partition: how many records each service has yet to commit past.

Asked of the log in a background thread every few seconds, not at scrape time: a broker may take
seconds to answer (a killed member's open transaction keeps its offsets unstable until fenced),
and a scrape or a dashboard poll must not wait for that. A group that has never committed is not
shown (the service is not deployed). On Kafka each transaction leaves a marker that takes an
offset, so a caught-up transactional consumer shows a lag of 1 on a partition whose last write
was a transaction; Kafka's own tools show the same.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from eventsvm.events.model import Topic
from eventsvm.log.port import EventLog, LogError
from eventsvm.runtime.host_routing import spawner_partitions, spawner_pools

log = logging.getLogger(__name__)

# Each service's consumer group and the topics it is fed (its `inputs`); spawners are per host.
PIPELINE_GROUPS: dict[str, tuple[Topic, ...]] = {
    "eventsvm.authenticator": (Topic.REQUESTED,),
    "eventsvm.scheduler": (Topic.AUTHENTICATED, Topic.FAILED, Topic.ACTION_REQUESTED),
    "eventsvm.resolver": (Topic.SCHEDULED, Topic.DELETE_REQUESTED),
    "eventsvm.billing": (Topic.SPAWNED, Topic.DELETED),
}

# the most hosts sharing partitions whose own spawners' groups are asked for too
ASKED_ONE_BY_ONE = 8

LagRow = tuple[str, str, int, int]  # group, topic, partition, lag


class ConsumerLag(Collector):
    """The latest lag of every group, refreshed by `start()`'s thread or by `refresh()`."""

    def __init__(self, log_: EventLog, host_slots: Callable[[], Mapping[str, int]],
                 groups: Mapping[str, Sequence[Topic]] | None = None, interval_s: float = 5.0) -> None:
        self.log = log_
        self.host_slots = host_slots
        self.groups = dict(groups if groups is not None else PIPELINE_GROUPS)
        self.interval_s = interval_s
        self.rows: list[LagRow] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _partitions(self) -> list[tuple[str, str, list[int] | None]]:
        wanted: list[tuple[str, str, list[int] | None]] = [
            (group, str(topic), None) for group, topics in self.groups.items() for topic in topics]
        # a spawner owns only its host's partition of the host-routed topics (and of the catalog); a
        # pool (`eventsvm up` with more hosts than partitions) owns its hosts' shared partitions.
        # Both names are asked for in a small cloud, whose hosts' spawners an operator may run one
        # by one (a group that never committed is not shown); a large pool's hosts only by the pool,
        # or each refresh would ask the log about ten thousand groups.
        slots = self.host_slots()
        readers: dict[str, int] = {}
        for pool, hosts in spawner_pools(slots, self.log.partitions).items():
            readers[pool] = slots[hosts[0]]
            if 1 < len(hosts) <= ASKED_ONE_BY_ONE:
                readers.update((host, slots[host]) for host in hosts)
        for reader, slot in sorted(readers.items()):
            read = spawner_partitions(self.log.partitions, slot)
            for topic in sorted({t for t, _ in read}):
                wanted.append((f"eventsvm.spawner.{reader}", topic, [p for t, p in read if t == topic]))
        return wanted

    def refresh(self) -> None:
        """Ask the log for every group's committed offsets and every topic's end."""
        rows: list[LagRow] = []
        ends: dict[str, dict[int, int]] = {}
        for group, topic, only in self._partitions():
            committed = self.log.committed(group, topic)
            if not committed:
                continue
            if topic not in ends:
                ends[topic] = self.log.end_offsets(topic)
            for partition, end in sorted(ends[topic].items()):
                if only is None or partition in only:
                    rows.append((group, topic, partition, max(0, end - committed.get(partition, 0))))
        self.rows = rows

    def start(self) -> None:
        """Refresh every `interval_s` seconds in a daemon thread until `close()`."""
        self._thread = threading.Thread(target=self._run, name="consumer-lag", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.refresh()
            except LogError as exc:  # keep the last numbers; the next round may succeed
                log.warning("consumer lag: %s", exc)
            except Exception:
                log.exception("consumer lag: refresh failed")
            self._stop.wait(self.interval_s)

    def close(self) -> None:
        """Stop the refresh thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def collect(self) -> Iterator[Metric]:
        """eventsvm_consumer_lag{group, topic, partition}."""
        gauge = GaugeMetricFamily("eventsvm_consumer_lag",
                                  "Records a consumer group has not committed past yet",
                                  labels=["group", "topic", "partition"])
        for group, topic, partition, lag in self.rows:
            gauge.add_metric([group, topic, str(partition)], lag)
        yield gauge
