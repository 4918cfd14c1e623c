"""The embedded engine of the EventLog port: one SQLite file in WAL mode, shared by processes.

Same semantics as Kafka (DESIGN §3): topics of partitions with dense offsets, consumer groups whose
members heartbeat into a table and split partitions deterministically, and read-process-write steps
that append outputs and commit offsets in one SQLite transaction, fenced by partition ownership.
"""

from __future__ import annotations

import fcntl
import os
import re
import sqlite3
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from functools import lru_cache, partial
from pathlib import Path

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
from eventsvm.log.private_files import private_directory, private_file, tighten

_SCHEMA = """
CREATE TABLE IF NOT EXISTS topics (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE,
    partitions INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS heads (topic_id INTEGER, part INTEGER, next_offset INTEGER NOT NULL,
    PRIMARY KEY (topic_id, part)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS records (topic_id INTEGER, part INTEGER, off INTEGER, key BLOB,
    value BLOB NOT NULL, ts INTEGER NOT NULL, PRIMARY KEY (topic_id, part, off)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS groups (name TEXT PRIMARY KEY, generation INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS members (grp TEXT, name TEXT, incarnation TEXT NOT NULL, topics TEXT NOT NULL,
    manual INTEGER NOT NULL, heartbeat_ms INTEGER NOT NULL, PRIMARY KEY (grp, name)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS owners (grp TEXT, topic_id INTEGER, part INTEGER, member TEXT NOT NULL,
    incarnation TEXT NOT NULL, PRIMARY KEY (grp, topic_id, part)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS offsets (grp TEXT, topic_id INTEGER, part INTEGER, next_offset INTEGER NOT NULL,
    PRIMARY KEY (grp, topic_id, part)) WITHOUT ROWID;
"""
# Kafka's rule for topic names, so a name that works on one engine works on the other.
_LEGAL_TOPIC = re.compile(r"[A-Za-z0-9._-]{1,249}")
_BUSY_TIMEOUT_S = 10.0
_FIRST_PAUSE_S = 0.002
_MAX_PAUSE_S = 0.05
_MAX_ARMS = 400  # below SQLite's limit of 500 terms in one compound SELECT
_READER_MMAP_BYTES = 1 << 30  # address space, not memory: pages stay in the OS page cache

_Tp = tuple[int, int]  # (topic id, partition): how the engine names a partition internally


def _now_ms() -> int:
    return int(time.time() * 1000)


@lru_cache(maxsize=64)
def _fetch_sql(arms: int) -> str:
    # Each arm is one partition's next records in offset order; the outer LIMIT stops early.
    arm = ("SELECT * FROM (SELECT topic_id, part, off, key, value, ts FROM records"
           " WHERE topic_id = ? AND part = ? AND off >= ? ORDER BY off LIMIT ?)")
    return " UNION ALL ".join([arm] * arms) + " LIMIT ?"


_PARTITION_SQL = ("SELECT ?, part, off, key, value, ts FROM records"
                  " WHERE topic_id = ? AND part = ? AND off >= ? ORDER BY off LIMIT ?")
# Record._make without its length check, and without a Python frame per row: a row of
# _PARTITION_SQL holds a Record's six fields by construction.
_as_record: Callable[[tuple[object, ...]], Record] = partial(tuple.__new__, Record)


def _poll_until(fetch: Callable[[], list[Record]], timeout: float) -> list[Record]:
    """Call `fetch` until it returns records or `timeout` passes, sleeping in growing steps
    (SQLite has no cross-process notification, and a spinning poll would eat a core)."""
    deadline = time.monotonic() + max(timeout, 0.0)
    pause = _FIRST_PAUSE_S
    while True:
        records = fetch()
        left = deadline - time.monotonic()
        if records or left <= 0:
            return records
        time.sleep(min(pause, left))
        pause = min(pause * 2, _MAX_PAUSE_S)


