"""EventLog: the one port through which any code touches the log (DESIGN §3).

The engines (eventsvm.log.kafka, eventsvm.log.sqlite) move bytes; they know nothing of instances
or Avro. Every behaviour here is pinned by tests/contract/, which both engines must pass.
"""

from __future__ import annotations

import zlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from eventsvm.config import LogConfig

# Start positions for `EventLog.reader`: the beginning, the current end, or a timestamp (ms).
BEGINNING = "beginning"
END = "end"
StartAt = str | int


class LogError(Exception):
    """Base class of every error the log raises."""


class LogUnavailable(LogError):
    """The engine cannot be reached or opened (broker down, file not writable, bad URL)."""


class Fenced(LogError):
    """The step was not committed and must not be retried: this group member's partitions moved to
    another member (a rebalance, or it fell silent past its session). The member itself lives:
    rewind it and poll again, and it goes on with whatever partitions it owns then."""


class MemberDead(Fenced):
    """This group member can never commit again: a newer incarnation with its name fenced it (a
    restart of the same process role), or its engine failed in a way the member cannot get past.
    Nothing of the step was committed; close the member and open a new one."""


class MemberNameTaken(LogError):
    """Another live process holds this member name (two processes started with one `--member`):
    the later one refuses to start rather than fence the other, each fence a rebuild, in turn."""


class UnknownTopic(LogError):
    """A topic was used that does not exist and could not be created."""


