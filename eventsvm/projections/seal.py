"""Verified seals: what a reader that checked every signature of a partition remembers of it, so
that a later replay reads that prefix without paying Ed25519 per event again.

A seal holds, per (topic, partition), the offset of the last record it covers, how many records
that is, a running BLAKE2b digest over their stored bytes in offset order, and the offsets of the
records in the range that did not verify (they are verified again, in full, whenever read). It is
written by a reader that verified every one of them (`eventsvm audit verify`, a full replay, the
API's read model at start), signed with the data directory's seal key (`signing-keys/seal/`, kept
like the writers' keys, but in a directory of its own so that the writers' key ring never trusts it
for an event), and stored in the data directory (`seals/`), not on the log: it is one reader's
memory of its own work, trusted by readers holding the same keys, as the snapshots beside it are
(docs/decisions.md, "Verified seals").

A replay (or the read model's start) under a seal recomputes the digest as it reads: a record up
to the sealed offset is decoded with the key its frame names looked up (an unknown key is still
refused) and the writer's right to write the event still checked, but its signature is not verified
again; at the sealed offset the digest must be the one sealed, or the replay stops with
`SealBroken` (a record in the range altered, removed or added). Records after the seal are verified
one by one, as without it.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import groupby
from operator import itemgetter
from pathlib import Path

from eventsvm.events.codec import Codec
from eventsvm.events.signing import ForgedEvent, key_ring, signer, unsigned
from eventsvm.log.port import EventLog, Record, TopicPartition
from eventsvm.log.private_files import FILE_MODE, private_directory, tighten
from eventsvm.runtime.snapshot import beyond_log, now_ms

FORMAT = 1
SEAL_WRITER = "seal"
SEAL_KEY_DIR = "seal"  # under the writers' key directory
SEALS_DIR = "seals"  # under the data directory
# what a seal key signs starts with this, so no seal can ever be taken for anything else it signs
_CONTEXT = b"eventsvm-verified-seal\x00"
_DIGEST_SIZE = 32


class SealBroken(ForgedEvent):
    """The log no longer holds what a verified seal covers: a record in the sealed range was altered,
    removed or added. Whatever was read under the seal is not to be trusted (nor published)."""

    def __init__(self, where: TopicPartition, first: int, last: int, detail: str) -> None:
        topic, partition = where
        super().__init__(f"{topic}:{partition} offsets {first}-{last} no longer match the verified seal: "
                         f"{detail}; verify every signature (eventsvm replay --no-seal, eventsvm audit "
                         "verify)")
        self.where = where
        self._made_of = (where, first, last, detail)

    def __reduce__(self) -> tuple[type[SealBroken], tuple[TopicPartition, int, int, str]]:
        # as it was made: a replay's helper process sends it to the process that asked
        return SealBroken, self._made_of


@dataclass(frozen=True)
class PartitionSeal:
    """What the seal vouches for in one partition."""

    first: int  # offset of the first record covered
    last: int  # offset of the last record covered
    count: int  # records covered
    digest: str  # hex BLAKE2b over the records (see Chain)
    refused: frozenset[int] = frozenset()  # offsets in the range that did not verify


@dataclass(frozen=True)
class Seal:
    """A verified seal of one log: per partition, what a reader verified."""

    log: str
    partitions: Mapping[TopicPartition, PartitionSeal]
    written_at_ms: int = 0

    def records(self) -> int:
        """How many records it covers."""
        return sum(p.count for p in self.partitions.values())


_FRAME = struct.Struct(">QI").pack  # a record's offset and length, ahead of its bytes
_WHERE = itemgetter(0, 1)  # a Record's (topic, partition)
_OFFSET = itemgetter(2)
_VALUE = itemgetter(4)


def _framed(run: Sequence[Record]) -> bytes:
    """The chain's stream for `run`: each record's offset and length, then its bytes."""
    parts: list[bytes] = [b""] * (2 * len(run))
    values = list(map(_VALUE, run))
    parts[0::2] = list(map(_FRAME, map(_OFFSET, run), map(len, values)))
    parts[1::2] = values
    return b"".join(parts)


class Chain:
    """The running digest of one partition: BLAKE2b over each record's offset, length and stored
    bytes (the signed frame), in offset order. A length-framed stream hashed incrementally is a
    chain: any record altered, removed, added or moved changes every digest after it. `old`: the
    partition's seal still to be met (None when there is none, or once its last offset was met)."""

    __slots__ = ("hash", "update", "first", "last", "count", "refused", "old")

    def __init__(self, old: PartitionSeal | None) -> None:
        self.hash = hashlib.blake2b(digest_size=_DIGEST_SIZE)
        self.update = self.hash.update
        self.first = -1
        self.last = -1
        self.count = 0
        self.refused: set[int] = set()
        self.old = old

    def sealed(self) -> PartitionSeal:
        """The seal of every record added so far."""
        return PartitionSeal(self.first, self.last, self.count, self.hash.hexdigest(),
                             frozenset(self.refused))


