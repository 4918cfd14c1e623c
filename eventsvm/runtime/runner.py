"""The one runner every service shares: I/O, exactly-once steps, dead letters, shutdown.

A step is read-process-write: poll a batch of input records, decide on each, then append all
outputs and commit the input offsets in one atomic `commit_step`. If the process dies before the
commit, nothing of the step is visible and the batch is redelivered to whoever owns it next.

State is rebuilt from the log at start and after every rebalance: the service's state topics are
read from the beginning (every partition, not only the ones this member owns), so a process that
takes over a partition sees every decision the previous owner committed before it decides.
With a SnapshotStore the rebuild starts from the newest trusted snapshot instead, and records it
covers are stepped over undecoded (eventsvm/snapshot.py).

A log that cannot be reached (a broker down, a locked or full SQLite file) is a pause, never the
end of the thread: `run` drops its member and reader, waits with a growing, jittered backoff and
starts again, which rebuilds the state and rejoins the group (docs/decisions.md). A member that can
never commit again (MemberDead: fenced by a newer incarnation of its name, or failed for good) is
replaced the same way; one whose partitions merely moved (Fenced) is rewound and polled again.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from eventsvm.events.codec import Codec, CodecError, Forged
from eventsvm.events.model import Event, EventType, Topic, event_hash, new_event
from eventsvm.log.port import (
    BEGINNING,
    EventLog,
    Fenced,
    GroupMember,
    LogError,
    MemberDead,
    MemberNameHold,
    MemberNameTaken,
    OutRecord,
    Reader,
    Record,
    TopicPartition,
)
from eventsvm.runtime import heap
from eventsvm.runtime.fold_letters import STATE_ONLY_TOPICS, FoldLetters
from eventsvm.runtime.service import Rejected, Service, StepContext, Transient
from eventsvm.runtime.snapshot import Snapshot, SnapshotStore, now_ms, state_version

log = logging.getLogger(__name__)

S = TypeVar("S")

MAX_COMMIT_RETRIES = 5
# pauses before a step abandoned for a Transient error is tried again
TRANSIENT_BACKOFF_S = (0.5, 1.0, 2.0, 5.0)
# pauses while the log cannot be reached: doubling from the first to the cap, each jittered so
# that a dozen runners do not all knock on a returning broker in the same instant
OUTAGE_FIRST_PAUSE_S = 0.5
OUTAGE_MAX_PAUSE_S = 10.0
# a changed state settles (forgets what is past its retention) at most this often while it runs
SETTLE_EVERY_S = 1.0
# How long one step waits, after partitions came, for the state topics' transactions to end
# before it puts its inputs back and polls the group again (a longer wait inside one step would
# outlast the member's max.poll.interval while a dead writer's transaction times out).
TAKEOVER_WAIT_S = 0.5


class SettleClock:
    """Whether a folded state is due to settle (forget what is past its retention): it changed
    since it last settled, and that was `every_s` ago. Settling an unchanged state changes
    nothing, and settling's precondition (at the end of the log) costs a Kafka reader a
    ListOffsets round trip, which an idle service, or one settling after every busy step, paid
    for nothing. A service's runner and the API's read model share the rule."""

    def __init__(self) -> None:
        self._changed = True
        self._settled_at = 0.0

    def changed(self) -> None:
        """Records were folded, or a step changed the state."""
        self._changed = True

    def due(self, every_s: float) -> bool:
        """Whether to settle now (the interval is read at each call: tests shorten it)."""
        return self._changed and time.monotonic() - self._settled_at >= every_s

    def settled(self) -> None:
        """The state has just settled."""
        self._changed = False
        self._settled_at = time.monotonic()


def outage_pause(failures: int) -> float:
    """How long to wait after `failures` consecutive failures to reach the log (1 or more)."""
    pause = min(OUTAGE_FIRST_PAUSE_S * 2 ** max(failures - 1, 0), OUTAGE_MAX_PAUSE_S)
    return pause * random.uniform(0.5, 1.0)


@dataclass(slots=True)
class StepReport:
    """What one step did, for metrics and tests."""

    service: str
    inputs: list[Event] = field(default_factory=list)
    outputs: list[Event] = field(default_factory=list)
    dead_letters: list[Event] = field(default_factory=list)
    seconds: float = 0.0


StepObserver = Callable[[StepReport], None]


class ServiceRunner(Generic[S]):
    """Runs one service against one log as one member of the service's consumer group."""

    def __init__(
        self,
        log_: EventLog,
        service: Service[S],
        codec: Codec,
        *,
        member_name: str,
        group: str | None = None,
        partitions: Sequence[tuple[str, int]] | None = None,
        deps: object = None,
        observer: StepObserver | None = None,
        max_batch: int = 500,
        poll_timeout: float = 0.2,
        snapshots: SnapshotStore | None = None,
        snapshot_every: int = 10_000,
        snapshot_seconds: float = 300.0,
    ) -> None:
        self.log = log_
        self.service = service
        self.codec = codec
        self.group = group or f"eventsvm.{service.name}"
        self.member_name = member_name
        self.partitions = list(partitions) if partitions is not None else None
        self.deps = deps
        self.observer = observer
        self.max_batch = max_batch
        self.poll_timeout = poll_timeout
        self.state: S = service.initial_state()
        self._pending: set[str] = set()
        self._reader: Reader | None = None
        self._member: GroupMember | None = None
        # the member name, held while this runner lives (its members come and go under it)
        self._name_hold: MemberNameHold | None = None
        self._reassigned = False
        # after partitions came: where the state topics' writes ended then (see `_took_over`)
        self._takeover_target: dict[TopicPartition, int] | None = None
        self._takeover_waits = 0
        self._partition_counts: dict[str, int] = {}
        self._transient_failures = 0
        self._stale = False
        self.fold_letters = FoldLetters(self.group, codec, [str(t) for t in service.replay_tolerant])
        self._folded_topics = {str(t) for t in service.state_topics}
        # consecutive failures to reach the log; while it is above 0 the runner is paused
        self.outages = 0
        # snapshots: where the state reader is, what a loaded snapshot already covers, and how
        # much was folded since the last one was written
        self.snapshots = snapshots
        self.snapshot_every = snapshot_every
        self.snapshot_seconds = snapshot_seconds
        self.positions: dict[tuple[str, int], int] = {}
        self._covered: dict[tuple[str, int], int] = {}
        self._folded = 0
        self._unsaved = 0
        self._settle = SettleClock()
        self._saved_at = time.monotonic()

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        """Hold the member name, create the topics, rebuild the state from the log, and join the
        group. MemberNameTaken when another live process runs under the same member name."""
        if self._name_hold is None:
            self._name_hold = self.log.hold_member_name(self.group, self.member_name)
        topics = {*self.service.inputs, *self.service.state_topics, *self.service.outputs, Topic.DEAD_LETTER}
        self.log.create_topics(sorted(topics))
        self.rebuild()
        self._member = self.log.member(
            self.group,
            [str(t) for t in self.service.inputs],
            member_name=self.member_name,
            partitions=self.partitions,
            on_assign=self._on_assign,
        )

    def rebuild(self) -> None:
        """Fold the state topics from the beginning into a fresh state (or from a snapshot)."""
        self.state = self.service.initial_state()
        self._pending.clear()
        self.positions, self._covered, self._folded, self._unsaved = {}, {}, 0, 0
        snapshot = self.snapshots.load(self.service, self.log) if self.snapshots is not None else None
        if snapshot is not None:
            self.state, self._pending, self._folded = snapshot.state, set(snapshot.pending), snapshot.events
            self.positions, self._covered = dict(snapshot.positions), dict(snapshot.positions)
        if self._reader is not None:
            self._reader.close()
        self._reader = self.log.reader([str(t) for t in self.service.state_topics], BEGINNING)
        self.catch_up(to_end=True)
        self._covered = {}
        self.save_snapshot(when_due=True)

    def save_snapshot(self, when_due: bool = False) -> bool:
        """Write the state and its positions (with `when_due`, only after enough new events or
        time). Call only between steps: every output the state holds is then committed."""
        if self.snapshots is None or (when_due and not self._snapshot_due()):
            return False
        self.snapshots.save(Snapshot(self.service.name, state_version(self.service),
                                     self.snapshots.log_identity, dict(self.positions), self.state,
                                     set(self._pending), self._folded, now_ms()))
        self._unsaved, self._saved_at = 0, time.monotonic()
        return True

    def _snapshot_due(self) -> bool:
        if self._unsaved >= self.snapshot_every:
            return True
        return self._unsaved > 0 and time.monotonic() - self._saved_at >= self.snapshot_seconds

    def catch_up(self, to_end: bool) -> int:
        """Fold what has arrived on the state topics; with `to_end`, until the end as of now."""
        if self._reader is None or not self.service.state_topics:
            return 0
        folded = 0
        while True:
            records = self._reader.poll(5000, timeout=0.05 if to_end else 0.0)
            for record in records:
                folded += self._fold_record(record)
            if records:
                self._settle.changed()
            if not records and (not to_end or self._reader.at_end()):
                self.fold_letters.flush(self.log)
                due = to_end or self._settle.due(SETTLE_EVERY_S)
                if self.service.settle is not None and due and self._reader.at_end():
                    self.state = self.service.settle(self.state)
                    self._settle.settled()
                return folded

    def _fold_record(self, record: Record) -> int:
        where = (record.topic, record.partition)
        self.positions[where] = record.offset + 1
        if self._covered and record.offset < self._covered.get(where, 0):
            return 0  # in the snapshot already: not even decoded
        event = self.fold_letters.decoded(record)
        if event is None:
            return 0
        if event.event_id in self._pending:
            self._pending.discard(event.event_id)
            return 0
        try:
            self.state = self.service.evolve(self.state, event)
        except Exception as exc:  # one event the fold cannot apply must not stop every rebuild
            self.fold_letters.unfoldable(record, exc)
            return 0
        self._folded += 1
        self._unsaved += 1
        return 1

    def _on_assign(self, _partitions: set[tuple[str, int]]) -> None:
        self._reassigned = True
        self._takeover_target = None  # asked again: what the last owner wrote ends later still

    def _took_over(self) -> bool:
        """After partitions came (from another member, or a process that died): whether the state
        holds everything their last owner committed. Its last commit may be acknowledged, and its
        input offsets readable as committed, while the commit's markers have yet to reach the
        state topics; a read to their committed end (last stable offset) stops in front of those
        records then, and deciding on such a state handed out the same address twice. So the
        state reader goes past every record written by the time the partitions came, which it
        can only do once each of those transactions has ended, and folds what was committed."""
        assert self._reader is not None
        if self._takeover_target is None:
            self._takeover_target = self.log.written_ends([str(t) for t in self.service.state_topics])
        deadline = time.monotonic() + TAKEOVER_WAIT_S
        while True:
            self.catch_up(to_end=True)
            positions = self._reader.positions()
            behind = {tp: end for tp, end in self._takeover_target.items() if positions.get(tp, 0) < end}
            if not behind:
                self._reassigned, self._takeover_target, self._takeover_waits = False, None, 0
                return True
            if time.monotonic() >= deadline:
                self._takeover_waits += 1
                # Each wait is one step's TAKEOVER_WAIT_S. Seconds of it are a writer that died in
                # mid-transaction, until the broker aborts it (its transaction timeout) or its
                # restart fences it: worth an operator's eye only when it lasts.
                level = logging.INFO if self._takeover_waits < 20 else logging.WARNING
                if self._takeover_waits in (1, 20) or self._takeover_waits % 100 == 0:
                    log.log(level, "%s: partitions came; waiting %d steps for the transactions "
                            "written before to end (%s)", self.service.name, self._takeover_waits,
                            ", ".join(f"{t}[{p}] {positions.get((t, p), 0)} < {end}"
                                      for (t, p), end in sorted(behind.items())))
                return False

    def close(self) -> None:
        """Leave the group, release the readers and give the member name up."""
        self._leave()
        hold, self._name_hold = self._name_hold, None
        if hold is not None:
            hold.release()

    def _leave(self) -> None:
        member, reader = self._member, self._reader
        self._member = self._reader = None
        if member is not None:
            member.close()
        if reader is not None:
            reader.close()

    @property
    def paused(self) -> bool:
        """True while the runner waits for the log to come back (or to replace a dead member)."""
        return self.outages > 0

    def run(self, stop: threading.Event) -> None:
        """Step until `stop` is set; the step in hand is finished and committed first. While the
        log cannot be reached, or once its member can never commit again, the runner waits and
        starts again (a new member) instead of returning."""
        try:
            while not stop.is_set():
                try:
                    if self._member is None:
                        self.start()
                    self.step()
                    self.outages = 0
                    heap.settle()  # between steps: the state is whole
                except MemberNameTaken:
                    raise  # not an outage: another process runs as this member, and keeps it
                except LogError as exc:
                    # A dead member counts as an outage too: a process that held no member name (an
                    # older version) may fence this one in turn, and the growing pause spaces that.
                    self.outages += 1
                    pause = outage_pause(self.outages)
                    if isinstance(exc, MemberDead):
                        log.warning("%s: member %s can never commit again (%s); replacing it in %.1f s",
                                    self.service.name, self.member_name, exc, pause)
                    else:
                        log.warning("%s: the log is unavailable (%s); starting again in %.1f s",
                                    self.service.name, exc, pause)
                    self._drop()
                    stop.wait(pause)
        finally:
            self.close()

    def _drop(self) -> None:
        # What the member held is uncommitted or gone with the broker; `start` rebuilds the state
        # and joins afresh. Closing may fail too while the log is down: nothing is left to save.
        try:
            self._leave()  # the member name stays held: this process comes back as that member
        except Exception as exc:
            log.info("%s: closing after the outage failed: %s", self.service.name, exc)

    # -- one step --------------------------------------------------------------------------
    def step(self) -> int:
        """Process one batch of input; returns how many input records it consumed."""
        assert self._member is not None, "start() first"
        records = self._member.poll(self.max_batch, self.poll_timeout)
        if self._reassigned and not self._took_over():
            if records:
                self._member.rewind()  # decided once the state is whole
            return 0
        if not records:
            self.catch_up(to_end=False)
            return 0
        # Whatever was committed before these inputs (a deletion that freed a host, say) must be
        # folded before deciding on them.
        self.catch_up(to_end=False)
        started = time.perf_counter()
        report = StepReport(self.service.name)
        out_records: list[OutRecord] = []
        try:
            for record in records:
                out_records.extend(self._handle(record, report))
        except Transient as exc:
            # neither a dead letter (the input is fine) nor a crash: decide it again later
            pause = TRANSIENT_BACKOFF_S[min(self._transient_failures, len(TRANSIENT_BACKOFF_S) - 1)]
            self._transient_failures += 1
            log.warning("%s: %s; retrying the step in %g s", self.service.name, exc, pause)
            self._abandon()
            time.sleep(pause)
            return 0
        self._transient_failures = 0
        self._commit(out_records, records)
        self._settle.changed()
        if self._stale:
            self._stale = False
            self.rebuild()
        self.save_snapshot(when_due=True)
        report.seconds = time.perf_counter() - started
        if self.observer is not None:
            self.observer(report)
        return len(records)

    def _commit(self, out_records: list[OutRecord], records: list[Record]) -> None:
        assert self._member is not None
        for attempt in range(MAX_COMMIT_RETRIES):
            try:
                self._member.commit_step(out_records, records)
                return
            except MemberDead:
                raise  # rewinding it would only meet the same refusal: `run` replaces it
            except Fenced:
                log.info("%s: partitions moved before commit; rebuilding state", self.service.name)
                self._abandon()
                return
            except LogError as exc:
                log.warning("%s: commit failed (%s), retry %d", self.service.name, exc, attempt + 1)
                time.sleep(min(0.2 * 2**attempt, 2.0))
        self._abandon()
        raise LogError(f"{self.service.name}: could not commit after {MAX_COMMIT_RETRIES} attempts")

    def _abandon(self) -> None:
        # The state holds decisions that were never committed: forget them, read the log again.
        assert self._member is not None
        self._member.rewind()
        self.rebuild()

    def _partitions_of(self, topic: str) -> int:
        count = self._partition_counts.get(topic)
        if count is None:
            count = self._partition_counts[topic] = self.log.partitions(topic)
        return count

    def _handle(self, record: Record, report: StepReport) -> list[OutRecord]:
        try:
            event = self.codec.decode(record.value)
        except Forged as exc:  # not signed by a writer that may write it: never decided on
            return self._undecodable(record, f"forged: {exc}", "Forged", report)
        except CodecError as exc:
            return self._undecodable(record, f"undecodable payload: {exc}", "CodecError", report)
        report.inputs.append(event)
        ctx = StepContext(record.topic, record.partition, self._partitions_of(record.topic), self.deps)
        try:
            outputs = self.service.decide(self.state, event, ctx)
        except Rejected as exc:
            return [self._dead_letter(record, str(exc), "Rejected", report, event)]
        except Transient:
            raise
        except Exception as exc:  # a bug must not become a crash loop: park the record, go on
            log.exception("%s: decide failed on %s@%s", self.service.name, record.topic, record.offset)
            return [
                self._dead_letter(record, f"{type(exc).__name__}: {exc}", type(exc).__name__, report, event)
            ]
        cause_hash = event_hash(record.value)
        produced: list[OutRecord] = []
        try:
            for output in outputs:
                produced.append(self._encode(output.event, output.route, event, cause_hash))
        except Exception as exc:  # its own answer cannot be folded: deciding it again would fail again
            log.exception("%s: folding the outputs for %s@%s failed", self.service.name, record.topic,
                          record.offset)
            self._stale = True  # the state may hold part of them: rebuilt once this step is committed
            return [self._dead_letter(record, f"its outputs cannot be folded: {type(exc).__name__}: {exc}",
                                      "FoldError", report, event)]
        report.outputs.extend(output.event for output in outputs)
        return produced

    def _encode(self, out: Event, route: int | None, cause: Event, cause_hash: str) -> OutRecord:
        if (
            out.prev_hash is None
            and out.causation_id == cause.event_id
            and out.aggregate_id == cause.aggregate_id
        ):
            out.prev_hash = cause_hash
        if out.topic not in self.service.state_topics:
            raise ValueError(f"decide emitted {out.type} onto {out.topic}, not one of its state topics")
        data = self.codec.encode(out)
        topic = str(out.topic)
        partition = None if route is None else route % self._partitions_of(topic)
        self.state = self.service.evolve(self.state, out)
        # it will come back through the state reader; fold it only once
        self._pending.add(out.event_id)
        return OutRecord(topic, out.aggregate_id.encode(), data, partition)

    def _undecodable(self, record: Record, reason: str, error_type: str,
                     report: StepReport) -> list[OutRecord]:
        if record.topic in STATE_ONLY_TOPICS and record.topic in self._folded_topics:
            # a topic only watched here (the spawner's images of the catalog): its folds letter such a
            # record once, under an id every reader shares, where each watcher would add its own
            return []
        return [self._dead_letter(record, reason, error_type, report)]

    def _dead_letter(
        self, record: Record, reason: str, error_type: str, report: StepReport, event: Event | None = None
    ) -> OutRecord:
        aggregate = (
            event.aggregate_id if event is not None else (record.key or b"").decode("utf-8", "replace")
        )
        letter = new_event(
            EventType.DEAD_LETTER_RECORDED,
            aggregate or f"{record.topic}/{record.partition}/{record.offset}",
            {
                "source_topic": record.topic,
                "source_partition": record.partition,
                "source_offset": record.offset,
                "group": self.group,
                "reason": reason[:2000],
                "error_type": error_type,
                "key": record.key,
                "payload": record.value,
            },
            request_id=event.request_id if event is not None else None,
        )
        log.warning(
            "%s: dead-lettered %s@%d/%d: %s",
            self.service.name,
            record.topic,
            record.partition,
            record.offset,
            reason[:200],
        )
        report.dead_letters.append(letter)
        return OutRecord(str(Topic.DEAD_LETTER), letter.aggregate_id.encode(), self.codec.encode(letter))
