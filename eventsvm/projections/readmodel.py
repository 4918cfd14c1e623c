"""The projector: every read model the API serves, folded from the whole log and kept current by
a tail thread. The API appends through `append`, which folds its own events at once so a GET
right after a POST already sees them (read-your-writes), and skips them when the tail brings
them back; or through `append_in_order`, which leaves the folding to the tail, so events whose
verdict depends on what came before them on the log (a name claim) are folded in log order.
Neither may be called with the lock held: a lock held across an append stalls every reader and
decides nothing another API process would respect.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from eventsvm.events.codec import Codec
from eventsvm.events.model import INSTANCE_TOPICS, Event, EventType, Topic, event_digest
from eventsvm.log.port import BEGINNING, EventLog, LogError, OutRecord, Reader, Record, partition_for
from eventsvm.projections.seal import SealBroken, Sealing, SealStore, UntrustedSeal, require_ring
from eventsvm.projections.usage import UsageBook
from eventsvm.runtime import heap
from eventsvm.runtime.fold_letters import FoldLetters
from eventsvm.runtime.runner import SETTLE_EVERY_S, SettleClock
from eventsvm.state.catalog import CatalogState, evolve_catalog
from eventsvm.state.identity import IdentityState
from eventsvm.state.identity import evolve as evolve_identity
from eventsvm.state.instances import InstanceProjection, evolve_projection
from eventsvm.state.names import namespace_of

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
    dead_letter_ids: set[str] = field(default_factory=set)
    # kept by the API's read model, whose every create asks for a project's usage; None elsewhere
    # (a replay, a service), where eventsvm.projections.usage counts it by a scan when asked
    usage: UsageBook | None = None

    def settle(self) -> None:
        """Forget what is past its retention (deleted servers); call only with every topic folded
        to its end, so nothing a reader meets later belongs to what was forgotten."""
        forgotten = self.instances.forget_deleted()
        if self.usage is not None:
            self.usage.forgotten(forgotten)


# The read model's name on the dead letters it writes for what it cannot fold.
FOLD_NAME = "eventsvm.readmodel"


def fold(models: Models, event: Event, stored_digest: bytes | None, topic: str) -> bool:
    """Fold one event into every model it concerns; False for a dead letter written again (a fold's
    letter repeated by another replica or after a restart), which changes nothing."""
    counts = models.events_by_topic
    counts[topic] = counts.get(topic, 0) + 1
    if event.type == EventType.DEAD_LETTER_RECORDED:
        if event.event_id in models.dead_letter_ids:
            return False
        models.dead_letter_ids.add(event.event_id)
    concerns = _FOLDS.get(event.type)
    if concerns is not None:
        concerns(models, event, stored_digest)
    return True


def _fold_instance(models: Models, event: Event, stored_digest: bytes | None) -> None:
    evolve_projection(models.instances, event, stored_digest)


def _fold_catalog(models: Models, event: Event, stored_digest: bytes | None) -> None:
    evolve_catalog(models.catalog, event)


def _fold_identity(models: Models, event: Event, stored_digest: bytes | None) -> None:
    evolve_identity(models.identity, event)


def _host_registered(models: Models, event: Event, stored_digest: bytes | None) -> None:
    models.hosts[event.body["name"]] = dict(event.body)


def _host_updated(models: Models, event: Event, stored_digest: bytes | None) -> None:
    host = models.hosts.get(event.body["name"])
    if host is not None and event.body.get("enabled") is not None:
        host["enabled"] = event.body["enabled"]
        host["disabled_reason"] = event.body.get("disabled_reason")


def _dead_letter_recorded(models: Models, event: Event, stored_digest: bytes | None) -> None:
    models.dead_letters.append(event)


# Which model each event type concerns, looked up once per event; types not named here (the
# billing ledger) are counted and otherwise left alone.
_FOLDS: dict[EventType, Callable[[Models, Event, bytes | None], None]] = {
    EventType.HOST_REGISTERED: _host_registered,
    EventType.HOST_UPDATED: _host_updated,
    EventType.DEAD_LETTER_RECORDED: _dead_letter_recorded,
}
for _kind in EventType:
    if _kind.startswith("instance."):
        _FOLDS[_kind] = _fold_instance
    elif _kind.startswith("catalog."):
        _FOLDS[_kind] = _fold_catalog
    elif _kind.startswith("identity."):
        _FOLDS[_kind] = _fold_identity


EventListener = Callable[[Event, str], None]

# the tail's pauses while the log is out of reach, doubling from the first to the cap
TAIL_FIRST_PAUSE_S = 0.2
TAIL_MAX_PAUSE_S = 5.0


def _sealing(seals: SealStore | None, log_: EventLog, codec: Codec) -> Sealing | None:
    """A reading under the data dir's verified seal, if it can be trusted (else one that builds
    the next seal, every signature verified)."""
    if seals is None:
        return None
    require_ring(codec)
    try:
        return Sealing(seals.load(log_))
    except UntrustedSeal as exc:
        log.warning("read model: seal ignored, every signature verified: %s", exc)
        return Sealing()


class LockHeldDuringAppend(RuntimeError):
    """`append` was called by a thread holding the read model's lock (a programming error)."""