@dataclass
class Sealing:
    """A reading of the log that checks it against a seal (if any) and builds the next one.

    `vouched(record)`, called for every record read in offset order per partition, says whether the
    seal vouches for it; `refuse(record)` marks one that did not verify (or was not verified), so
    the next seal leaves it to be verified in full again.
    """

    old: Seal | None = None
    chains: dict[TopicPartition, Chain] = field(default_factory=dict)
    # partitions whose sealed last offset was met, digest equal
    checked: set[TopicPartition] = field(default_factory=set)
    # A batch's digests are computed on a thread of their own while the reader decodes and folds
    # the batch: hashlib lets go of the GIL for buffers this large, so on a second core they cost
    # a replay nothing. `_work`: what is still to hash, in order; `_hashing`: the batch being hashed.
    _work: list[tuple[Callable[[bytes], object], bytes]] = field(default_factory=list, repr=False)
    # what another process's reading of other partitions sealed (a replay's helper), as if read here
    adopted: dict[TopicPartition, PartitionSeal] = field(default_factory=dict)
    _hashing: _Hashing | None = field(default=None, repr=False)

    @property
    def vouched_count(self) -> int:
        """Records the seal vouched for so far, in the partitions whose seal was met."""
        if self.old is None:
            return 0
        return sum(s.count - len(s.refused) for w, s in self.old.partitions.items() if w in self.checked)

    def vouched(self, record: Record) -> bool:
        """Add `record` to its partition's digest; True when the seal vouches for its signature.
        SealBroken when the digest at the sealed offset is not the sealed one."""
        # once per record where records come one at a time (an audit); a batch goes to `vouch`
        if self._hashing is not None or self._work:
            self._hashed()
        where = (record.topic, record.partition)
        chain = self.chains.get(where)
        if chain is None:
            chain = self.chains[where] = Chain(self.old.partitions.get(where) if self.old else None)
        offset = record.offset
        value = record.value
        chain.update(_FRAME(offset, len(value)))
        chain.update(value)
        if chain.first < 0:
            chain.first = offset
        chain.last = offset
        chain.count += 1
        old = chain.old
        if old is None:
            return False
        if offset >= old.last:
            self._meet(where, chain, old)
        if offset in old.refused:
            chain.refused.add(offset)
            return False
        return True

    def vouch(self, records: Sequence[Record]) -> list[bool]:
        """`vouched` for a whole batch as a reader returned it (offset order within each partition):
        whether the seal vouches for each record, in order. Each partition's run of records goes
        into its digest as one buffer: a replay reads batches of thousands, and one hash call per
        run rather than two per record is most of what the seal cost a replay beyond the digest."""
        flags: list[bool] = []
        for where, group in groupby(records, _WHERE):
            run = list(group)
            chain = self.chains.get(where)
            if chain is None:
                chain = self.chains[where] = Chain(self.old.partitions.get(where) if self.old else None)
            if chain.first < 0:
                chain.first = run[0].offset
            old = chain.old
            if old is None or run[-1].offset < old.last:
                self._chain(chain, run)
                flags += self._vouched_run(chain, run, old)
                continue
            # the run reaches the sealed last offset: the digest up to it must be the sealed one
            meet = next(i for i, record in enumerate(run) if record.offset >= old.last)
            head, tail = run[:meet + 1], run[meet + 1:]
            self._chain(chain, head)
            flags += self._vouched_run(chain, head, old)
            self._hashed()
            self._meet(where, chain, old)
            if tail:
                self._chain(chain, tail)
                flags += [False] * len(tail)
        self._hash_behind()
        return flags

    def _chain(self, chain: Chain, run: list[Record]) -> None:
        # every record read goes into the digest, vouched for or not
        self._work.append((chain.update, _framed(run)))
        chain.last = run[-1].offset
        chain.count += len(run)

    def _hash_behind(self) -> None:
        """Hash what is to hash on a thread, once the batch before it is hashed (in order)."""
        self._wait_hashing()
        if self._work:
            self._hashing = _Hashing(self._work)
            self._work = []

    def _hashed(self) -> None:
        """Every digest up to date: the batch on the thread hashed, and what is left hashed here."""
        self._wait_hashing()
        work, self._work = self._work, []
        for update, data in work:
            update(data)

    def _wait_hashing(self) -> None:
        hashing, self._hashing = self._hashing, None
        if hashing is not None:
            hashing.join()

    def _vouched_run(self, chain: Chain, run: list[Record], old: PartitionSeal | None) -> list[bool]:
        if old is None:
            return [False] * len(run)
        flags = [True] * len(run)
        if old.refused:  # verified again in full, and left out of the next seal's vouching
            for i, record in enumerate(run):
                if record.offset in old.refused:
                    chain.refused.add(record.offset)
                    flags[i] = False
        return flags

    def _meet(self, where: TopicPartition, chain: Chain, old: PartitionSeal) -> None:
        """The first record at or past the sealed last offset: the digest must be the sealed one."""
        chain.old = None
        if chain.last > old.last:  # the sealed last record is gone: the seal's range changed
            raise SealBroken(where, old.first, old.last, f"no record at the sealed offset {old.last} "
                                                         f"(the next one read is at {chain.last})")
        if chain.count != old.count or chain.hash.hexdigest() != old.digest:
            raise SealBroken(where, old.first, old.last,
                             f"{chain.count} records hashing to {chain.hash.hexdigest()[:16]}…, the "
                             f"seal covers {old.count} hashing to {old.digest[:16]}…")
        self.checked.add(where)

    def adopt(self, sealed: Mapping[TopicPartition, PartitionSeal],
              checked: Iterable[TopicPartition]) -> None:
        """Take in what a reading of other partitions in another process sealed (`sealed`) and found
        equal to this seal (`checked`): the next seal covers them as if they were read here."""
        self.adopted.update(sealed)
        self.checked.update(checked)

    def refuse(self, record: Record) -> None:
        """`record` did not verify: the next seal does not vouch for it."""
        self.chains[(record.topic, record.partition)].refused.add(record.offset)

    def finish(self) -> None:
        """SealBroken when a sealed partition that was read ended before its sealed offset (its
        last records removed; one emptied whole is refused when the seal is loaded)."""
        self._hashed()
        if self.old is None:
            return
        for where, chain in self.chains.items():
            if chain.old is not None:
                old = chain.old
                raise SealBroken(where, old.first, old.last, f"the partition ends at offset {chain.last}")

    def seal(self, log_identity: str) -> Seal:
        """The seal of everything read, for a reading that verified (or refused) every record; the
        old seal's partitions of topics this reading left alone stay as they were."""
        self._hashed()
        partitions = dict(self.old.partitions) if self.old is not None else {}
        partitions.update(self.adopted)
        partitions.update((w, c.sealed()) for w, c in self.chains.items() if c.count)
        return Seal(log_identity, dict(sorted(partitions.items())), now_ms())


