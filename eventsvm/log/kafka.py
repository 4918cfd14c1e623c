"""The Kafka engine of the EventLog port (DESIGN §3), on confluent-kafka.

Appends and read-process-write steps are Kafka transactions; every consumer reads committed data
only. Nothing runs in the background: callbacks fire inside the caller's poll, flush or commit, as
in confluent-kafka-python's examples/eos-transactions.py; concurrent appends share transactions
(group commit), each written by a calling thread that found none in flight. Topic and group names
carry the configured namespace as a prefix; callers only ever see logical names.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    IsolationLevel,
    KafkaError,
    KafkaException,
    Message,
    Producer,
)
from confluent_kafka import TopicPartition as KafkaPartition
from confluent_kafka.admin import AdminClient, NewTopic, OffsetSpec

from eventsvm.config import LogConfig
from eventsvm.log.port import (
    BEGINNING,
    END,
    EventLog,
    Fenced,
    GroupMember,
    LogError,
    LogUnavailable,
    MemberDead,
    MemberNameHold,
    MemberNameTaken,
    OutRecord,
    Reader,
    RebalanceCallback,
    Record,
    StartAt,
    TopicPartition,
    UnknownTopic,
    partition_for,
)

_LOG = logging.getLogger(__name__)

# A restarted member must fence its old incarnation's open transaction quickly, and the broker
# aborts an abandoned one after this long, unblocking read_committed readers behind it.
_TRANSACTION_TIMEOUT_MS = 15000

# Errors meaning "another member or incarnation owns this now": the step is void, never retried.
_FENCING = {
    KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH,
    KafkaError.ILLEGAL_GENERATION, KafkaError.UNKNOWN_MEMBER_ID, KafkaError.REBALANCE_IN_PROGRESS,
    KafkaError.FENCED_INSTANCE_ID, KafkaError.FENCED_MEMBER_EPOCH, KafkaError.STALE_MEMBER_EPOCH,
}
_UNKNOWN = {KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC, KafkaError._UNKNOWN_PARTITION}

# A leader not (yet) serving a partition; just after a topic is created the broker answering may
# also know an older or newer leader epoch than the partition has (about one contract run in two
# met UNKNOWN_LEADER_EPOCH on a fresh broker). All are retriable.
_NO_LEADER = {KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE,
              KafkaError.UNKNOWN_LEADER_EPOCH, KafkaError.FENCED_LEADER_EPOCH}

# How long past its own timeout send_offsets_to_transaction may take before the member gives up.
_SEND_OFFSETS_GRACE_S = 5.0

# One group transaction carries at most this many records (a single larger batch still goes, alone):
# it bounds how many callers one failure fails and how long the callers queued behind it wait.
_GROUP_RECORDS = 5000

# librdkafka's message.max.bytes: a larger record fails inside produce(), which would abort every
# other caller's batch in the same group transaction, so it is refused before it joins one.
_MAX_RECORD_BYTES = 1_000_000


class _LeaderMoving(LogError):
    """A partition's leader is not (yet) serving it; worth asking again shortly."""


def _take(consumer: Consumer, max_records: int, timeout: float) -> list[Message]:
    """What the consumer holds now, as one batch; if nothing, the first message to arrive within
    `timeout` and whatever came with it."""
    # consume() with a timeout waits for a full batch even when records are already there, so it
    # only ever runs with timeout 0; poll() returns at the first message.
    batch = consumer.consume(num_messages=max_records, timeout=0)
    if batch:
        return batch
    first = consumer.poll(timeout)
    if first is None:
        return []
    return [first, *consumer.consume(num_messages=max_records - 1, timeout=0)] if max_records > 1 else [first]


@dataclass(eq=False)
class _Batch:
    """One caller's records waiting for a group transaction, and what became of them."""

    records: Sequence[OutRecord]
    placed: list[tuple[str, int]]
    taken: bool = False  # into a group transaction, by whichever caller writes it
    offsets: list[tuple[int, int]] | None = None
    error: LogError | None = None

    @property
    def done(self) -> bool:
        """True once the batch committed (offsets) or failed (error)."""
        return self.offsets is not None or self.error is not None


class _Turns:
    """Transactional producers taken in turn, one transaction each.

    After a commit the coordinator spends a few ms writing the commit markers; a transaction that
    the same producer begins meanwhile is refused (CONCURRENT_TRANSACTIONS) and librdkafka retries
    it only after a fixed 20 ms, which measured as most of every step here. The next producer in
    turn has no such wait, and by the time the first is taken again its markers are written.
    Transactions still run one after another, so per-partition order is that of the calls.
    """

    def __init__(self, make: Callable[[str], Producer], transactional_id: str, count: int = 2) -> None:
        self._make = make
        self._ids = [f"{transactional_id}.{i}" for i in range(count)]
        self._producers: list[Producer | None] = [None] * count
        self._turn = 0

    def start_all(self) -> None:
        """Start every producer not running (and so fence their older incarnations), side by side:
        librdkafka's coordinator lookup makes one start take 50-500 ms here, mostly waiting."""
        missing = [i for i, p in enumerate(self._producers) if p is None]
        failures: list[BaseException] = []

        def start(i: int) -> None:
            try:
                self._producers[i] = self._make(self._ids[i])
            except BaseException as exc:  # re-raised on the calling thread below
                failures.append(exc)

        threads = [threading.Thread(target=start, args=(i,), name="eventsvm-txn-start") for i in missing[1:]]
        for thread in threads:
            thread.start()
        if missing:
            start(missing[0])
        for thread in threads:
            thread.join()
        if failures:
            raise failures[0]

    def take(self) -> tuple[int, Producer]:
        """The producer whose turn it is (all are started if one is missing) and its turn number."""
        i = self._turn
        producer = self._producers[i]
        if producer is None:
            self.start_all()
            producer = self._producers[i]
            assert producer is not None
        self._turn = (i + 1) % len(self._ids)
        return i, producer

    def drop(self, turn: int) -> None:
        """Forget a producer that cannot go on; its turn starts a new one."""
        self._producers[turn] = None

    def release(self) -> list[Producer]:
        """Every started producer, forgotten here (for the caller to flush)."""
        started = [p for p in self._producers if p is not None]
        self._producers = [None] * len(self._ids)
        return started


