"""The projector: every read model the API serves, folded from the whole log and kept current by
a tail thread. The API appends through `append`, which folds its own events at once so a GET
right after a POST already sees them (read-your-writes), and skips them when the tail brings
them back.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from eventsvm.events.codec import Codec, CodecError
from eventsvm.events.model import INSTANCE_TOPICS, Event, EventType, Topic, event_hash
from eventsvm.log.port import BEGINNING, EventLog, OutRecord, Reader, partition_for
from eventsvm.state.catalog import CatalogState, evolve_catalog
from eventsvm.state.identity import IdentityState
from eventsvm.state.identity import evolve as evolve_identity
from eventsvm.state.instances import InstanceProjection, evolve_projection

log = logging.getLogger(__name__)

ALL_TOPICS: tuple[Topic, ...] = (
    *INSTANCE_TOPICS,
    Topic.HOSTS,
    Topic.CATALOG,
    Topic.IDENTITY,
    Topic.DEAD_LETTER,
)


@dataclass
class Models:
    """The folded state: catalog, identity, instances, hosts, dead letters."""

    catalog: CatalogState = field(default_factory=CatalogState)
    identity: IdentityState = field(default_factory=IdentityState)
    instances: InstanceProjection = field(default_factory=InstanceProjection)
    hosts: dict[str, dict[str, Any]] = field(default_factory=dict)
    dead_letters: list[Event] = field(default_factory=list)
    events_by_topic: dict[str, int] = field(default_factory=dict)


def fold(models: Models, event: Event, stored_hash: str | None, topic: str) -> None:
    """Fold one event into every model it concerns."""
    models.events_by_topic[topic] = models.events_by_topic.get(topic, 0) + 1
    kind = event.type
    if kind.startswith("instance."):
        evolve_projection(models.instances, event, stored_hash)
    elif kind.startswith("catalog."):
        evolve_catalog(models.catalog, event)
    elif kind.startswith("identity."):
        evolve_identity(models.identity, event)
    elif kind == EventType.HOST_REGISTERED:
        models.hosts[event.body["name"]] = dict(event.body)
    elif kind == EventType.HOST_UPDATED and event.body["name"] in models.hosts:
        host = models.hosts[event.body["name"]]
        if event.body.get("enabled") is not None:
            host["enabled"] = event.body["enabled"]
            host["disabled_reason"] = event.body.get("disabled_reason")
    elif kind == EventType.DEAD_LETTER_RECORDED:
        models.dead_letters.append(event)


EventListener = Callable[[Event, str], None]


class ReadModel:
    """The models plus the log they come from; thread-safe through one lock."""

    def __init__(self, log_: EventLog, codec: Codec) -> None:
        self.log = log_
        self.codec = codec
        self.models = Models()
        self.lock = threading.RLock()
        self._own: set[str] = set()
        self._reader: Reader | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._changed = threading.Condition(self.lock)
        self.listeners: list[EventListener] = []

    def start(self, tail: bool = True) -> None:
        """Create the topics, fold the whole log, then keep folding in a background thread."""
        self.log.create_topics([str(t) for t in ALL_TOPICS])
        self._reader = self.log.reader([str(t) for t in ALL_TOPICS], BEGINNING)
        self.catch_up(to_end=True)
        if tail:
            self._thread = threading.Thread(target=self._tail, name="projector", daemon=True)
            self._thread.start()

    def catch_up(self, to_end: bool = False) -> int:
        """Fold what has arrived; with `to_end`, keep going until the end as of now."""
        assert self._reader is not None
        folded = 0
        while True:
            records = self._reader.poll(5000, timeout=0.05 if to_end else 0.2)
            if records:
                with self.lock:
                    for record in records:
                        folded += self._fold_record(record.value, record.topic)
                    self._changed.notify_all()
            if not records and (not to_end or self._reader.at_end()):
                return folded
            if not to_end and not records:
                return folded

    def _fold_record(self, data: bytes, topic: str) -> int:
        try:
            event = self.codec.decode(data)
        except CodecError:
            return 0
        if event.event_id in self._own:
            self._own.discard(event.event_id)
            return 0
        digest = event_hash(data)
        fold(self.models, event, digest, topic)
        for listener in self.listeners:
            listener(event, topic)
        return 1

    def _tail(self) -> None:
        while not self._stop.is_set():
            try:
                self.catch_up()
            except Exception:  # the tail must outlive a transient log error
                log.exception("projector: tail failed; retrying")
                time.sleep(1.0)

    def append(self, events: Sequence[Event], partitions: Sequence[int | None] | None = None) -> None:
        """Append `events` atomically and fold them at once (read-your-writes)."""
        encoded = [self.codec.encode(e) for e in events]
        records = [
            OutRecord(str(e.topic), e.aggregate_id.encode(), data, partitions[i] if partitions else None)
            for i, (e, data) in enumerate(zip(events, encoded, strict=True))
        ]
        with self.lock:
            self.log.append(records)
            for event, data in zip(events, encoded, strict=True):
                self._own.add(event.event_id)
                fold(self.models, event, event_hash(data), str(event.topic))
                for listener in self.listeners:
                    listener(event, str(event.topic))
            self._changed.notify_all()

    def partition_by(self, topic: Topic, key: str) -> int:
        """The partition of `topic` a key such as a project id maps to."""
        return partition_for(key.encode(), self.log.partitions(str(topic)))

    def wait_until(self, predicate: Callable[[Models], bool], timeout: float) -> bool:
        """Block until `predicate(models)` holds or `timeout` seconds pass."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not predicate(self.models):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._changed.wait(min(remaining, 0.5))
            return True

    def close(self) -> None:
        """Stop the tail and release the reader."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._reader is not None:
            self._reader.close()