class _Hashing:
    """One batch's digest updates, in order, on a thread of its own."""

    def __init__(self, work: list[tuple[Callable[[bytes], object], bytes]]) -> None:
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(work,), name="seal-digest", daemon=True)
        self._thread.start()

    def _run(self, work: list[tuple[Callable[[bytes], object], bytes]]) -> None:
        try:
            for update, data in work:
                update(data)
        except BaseException as exc:  # raised where the digest is read: a digest missing a batch
            self._failure = exc

    def join(self) -> None:
        """Wait for the batch; what it raised is raised here."""
        self._thread.join()
        if self._failure is not None:
            raise self._failure


def require_ring(codec: Codec) -> None:
    """A seal vouches for signatures verified: a reader without a key ring verifies none."""
    if codec.ring is None:
        raise ValueError("a verified seal needs a codec with the writers' key ring")


# -- the seal key and the seal file --------------------------------------------------------------
def _body(seal: Seal) -> bytes:
    return _CONTEXT + json.dumps({
        "format": FORMAT, "log": seal.log, "written_at_ms": seal.written_at_ms,
        "partitions": [[t, p, s.first, s.last, s.count, s.digest, sorted(s.refused)]
                       for (t, p), s in sorted(seal.partitions.items())],
    }, sort_keys=True, separators=(",", ":")).encode()