class Record(NamedTuple):
    """One stored record, as read back from the log. Immutable and without a __dict__, like the
    frozen dataclasses here, but a tuple: an engine builds one per record read, and a tuple is
    built in a quarter of the time (a full replay builds hundreds of thousands)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    timestamp_ms: int


@dataclass(frozen=True, slots=True)
class OutRecord:
    """One record to append. `partition=None` means: chosen from the key by `partition_for`."""

    topic: str
    key: bytes | None
    value: bytes
    partition: int | None = None
    timestamp_ms: int | None = None


TopicPartition = tuple[str, int]


def partition_for(key: bytes | None, partitions: int) -> int:
    """The partition a key maps to; the same function on both engines so placement agrees."""
    if key is None or partitions <= 1:
        return 0
    return zlib.crc32(key) % partitions


class Reader(ABC):
    """A plain reader (no group, no commits): replay from the start, from a time, or tail."""

    @abstractmethod
    def poll(self, max_records: int = 1000, timeout: float = 0.1) -> list[Record]:
        """Up to `max_records` records; an empty list when nothing arrived within `timeout` s."""

    @abstractmethod
    def at_end(self) -> bool:
        """True once every assigned partition has been read up to the end it had when last polled
        (or later: an engine may ask for the ends when this is called rather than at each poll)."""

    def positions(self) -> dict[TopicPartition, int]:
        """Per partition, the offset after what this reader has delivered (transaction markers
        stepped over): once it reaches a partition's `EventLog.end_offsets`, everything appended
        there before that end was delivered. Asked by the thread that polls."""
        raise NotImplementedError(f"{type(self).__name__} does not report its positions")

    @abstractmethod
    def close(self) -> None:
        """Release the reader."""


class GroupMember(ABC):
    """A member of a consumer group: partitions are split across members, offsets are committed.

    `commit_step` is the read-process-write primitive: the outputs are appended and the offsets
    after `consumed` are committed in one atomic step, or neither happens.
    """

    @abstractmethod
    def poll(self, max_records: int = 1000, timeout: float = 0.1) -> list[Record]:
        """Up to `max_records` records from the assigned partitions, after the committed offsets.
        Raises MemberDead when it finds this member replaced by a newer incarnation."""

    @abstractmethod
    def assignment(self) -> set[TopicPartition]:
        """The partitions this member currently owns."""

    @abstractmethod
    def commit_step(self, outputs: Sequence[OutRecord], consumed: Sequence[Record]) -> None:
        """Append `outputs` and commit past `consumed` atomically. Raises Fenced if this member
        no longer owns a consumed partition, MemberDead once it can never commit again; either
        way nothing was written."""

    @abstractmethod
    def rewind(self) -> None:
        """Go back to the committed offsets (after a step was abandoned)."""

    @abstractmethod
    def close(self) -> None:
        """Leave the group; its partitions go to the remaining members."""


# Called with the partitions just assigned to (or revoked from) a member.
RebalanceCallback = Callable[[set[TopicPartition]], None]


class MemberNameHold(ABC):
    """A member name of a group, held by this process while it lives (or until released)."""

    @abstractmethod
    def release(self) -> None:
        """Give the name up (idempotent); a process that dies gives it up too."""


class EventLog(ABC):
    """The log: topics of partitions of records, appended atomically, read by groups or replay."""

    # what it was opened with: another process opens the same log from it (a replay's helper)
    config: LogConfig

    @abstractmethod
    def create_topics(self, topics: Iterable[str], partitions: int | None = None) -> None:
        """Create the topics that do not exist yet (kept forever), with `partitions` each or the
        configured default. Existing topics are left as they are."""

    @abstractmethod
    def partitions(self, topic: str) -> int:
        """How many partitions `topic` has. Raises UnknownTopic if it does not exist."""

    @abstractmethod
    def list_topics(self) -> list[str]:
        """Every topic in this log (within its namespace), sorted."""

    def settle(self) -> None:
        """Wait (bounded) until what this object appended is readable by every reader of the log, in
        any process. An engine whose commit is readable the moment it returns has nothing to wait for."""
        return None

    @abstractmethod
    def append(self, records: Sequence[OutRecord]) -> list[tuple[int, int]]:
        """Append all `records` atomically and durably; (partition, offset) of each, in order."""

    @abstractmethod
    def reader(
        self,
        topics: Iterable[str],
        start: StartAt = BEGINNING,
        partitions: Iterable[TopicPartition] | None = None,
    ) -> Reader:
        """A reader over `topics` (or just `partitions`) from BEGINNING, END or a timestamp (ms)."""

    @abstractmethod
    def member(
        self,
        group: str,
        topics: Iterable[str],
        *,
        member_name: str,
        partitions: Iterable[TopicPartition] | None = None,
        on_assign: RebalanceCallback | None = None,
        on_revoke: RebalanceCallback | None = None,
    ) -> GroupMember:
        """Join `group` on `topics`. `member_name` is stable across restarts of the same process
        role (it names the transactional producer, so a restarted member fences its old self).
        With `partitions` the member takes exactly those partitions instead of a share."""

    @abstractmethod
    def hold_member_name(self, group: str, member_name: str) -> MemberNameHold:
        """Hold `member_name` in `group` for this process, or raise MemberNameTaken when another
        live process holds it. A process that died holds nothing: its restart takes the name
        (and fences what is left of its old self)."""

    @abstractmethod
    def end_offsets(self, topic: str) -> dict[int, int]:
        """Per partition, the offset the next appended record will get (committed data only)."""

    def ends(self, topics: Iterable[str]) -> dict[TopicPartition, int]:
        """`end_offsets` of several topics, by (topic, partition); engines ask for all at once."""
        return {(t, p): end for t in topics for p, end in self.end_offsets(t).items()}

    def written_ends(self, topics: Iterable[str]) -> dict[TopicPartition, int]:
        """Per partition, the offset after the last record written to it, whatever the outcome of
        its transaction (committed, aborted or still open: Kafka's high watermark). A reader whose
        `positions` reach these has met the outcome of every transaction begun before this call;
        `ends` may stop short of one committed whose markers are still being written. An engine
        whose appends are readable the moment they are committed writes nothing else."""
        return self.ends(topics)

    @abstractmethod
    def committed(self, group: str, topic: str) -> dict[int, int]:
        """Per partition, the offset `group` committed (absent when nothing was committed)."""

    @abstractmethod
    def close(self) -> None:
        """Flush and release everything."""

    def partition_of(self, record: OutRecord) -> int:
        """The partition `record` lands in."""
        if record.partition is not None:
            return record.partition
        return partition_for(record.key, self.partitions(record.topic))
