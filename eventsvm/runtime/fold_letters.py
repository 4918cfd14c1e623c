"""Dead letters written by a fold: a record a long-running reader (a service's state reader, the
API's read model) could not decode or could not apply.

A consumer fed a record dead-letters it in the step that consumes it (eventsvm.runtime.runner).
A reader that folds a topic instead writes a letter for a record its fold raised on, naming the
fold; and, on a topic no service is fed (STATE_ONLY_TOPICS), for a record it cannot decode, since
no consumer will. The fold then goes on with the next record: never a crash loop, never a silent
drop. Each letter's id is derived from the fold and the record's position, so a letter written
again (by another replica, or after a restart) is recognisably the same one, and the read model
keeps one of each (see docs/decisions.md, "A fold that cannot apply an event").
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Iterable

from eventsvm.events.codec import Codec, CodecError, Forged
from eventsvm.events.model import Event, EventType, Topic, new_event
from eventsvm.log.port import EventLog, LogError, OutRecord, Record

log = logging.getLogger(__name__)

# Topics that are only ever folded, never fed to a service as its input: nobody else dead-letters
# a record on them that cannot be decoded. (tests/unit/test_fold_letters.py holds the registry to it.)
STATE_ONLY_TOPICS: frozenset[str] = frozenset(
    str(t) for t in (Topic.HOSTS, Topic.CATALOG, Topic.IDENTITY, Topic.BILLING, Topic.UPDATED)
)

UNDECODABLE = "CodecError"
UNFOLDABLE = "FoldError"
# not written by a writer's key that may write it (eventsvm.events.signing): never applied
FORGED = "Forged"
# a validly signed event stored a second time at another place: a copy an intruder appended to undo
# what came after the original (a role unassigned, say), never applied twice
REPLAYED = "Replayed"

_LETTER_IDS = uuid.UUID("5d0c1f4e-7a53-4d3c-9a57-2f3a8e6c1b90")


def letter_id(error_type: str, fold: str, topic: str, partition: int, offset: int) -> str:
    """The one id every writer gives the letter for this record: a fold's failure is the fold's
    own; an undecodable or forged record is one letter whoever reads it."""
    who = fold if error_type == UNFOLDABLE else ""
    return str(uuid.uuid5(_LETTER_IDS, f"{error_type}\x00{who}\x00{topic}\x00{partition}\x00{offset}"))


def fold_letter(record: Record, fold: str, error_type: str, reason: str) -> Event:
    """A deadletter.recorded for `record`, which `fold` could not decode or apply.

    It carries the record's position and the reason but not its bytes: the record stays in the log
    at that position, and a letter is read by far more people than an identity record should be.
    """
    letter = new_event(
        EventType.DEAD_LETTER_RECORDED,
        f"{record.topic}/{record.partition}/{record.offset}",
        {
            "source_topic": record.topic,
            "source_partition": record.partition,
            "source_offset": record.offset,
            "group": fold,
            "reason": reason[:2000],
            "error_type": error_type,
            "key": record.key,
            "payload": b"",
        },
    )
    letter.event_id = letter_id(error_type, fold, record.topic, record.partition, record.offset)
    return letter


class FoldLetters:
    """A long-running fold's dead letters: made once per record per process, appended by `flush`."""

    def __init__(self, fold: str, codec: Codec, replay_tolerant: Iterable[str] = ()) -> None:
        self.fold = fold
        self.codec = codec
        # the state-only topics whose replayed copies this fold letters (Service.replay_tolerant)
        self._guarded = STATE_ONLY_TOPICS - frozenset(replay_tolerant)
        self._lock = threading.Lock()
        self._pending: list[OutRecord] = []
        # positions already lettered (or queued) by this process: a rebuild folds them again
        self._seen: set[tuple[str, int, int]] = set()
        # where each event of a state-only topic was first read: the same id at another place is
        # a replayed copy (instance topics are safe from one: their folds go by sequence)
        self._placed: dict[str, tuple[str, int, int]] = {}

    def decoded(self, record: Record, sealed: bool = False) -> Event | None:
        """The record's event; None when it cannot be decoded or its writer cannot be trusted (the
        codec's key ring checks that; `sealed`: see `Codec.decode_sealed`), lettered as
        `undecodable` says."""
        try:
            event = self.codec.decode_sealed(record.value) if sealed else self.codec.decode(record.value)
        except CodecError as exc:
            self.undecodable(record, exc)
            return None
        if record.topic in self._guarded:
            where = (record.topic, record.partition, record.offset)
            first = self._placed.setdefault(event.event_id, where)
            if first != where:
                self._add(record, REPLAYED, f"replayed: event {event.event_id} is already stored at "
                                            f"{first[0]}:{first[1]}:{first[2]}")
                return None
        return event

    def undecodable(self, record: Record, error: Exception) -> None:
        """A record the fold cannot decode: lettered on a state-only topic (its consumer letters
        any other)."""
        if record.topic in STATE_ONLY_TOPICS:
            if isinstance(error, Forged):
                self._add(record, FORGED, f"forged: {error}")
            else:
                self._add(record, UNDECODABLE, f"undecodable payload: {error}")

    def unfoldable(self, record: Record, error: Exception) -> None:
        """A record the fold raised on: lettered with the exception as the reason."""
        self._add(record, UNFOLDABLE, f"the fold cannot apply it: {type(error).__name__}: {error}")

    def _add(self, record: Record, error_type: str, reason: str) -> None:
        where = (record.topic, record.partition, record.offset)
        with self._lock:
            if where in self._seen:
                return
            self._seen.add(where)
            letter = fold_letter(record, self.fold, error_type, reason)
            data = self.codec.encode(letter)
            self._pending.append(OutRecord(str(Topic.DEAD_LETTER), letter.aggregate_id.encode(), data))
        log.warning("%s: dead-lettered %s@%d/%d and went on: %s", self.fold, record.topic, record.partition,
                    record.offset, reason[:200])

    def flush(self, log_: EventLog) -> int:
        """Append the letters made since the last flush; on a log error keep them for the next one."""
        with self._lock:
            pending, self._pending = self._pending, []
        if not pending:
            return 0
        try:
            log_.append(pending)
        except LogError as exc:
            log.warning("%s: could not write %d dead letter(s) yet: %s", self.fold, len(pending), exc)
            with self._lock:
                self._pending[:0] = pending
            return 0
        return len(pending)
