"""Replay: every read model rebuilt from the log from scratch, as it is now or as it was at a moment.

The events go through the very fold the live read model uses (eventsvm.readmodel), so a replay
cannot drift from what the API serves. Speed comes from the loop around it: the codec's C reader,
building only the body fields the instance fold reads (the projection decoder, FOLDED_BODY_FIELDS),
instance events folded straight into the projection, one hash per instance (of its newest event)
rather than per event, and no cyclic garbage collection while the models grow (bench/replay.py
measures it).
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import repeat
from typing import Any

from eventsvm.events.codec import Codec, CodecError
from eventsvm.events.model import event_digest
from eventsvm.log.port import BEGINNING, EventLog, Reader, Record, TopicPartition
from eventsvm.projections.readmodel import ALL_TOPICS, Models, fold
from eventsvm.projections.seal import Sealing, require_ring
from eventsvm.state.instances import (
    FOLDED_BODY_FIELDS,
    INSTANCE_EVENT_TYPES,
    UNFOLDED_ENVELOPE_FIELDS,
    Instance,
    fold_instance_event,
)

logger = logging.getLogger(__name__)


class Drain:
    """Every record a reader has, batch by batch, up to the end it had when reading started.

    `complete` turns False when the reader stops short: it counts records it does not return for
    `stall_s` seconds (a record deleted behind the engine's back, or a broker that stopped
    answering). An auditor must hear of that rather than wait forever.
    """

    def __init__(self, reader: Reader, batch: int = 10_000, stall_s: float = 5.0) -> None:
        self.reader = reader
        self.batch = batch
        self.stall_s = stall_s
        self.complete = True

    def __iter__(self) -> Iterator[list[Record]]:
        quiet_since: float | None = None
        while True:
            records = self.reader.poll(self.batch, timeout=0.05)
            if records:
                quiet_since = None
                yield records
            # checked after every batch too: at the end, another poll would only wait out its timeout
            if self.reader.at_end():
                return
            if records:
                continue
            quiet_since = quiet_since or time.monotonic()
            if time.monotonic() - quiet_since > self.stall_s:
                self.complete = False
                return


# -- the moment to stop at -------------------------------------------------------------------------
@dataclass(frozen=True)
class Until:
    """Where a replay stops: records stored at or before `ms` (log time), and/or below the given
    next offsets per partition (partitions not named are read to their end)."""

    ms: int | None = None
    offsets: Mapping[TopicPartition, int] = field(default_factory=dict)

    def describe(self) -> str:
        """One line for the report."""
        parts = []
        if self.ms is not None:
            parts.append(f"records stored at or before {iso_ms(self.ms)}")
        if self.offsets:
            parts.append(f"below {len(self.offsets)} partition end(s)")
        return " and ".join(parts) or "the end of the log"


def iso_ms(ms: int) -> str:
    """Milliseconds since the epoch as ISO 8601 UTC with milliseconds."""
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_time(text: str) -> int:
    """ISO 8601 (`2024-11-26T12:00:00Z`; no offset means UTC) or `@<ms since epoch>` → ms."""
    if text.startswith("@") and text[1:].isdigit():
        return int(text[1:])
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text)
    except ValueError:
        raise ValueError(f"cannot read time {text!r}: use ISO 8601 such as 2024-11-26T12:00:00Z") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def record_time(log: EventLog, topic: str, partition: int, offset: int) -> int:
    """The log time (ms) of the record at `topic:partition:offset`; ValueError if there is none."""
    reader = log.reader([topic], BEGINNING, partitions=[(topic, partition)])
    try:
        for records in Drain(reader, 5000):
            for record in records:
                if record.offset == offset:
                    return record.timestamp_ms
            if records[-1].offset > offset:
                break
    finally:
        reader.close()
    raise ValueError(f"no record at {topic}:{partition}:{offset}")


def parse_until(text: str, log: EventLog) -> Until:
    """`--until`: ISO 8601 time, `@ms`, or `TOPIC:PARTITION:OFFSET`, meaning the moment that record
    was stored (every record stored at or before that millisecond, the named one included)."""
    topic, sep, rest = text.partition(":")
    partition, sep2, offset = rest.partition(":")
    if sep and sep2 and partition.isdigit() and offset.isdigit() and not topic[:1].isdigit():
        return Until(ms=record_time(log, topic, int(partition), int(offset)))
    return Until(ms=parse_time(text))


# -- the replay ----------------------------------------------------------------------------------
@dataclass
class ReplayReport:
    """What a replay read and how long it took."""

    events_by_topic: dict[str, int]
    instances_by_status: dict[str, int]
    undecodable: int
    records_read: int
    seconds: float
    until: Until | None = None
    complete: bool = True
    # records the fold raised on, skipped as the live read model skips them (it dead-letters them)
    unfoldable: int = 0
    # records a verified seal vouched for, whose signatures were therefore not verified again
    sealed: int = 0

    @property
    def events(self) -> int:
        """Events folded, every topic together."""
        return sum(self.events_by_topic.values())

    @property
    def events_per_second(self) -> float:
        """Folding speed over the whole replay, reading included."""
        return self.events / self.seconds if self.seconds > 0 else 0.0


def replay(log: EventLog, codec: Codec, until: Until | None = None, topics: Iterable[str] | None = None,
           batch: int = 10_000, stall_s: float = 5.0,
           sealing: Sealing | None = None) -> tuple[Models, ReplayReport]:
    """Fold the log from its beginning into fresh read models (up to `until`). With `sealing`, the
    records its seal vouches for skip the Ed25519 verify (eventsvm.projections.seal) and every
    record read goes into the next seal; SealBroken when the log no longer matches the seal, and
    then nothing of the replay is returned."""
    started = time.perf_counter()
    if sealing is not None:
        require_ring(codec)
    names = [str(t) for t in (topics or ALL_TOPICS)]
    existing = set(log.list_topics())
    reader = log.reader([t for t in names if t in existing], BEGINNING)
    models = Models()
    counts = models.events_by_topic
    projection = models.instances
    # instance events come with only the body fields the fold reads (checked whole all the same)
    decode = codec.projected(FOLDED_BODY_FIELDS, UNFOLDED_ENVELOPE_FIELDS)
    vouch = sealing.vouch if sealing is not None else None
    decode_sealed = codec.projected(FOLDED_BODY_FIELDS, UNFOLDED_ENVELOPE_FIELDS, sealed=True) \
        if sealing is not None and sealing.old is not None else decode
    instance_kinds = INSTANCE_EVENT_TYPES
    until_ms = until.ms if until is not None else None
    limits = dict(until.offsets) if until is not None else {}
    stopping = until_ms is not None or bool(limits)
    # An instance's hash is the one of its newest event's stored bytes: hashing only those, once at
    # the end, spares a SHA-256 for every event that a later one supersedes (most of them).
    newest: dict[str, bytes] = {}
    undecodable = unfoldable = read = 0
    # The fold only adds objects, none of them cyclic: the collector would walk the growing models
    # again and again for nothing (it costs a third of the time). It is restored afterwards.
    collecting = gc.isenabled()
    gc.disable()
    drain = Drain(reader, batch, stall_s)
    try:
        for records in drain:
            read += len(records)
            # every record read goes through the seal's digest, those past `until` too
            vouched = vouch(records) if vouch is not None else repeat(False)
            for record, sealed in zip(records, vouched, strict=False):
                if stopping and not _before(record, until_ms, limits):
                    continue
                data = record.value
                try:
                    event = decode_sealed(data) if sealed else decode(data)
                except CodecError:  # the live model skips what it cannot decode; so does a replay
                    undecodable += 1
                    if sealing is not None:
                        sealing.refuse(record)
                    continue
                topic = record.topic
                try:
                    if event.type in instance_kinds:
                        # the same fold as eventsvm.readmodel.fold, minus its dispatch and the hash
                        counts[topic] = counts.get(topic, 0) + 1
                        if fold_instance_event(projection, event) is not None:
                            newest[event.aggregate_id] = data
                    else:
                        fold(models, event, None, topic)  # only instances keep a hash
                except Exception as exc:  # as the live model does: skip it and go on (it wrote the letter)
                    unfoldable += 1
                    logger.warning("replay: skipped %s@%d/%d, which the fold cannot apply: %s: %s",
                                   topic, record.partition, record.offset, type(exc).__name__, exc)
        if sealing is not None:
            sealing.finish()
    finally:
        if collecting:
            gc.enable()
        reader.close()
    instances = projection.instances
    for instance_id, data in newest.items():
        instances[instance_id].last_digest = event_digest(data)
    report = ReplayReport(dict(sorted(counts.items())), dict(sorted(projection.by_status().items())),
                          undecodable, read, time.perf_counter() - started, until, drain.complete, unfoldable,
                          sealing.vouched_count if sealing is not None else 0)
    return models, report


def _before(record: Record, until_ms: int | None, limits: Mapping[TopicPartition, int]) -> bool:
    """Whether `record` is within the moment a replay stops at."""
    if until_ms is not None and record.timestamp_ms > until_ms:
        return False
    return not limits or record.offset < limits.get((record.topic, record.partition), 1 << 62)


def _plain(value: Any) -> Any:
    """Comparable plain data: objects without __eq__ (IdentityState) become their attributes."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items() if not callable(v)}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "__dict__") and type(value).__eq__ is object.__eq__:
        return {k: _plain(v) for k, v in vars(value).items() if not callable(v)}
    return value