def _log_error(err: KafkaError, what: str) -> LogError:
    """The port's exception for a Kafka error met while doing `what`."""
    if err.code() in _FENCING:
        return Fenced(f"{what}: fenced ({err.str()})")
    if err.code() in _UNKNOWN:
        return UnknownTopic(f"{what}: {err.str()}")
    return LogUnavailable(f"{what} failed: {err.str()}")


class KafkaLog(EventLog):
    """The EventLog on a Kafka cluster; `bootstrap_servers` is "host:port[,host:port]"."""

    def __init__(self, bootstrap_servers: str, config: LogConfig) -> None:
        self._servers = bootstrap_servers
        self._config = self.config = config
        self._prefix = config.namespace
        self.timeout = config.connect_timeout_s
        self.session_timeout_s = config.session_timeout_s
        self._counts: dict[str, int] = {}  # partition counts by physical name; they never shrink
        self._logical_names: dict[str, str] = {}  # physical topic name -> logical, as records are read
        self._open: list[_KafkaReader | _KafkaMember] = []
        # Unique per log object: two processes appending must never fence each other.
        self._appenders = _Turns(self.transactional_producer, f"{self._prefix}eventsvm-append-{uuid.uuid4()}")
        # Group commit: callers queue their batches, and a caller that finds no transaction in
        # flight becomes the writer of everything queued so far (`_writing` is its token). No
        # thread of our own: a lone caller writes at once on its own thread, with no hand-off.
        self._appends = threading.Condition()
        self._queue: deque[_Batch] = deque()
        self._writing = False
        self._closed = False
        self._reports: list[tuple[KafkaError | None, Any]] = []  # of the transaction in flight
        # Per partition, the highest offset this object committed that may not be readable yet.
        self._unseen: dict[TopicPartition, int] = {}
        self._unseen_lock = threading.Lock()
        # per group, a consumer that only reads the group's committed offsets (see `committed`)
        self._offset_readers: dict[str, Consumer] = {}
        self._offset_readers_lock = threading.Lock()
        self._admin = AdminClient(self.client_config())
        try:
            self._admin.list_topics(timeout=self.timeout)
        except KafkaException:
            raise LogUnavailable(
                f"Kafka broker at {bootstrap_servers} did not answer within {self.timeout:g} s") from None

    def client_config(self, **extra: Any) -> dict[str, Any]:
        """Settings shared by every client of this log; librdkafka's logs go to Python logging."""
        # Nagle's algorithm meets the broker's delayed ACK on small requests (transaction control,
        # offset commits) and stalls each round trip; librdkafka leaves it on unless told.
        return {"bootstrap.servers": self._servers, "logger": _LOG, "socket.nagle.disable": True, **extra}

    def physical(self, topic: str) -> str:
        """The broker's name of a logical topic."""
        return self._prefix + topic

    def logical(self, name: str) -> str:
        """The logical name of a broker topic of this namespace."""
        return name[len(self._prefix):]

    # -- topics ----------------------------------------------------------------------------------

    def create_topics(self, topics: Iterable[str], partitions: int | None = None) -> None:
        """Create the missing topics, kept forever (retention.ms=-1), and wait until they are usable."""
        names = list(dict.fromkeys(topics))
        if not names:
            return
        replicas, insync = self.replication()
        settings = {"retention.ms": "-1", "min.insync.replicas": str(insync)}
        wanted = [NewTopic(self.physical(t), num_partitions=partitions or self._config.partitions,
                           replication_factor=replicas, config=settings)
                  for t in names]
        futures = self._admin.create_topics(wanted, operation_timeout=self.timeout,
                                            request_timeout=self.timeout)
        for name, future in futures.items():
            try:
                future.result(timeout=self.timeout)
            except KafkaException as exc:
                err, topic = exc.args[0], self.logical(name)
                if err.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                    continue
                if err.code() == KafkaError.TOPIC_EXCEPTION:
                    raise UnknownTopic(f"{topic!r} is not a legal topic name: {err.str()}") from None
                raise LogUnavailable(f"creating topic {topic!r} failed: {err.str()}") from None
            except FutureTimeout:
                raise LogUnavailable(f"creating topic {self.logical(name)!r} took over {self.timeout:g} s") \
                    from None
        self._await_leaders([self.physical(t) for t in names])

    def replication(self) -> tuple[int, int]:
        """(replication factor, min.insync.replicas) of new topics: the configured ones, else from
        the cluster's size. On three brokers or more, 3 and 2: with acks=all an append is on two
        brokers before it is acknowledged, and one broker lost stops nothing. Fewer brokers cannot
        hold three copies, so 1 and 1 (a second copy on a two-broker cluster would make either
        broker's loss stop every write with min.insync 2, or risk loss with 1)."""
        brokers = len(self._metadata().brokers)
        replicas = self._config.replication_factor or (3 if brokers >= 3 else 1)
        insync = self._config.min_insync_replicas or (2 if replicas >= 3 else 1)
        return replicas, insync

    def _await_leaders(self, names: list[str]) -> None:
        # A new topic shows in metadata a moment after the controller accepted it, and its leader
        # answers a moment after that; producing or listing offsets earlier fails.
        deadline = time.monotonic() + self.timeout
        while True:
            found = self._metadata().topics
            ready = [n for n in names if n in found and found[n].error is None and found[n].partitions]
            if len(ready) == len(names):
                break
            if time.monotonic() > deadline:
                missing = sorted(self.logical(n) for n in set(names) - set(ready))
                raise LogUnavailable(f"topics {missing} were not ready within {self.timeout:g} s")
            time.sleep(0.05)
        self.list_offsets([(self.logical(n), p) for n in names for p in found[n].partitions],
                          OffsetSpec.latest())

    def _metadata(self, topic: str | None = None) -> Any:
        try:
            return self._admin.list_topics(topic=topic, timeout=self.timeout)
        except KafkaException as exc:
            raise LogUnavailable(f"Kafka broker at {self._servers}: {exc.args[0].str()}") from None

    def partitions(self, topic: str) -> int:
        """How many partitions `topic` has; raises UnknownTopic."""
        name = self.physical(topic)
        count = self._counts.get(name)
        if count is None:
            found = self._metadata(name).topics.get(name)
            if found is None or found.error is not None or not found.partitions:
                raise UnknownTopic(f"topic {topic!r} does not exist")
            count = self._counts[name] = len(found.partitions)
        return count

    def list_topics(self) -> list[str]:
        """Every topic of this namespace (Kafka's internal topics excluded), sorted."""
        names = self._metadata().topics
        return sorted(self.logical(n) for n in names
                      if n.startswith(self._prefix) and not n.startswith("__"))

    # -- writing ---------------------------------------------------------------------------------

    def place(self, records: Sequence[OutRecord]) -> list[tuple[str, int]]:
        """(physical topic, partition) of each record; raises UnknownTopic before anything is sent."""
        # Per topic once, not per record: this runs for every record appended.
        topics: dict[str, tuple[str, int]] = {}
        placed = []
        for record in records:
            topic = topics.get(record.topic)
            if topic is None:
                topic = topics[record.topic] = (self.physical(record.topic), self.partitions(record.topic))
            name, count = topic
            part = record.partition
            if part is None:
                part = partition_for(record.key, count)
            elif not 0 <= part < count:
                raise UnknownTopic(f"topic {record.topic!r} has no partition {part}")
            placed.append((name, part))
        return placed

    def produce_all(self, producer: Producer, records: Sequence[OutRecord], placed: list[tuple[str, int]],
                    on_delivery: Any = None) -> None:
        """Hand `records` to `producer` inside its open transaction."""
        produce = producer.produce
        for record, (name, part) in zip(records, placed, strict=True):
            # timestamp 0 means "the producer's clock"
            ts = record.timestamp_ms or 0
            try:
                produce(name, record.value, record.key, part, on_delivery=on_delivery, timestamp=ts)
            except BufferError:
                # The local queue is full: let librdkafka send some of it, then try once more.
                producer.flush(self.timeout)
                producer.produce(name, record.value, record.key, part, on_delivery=on_delivery, timestamp=ts)

    def commit(self, producer: Producer) -> None:
        """commit_transaction, resumed while its outcome is unknown. A retriable error ("timed
        out, retry call to resume") may come while the coordinator is already committing: an
        abort then fails ("conflicting commit_transaction call in progress"), the commit goes
        through anyway, and a caller told "failed" would write it all again (a server created
        twice by a client retrying the API's 503). Only librdkafka's verdict ends the wait: done,
        abortable or fatal (or, past six timeouts, the raise the caller treats as a failure)."""
        deadline = time.monotonic() + 6 * self.timeout
        while True:
            try:
                producer.commit_transaction(self.timeout)
                return
            except KafkaException as exc:
                err = exc.args[0]
                if not err.retriable() or err.txn_requires_abort() or time.monotonic() > deadline:
                    raise
                _LOG.warning("committing a transaction: %s; resuming the commit", err.str())

    def abort(self, producer: Producer, err: KafkaError) -> bool:
        """Abort the open transaction after `err`; False when the producer cannot go on."""
        if err.fatal():
            return False
        try:
            producer.abort_transaction(self.timeout)
        except KafkaException as exc:
            _LOG.warning("aborting a transaction after %s failed too: %s", err.str(), exc.args[0].str())
            return False
        return True

    def transactional_producer(self, transactional_id: str) -> Producer:
        """A producer ready for transactions; fences any older producer with the same id."""
        producer = Producer(self.client_config(**{
            "transactional.id": transactional_id, "transaction.timeout.ms": _TRANSACTION_TIMEOUT_MS,
            "enable.idempotence": True, "acks": "all", "linger.ms": 2}))
        # Six times the usual bound: a new cluster makes its transaction log (3 copies) on the
        # first transactional producer, which a loaded machine takes well over 10 s to do.
        deadline = time.monotonic() + 6 * self.timeout
        while True:
            try:
                producer.init_transactions(self.timeout)
                return producer
            except KafkaException as exc:
                err = exc.args[0]
                # On a new cluster the transaction log is still being made and its coordinator
                # moves ("Not coordinator", "Coordinator load in progress"): a pause, not a failure.
                if not err.retriable() or time.monotonic() > deadline:
                    raise _log_error(err, f"starting transactions as {transactional_id!r}") from None
                time.sleep(0.2)

    def append(self, records: Sequence[OutRecord]) -> list[tuple[int, int]]:
        """Append all `records` in one transaction; (partition, offset) of each, in order. Concurrent
        callers share transactions; each caller's records still commit or fail together."""
        if not records:
            return []
        # Whatever only this caller got wrong is refused here, before its batch joins a group.
        placed = self.place(records)
        size = max(len(r.value) + len(r.key or b"") for r in records)
        if size > _MAX_RECORD_BYTES:
            raise LogUnavailable(f"append failed: a record of {size} bytes is over the "
                                 f"{_MAX_RECORD_BYTES} bytes Kafka accepts")
        mine = _Batch(records, placed)
        with self._appends:
            if self._closed:
                raise LogUnavailable("append: the log is closed")
            self._queue.append(mine)
        while (group := self._lead_or_wait(mine)) is not None:
            self._commit_group(group)
        if mine.error is not None:
            raise mine.error
        assert mine.offsets is not None
        return mine.offsets

    def _lead_or_wait(self, mine: _Batch) -> list[_Batch] | None:
        """None once `mine` is done; else, when no transaction is in flight and `mine` is still
        queued, the batches this caller is to write now (oldest first, within _GROUP_RECORDS)."""
        with self._appends:
            while not mine.done and (self._writing or mine.taken):
                self._appends.wait()
            if mine.done:
                return None
            self._writing = True
            group = [self._queue.popleft()]
            size = len(group[0].records)
            while self._queue and size + len(self._queue[0].records) <= _GROUP_RECORDS:
                size += len(self._queue[0].records)
                group.append(self._queue.popleft())
            for batch in group:
                batch.taken = True
            return group

    def _commit_group(self, group: list[_Batch]) -> None:
        """Write `group` in one transaction and pass the writer's turn on; once the group is
        readable, hand every batch its offsets (or every batch the error)."""
        outcome: LogError | None = None
        offsets: list[list[tuple[int, int]]] = []
        last: dict[TopicPartition, int] = {}
        try:
            try:
                by_partition = self._transaction([r for b in group for r in b.records],
                                                 [p for b in group for p in b.placed])
                last = self.highest(by_partition)
                # Batches went out in group order, so popping each partition's smallest offset
                # first gives every batch the offsets its own records got.
                offsets = [[(placed[1], by_partition[placed].pop()) for placed in b.placed] for b in group]
            finally:
                # The next group goes while this one's commit markers are being written.
                with self._appends:
                    self._writing = False
                    self._appends.notify_all()
            self.committed_unseen(last)
        except LogError as exc:
            outcome = exc
        except Exception as exc:  # a bug must not strand the callers waiting on this group
            _LOG.exception("append: a group transaction failed unexpectedly")
            outcome = LogUnavailable(f"append failed: {type(exc).__name__}")
        with self._appends:
            for i, batch in enumerate(group):
                if outcome is None:
                    batch.offsets = offsets[i]
                else:
                    batch.error = outcome
            self._appends.notify_all()

    def _transaction(self, records: list[OutRecord], placed: list[tuple[str, int]]
                     ) -> dict[tuple[str, int], list[int]]:
        """Produce `records` in one committed transaction; the offsets each partition got."""
        turn, producer = self._appenders.take()
        self._reports.clear()
        try:
            producer.begin_transaction()
            self.produce_all(producer, records, placed, self._on_delivery)
            if producer.flush(self.timeout):
                raise KafkaException(KafkaError(KafkaError._TIMED_OUT, "delivery timed out"))
            failed = [err for err, _ in self._reports if err is not None]
            if failed:
                raise KafkaException(failed[0])
            self.commit(producer)
        except KafkaException as exc:
            if not self.abort(producer, exc.args[0]):
                self._appenders.drop(turn)  # its next turn starts a new producer
            raise _log_error(exc.args[0], "append") from None
        except Exception:
            # Not Kafka's doing; still end the transaction, or read_committed readers stall
            # behind it until the broker times it out.
            if not self.abort(producer, KafkaError(KafkaError._FAIL)):
                self._appenders.drop(turn)
            raise
        return self.delivered(self._reports)

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        self._reports.append((err, msg))

    def delivered(self, reports: list[tuple[KafkaError | None, Any]]) -> dict[tuple[str, int], list[int]]:
        """The offsets each (physical topic, partition) got, highest first."""
        # Within one partition reports come in produce order (idempotence keeps it), so the k-th
        # record sent to a partition got that partition's k-th smallest offset.
        by_partition: dict[tuple[str, int], list[int]] = {}
        for _, msg in reports:
            key = (msg.topic(), msg.partition())
            found = by_partition.get(key)
            if found is None:
                found = by_partition[key] = []
            found.append(msg.offset())
        for offsets in by_partition.values():
            offsets.sort(reverse=True)
        return by_partition

    def highest(self, by_partition: dict[tuple[str, int], list[int]]) -> dict[TopicPartition, int]:
        """The highest offset of each partition in `delivered`'s answer, by logical partition."""
        return {(self.logical(name), part): found[0] for (name, part), found in by_partition.items()}

    def committed_unseen(self, last: dict[TopicPartition, int]) -> None:
        """Note offsets just committed whose commit markers may not have landed yet."""
        # commit_transaction returns once the commit is decided; the broker writes the markers that
        # make the records readable a moment later (~1-3 ms here). Waiting for them after every
        # transaction cost a quarter of an append's time, so the wait moves to the reads it is
        # for: `settle` runs before this object opens a reader or reports end offsets, and on close.
        with self._unseen_lock:
            for tp, offset in last.items():
                if offset > self._unseen.get(tp, -1):
                    self._unseen[tp] = offset

    def settle(self) -> None:
        """Wait (bounded) until everything this object committed is readable by read_committed
        readers: read-your-writes for its own readers, and for any process started after close."""
        with self._unseen_lock:
            waiting = dict(self._unseen)
        if not waiting:
            return
        self.await_visible(waiting)
        with self._unseen_lock:
            for tp, offset in waiting.items():
                if self._unseen.get(tp) == offset:
                    del self._unseen[tp]

    def await_visible(self, last: dict[TopicPartition, int]) -> None:
        """Wait until read_committed readers see offset `last[tp]` of each partition."""
        deadline = time.monotonic() + self.timeout
        pause = 0.001
        while last:
            ends = self.list_offsets(last, OffsetSpec.latest())
            last = {tp: offset for tp, offset in last.items() if ends[tp] <= offset}
            if last and time.monotonic() > deadline:
                _LOG.warning("committed records of %s not readable after %g s", sorted(last), self.timeout)
                return
            if last:
                time.sleep(pause)
                pause = min(pause * 2, 0.05)

    # -- reading ---------------------------------------------------------------------------------

    def list_offsets(self, tps: Iterable[TopicPartition], spec: OffsetSpec,
                     isolation: IsolationLevel = IsolationLevel.READ_COMMITTED) -> dict[TopicPartition, int]:
        """One ListOffsets request (committed data only, unless `isolation` says otherwise) for
        logical partitions; retried while a partition has no leader yet (a new topic, a leader
        moving)."""
        query = {KafkaPartition(self.physical(t), p): spec for t, p in tps}
        deadline = time.monotonic() + self.timeout
        while query:
            futures = self._admin.list_offsets(query, isolation_level=isolation,
                                               request_timeout=self.timeout)
            try:
                return {(self.logical(tp.topic), tp.partition): self._result(f, "listing offsets").offset
                        for tp, f in futures.items()}
            except _LeaderMoving:
                if time.monotonic() > deadline:
                    raise LogUnavailable(f"partitions had no leader for {self.timeout:g} s") from None
                time.sleep(0.05)
        return {}

    def _result(self, future: Future[Any], what: str) -> Any:
        try:
            return future.result(timeout=self.timeout)
        except KafkaException as exc:
            if exc.args[0].code() in _NO_LEADER:
                raise _LeaderMoving() from None
            raise _log_error(exc.args[0], what) from None
        except FutureTimeout:
            raise LogUnavailable(f"{what} took over {self.timeout:g} s") from None

    def records(self, msgs: Sequence[Any]) -> list[Record]:
        """Consumed messages as the port's records; raises on errors a caller must see."""
        # Sequence[Any]: a message without an error always has topic, partition, offset and value.
        # This runs once per record read (a replay reads hundreds of thousands), hence the local
        # names and tuple.__new__, which builds a Record in a third of the time its constructor takes.
        out: list[Record] = []
        add = out.append
        new = tuple.__new__
        names = self._logical_names
        for msg in msgs:
            err = msg.error()
            if err is not None:
                if err.code() in _UNKNOWN or err.fatal():
                    raise _log_error(err, f"reading {msg.topic()}")
                _LOG.warning("consumer: %s", err.str())
                continue
            name = msg.topic()
            topic = names.get(name)
            if topic is None:
                topic = names[name] = self.logical(name)
            add(new(Record, (topic, msg.partition(), msg.offset(), msg.key(), msg.value(),
                             msg.timestamp()[1])))
        return out

    def consumer(self, group: str, **extra: Any) -> Consumer:
        """A consumer of committed data that never commits on its own."""
        return Consumer(self.client_config(**{
            "group.id": group, "enable.auto.commit": False, "enable.auto.offset.store": False,
            "isolation.level": "read_committed", "auto.offset.reset": "earliest", **extra}))

    def reader(self, topics: Iterable[str], start: StartAt = BEGINNING,
               partitions: Iterable[TopicPartition] | None = None) -> Reader:
        """A reader from BEGINNING, END or a timestamp (ms) over `topics` or just `partitions`."""
        tps = list(partitions) if partitions is not None else [
            (t, p) for t in topics for p in range(self.partitions(t))]
        self.settle()
        reader = _KafkaReader(self, tps, start)
        self._open.append(reader)
        return reader

    def hold_member_name(self, group: str, member_name: str) -> MemberNameHold:
        """The one partition of the member-names topic, held in a consumer group of the name's own
        (cooperative-sticky, so a holder keeps it): a second live process joins and is given
        nothing. A holder that died leaves the group when its session expires, so its restart
        gets the name within the session timeout."""
        self.create_topics([_MEMBER_NAMES], partitions=1)
        return _GroupHold(self, f"{self._prefix}{group}.member-name.{member_name}",
                          f"member {member_name!r} of group {group!r}")

    def member(self, group: str, topics: Iterable[str], *, member_name: str,
               partitions: Iterable[TopicPartition] | None = None,
               on_assign: RebalanceCallback | None = None,
               on_revoke: RebalanceCallback | None = None) -> GroupMember:
        """Join `group`; the transactional ids are group.member_name.N, so a restart fences its old self."""
        self.settle()
        member = _KafkaMember(self, self._prefix + group, list(topics), member_name,
                              None if partitions is None else set(partitions), on_assign, on_revoke)
        self._open.append(member)
        return member

    def end_offsets(self, topic: str) -> dict[int, int]:
        """Per partition, the offset after the last committed record (the last stable offset)."""
        self.settle()
        ends = self.list_offsets([(topic, p) for p in range(self.partitions(topic))], OffsetSpec.latest())
        return {p: offset for (_, p), offset in ends.items()}

    def ends(self, topics: Iterable[str]) -> dict[TopicPartition, int]:
        """`end_offsets` of several topics in one ListOffsets request."""
        self.settle()
        return self.list_offsets([(t, p) for t in topics for p in range(self.partitions(t))],
                                 OffsetSpec.latest())

    def written_ends(self, topics: Iterable[str]) -> dict[TopicPartition, int]:
        """The high watermarks: past every record written, in a transaction still open or not.
        A commit is acknowledged once the coordinator has logged it, before its markers reach
        the partitions; the last stable offset (`ends`) stays in front of its records until they
        do, and the group's offsets may become stable first (their marker is written apart)."""
        return self.list_offsets([(t, p) for t in topics for p in range(self.partitions(t))],
                                 OffsetSpec.latest(), IsolationLevel.READ_UNCOMMITTED)

    def committed(self, group: str, topic: str) -> dict[int, int]:
        """Per partition, the offset `group` committed on `topic` (absent when none)."""
        # Asked through a consumer of the group that never joins it, not the admin client's
        # list_consumer_group_offsets: that call, made while the broker is down, aborted the
        # whole process inside librdkafka (rd_kafka_enq_once_del_source_return: Assertion
        # 'eonce->refcnt > 0' failed; tests/chaos/test_broker_loss.py). A read_committed consumer
        # asks with require_stable, so an offset whose transaction is still being written waits.
        tps = [KafkaPartition(self.physical(topic), p) for p in range(self.partitions(topic))]
        with self._offset_readers_lock:
            reader = self._offset_readers.get(group)
            if reader is None:
                reader = self._offset_readers[group] = self.consumer(self._prefix + group)
            try:
                found = reader.committed(tps, timeout=self.timeout)
            except KafkaException as exc:
                raise _log_error(exc.args[0], f"reading offsets of group {group!r}") from None
        for tp in found:
            if tp.error is not None:
                raise _log_error(tp.error, f"reading offsets of group {group!r}")
        return {tp.partition: tp.offset for tp in found if tp.offset >= 0}

    def close(self) -> None:
        """Close every reader and member this log opened, fail the appends still queued, let the
        one in flight finish, release the append producers and wait until what this object
        committed is readable. Later appends raise."""
        while self._open:
            self._open.pop().close()
        with self._offset_readers_lock:
            for reader in self._offset_readers.values():
                reader.close()
            self._offset_readers.clear()
        with self._appends:
            self._closed = True
            while self._queue:
                self._queue.popleft().error = LogUnavailable("append: the log was closed before it was sent")
            self._appends.notify_all()
            # The transaction in flight ends within its own timeouts (flush, commit or abort), and
            # its callers get its real outcome; the producer is not flushed under it meanwhile.
            idle = self._appends.wait_for(lambda: not self._writing, timeout=3 * self.timeout)
            producers = self._appenders.release()
        if idle:
            for producer in producers:
                producer.flush(self.timeout)
            try:
                self.settle()  # a process started after this one exits reads what it wrote
            except LogError as exc:
                _LOG.warning("closing: could not confirm the last commits are readable: %s", exc)