class ReadModel:
    """The models plus the log they come from; thread-safe through one lock."""

    def __init__(self, log_: EventLog, codec: Codec) -> None:
        self.log = log_
        self.codec = codec
        self.models = Models(usage=UsageBook())
        self.lock = threading.RLock()
        self._own: set[str] = set()
        # appended by this process and not folded yet: whichever of the tail and the appending
        # thread gets to such an event first folds it, the other skips it
        self._pending: set[str] = set()
        # appended through append_in_order and not yet folded by the tail
        self._awaited: set[str] = set()
        self._reader: Reader | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        # one thread at a time polls the reader: the tail, or without one the appending threads
        self._reading = threading.Lock()
        self._changed = threading.Condition(self.lock)
        self.listeners: list[EventListener] = []
        self.fold_letters = FoldLetters(FOLD_NAME, codec)
        # per partition, the offset after what has been folded (None: the reader cannot say)
        self._folded: dict[tuple[str, int], int] | None = {}
        self._settle_clock = SettleClock()

    def start(self, tail: bool = True, seals: SealStore | None = None) -> None:
        """Create the topics, fold the whole log, then keep folding in a background thread.

        With `seals`, records under the data dir's verified seal are folded without verifying their
        signatures again (eventsvm.projections.seal) and what was read is sealed afterwards. When
        the log no longer matches the seal, what was folded is dropped (fresh models and dead
        letters; nothing has read them: no listener is subscribed and nothing served before start
        returns) and the log is read again with every signature verified."""
        self.log.create_topics([str(t) for t in ALL_TOPICS])
        # Folding the whole log only adds objects, none of them cyclic: the collector would walk
        # the growing models again and again for nothing (see eventsvm.replay).
        collecting = gc.isenabled()
        gc.disable()
        try:
            sealing = _sealing(seals, self.log, self.codec)
            try:
                self._rebuild(sealing)
            except SealBroken as exc:
                log.error("read model: %s; reading the log again, every signature verified", exc)
                self.models = Models(usage=UsageBook())
                self.fold_letters = FoldLetters(FOLD_NAME, self.codec)
                sealing = None
                self._rebuild(None)
        finally:
            if collecting:
                gc.enable()
        heap.loaded()
        if seals is not None and sealing is not None:
            try:
                seals.save(sealing)
            except OSError as exc:  # a seal spares the next start time; without one it verifies
                log.warning("read model: could not write the verified seal %s: %s", seals.path, exc)
        if tail:
            self._thread = threading.Thread(target=self._tail, name="projector", daemon=True)
            self._thread.start()

    def _rebuild(self, sealing: Sealing | None) -> None:
        if self._reader is not None:
            self._reader.close()
        self._reader = self.log.reader([str(t) for t in ALL_TOPICS], BEGINNING)
        with self._reading:
            self._catch_up(self._reader, True, sealing)
        if sealing is not None:
            sealing.finish()

    def catch_up(self, to_end: bool = False) -> int:
        """Fold what has arrived; with `to_end`, keep going until the end as of now."""
        assert self._reader is not None
        with self._reading:
            return self._catch_up(self._reader, to_end)

    def _catch_up(self, reader: Reader, to_end: bool, sealing: Sealing | None = None) -> int:
        folded = 0
        while True:
            records = reader.poll(5000, timeout=0.05 if to_end else 0.2)
            if records:
                self._settle_clock.changed()
            positions = self._positions_of(reader)
            if records or positions:
                with self.lock:
                    if sealing is None:
                        for record in records:
                            folded += self._fold_record(record)
                    else:  # the seal takes the whole batch into its digests at once
                        for record, sealed in zip(records, sealing.vouch(records), strict=True):
                            folded += self._fold_record(record, sealing, sealed)
                    if positions:
                        self._folded = positions
                    self._changed.notify_all()
            if to_end:
                # checked after every batch: once at the end, one more poll would only wait out its timeout
                if reader.at_end():
                    self.fold_letters.flush(self.log)
                    self._settle()
                    return folded
            elif not records:
                self.fold_letters.flush(self.log)
                if self._settle_clock.due(SETTLE_EVERY_S) and reader.at_end():
                    self._settle()
                return folded

    def _settle(self) -> None:
        with self.lock:
            self.models.settle()
            self._settle_clock.settled()

    def _positions_of(self, reader: Reader) -> dict[tuple[str, int], int] | None:
        # what the reader has delivered, changed or not: an empty poll may step over markers
        if self._folded is None:
            return None
        try:
            return reader.positions()
        except NotImplementedError:
            self._folded = None
            return None

    def sync(self, timeout: float, topics: Sequence[Topic] = ALL_TOPICS) -> bool:
        """Wait until everything appended to `topics` before this call is folded, by any process
        (read-your-writes across API processes: a write on one, a read on another); False after
        `timeout` seconds. Costs one end-offsets query, and no wait when already there."""
        ends = list(self.log.ends([str(t) for t in topics]).items())
        if self._thread is None:  # no tail (a one-shot model): fold up to the end here
            self.catch_up(to_end=True)
        return self.wait_until(lambda _models: self._folded is None or all(
            self._folded.get(tp, 0) >= end for tp, end in ends), timeout)

    def _fold_record(self, record: Record, sealing: Sealing | None = None, sealed: bool = False) -> int:
        event = self.fold_letters.decoded(record, sealed)
        if event is None:
            if sealing is not None:
                sealing.refuse(record)
            return 0
        if event.event_id in self._own:
            self._own.discard(event.event_id)
            return 0
        self._pending.discard(event.event_id)
        self._awaited.discard(event.event_id)
        return self._fold(event, record.value, record)

    def _fold(self, event: Event, data: bytes, record: Record) -> int:
        # One event no fold here can apply must neither stop the tail nor skip the rest of the batch.
        try:
            if not fold(self.models, event, event_digest(data), record.topic):
                return 0
        except Exception as exc:
            self.fold_letters.unfoldable(record, exc)
            return 0
        usage = self.models.usage
        if usage is not None:  # whatever the event, its aggregate's usage is counted again if it is a server
            usage.changed.add(event.aggregate_id)
        for listener in self.listeners:
            listener(event, record.topic)
        return 1

    def _tail(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                self.catch_up()
                failures = 0
                heap.settle()  # between batches, not inside a fold
            except LogError as exc:  # a log out of reach is a pause: the reader resumes where it was
                failures += 1
                pause = min(TAIL_FIRST_PAUSE_S * 2 ** (failures - 1), TAIL_MAX_PAUSE_S)
                log.warning("projector: the log is unavailable (%s); trying again in %g s", exc, pause)
                self._stop.wait(pause)
            except Exception:  # nor may anything else end the tail the API reads from
                log.exception("projector: tail failed; retrying")
                self._stop.wait(TAIL_MAX_PAUSE_S)

    def _records(
        self, events: Sequence[Event], partitions: Sequence[int | None] | None
    ) -> tuple[list[bytes], list[OutRecord]]:
        # RLock's own check of the calling thread: a route must release the lock before it appends
        if self.lock._is_owned():  # type: ignore[attr-defined]
            raise LockHeldDuringAppend("append called with the read model's lock held")
        encoded = [self.codec.encode(e) for e in events]
        places = partitions if partitions else [self._place(e) for e in events]
        records = [
            OutRecord(str(e.topic), e.aggregate_id.encode(), data, place)
            for e, data, place in zip(events, encoded, places, strict=True)
        ]
        return encoded, records

    def _place(self, event: Event) -> int | None:
        # an event that takes or frees a unique name goes to its namespace's partition (state.names)
        namespace = namespace_of(event)
        return None if namespace is None else self.partition_by(event.topic, namespace)

    def append(self, events: Sequence[Event], partitions: Sequence[int | None] | None = None) -> None:
        """Append `events` atomically and fold them at once (read-your-writes)."""
        encoded, records = self._records(events, partitions)
        ids = [e.event_id for e in events]
        with self.lock:
            self._pending.update(ids)
        # Not under the lock: concurrent appends then share the log's transactions (the Kafka
        # engine's group commit), and GETs are not held up by a write.
        try:
            positions = self.log.append(records)
        except BaseException:
            with self.lock:
                self._pending.difference_update(ids)
            raise
        with self.lock:
            for event, out, (partition, offset) in zip(events, records, positions, strict=True):
                if event.event_id not in self._pending:
                    continue  # the tail folded it first
                self._pending.discard(event.event_id)
                self._own.add(event.event_id)
                self._fold(event, out.value, Record(out.topic, partition, offset, out.key, out.value, 0))
            self._changed.notify_all()
        self.fold_letters.flush(self.log)

    def append_in_order(self, events: Sequence[Event], timeout: float) -> bool:
        """Append `events` atomically, then wait up to `timeout` seconds for the tail to fold them
        in log order, after whatever reached their partitions first. False when it has not yet."""
        _, records = self._records(events, None)
        ids = {e.event_id for e in events}
        with self.lock:
            self._awaited.update(ids)
        try:
            self.log.append(records)
            if self._thread is None:  # no tail (a one-shot model): fold up to the end here
                self.catch_up(to_end=True)
            return self.wait_until(lambda _models: not ids & self._awaited, timeout)
        finally:
            with self.lock:
                self._awaited.difference_update(ids)

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
