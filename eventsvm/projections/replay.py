"""Replay: every read model rebuilt from the log from scratch, as it is now or as it was at a moment.

The events go through the very fold the live read model uses (eventsvm.readmodel), so a replay
cannot drift from what the API serves. Speed comes from the loop around it: the codec's C reader,
building only the body fields the instance fold reads (the projection decoder, FOLDED_BODY_FIELDS),
instance events folded straight into the projection, one hash per instance (of its newest event)
rather than per event, and no cyclic garbage collection while the models grow (bench/replay.py
measures it). A large log is folded by two processes (ReplayHelper), each reading half of the
instance partitions, one on each core.
"""

from __future__ import annotations

import gc
import logging
import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import repeat
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any, Literal

from eventsvm.events.codec import Codec, CodecError
from eventsvm.events.model import INSTANCE_TOPICS, event_digest
from eventsvm.log.port import BEGINNING, EventLog, Reader, Record, TopicPartition
from eventsvm.projections.readmodel import ALL_TOPICS, Models, fold
from eventsvm.projections.seal import PartitionSeal, Seal, SealBroken, Sealing, require_ring
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
    # records a second process read and folded (ReplayHelper), of `records_read`
    helped: int = 0

    @property
    def events(self) -> int:
        """Events folded, every topic together."""
        return sum(self.events_by_topic.values())

    @property
    def events_per_second(self) -> float:
        """Folding speed over the whole replay, reading included."""
        return self.events / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True)
class ReplayHelper:
    """How a second process opens the same log and key ring, to fold half of the instance partitions
    on the machine's other core while this one folds the rest. Both must pickle (they cross to a
    spawned process): module functions, or functools.partial of them and plain data."""

    open_log: Callable[[], EventLog]
    codec: Callable[[], Codec]
    # Below this many instance records in its half, a helper costs more than it saves: a spawned
    # interpreter takes ~1 s to import the codec and the engines.
    min_records: int = 200_000
    # "fork": forked when this process runs one thread (an SQLite log's replay: it starts in
    # milliseconds, where a spawned one imports for half a second), else spawned (a Kafka client's
    # threads, which are not Python's, would not survive a fork); "spawn": spawned always
    start_method: Literal["fork", "spawn"] = "fork"


@dataclass
class _Tally:
    """What one reading folded besides the models: the newest record of each instance it made
    newest, and the records it read, skipped or could not apply."""

    newest: dict[str, bytes] = field(default_factory=dict)
    undecodable: int = 0
    unfoldable: int = 0
    read: int = 0
    complete: bool = True


@dataclass
class _Share:
    """What the helper folded of one partition number (every instance topic's partition of that
    number), sent back as soon as it is folded: its instances (no other partition number holds one
    of them), the events of other models it met there (raw, folded by the first process), and its
    seal of the partitions it read."""

    partitions: list[TopicPartition]
    instances: dict[str, Instance]
    events_folded: int
    log_time_ms: int
    events_by_topic: dict[str, int]
    foreign: list[Record]
    tally: _Tally
    sealed: dict[TopicPartition, PartitionSeal]
    checked: set[TopicPartition]


def replay(log: EventLog, codec: Codec, until: Until | None = None, topics: Iterable[str] | None = None,
           batch: int = 10_000, stall_s: float = 5.0, sealing: Sealing | None = None,
           helper: ReplayHelper | None = None) -> tuple[Models, ReplayReport]:
    """Fold the log from its beginning into fresh read models (up to `until`). With `sealing`, the
    records its seal vouches for skip the Ed25519 verify (eventsvm.projections.seal) and every
    record read goes into the next seal; SealBroken when the log no longer matches the seal, and
    then nothing of the replay is returned. With `helper`, a log large enough is folded by two
    processes, each reading half of the instance partitions: the same models and report, on both
    of the machine's cores."""
    started = time.perf_counter()
    if sealing is not None:
        require_ring(codec)
    names = [str(t) for t in (topics or ALL_TOPICS)]
    existing = set(log.list_topics())
    names = [t for t in names if t in existing]
    models = Models()
    share = _helper_share(log, names, helper)
    helping = None if helper is None or not share else _Helping(helper, share, until, batch, stall_s, sealing)
    # The fold only adds objects, none of them cyclic: the collector would walk the growing models
    # again and again for nothing (it costs a third of the time). It is restored afterwards.
    collecting = gc.isenabled()
    gc.disable()
    helped_records = 0
    try:
        helpers = set(share)
        mine = None if helping is None else [tp for tp in _partitions(log, names) if tp not in helpers]
        tally = _fold_log(log, names, mine, models, codec, until, batch, stall_s, sealing, None)
        _hash_newest(models, tally)  # while the helper still folds
        if helping is not None:
            shares = helping.result()
            if not _disjoint(models, shares):
                # an instance's events in partitions of different numbers: not where partition_for
                # puts them (another writer's partitioner); read the helper's half here instead
                logger.warning("replay: the helper's partitions hold instances of this process's too; "
                               "reading them here")
                shares = []
            for helped in shares:
                _merge(models, tally, helped, sealing, codec)
                helped_records += helped.tally.read
            covered = {tp for helped in shares for tp in helped.partitions}
            rest = [tp for tp in share if tp not in covered]
            if rest:
                _add(tally, _fold_log(log, names, rest, models, codec, until, batch, stall_s, sealing, None))
                _hash_newest(models, tally)
    finally:
        if helping is not None:
            helping.close()
        if collecting:
            gc.enable()
    counts = models.events_by_topic
    report = ReplayReport(dict(sorted(counts.items())), dict(sorted(models.instances.by_status().items())),
                          tally.undecodable, tally.read, time.perf_counter() - started, until, tally.complete,
                          tally.unfoldable, sealing.vouched_count if sealing is not None else 0,
                          helped_records)
    return models, report