def model_differences(a: Models, b: Models) -> list[str]:
    """Every field in which two sets of read models differ, instance by instance; [] when equal."""
    out: list[str] = []
    ids = a.instances.instances.keys() | b.instances.instances.keys()
    for instance_id in sorted(ids):
        x, y = a.instances.get(instance_id), b.instances.get(instance_id)
        if x is None or y is None:
            out.append(f"instance {instance_id}: only in {'the second' if x is None else 'the first'}")
            continue
        for name in x.__dataclass_fields__:
            mine, theirs = getattr(x, name), getattr(y, name)
            if name == "timeline":
                # the timeline is kept in arrival order, which differs between a live tail and a
                # replay that reads topic after topic; it is the same timeline when the same events
                mine, theirs = sorted(x.actions, key=repr), sorted(y.actions, key=repr)
            if mine != theirs:
                out.append(f"instance {instance_id}.{name}: {getattr(x, name)!r} != {getattr(y, name)!r}")
    for name in ("catalog", "identity", "hosts", "dead_letters", "events_by_topic"):
        if _plain(getattr(a, name)) != _plain(getattr(b, name)):
            out.append(f"{name} differs")
    if a.instances.events_folded != b.instances.events_folded:
        out.append(f"instance events folded: {a.instances.events_folded} != {b.instances.events_folded}")
    return out