class _KafkaReader(Reader):
    """Assigned partitions, no group: positions live only in this object."""

    def __init__(self, log: KafkaLog, tps: list[TopicPartition], start: StartAt) -> None:
        self._log = log
        self._tps = tps
        self._ends = log.list_offsets(tps, OffsetSpec.latest())
        if start == BEGINNING:
            self._positions = log.list_offsets(tps, OffsetSpec.earliest())
        elif start == END:
            self._positions = dict(self._ends)
        elif isinstance(start, int):
            found = log.list_offsets(tps, OffsetSpec.for_timestamp(start))
            # -1: no record at or after that time, so reading starts at the end.
            self._positions = {tp: self._ends[tp] if off < 0 else off for tp, off in found.items()}
        else:
            raise ValueError(f"start must be BEGINNING, END or a timestamp in ms, not {start!r}")
        self._consumer = log.consumer(f"{log.physical('eventsvm-reader')}-{uuid.uuid4()}")
        self._consumer.assign([KafkaPartition(log.physical(t), p, self._positions[t, p]) for t, p in tps])
        # Whether the ends were asked for since the last poll, and whether that poll was empty.
        self._ends_asked = True
        self._last_empty = False

    def poll(self, max_records: int = 1000, timeout: float = 0.1) -> list[Record]:
        """Up to `max_records` records; an empty list when nothing arrived within `timeout` s."""
        records = self._log.records(_take(self._consumer, max_records, timeout))
        # Within a partition records come in offset order, so the last one of each sets its position.
        self._positions.update({(r.topic, r.partition): r.offset + 1 for r in records})
        # The consumer's own position also steps over transaction markers, which are no records.
        for tp in self._consumer.position([KafkaPartition(self._log.physical(t), p) for t, p in self._tps]):
            key = (self._log.logical(tp.topic), tp.partition)
            self._positions[key] = max(self._positions[key], tp.offset)
        # The ends are asked for by at_end, not here: a reader polled in a loop (a service's state
        # reader before every step, the API's tail) paid a ListOffsets round trip to the broker
        # for every poll (~0.7 ms of CPU here, ~4 ms waited), most of them never followed by at_end.
        self._ends_asked = False
        self._last_empty = not records
        return records

    def at_end(self) -> bool:
        """True once every partition was read up to its end as the broker gave it after the last
        poll (asked once per poll, for the partitions that look finished: only those can have
        moved past what this reader holds)."""
        if not self._ends_asked:
            done = [tp for tp in self._tps if self._positions[tp] >= self._ends[tp]]
            try:
                if done:
                    self._ends.update(self._log.list_offsets(done, OffsetSpec.latest()))
            except LogError:
                if self._last_empty:
                    raise  # nothing read and the broker out of reach: the caller's pause
                # records are coming: not known to be at the end; asked again at the next call
                return False
            self._ends_asked = True
        return all(self._positions[tp] >= self._ends[tp] for tp in self._tps)

    def positions(self) -> dict[TopicPartition, int]:
        """Per partition, the offset after the last record delivered or marker stepped over."""
        return dict(self._positions)

    def close(self) -> None:
        """Release the consumer (it never joined a group, so nothing else changes)."""
        self._consumer.close()