def _fold_log(log: EventLog, names: list[str], partitions: list[TopicPartition] | None, models: Models,
              codec: Codec, until: Until | None, batch: int, stall_s: float, sealing: Sealing | None,
              foreign: list[Record] | None) -> _Tally:
    """Read `names` (or just `partitions`) from the beginning and fold them; the seal checked
    and its next one built on the way (SealBroken at the first partition that differs)."""
    reader = log.reader(names, BEGINNING, partitions=partitions)
    try:
        drain = Drain(reader, batch, stall_s)
        tally = _fold(drain, models, codec, until, sealing, foreign)
        tally.complete = drain.complete
        if sealing is not None:
            sealing.finish()
        return tally
    finally:
        reader.close()


def _fold(batches: Iterable[list[Record]], models: Models, codec: Codec, until: Until | None,
          sealing: Sealing | None, foreign: list[Record] | None) -> _Tally:
    """The replay's loop. `foreign`: where to put the records of events other than an instance's,
    unfolded (the helper's, which holds only instances); None folds them into `models`."""
    tally = _Tally()
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
    newest = tally.newest
    undecodable = unfoldable = read = 0
    for records in batches:
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
                elif foreign is not None:
                    foreign.append(record)
                else:
                    fold(models, event, None, topic)  # only instances keep a hash
            except Exception as exc:  # as the live model does: skip it and go on (it wrote the letter)
                unfoldable += 1
                logger.warning("replay: skipped %s@%d/%d, which the fold cannot apply: %s: %s",
                               topic, record.partition, record.offset, type(exc).__name__, exc)
    tally.undecodable, tally.unfoldable, tally.read = undecodable, unfoldable, read
    return tally


def _hash_newest(models: Models, tally: _Tally) -> None:
    """Each instance's hash, of the newest record the tally saw of it (then forgotten)."""
    instances = models.instances.instances
    for instance_id, data in tally.newest.items():
        instances[instance_id].last_digest = event_digest(data)
    tally.newest = {}


def _add(tally: _Tally, more: _Tally) -> None:
    tally.newest.update(more.newest)
    tally.undecodable += more.undecodable
    tally.unfoldable += more.unfoldable
    tally.read += more.read
    tally.complete = tally.complete and more.complete


def _merge(models: Models, tally: _Tally, helped: _Share, sealing: Sealing | None, codec: Codec) -> None:
    """The helper's half into this process's models, seal and tally."""
    projection = models.instances
    projection.instances.update(helped.instances)
    projection.events_folded += helped.events_folded
    projection.clock.log_time_ms = max(projection.clock.log_time_ms, helped.log_time_ms)
    counts = models.events_by_topic
    for topic, count in helped.events_by_topic.items():
        counts[topic] = counts.get(topic, 0) + count
    _add(tally, helped.tally)
    if sealing is not None:
        sealing.adopt(helped.sealed, helped.checked)
    if helped.foreign:
        # already counted as read and put through the seal's digest by the helper: folded here, each
        # signature verified (there are few: other models' events on an instance topic)
        more = _fold([helped.foreign], models, codec, None, None, None)
        more.read = 0
        _add(tally, more)


def _disjoint(models: Models, shares: list[_Share]) -> bool:
    """Whether no instance is in two of: the models, the shares."""
    seen = set(models.instances.instances)
    for helped in shares:
        if not helped.instances.keys().isdisjoint(seen):
            return False
        seen.update(helped.instances)
    return True


def _partitions(log: EventLog, names: Iterable[str]) -> list[TopicPartition]:
    return [(topic, p) for topic in names for p in range(log.partitions(topic))]