class _Store:
    """The file, its namespace and the topic catalogue shared by the log, its readers and members."""

    def __init__(self, location: str, namespace: str, session_timeout_s: float) -> None:
        self.path = Path(location)
        self.namespace = namespace
        self.session_timeout_s = session_timeout_s
        self._topics: dict[str, tuple[int, int]] = {}
        self._names: dict[int, str] = {}
        self._private = False

    def _make_private(self) -> None:
        # created 0600 before SQLite opens it, so its -wal and -shm files get that mode too
        try:
            private_file(self.path)
            for suffix in ("-wal", "-shm"):
                tighten(self.path.with_name(self.path.name + suffix))
        except OSError as exc:
            raise LogUnavailable(f"cannot open the SQLite log {self.path}: {exc.strerror}") from None
        self._private = True

    def connect(self) -> sqlite3.Connection:
        """A new connection in autocommit mode; transactions are explicit and short."""
        parent = self.path.parent
        if not parent.is_dir():
            raise LogUnavailable(f"cannot open the SQLite log {self.path}: no directory {parent}")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise LogUnavailable(f"cannot open the SQLite log {self.path}: {parent} is not writable")
        if self.path.is_dir():
            raise LogUnavailable(f"cannot open the SQLite log {self.path}: it is a directory")
        if not self._private:
            self._make_private()
        try:
            conn = sqlite3.connect(self.path, timeout=_BUSY_TIMEOUT_S, isolation_level=None,
                                   check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")  # append promises durability, not just atomicity
            if not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'offsets'").fetchone():
                with self.write(conn):
                    for statement in _SCHEMA.split(";"):
                        conn.execute(statement)
        except sqlite3.Error as exc:
            raise LogUnavailable(f"cannot open the SQLite log {self.path}: {exc}") from None
        return conn

    def write(self, conn: sqlite3.Connection) -> AbstractContextManager[None]:
        """One write transaction, taken at once (BEGIN IMMEDIATE) so it never fails half-way on a lock."""
        return self._transaction(conn, "BEGIN IMMEDIATE")

    def read(self, conn: sqlite3.Connection) -> AbstractContextManager[None]:
        """One consistent snapshot for several reads (ending it by ROLLBACK or COMMIT is the same)."""
        return self._transaction(conn, "BEGIN")

    @contextmanager
    def _transaction(self, conn: sqlite3.Connection, begin: str) -> Iterator[None]:
        try:
            conn.execute(begin)
            try:
                yield
            except BaseException:
                # after some errors (a full disk) SQLite has rolled back already; a second
                # ROLLBACK would fail and hide the cause
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise LogUnavailable(f"the SQLite log {self.path} failed: {exc}") from None

    def data_version(self, conn: sqlite3.Connection) -> int:
        """SQLite's count of commits by other connections seen by `conn`: unchanged, nothing another
        connection wrote since can be new to it (an idle poll asks this, not every head)."""
        try:
            return int(conn.execute("PRAGMA data_version").fetchone()[0])
        except sqlite3.Error as exc:
            raise LogUnavailable(f"the SQLite log {self.path} failed: {exc}") from None

    def known_topic(self, logical: str) -> tuple[int, int] | None:
        """(id, partitions) of a topic this store has already looked up, else None."""
        return self._topics.get(self.namespace + logical)

    def topic(self, conn: sqlite3.Connection, logical: str) -> tuple[int, int]:
        """(id, partitions) of a topic; raises UnknownTopic. Topics never change once created."""
        name = self.namespace + logical
        found = self._topics.get(name)
        if found is None:
            row = conn.execute("SELECT id, partitions FROM topics WHERE name = ?", (name,)).fetchone()
            if row is None:
                raise UnknownTopic(f"topic {logical!r} does not exist")
            found = self._topics[name] = (row[0], row[1])
            self._names[row[0]] = logical
        return found

    def record(self, row: tuple[int, int, int, bytes | None, bytes, int]) -> Record:
        """A stored row as the port's Record (the topic id was resolved when the reader started)."""
        return Record(self._names[row[0]], row[1], row[2], row[3], row[4], row[5])

    def append(self, conn: sqlite3.Connection, records: Sequence[OutRecord]) -> list[tuple[int, int]]:
        """Append inside the caller's write transaction; every topic is checked before any write."""
        now = _now_ms()
        placed: list[tuple[int, int, OutRecord]] = []
        for record in records:
            topic_id, count = self.topic(conn, record.topic)
            part = record.partition if record.partition is not None else partition_for(record.key, count)
            if not 0 <= part < count:
                raise UnknownTopic(f"topic {record.topic!r} has no partition {part}")
            placed.append((topic_id, part, record))
        heads = self.heads(conn, {(topic_id, part) for topic_id, part, _ in placed})
        rows: list[tuple[int, int, int, bytes | None, bytes, int]] = []
        result: list[tuple[int, int]] = []
        for topic_id, part, record in placed:
            offset = heads[topic_id, part]
            heads[topic_id, part] = offset + 1
            ts = record.timestamp_ms if record.timestamp_ms is not None else now
            rows.append((topic_id, part, offset, record.key, record.value, ts))
            result.append((part, offset))
        conn.executemany("INSERT INTO records VALUES (?, ?, ?, ?, ?, ?)", rows)
        conn.executemany("UPDATE heads SET next_offset = ? WHERE topic_id = ? AND part = ?",
                         [(n, t, p) for (t, p), n in heads.items()])
        return result

    def fetch(self, conn: sqlite3.Connection, positions: dict[_Tp, int], order: list[_Tp],
              max_records: int) -> list[Record]:
        """Up to `max_records` records after `positions`, taking partitions in `order`; advances
        `positions` past what it returns."""
        found: list[Record] = []
        for start in range(0, len(order), _MAX_ARMS):
            chunk = order[start:start + _MAX_ARMS]
            want = max_records - len(found)
            params: list[int] = []
            for tp in chunk:
                params += [tp[0], tp[1], positions[tp], want]
            for row in conn.execute(_fetch_sql(len(chunk)), [*params, want]):
                found.append(self.record(row))
                positions[row[0], row[1]] = row[2] + 1
            if len(found) >= max_records:
                break
        return found

    def fetch_pending(self, conn: sqlite3.Connection, positions: dict[_Tp, int], ends: dict[_Tp, int],
                      order: list[_Tp], max_records: int) -> list[Record]:
        """`fetch` for a reader that read `ends` (heads) in the same transaction: one plain query per
        partition with records past its position, none for the others. A row comes as a Record's
        fields in order (the topic name is a parameter) and is not copied through a subquery:
        about a fifth cheaper per record than the compound SELECT, which a full replay notices."""
        found: list[Record] = []
        names = self._names  # filled when the reader resolved its partitions
        for tp in order:
            start = positions[tp]
            if start >= ends[tp]:
                continue
            want = max_records - len(found)
            rows = conn.execute(_PARTITION_SQL, (names[tp[0]], *tp, start, want)).fetchall()
            if rows:
                positions[tp] = rows[-1][2] + 1  # offsets may have gaps: after the last one read
                found += map(_as_record, rows)
                if len(found) >= max_records:
                    break
        return found

    def heads(self, conn: sqlite3.Connection, tps: Iterable[_Tp]) -> dict[_Tp, int]:
        """The next offset of each partition in `tps`."""
        wanted = set(tps)
        return {tp: n for tp, n in self.heads_of(conn, {t for t, _ in wanted}).items() if tp in wanted}

    def heads_of(self, conn: sqlite3.Connection, topic_ids: Iterable[int]) -> dict[_Tp, int]:
        """The next offset of every partition of the topics `topic_ids`."""
        ids = sorted(set(topic_ids))
        sql = f"SELECT topic_id, part, next_offset FROM heads WHERE topic_id IN ({','.join('?' * len(ids))})"
        return {(t, p): n for t, p, n in conn.execute(sql, ids)}

    def logical(self, tps: Iterable[_Tp]) -> set[TopicPartition]:
        """Internal partition names as the port's (topic, partition)."""
        return {(self._names[t], p) for t, p in tps}


@dataclass
class _Append:
    """One caller's append waiting for a group commit, and what came of it."""

    records: Sequence[OutRecord]
    positions: list[tuple[int, int]] | None = None
    error: BaseException | None = None
    done: bool = False


class SqliteLog(EventLog):
    """The EventLog in one SQLite file; several processes may open the same file at once.

    A group member that has not polled for `config.session_timeout_s` is taken for dead and its
    partitions move to the others.
    """

    def __init__(self, location: str, config: LogConfig) -> None:
        self.config = config
        self._store = _Store(location, config.namespace, config.session_timeout_s)
        self._default_partitions = config.partitions
        self._conn = self._store.connect()
        self._lock = threading.Lock()  # the log's own connection may be shared by threads
        self._queue_lock = threading.Lock()
        self._queue: list[_Append] = []  # appends waiting for the next group commit
        self._open: weakref.WeakSet[_SqliteReader | _SqliteMember] = weakref.WeakSet()

    def create_topics(self, topics: Iterable[str], partitions: int | None = None) -> None:
        """Create the topics that do not exist yet; existing ones keep their partition count."""
        count = partitions or self._default_partitions
        names = list(topics)
        for name in names:
            if not _LEGAL_TOPIC.fullmatch(self._store.namespace + name):
                raise UnknownTopic(f"{name!r} is not a legal topic name (letters, digits, '.', '_', '-')")
        with self._lock, self._store.write(self._conn):
            for name in names:
                cursor = self._conn.execute("INSERT OR IGNORE INTO topics (name, partitions) VALUES (?, ?)",
                                            (self._store.namespace + name, count))
                if cursor.rowcount:
                    self._conn.executemany("INSERT INTO heads VALUES (?, ?, 0)",
                                           [(cursor.lastrowid, p) for p in range(count)])

    def partitions(self, topic: str) -> int:
        """How many partitions `topic` has."""
        known = self._store.known_topic(topic)
        if known is not None:  # topics never change once created: no transaction (a POST asks)
            return known[1]
        with self._lock, self._store.read(self._conn):
            return self._store.topic(self._conn, topic)[1]

    def list_topics(self) -> list[str]:
        """Every topic within this log's namespace, by logical name, sorted."""
        prefix = self._store.namespace
        with self._lock, self._store.read(self._conn):
            rows = self._conn.execute("SELECT name FROM topics WHERE substr(name, 1, ?) = ? ORDER BY name",
                                      (len(prefix), prefix)).fetchall()
        return [name[len(prefix):] for (name,) in rows]

    def append(self, records: Sequence[OutRecord]) -> list[tuple[int, int]]:
        """Append all `records` in one transaction; (partition, offset) of each.

        Group commit: the appends of threads that arrive while one commits wait, and the next
        to take the connection commits them all in one transaction (each in a savepoint of its
        own, so one append's error is its own). Under load the API's threads queued here for a
        transaction each, a third of a create's time."""
        if not records:
            return []
        mine = _Append(records)
        with self._queue_lock:
            self._queue.append(mine)
        with self._lock:
            if not mine.done:
                with self._queue_lock:
                    batch, self._queue = self._queue, []
                self._commit_appends(batch)
        if mine.error is not None:
            raise mine.error
        assert mine.positions is not None
        return mine.positions

    def _commit_appends(self, batch: list[_Append]) -> None:
        try:
            with self._store.write(self._conn):
                if len(batch) == 1:
                    batch[0].positions = self._store.append(self._conn, batch[0].records)
                else:
                    for one in batch:
                        self._conn.execute("SAVEPOINT one_append")
                        try:
                            one.positions = self._store.append(self._conn, one.records)
                        except LogError as exc:  # what this append asked (an unknown topic), not the others'
                            self._conn.execute("ROLLBACK TO one_append")
                            one.error = exc
                        self._conn.execute("RELEASE one_append")
        except BaseException as exc:  # nothing of the batch was committed: each caller hears why
            for one in batch:
                one.positions, one.error = None, exc
        for one in batch:
            one.done = True

    def reader(self, topics: Iterable[str], start: StartAt = BEGINNING,
               partitions: Iterable[TopicPartition] | None = None) -> Reader:
        """A reader from BEGINNING, END or a timestamp (ms) over `topics` or just `partitions`."""
        reader = _SqliteReader(self._store, list(topics), start, partitions)
        self._open.add(reader)
        return reader

    def member(self, group: str, topics: Iterable[str], *, member_name: str,
               partitions: Iterable[TopicPartition] | None = None,
               on_assign: RebalanceCallback | None = None,
               on_revoke: RebalanceCallback | None = None) -> GroupMember:
        """Join `group`; a member with the same name that is still registered is fenced."""
        member = _SqliteMember(self._store, group, list(topics), member_name, partitions,
                               on_assign, on_revoke)
        self._open.add(member)
        return member

    def end_offsets(self, topic: str) -> dict[int, int]:
        """Per partition, the offset the next appended record will get."""
        with self._lock, self._store.read(self._conn):
            topic_id, _ = self._store.topic(self._conn, topic)
            rows = self._conn.execute("SELECT part, next_offset FROM heads WHERE topic_id = ?", (topic_id,))
            return dict(rows.fetchall())

    def ends(self, topics: Iterable[str]) -> dict[TopicPartition, int]:
        """`end_offsets` of several topics in one query."""
        with self._lock, self._store.read(self._conn):
            ids = [self._store.topic(self._conn, t)[0] for t in topics]
            return {(self._store._names[t], p): end
                    for (t, p), end in self._store.heads_of(self._conn, ids).items()}

    def committed(self, group: str, topic: str) -> dict[int, int]:
        """Per partition, the offset `group` committed on `topic`."""
        with self._lock, self._store.read(self._conn):
            topic_id, _ = self._store.topic(self._conn, topic)
            rows = self._conn.execute("SELECT part, next_offset FROM offsets WHERE grp = ? AND topic_id = ?",
                                      (self._store.namespace + group, topic_id))
            return dict(rows.fetchall())

    def hold_member_name(self, group: str, member_name: str) -> MemberNameHold:
        """An exclusive flock on a file named after the member, beside the log: every process on
        the log's machine sees it, and the kernel gives it up the moment its holder dies."""
        directory = private_directory(self._store.path.with_name(self._store.path.name + ".members"))
        return _FileHold(directory / _hold_file_name(self._store.namespace + group, member_name),
                         f"member {member_name!r} of group {group!r}")

    def close(self) -> None:
        """Close every reader and member this log opened (members leave their groups), then the file."""
        while self._open:
            self._open.pop().close()
        self._conn.close()


def _hold_file_name(group: str, member_name: str) -> str:
    # readable where the names are tame; any other byte is escaped, so no two names share a file
    return "".join(c if c.isalnum() or c in "-_." else f"%{ord(c):02x}" for c in f"{group}/{member_name}")


class _FileHold(MemberNameHold):
    """A member name held by an open file carrying an exclusive flock."""

    def __init__(self, path: Path, what: str) -> None:
        self._fd: int | None = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._fd)
            self._fd = None
            holder = path.read_text().strip() or "another process"
            raise MemberNameTaken(f"{what} is held by a live process ({holder}): two processes may not "
                                  "run under one member name; give this one another --member") from None
        os.ftruncate(self._fd, 0)
        os.write(self._fd, f"pid {os.getpid()}\n".encode())

    def release(self) -> None:
        """Close the file, which gives up its lock."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class _SqliteReader(Reader):
    """A replay over some partitions on its own connection; no group, no commits."""

    def __init__(self, store: _Store, topics: list[str], start: StartAt,
                 partitions: Iterable[TopicPartition] | None) -> None:
        self._store = store
        self._conn = store.connect()
        self._unchanged_since: int | None = None  # the data_version of the last fetch
        try:
            # A replay reads the whole file once: mapping it spares a read() call per page. Safe
            # while no process truncates the file under the mapping, and the log is never vacuumed.
            self._conn.execute(f"PRAGMA mmap_size={_READER_MMAP_BYTES}")
            with store.read(self._conn):
                self._open(topics, start, partitions)
        except BaseException:
            self._conn.close()
            raise

    def _open(self, topics: list[str], start: StartAt, partitions: Iterable[TopicPartition] | None) -> None:
        store = self._store
        if partitions is not None:
            self._order = []
            for topic, part in partitions:
                topic_id, count = store.topic(self._conn, topic)
                if not 0 <= part < count:
                    raise UnknownTopic(f"topic {topic!r} has no partition {part}")
                self._order.append((topic_id, part))
        else:
            self._order = [(tid, p) for tid, count in (store.topic(self._conn, t) for t in topics)
                           for p in range(count)]
        self._ends = store.heads(self._conn, self._order)
        self._positions = {tp: self._start(tp, start) for tp in self._order}

    def _start(self, tp: _Tp, start: StartAt) -> int:
        if start == BEGINNING:
            return 0
        if start == END:
            return self._ends[tp]
        if not isinstance(start, int):
            raise ValueError(f"start must be BEGINNING, END or a timestamp in ms, not {start!r}")
        row = self._conn.execute("SELECT MIN(off) FROM records WHERE topic_id = ? AND part = ? AND ts >= ?",
                                 (*tp, start)).fetchone()
        return self._ends[tp] if row[0] is None else int(row[0])

    def poll(self, max_records: int = 1000, timeout: float = 0.1) -> list[Record]:
        """Up to `max_records` records; an empty list when nothing arrived within `timeout` s."""
        def fetch() -> list[Record]:
            # This connection never writes: data_version unchanged since a fetch that left nothing
            # pending, nothing can be new. Read before the transaction, so a commit racing it is
            # read again next time.
            version = self._store.data_version(self._conn)
            if version == self._unchanged_since and self.at_end():
                return []
            with self._store.read(self._conn):
                self._ends = self._store.heads(self._conn, self._order)
                found = self._store.fetch_pending(self._conn, self._positions, self._ends, self._order,
                                                  max_records)
            self._unchanged_since = version
            return found
        return _poll_until(fetch, timeout)

    def at_end(self) -> bool:
        """True once every partition was read up to the end it had at the last poll."""
        return all(self._positions[tp] >= self._ends[tp] for tp in self._order)

    def positions(self) -> dict[TopicPartition, int]:
        """Per partition, the offset after the last record delivered."""
        names = self._store._names  # filled when the reader resolved its partitions
        return {(names[t], p): offset for (t, p), offset in self._positions.items()}

    def close(self) -> None:
        """Release the reader's connection."""
        self._conn.close()