class UntrustedSeal(ValueError):
    """A seal file that cannot be used: signed by a key the seal ring does not hold, unreadable, of
    another log, or covering more than the log holds."""


class SealStore:
    """The seal of one log in a data directory, and the seal key that signs it."""

    def __init__(self, data_dir: Path, key_dir: Path, log_identity: str) -> None:
        # one file per log the data directory serves (an embedded log, namespaces on a broker)
        name = hashlib.sha256(log_identity.encode()).hexdigest()[:24]
        self.path = data_dir / SEALS_DIR / f"{name}.seal"
        self.key_dir = key_dir / SEAL_KEY_DIR
        self.log_identity = log_identity

    def save(self, sealing: Sealing) -> Seal:
        """Seal what `sealing` read, signed with the seal key (made the first time, 0600 in a 0700
        directory), written atomically and readable by the owner alone."""
        seal = sealing.seal(self.log_identity)
        key = signer(self.key_dir, SEAL_WRITER)
        private_directory(self.path.parent)
        # unique per writer: two readers may seal at once (the newer file simply wins)
        temporary = self.path.with_name(f".tmp-{self.path.name}-{os.getpid()}-{threading.get_ident()}")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "wb") as out:
            out.write(key.frame(_body(seal)))
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, self.path)
        return seal

    def load(self, log_: EventLog) -> Seal | None:
        """The seal if it can be trusted for this log; None when there is none; UntrustedSeal (with
        why) when it cannot be used, and the reader then verifies every signature."""
        tighten(self.path)
        try:
            framed = self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise UntrustedSeal(f"{self.path} is unreadable: {exc.strerror}") from None
        try:
            key_ring(self.key_dir).writer_of(framed)  # the ring holds the seal keys alone
        except ForgedEvent as exc:
            raise UntrustedSeal(f"{self.path} is not signed by this data directory's seal key: "
                                f"{exc}") from None
        body = unsigned(framed)
        try:
            if not body.startswith(_CONTEXT):
                raise ValueError("no seal header")
            data = json.loads(body[len(_CONTEXT):])
            partitions = {(str(t), int(p)): PartitionSeal(int(first), int(last), int(count), str(digest),
                                                          frozenset(int(o) for o in refused))
                          for t, p, first, last, count, digest, refused in data["partitions"]}
            seal = Seal(str(data["log"]), partitions, int(data["written_at_ms"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise UntrustedSeal(f"{self.path} is not a seal: {exc}") from None
        if data.get("format") != FORMAT or seal.log != self.log_identity:
            raise UntrustedSeal(f"{self.path} seals log {seal.log!r}, not {self.log_identity!r}")
        short = beyond_log({where: s.last + 1 for where, s in partitions.items()}, log_)
        if short is not None:
            raise UntrustedSeal(f"the log holds fewer records than the seal covers ({short}): records "
                                "were removed, or it is another log")
        return seal