def _helper_share(log: EventLog, names: list[str], helper: ReplayHelper | None) -> list[TopicPartition]:
    """The partitions a helper reads: the upper half of the instance topics' partition numbers (an
    instance's events have the same number in every topic: partition_for), when those topics have
    one partition count and the half holds enough records to be worth a second process."""
    if helper is None:
        return []
    instance_topics = [t for t in names if t in _INSTANCE_TOPIC_NAMES]
    counts = {log.partitions(t) for t in instance_topics}
    if len(counts) != 1 or (count := counts.pop()) < 2:
        return []
    share = [(t, p) for t in instance_topics for p in range(count // 2, count)]
    ends = log.ends(instance_topics)
    if sum(ends.get(tp, 0) for tp in share) < helper.min_records:
        return []
    return share


_INSTANCE_TOPIC_NAMES = frozenset(str(t) for t in INSTANCE_TOPICS)


class _Helping:
    """The helper process: forked or spawned as ReplayHelper.start_method and this process's threads
    allow, it folds its share one partition number at a time and sends each as it is done; a thread here
    receives them while this process folds its own half, so neither waits for the other until the
    last. When the helper fails to start, dies or fails, `result` has what arrived before, and the
    caller reads the rest itself."""

    def __init__(self, helper: ReplayHelper, share: list[TopicPartition], until: Until | None, batch: int,
                 stall_s: float, sealing: Sealing | None) -> None:
        # a fork copies only the thread that forks: with any other running, its locks could be held
        forking = helper.start_method == "fork" and _one_thread()
        context = multiprocessing.get_context("fork") if forking else multiprocessing.get_context("spawn")
        self._receiving, sending = context.Pipe(duplex=False)
        self._shares: list[_Share] = []
        self._broken: SealBroken | None = None
        self._thread: threading.Thread | None = None
        old = sealing.old if sealing is not None else None
        self._process: BaseProcess | None = context.Process(
            target=_help, name="eventsvm-replay-helper", daemon=True,
            args=(sending, helper, share, until, batch, stall_s, sealing is not None, old))
        try:
            self._process.start()
        except Exception as exc:  # no process to spare (or a helper that cannot cross): read here
            logger.warning("replay: no helper process (%s: %s); reading every partition here",
                           type(exc).__name__, exc)
            self._process = None
        sending.close()  # the helper's end: when it exits, a receive here ends (EOFError), never hangs
        if self._process is not None:
            self._thread = threading.Thread(target=self._receive, name="replay-helper-receiver", daemon=True)
            self._thread.start()

    def _receive(self) -> None:
        while True:
            try:
                answer = self._receiving.recv()
            except (EOFError, OSError) as exc:
                logger.warning("replay: the helper process ended before its last share (%s); the rest "
                               "is read here", exc)
                return
            if answer is None:  # its last share was sent
                return
            if isinstance(answer, _Share):
                self._shares.append(answer)
                continue
            if isinstance(answer, SealBroken):
                self._broken = answer
            else:
                logger.warning("replay: the helper failed (%s); the rest is read here", answer)
            return

    def result(self) -> list[_Share]:
        """Every share the helper sent; SealBroken as the helper met it."""
        if self._thread is not None:
            self._thread.join()
        if self._broken is not None:
            raise self._broken
        return self._shares

    def close(self) -> None:
        """The process gone (killed if it still runs: the replay that wanted it is over)."""
        process = self._process
        if process is not None:
            process.join(1.0)
            if process.is_alive():
                process.kill()
                process.join()
        # the helper gone, its end of the pipe is closed: the receiver has met the end by now
        if self._thread is not None:
            self._thread.join()
        self._receiving.close()


def _one_thread() -> bool:
    """Whether this process runs a single thread, native ones (librdkafka's) counted: Linux's
    task list; elsewhere, not known, so no."""
    try:
        return len(os.listdir("/proc/self/task")) == 1
    except OSError:
        return False


def _help(sending: Connection, helper: ReplayHelper, share: list[TopicPartition], until: Until | None,
          batch: int, stall_s: float, sealed: bool, old: Seal | None) -> None:
    """The helper process: fold `share` one partition number at a time, sending each (or what
    stopped it) back; None once all are sent."""
    answer: object = None
    gc.disable()  # as in replay: the fold makes no cycles
    try:
        log = helper.open_log()
        try:
            codec = helper.codec()
            sealing = Sealing(old) if sealed else None
            for number in sorted({p for _, p in share}):
                sending.send(_fold_share(log, [tp for tp in share if tp[1] == number], codec, until, batch,
                                         stall_s, sealing))
        finally:
            log.close()
    except SealBroken as exc:
        answer = exc
    except Exception as exc:  # said to the parent, which reads the rest itself
        answer = f"{type(exc).__name__}: {exc}"
    try:
        sending.send(answer)
    finally:
        sending.close()


def _fold_share(log: EventLog, partitions: list[TopicPartition], codec: Codec, until: Until | None,
                batch: int, stall_s: float, sealing: Sealing | None) -> _Share:
    """Fold `partitions` into models of their own, for the first process."""
    models = Models()
    foreign: list[Record] = []
    names = sorted({topic for topic, _ in partitions})
    tally = _fold_log(log, names, partitions, models, codec, until, batch, stall_s, sealing, foreign)
    _hash_newest(models, tally)
    instances = models.instances.instances
    sealed: dict[TopicPartition, PartitionSeal] = {}
    checked: set[TopicPartition] = set()
    if sealing is not None:
        sealed = {tp: sealing.chains[tp].sealed() for tp in partitions if tp in sealing.chains}
        checked = sealing.checked & set(partitions)
    return _Share(partitions, instances, models.instances.events_folded, models.instances.clock.log_time_ms,
                  models.events_by_topic, foreign, tally, sealed, checked)


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