# The topic whose one partition a member name's holder is assigned; nothing is ever written to it.
_MEMBER_NAMES = "member-names"
# How often a holder polls its name's group: far inside max.poll.interval, so it never leaves it.
_HOLD_POLL_S = 0.5


class _GroupHold(MemberNameHold):
    """A member name held as the one partition of a consumer group named after it."""

    def __init__(self, log: KafkaLog, group: str, what: str) -> None:
        session_ms = int(log.session_timeout_s * 1000)
        self._consumer = log.consumer(group, **{
            "partition.assignment.strategy": "cooperative-sticky", "session.timeout.ms": session_ms,
            "heartbeat.interval.ms": min(1000, session_ms // 3)})
        rounds: list[int] = []  # assignments met, each with how many partitions came
        self._consumer.subscribe([log.physical(_MEMBER_NAMES)],
                                 on_assign=lambda _c, tps: rounds.append(len(tps)))
        # an older holder that died stays in the group until its session expires: wait that long
        deadline = time.monotonic() + log.session_timeout_s * 2 + log.timeout
        while not self._consumer.assignment() and time.monotonic() < deadline:
            self._consumer.poll(0.2)
        if not self._consumer.assignment():
            self._consumer.close()
            if not rounds:
                raise LogUnavailable(f"joining the group of {what} did not complete; is the broker up?")
            raise MemberNameTaken(f"{what} is held by a live process: two processes may not run under "
                                  "one member name; give this one another --member")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._keep, name="eventsvm-member-name", daemon=True)
        self._thread.start()

    def _keep(self) -> None:
        # polling is what keeps a consumer in its group (and its partition with it)
        while not self._stop.wait(_HOLD_POLL_S):
            try:
                self._consumer.poll(0)
            except KafkaException as exc:
                _LOG.warning("holding a member name: %s", exc)

    def release(self) -> None:
        """Leave the name's group: a process started next takes the name at once."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._thread.join()
        self._consumer.close()


class _KafkaMember(GroupMember):
    """A consumer in the group plus a transactional producer named after the member."""

    def __init__(self, log: KafkaLog, group: str, topics: list[str], name: str,
                 manual: set[TopicPartition] | None, on_assign: RebalanceCallback | None,
                 on_revoke: RebalanceCallback | None) -> None:
        self._log = log
        self._on_assign, self._on_revoke = on_assign, on_revoke
        for topic in {t for t, _ in manual} if manual is not None else topics:
            log.partitions(topic)  # UnknownTopic now rather than an error event later
        self._owned: set[TopicPartition] = set()
        self._polled: set[TopicPartition] = set()  # polled since the last commit or rewind
        self._stale: set[TopicPartition] = set()  # revoked while holding polled, uncommitted records
        self._dead: MemberDead | None = None  # why this member cannot commit any more
        self._closed = False
        self._unannounced = set(manual or ())
        self._manual = manual
        self._reports: list[tuple[KafkaError | None, Any]] = []
        self._producers = _Turns(log.transactional_producer, f"{group}.{name}")
        self._producers.start_all()
        # "Silent" means "not polling", as on SQLite: a member that stops calling poll for the
        # session leaves the group (max.poll.interval) and its partitions move.
        self._session_s = log.session_timeout_s
        session_ms = int(self._session_s * 1000)
        self._last_poll = time.monotonic()
        self._consumer = log.consumer(group, **{
            "partition.assignment.strategy": "cooperative-sticky", "session.timeout.ms": session_ms,
            "max.poll.interval.ms": session_ms, "heartbeat.interval.ms": min(1000, session_ms // 3)})
        if manual is not None:
            self._owned = set(manual)
            self._consumer.assign([KafkaPartition(log.physical(t), p) for t, p in manual])
        else:
            self._consumer.subscribe([log.physical(t) for t in topics],
                                     on_assign=self._assigned, on_revoke=self._revoked)

    def _logical(self, tps: list[KafkaPartition]) -> set[TopicPartition]:
        return {(self._log.logical(tp.topic), tp.partition) for tp in tps}

    def _assigned(self, consumer: Consumer, tps: list[KafkaPartition]) -> None:
        gained = self._logical(tps)
        self._owned |= gained
        if gained and self._on_assign:
            self._on_assign(gained)

    def _revoked(self, consumer: Consumer, tps: list[KafkaPartition]) -> None:
        lost = self._logical(tps)
        self._owned -= lost
        self._stale |= lost & self._polled
        if lost and self._on_revoke:
            self._on_revoke(lost)

    def poll(self, max_records: int = 1000, timeout: float = 0.1) -> list[Record]:
        """Up to `max_records` records of the owned partitions; rebalance callbacks fire in here."""
        if self._unannounced:
            gained, self._unannounced = self._unannounced, set()
            if self._on_assign:
                self._on_assign(gained)
        self._last_poll = time.monotonic()
        records = self._log.records(_take(self._consumer, max_records, timeout))
        self._polled.update({(r.topic, r.partition) for r in records})
        return records

    def assignment(self) -> set[TopicPartition]:
        """The partitions this member owns as of its last poll."""
        return set(self._owned)

    def commit_step(self, outputs: Sequence[OutRecord], consumed: Sequence[Record]) -> None:
        """Append `outputs` and commit past `consumed` in one transaction, or raise and write nothing."""
        after: dict[TopicPartition, int] = {}
        for record in consumed:
            tp = (record.topic, record.partition)
            if record.offset >= after.get(tp, 0):
                after[tp] = record.offset + 1
        if self._dead is not None:
            # Not Fenced: the runner would rewind and poll this member again, forever.
            raise MemberDead(f"{self._dead}; open a new member")
        lost = (after.keys() - self._owned) | (after.keys() & self._stale)
        if self._manual is None and time.monotonic() - self._last_poll > self._session_s:
            # librdkafka has left the group by now; a commit without a generation would pass.
            lost |= after.keys()
        if lost:
            self._stale -= lost
            raise Fenced(f"this member no longer owns {sorted(lost)}")
        if not outputs and not after:
            return
        if not outputs:
            self._commit_offsets(after)
            return
        placed = self._log.place(outputs)
        _, producer = self._producers.take()
        self._reports.clear()
        try:
            producer.begin_transaction()
            self._log.produce_all(producer, outputs, placed, self._on_delivery)
            if after:
                self._send_offsets(producer, after)
            self._log.commit(producer)
        except KafkaException as exc:
            error = _log_error(exc.args[0], "commit step")
            if not self._log.abort(producer, exc.args[0]):
                # A producer fenced by a newer one with its transactional id stays fenced, and one
                # that failed fatally or cannot even abort cannot go on: neither can this member.
                # (A generation error, its partitions moving, is abortable and stays plain Fenced.)
                self._dead = MemberDead(f"commit step: the producer cannot go on after {exc.args[0].str()}")
                if isinstance(error, Fenced):
                    raise self._dead from None
            raise error from None
        self._polled -= after.keys()
        self._log.committed_unseen(self._log.highest(self._log.delivered(self._reports)))

    def _send_offsets(self, producer: Producer, after: dict[TopicPartition, int]) -> None:
        """send_offsets_to_transaction, bounded: with the broker gone it was seen to wait forever
        despite its timeout, so it runs on a thread and a call that outlives the timeout leaves
        the member dead (the producer is busy; nothing else may touch it)."""
        offsets = [KafkaPartition(self._log.physical(t), p, off) for (t, p), off in after.items()]
        metadata = self._consumer.consumer_group_metadata()
        outcome: list[BaseException | None] = []

        def send() -> None:
            try:
                producer.send_offsets_to_transaction(offsets, metadata, self._log.timeout)
                outcome.append(None)
            except BaseException as exc:  # re-raised on the calling thread below
                outcome.append(exc)

        thread = threading.Thread(target=send, name="eventsvm-send-offsets", daemon=True)
        thread.start()
        thread.join(self._log.timeout + _SEND_OFFSETS_GRACE_S)
        if not outcome:
            self._dead = MemberDead("commit step: sending the offsets did not return; the broker is "
                                    "unreachable")
            raise self._dead
        if outcome[0] is not None:
            raise outcome[0]

    def _commit_offsets(self, after: dict[TopicPartition, int]) -> None:
        """Commit past consumed records when the step wrote nothing (a folding consumer's usual step)."""
        # With no outputs there is nothing to make atomic with the offsets, and a transaction
        # (AddOffsetsToTxn, TxnOffsetCommit, EndTxn) took three round trips where this takes one;
        # the commit still carries the group generation, so a member that lost the partition is
        # refused just the same. A transactional offset commit still in flight does not overwrite
        # this newer one: the coordinator keeps whichever commit came later in its log.
        offsets = [KafkaPartition(self._log.physical(t), p, off) for (t, p), off in after.items()]
        try:
            committed = self._consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            raise _log_error(exc.args[0], "commit step") from None
        for tp in committed or ():
            if tp.error is not None:
                raise _log_error(tp.error, "commit step")
        self._polled -= after.keys()

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        self._reports.append((err, msg))

    def _leave(self) -> None:
        """Unsubscribe, and serve the revocations that follow while the group still answers."""
        # consumer.close() serves the rebalance events still queued, and confluent-kafka answers
        # each by asking the group for its protocol and then unassigning. A group that terminated
        # meanwhile drops such requests unanswered, so the close blocked forever, holding the GIL
        # (librdkafka issue 4041). A member that fell silent holds such an event: the revocation
        # a rebalance handed it while it was not polling (close() served three of them). It hung
        # the contract suite's silent-member test about one run in three on a busy machine, and
        # 1 close in 67 with the broker stalled at random. Served here, close() has none left.
        try:
            self._consumer.unsubscribe()
            deadline = time.monotonic() + self._log.timeout
            while self._consumer.assignment() and time.monotonic() < deadline:
                self._consumer.poll(0.05)
            self._consumer.poll(0)  # any event queued as the last partition went
        except KafkaException as exc:
            _LOG.warning("leaving the group: %s", exc)

    def rewind(self) -> None:
        """Seek every owned partition back to its committed offset (or the beginning)."""
        owned = [KafkaPartition(self._log.physical(t), p) for t, p in self._owned]
        try:
            committed = self._consumer.committed(owned, timeout=self._log.timeout) if owned else []
            for tp in committed:
                offset = tp.offset if tp.offset >= 0 else OFFSET_BEGINNING
                try:
                    self._consumer.seek(KafkaPartition(tp.topic, tp.partition, offset))
                except KafkaException as exc:
                    # Not fetching yet: it will start from the committed offset anyway.
                    if exc.args[0].code() != KafkaError._STATE:
                        raise
        except KafkaException as exc:
            raise _log_error(exc.args[0], "rewind") from None
        self._polled.clear()
        self._stale.clear()

    def close(self) -> None:
        """Leave the group (its partitions move to the others) and release the producer."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._manual is None:
                self._leave()
            self._consumer.close()
        finally:
            producers = self._producers.release()
            if self._dead is None:  # a failed producer has nothing left to send, and flush would raise
                for producer in producers:
                    producer.flush(self._log.timeout)