class _SqliteMember(GroupMember):
    """A group member on its own connection. Its partitions are rows in `owners`; it claims a free
    one of its share, and gives one up only in its own poll (or when it is taken for dead), so a
    commit_step that still finds its rows there cannot race another owner."""

    def __init__(self, store: _Store, group: str, topics: list[str], name: str,
                 partitions: Iterable[TopicPartition] | None, on_assign: RebalanceCallback | None,
                 on_revoke: RebalanceCallback | None) -> None:
        self._store, self._name = store, name
        self._group = store.namespace + group
        self._topics = sorted(store.namespace + t for t in topics)
        self._incarnation = uuid.uuid4().hex
        self._on_assign, self._on_revoke = on_assign, on_revoke
        self._conn = store.connect()
        self._manual = None if partitions is None else {
            (store.topic(self._conn, t)[0], p) for t, p in partitions}
        self._owned: set[_Tp] = set()
        self._positions: dict[_Tp, int] = {}
        self._order: list[_Tp] = []
        self._generation = -1
        self._next_heartbeat = 0.0
        self._closed = False
        # (data_version, total_changes) when a fetch last found nothing; None: fetch next time
        self._quiet_at: tuple[int, int] | None = None
        with store.write(self._conn):
            # A member registered under this name is an older incarnation of this process role.
            self._conn.execute("DELETE FROM owners WHERE grp = ? AND member = ?", (self._group, name))
            self._register()

    def _register(self) -> None:
        self._conn.execute("INSERT OR REPLACE INTO members VALUES (?, ?, ?, ?, ?, ?)",
                           (self._group, self._name, self._incarnation, "\n".join(self._topics),
                            int(self._manual is not None), _now_ms()))
        self._bump()

    def _bump(self) -> None:
        self._conn.execute("INSERT INTO groups VALUES (?, 1) ON CONFLICT (name) DO UPDATE"
                           " SET generation = generation + 1", (self._group,))

    def _check_incarnation(self) -> bool:
        """False when this member was dropped for its silence (it registers again at its next poll);
        MemberDead when a newer incarnation replaced it (this member never takes its name back)."""
        row = self._conn.execute("SELECT incarnation FROM members WHERE grp = ? AND name = ?",
                                 (self._group, self._name)).fetchone()
        if row is not None and row[0] != self._incarnation:
            raise MemberDead(f"member {self._name!r} of group {self._group!r} was replaced by a newer one")
        return row is not None

    def _target(self) -> set[_Tp]:
        """This member's share: every live member computes the same split from the same tables."""
        subscribers: dict[str, list[str]] = {}
        live = "SELECT name, topics FROM members WHERE grp = ? AND manual = 0 ORDER BY name"
        for name, topics in self._conn.execute(live, (self._group,)):
            for topic in topics.split("\n"):
                subscribers.setdefault(topic, []).append(name)
        mine: set[_Tp] = set()
        index = 0
        for name in sorted(subscribers):
            try:
                topic_id, count = self._store.topic(self._conn, name[len(self._store.namespace):])
            except UnknownTopic:
                continue  # subscribed before it was created; it joins the split once it exists
            for part in range(count):
                if subscribers[name][index % len(subscribers[name])] == self._name:
                    mine.add((topic_id, part))
                index += 1
        return mine

    def _rebalance(self) -> None:
        """Heartbeat, drop dead members, claim free partitions of this member's share, and release
        (after on_revoke) the ones that now belong to another member."""
        cutoff = _now_ms() - int(self._store.session_timeout_s * 1000)
        with self._store.write(self._conn):
            dropped = not self._check_incarnation()
            if dropped:
                self._register()
            self._conn.execute("UPDATE members SET heartbeat_ms = ? WHERE grp = ? AND name = ?",
                               (_now_ms(), self._group, self._name))
            dead = [n for (n,) in self._conn.execute(
                "DELETE FROM members WHERE grp = ? AND manual = 0 AND heartbeat_ms < ? RETURNING name",
                (self._group, cutoff)).fetchall()]
            if dead:
                self._conn.executemany("DELETE FROM owners WHERE grp = ? AND member = ?",
                                       [(self._group, n) for n in dead])
                self._bump()
            if self._manual is not None:
                held, target = set(self._manual), set(self._manual)
            else:
                target = self._target()
                owners = {(t, p): (m, i) for t, p, m, i in self._conn.execute(
                    "SELECT topic_id, part, member, incarnation FROM owners WHERE grp = ?", (self._group,))}
                free = target - owners.keys()
                self._conn.executemany("INSERT INTO owners VALUES (?, ?, ?, ?, ?)",
                                       [(self._group, t, p, self._name, self._incarnation) for t, p in free])
                held = free | {tp for tp, who in owners.items() if who == (self._name, self._incarnation)}
            committed = self._committed_offsets()
            self._generation = self._read_generation()
        if dropped:  # others may have owned and advanced these partitions meanwhile
            revoked_before, self._owned, self._positions = self._owned, set(), {}
        else:
            revoked_before = set()
        revoked = revoked_before | (self._owned - (held & target))
        gained = (held & target) - self._owned
        if revoked and self._on_revoke:
            self._on_revoke(self._store.logical(revoked))
        if held - target:
            with self._store.write(self._conn):
                self._conn.executemany(
                    "DELETE FROM owners WHERE grp = ? AND topic_id = ? AND part = ? AND incarnation = ?",
                    [(self._group, t, p, self._incarnation) for t, p in held - target])
                self._bump()
        self._owned = held & target
        self._positions = {tp: self._positions.get(tp, committed.get(tp, 0)) for tp in self._owned}
        self._positions.update({tp: committed.get(tp, 0) for tp in gained})
        self._order = sorted(self._owned)
        self._next_heartbeat = time.monotonic() + self._store.session_timeout_s / 4
        if gained and self._on_assign:
            self._on_assign(self._store.logical(gained))

    def _read_generation(self) -> int:
        row = self._conn.execute("SELECT generation FROM groups WHERE name = ?", (self._group,)).fetchone()
        return 0 if row is None else int(row[0])

    def _committed_offsets(self) -> dict[_Tp, int]:
        sql = "SELECT topic_id, part, next_offset FROM offsets WHERE grp = ?"
        return {(t, p): n for t, p, n in self._conn.execute(sql, (self._group,))}

    def poll(self, max_records: int = 1000, timeout: float = 0.1) -> list[Record]:
        """Records of the owned partitions after the committed (or already returned) offsets."""
        def fetch() -> list[Record]:
            try:
                # Nothing committed by another connection (data_version) nor by this one (its
                # total_changes) since a fetch that found nothing: nothing can be new, and the
                # group is as it was. An idle member's poll is then this, not two queries.
                seen = (self._store.data_version(self._conn), self._conn.total_changes)
                heartbeat_due = time.monotonic() >= self._next_heartbeat
                if not heartbeat_due and seen == self._quiet_at:
                    return []
                due = heartbeat_due or self._read_generation() != self._generation
            except sqlite3.Error as exc:
                raise LogUnavailable(f"the SQLite log {self._store.path} failed: {exc}") from None
            if due:
                self._rebalance()
            found: list[Record] = []
            if self._order:
                # Rotate the starting partition so one busy partition cannot starve the others.
                self._order.append(self._order.pop(0))
                with self._store.read(self._conn):
                    found = self._store.fetch(self._conn, self._positions, self._order, max_records)
            # its own writes (a rebalance's) are all before the fetch: counted as of now
            self._quiet_at = None if found else (seen[0], self._conn.total_changes)
            return found
        return _poll_until(fetch, timeout)

    def assignment(self) -> set[TopicPartition]:
        """The partitions this member owns as of its last poll."""
        return self._store.logical(self._owned)

    def commit_step(self, outputs: Sequence[OutRecord], consumed: Sequence[Record]) -> None:
        """Append `outputs` and commit past `consumed` in one transaction, if this member still owns
        every consumed partition; otherwise raise Fenced and write nothing."""
        after: dict[_Tp, int] = {}
        for record in consumed:
            tp = (self._store.topic(self._conn, record.topic)[0], record.partition)
            after[tp] = max(after.get(tp, 0), record.offset + 1)
        with self._store.write(self._conn):
            if not self._check_incarnation():
                # As a Kafka member past max.poll.interval: its partitions moved, and its next
                # poll joins the group again, so it is Fenced, not MemberDead.
                raise Fenced(f"member {self._name!r} of group {self._group!r} was dropped for its silence; "
                             "its partitions moved")
            if self._manual is not None:
                owned = self._manual
            else:
                owned = {(t, p) for t, p in self._conn.execute(
                    "SELECT topic_id, part FROM owners WHERE grp = ? AND member = ? AND incarnation = ?",
                    (self._group, self._name, self._incarnation))}
            lost = after.keys() - owned
            if lost:
                raise Fenced(f"member {self._name!r} no longer owns {sorted(self._store.logical(lost))}")
            if outputs:
                self._store.append(self._conn, outputs)
            self._conn.executemany("INSERT OR REPLACE INTO offsets VALUES (?, ?, ?, ?)",
                                   [(self._group, t, p, n) for (t, p), n in after.items()])
            self._conn.execute("UPDATE members SET heartbeat_ms = ? WHERE grp = ? AND name = ?",
                               (_now_ms(), self._group, self._name))

    def rewind(self) -> None:
        """Go back to the committed offsets of the owned partitions."""
        committed = self._committed_offsets()
        self._positions = {tp: committed.get(tp, 0) for tp in self._owned}
        self._quiet_at = None  # what was read since the commit is to be read again

    def close(self) -> None:
        """Leave the group at once, so the remaining members take the partitions over."""
        if self._closed:
            return
        self._closed = True
        try:
            with self._store.write(self._conn):
                me = (self._group, self._name, self._incarnation)
                self._conn.execute("DELETE FROM owners WHERE grp = ? AND member = ? AND incarnation = ?", me)
                gone = self._conn.execute(
                    "DELETE FROM members WHERE grp = ? AND name = ? AND incarnation = ?", me)
                if gone.rowcount:
                    self._bump()
        finally:
            self._conn.close()