def instance_record(inst: Instance) -> dict[str, Any]:
    """An instance as `eventsvm replay --json` prints it."""
    return {
        "id": inst.id, "name": inst.name, "status": inst.status, "vm_state": inst.vm_state,
        "task_state": inst.task_state, "power_state": inst.power_state, "host": inst.host,
        "addresses": [{"network_id": p.get("network_id"), "ip_address": p.get("ip_address"),
                       "mac_address": p.get("mac_address")} for p in inst.ports],
        "project_id": inst.project_id, "user_id": inst.user_id, "flavor_id": inst.flavor_ref,
        "image_id": inst.image_id, "attempt": inst.attempt,
        "fault": inst.fault, "created_at": iso_ms(inst.created_at) if inst.created_at else None,
        "updated_at": iso_ms(inst.updated_at) if inst.updated_at else None,
        "launched_at": iso_ms(inst.launched_at) if inst.launched_at else None,
        "terminated_at": iso_ms(inst.terminated_at) if inst.terminated_at else None,
        "last_sequence": inst.last_sequence,
    }


def replay_document(models: Models, report: ReplayReport) -> dict[str, Any]:
    """The whole rebuilt state for machines: the report plus every instance and host."""
    return {
        "until": report.until.describe() if report.until else "the end of the log",
        "events_by_topic": report.events_by_topic,
        "instances_by_status": report.instances_by_status,
        "undecodable": report.undecodable,
        "unfoldable": report.unfoldable,
        "seconds": round(report.seconds, 3),
        "events_per_second": round(report.events_per_second),
        "instances": [instance_record(inst) for _, inst in sorted(models.instances.instances.items())],
        "hosts": sorted(models.hosts.values(), key=lambda h: h["name"]),
        "dead_letters": len(models.dead_letters),
    }
