"""What the services keep per instance, kept small: issue 15 wants ≤ 2 KB per live instance in each
state, and nothing per instance once it is deleted and no input for it can still be in flight.

- `Shared`: one object per distinct value that many instances hold alike (a flavor, an image's
  properties, a network request), so a state keeps a reference instead of its own copy.
- `FrozenRecord`: a read-only dict (a port) as an object of its shape's class, a slot a value.
- `CompactRecord`: a request spec as two tuples (its shared key names, its values) instead of a dict.
- `remember_answer`: the ids of the inputs a service answered, per instance, as a small tuple.
- `Departures`: the instances deleted (or failed for good) with when, in log time, forgotten once
  no record of theirs can still be in flight (docs/decisions.md, "State memory per instance").
"""

from __future__ import annotations

import marshal
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any, ClassVar

# How long (log time, ms) a departed instance is remembered: past it, no input for it is still in
# flight (a redelivery comes within a step's retry, a build or a failure within moments).
FORGET_AFTER_MS = 3_600_000
# this process's setting of it (`--forget-departed-after-minutes`): every service of one process
# follows the same one, as they read the same log
_forget_after_ms = FORGET_AFTER_MS


def forget_departed_after(after_ms: int) -> None:
    """How long (log time, ms) this process's services remember a departed instance from now on."""
    global _forget_after_ms
    if after_ms < 0:
        raise ValueError("a departed instance cannot be forgotten before it departed")
    _forget_after_ms = after_ms


def departed_horizon_ms() -> int:
    """How long (log time, ms) this process's services remember a departed instance."""
    return _forget_after_ms


# values that are their own hashable form (checked by exact type first: a replay freezes a dozen
# values an event, most of them strings and numbers inside a flavor or a port)
_SCALARS = frozenset({str, int, float, bool, type(None)})


def frozen(value: Any) -> Hashable:
    """A hashable form of a JSON-like value: equal values give equal forms, a list and a tuple
    of the same items differ (a shared value must be what its holder was given)."""
    scalars = _SCALARS
    if type(value) in scalars:
        return value
    # a scalar item is taken as it is, without a call for it
    if isinstance(value, dict):
        return (dict, tuple([(k, v if type(v) in scalars else frozen(v)) for k, v in value.items()]))
    if isinstance(value, list):
        return (list, tuple([v if type(v) in scalars else frozen(v) for v in value]))
    if isinstance(value, tuple):
        return (tuple, tuple([v if type(v) in scalars else frozen(v) for v in value]))
    return value


class Shared:
    """One object per distinct value: `shared(value)` is the first value equal to it (with items of
    the same types: 1 is not True) that was shared, else `value` itself. The values handed out are
    shared by every holder, so none may change them. Bounded: past `limit` distinct values a new
    one is handed back as it is and not remembered, so a stream of values that never repeat
    cannot grow the table."""

    def __init__(self, limit: int = 16_384) -> None:
        self.limit = limit
        self._table: dict[Hashable, Any] = {}

    def __call__(self, value: Any) -> Any:
        if type(value) is str:  # the most common value, its own key
            key: Hashable = value
        elif value is None or isinstance(value, (bool, int, float)):
            return value
        else:
            # the value's marshal bytes: written in C, two to three times faster than frozen() (a
            # replay shares a flavor, a claim, networks for every server); version 0 writes no
            # back-references and no interning marks, so equal values of equal types give equal bytes
            try:
                key = marshal.dumps(value, 0)
            except ValueError:  # a type marshal cannot write (an enum member, a record)
                key = frozen(value)
        known = self._table.get(key)
        if known is not None:
            return known
        if len(self._table) < self.limit:
            self._table[key] = value
        return value

    def __len__(self) -> int:
        return len(self._table)


# the values every state of one process shares: flavors, image properties, network requests, host
# and project ids repeat across instances and services
SHARED = Shared()


# what many ports repeat: their network, subnet, CIDR and gateway
_SHARED_PORT_FIELDS = ("network_id", "subnet_id", "cidr", "gateway_ip")


def shared_ports(ports: list[dict[str, Any]], shared: Shared = SHARED) -> list[dict[str, Any]]:
    """Copies of `ports` holding the values many ports repeat shared: each event read from the log
    brings its own copy of every string, ~290 bytes a port of what its network already holds."""
    kept = []
    for port in ports:
        port = dict(port)
        for key in _SHARED_PORT_FIELDS:
            if key in port:
                port[key] = shared(port[key])
        kept.append(port)
    return kept


class FrozenRecord(Mapping[str, Any]):
    """A read-only dict (a port) kept as an object of a class made for its shape (its key names,
    in order): the names live in the class, shared by every record of the shape, and each value in
    a slot of its own. ~90 bytes for a port, where a dict of its own takes 270 and the names beside
    a tuple of the values 140 (two objects). `frozen_record` makes one."""

    __slots__ = ()
    _keys: ClassVar[tuple[str, ...]] = ()
    _slot_of: ClassVar[dict[str, str]] = {}
    _values_of: ClassVar[Callable[[FrozenRecord], tuple[Any, ...]]] = staticmethod(lambda _: ())

    def values_tuple(self) -> tuple[Any, ...]:
        """The values, in the order of the keys."""
        return type(self)._values_of(self)

    def __eq__(self, other: object) -> bool:
        # a dict of the same keys in the same order (a port as an event carries it) compares as
        # two tuples; anything else as a mapping
        keys = self._keys
        if isinstance(other, dict) and len(other) == len(keys) and tuple(other) == keys:
            return tuple(other.values()) == type(self)._values_of(self)
        if isinstance(other, FrozenRecord) and other._keys == keys:
            return type(other)._values_of(other) == type(self)._values_of(self)
        return super().__eq__(other)

    def __getitem__(self, key: str) -> Any:
        try:
            slot = self._slot_of[key]
        except KeyError:
            raise KeyError(key) from None
        return getattr(self, slot)

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def __repr__(self) -> str:
        return repr(dict(self))

    def __reduce__(self) -> tuple[Any, ...]:
        # the class of a shape is made at run time: a snapshot stores the names and the values
        return frozen_record, (self._keys, type(self)._values_of(self))


def frozen_record(keys: tuple[str, ...], values: Iterable[Any]) -> FrozenRecord:
    """A FrozenRecord of `keys` holding `values`, in that order."""
    values = tuple(values)
    if len(values) != len(keys):
        raise ValueError(f"{len(values)} values for {len(keys)} keys")
    return _record_class(keys)(*values)  # type: ignore[call-arg]  # the shape's own __init__


# per shape (key names, in order): its class; a handful (one per schema version of a port)
_RECORD_CLASSES: dict[tuple[str, ...], type[FrozenRecord]] = {}


def _record_class(keys: tuple[str, ...]) -> type[FrozenRecord]:
    cls = _RECORD_CLASSES.get(keys)
    if cls is not None:
        return cls
    slots = tuple(f"v{i}" for i in range(len(keys)))  # the keys may be no identifiers (binding:host_id)
    if len(slots) > 1:
        values_of: Callable[[Any], tuple[Any, ...]] = attrgetter(*slots)
    elif slots:
        values_of = _one_value
    else:
        values_of = _no_values
    made = type("FrozenRecord", (FrozenRecord,), {
        "__slots__": slots, "__module__": __name__, "_keys": keys, "__init__": _slot_setter(slots),
        "_slot_of": dict(zip(keys, slots, strict=True)), "_values_of": staticmethod(values_of)})
    if len(_RECORD_CLASSES) < 256:  # bounded all the same: a shape past it gets a class of its own
        _RECORD_CLASSES[keys] = made
    return made


def _slot_setter(slots: tuple[str, ...]) -> Callable[..., None]:
    """An __init__ setting each of `slots` from the argument of its name, written out as the
    dataclasses and namedtuple modules write theirs: a replay makes a record per port, and a loop
    of setattr calls took three times as long. The names are ours (v0, v1 ...), never a key's."""
    assert all(slot.isidentifier() for slot in slots)
    body = "".join(f"    self.{slot} = {slot}\n" for slot in slots) or "    pass\n"
    namespace: dict[str, Any] = {}
    exec(f"def __init__(self, {', '.join(slots)}):\n{body}", {}, namespace)  # noqa: S102
    return namespace["__init__"]  # type: ignore[no-any-return]


def _one_value(record: Any) -> tuple[Any, ...]:
    return (record.v0,)


def _no_values(record: Any) -> tuple[Any, ...]:
    return ()


def frozen_ports(ports: Iterable[Mapping[str, Any]], shared: Shared = SHARED) -> tuple[FrozenRecord, ...]:
    """`shared_ports` as read-only records, for a state that never changes a port it holds."""
    kept = []
    for port in ports:
        keys = tuple(port)
        shape = _PORT_SHAPES.get(keys)
        if shape is None:
            shape = _port_shape(keys)
        keys, positions = shape
        values = list(port.values())
        for i in positions:
            values[i] = shared(values[i])
        kept.append(frozen_record(keys, values))
    return tuple(kept)


# per shape of port seen (its key names, in order): one tuple of them for all its ports, and where
# the fields to share are; a handful of shapes (one per schema version), bounded all the same
_PORT_SHAPES: dict[tuple[str, ...], tuple[tuple[str, ...], tuple[int, ...]]] = {}


def _port_shape(keys: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[int, ...]]:
    shape = keys, tuple(i for i, key in enumerate(keys) if key in _SHARED_PORT_FIELDS)
    if len(_PORT_SHAPES) < 64:
        _PORT_SHAPES[keys] = shape
    return shape


@dataclass(frozen=True, slots=True)
class CompactRecord:
    """A dict (a request spec) as its key names, shared by every record of the same shape, and its
    values, each shared when another record holds an equal one (a tuple of a dozen references
    instead of a dict and its own copies of the flavor, the networks, the metadata)."""

    keys: tuple[str, ...]
    values: tuple[Any, ...]

    @classmethod
    def of(cls, record: dict[str, Any], shared: Shared = SHARED) -> CompactRecord:
        return cls(shared(tuple(record)), tuple(shared(v) for v in record.values()))

    def as_dict(self) -> dict[str, Any]:
        """The record as a new dict; its values are shared: copy one before changing it."""
        return dict(zip(self.keys, self.values, strict=True))


def remember_answer(answered: dict[str, tuple[str, ...]], instance_id: str, cause_id: str) -> None:
    """Record that the input `cause_id` of `instance_id` was answered (once, in answer order)."""
    known = answered.get(instance_id, ())
    if cause_id not in known:
        answered[instance_id] = (*known, cause_id)


@dataclass
class LogClock:
    """The newest log time a state folded, and when (in log time) it next looks for what it may
    forget: a look goes through every entry, as the fold order is not the order in time (a
    rebuild reads partition after partition), so it is taken once per `1/60` of the horizon."""

    log_time_ms: int = 0
    next_sweep_ms: int = 0

    def saw(self, at_ms: int) -> None:
        """A record of log time `at_ms` was folded."""
        if at_ms > self.log_time_ms:
            self.log_time_ms = at_ms

    def sweep(self, after_ms: int) -> int | None:
        """The log time before which what went `after_ms` ago may be forgotten, when a look is due
        (else None)."""
        if self.log_time_ms < self.next_sweep_ms:
            return None
        self.next_sweep_ms = self.log_time_ms + max(after_ms // 60, 1)
        return self.log_time_ms - after_ms


@dataclass
class Departures:
    """The instances that are gone (deleted, or failed for good), each with when it went in log
    time, and the clock `forget` follows."""

    since: dict[str, int] = field(default_factory=dict)
    clock: LogClock = field(default_factory=LogClock)

    def __contains__(self, instance_id: object) -> bool:
        return instance_id in self.since

    def __iter__(self) -> Iterator[str]:
        return iter(self.since)

    def __len__(self) -> int:
        return len(self.since)

    def add(self, instance_id: str, at_ms: int) -> None:
        """`instance_id` went at `at_ms`; kept where it first went (a deletion folded twice does
        not make it recent again)."""
        self.since.setdefault(instance_id, at_ms)
        self.clock.saw(at_ms)

    def saw(self, at_ms: int) -> None:
        """A record of log time `at_ms` was folded."""
        self.clock.saw(at_ms)

    def forget(self, after_ms: int | None = None) -> list[str]:
        """Drop the instances gone `after_ms` (when None, the process's setting: an hour unless
        changed) before the newest log time folded; their ids. Only once every state topic is
        folded to its end (Service.settle): a record of the instance a rebuild reads late from
        another topic (its `authenticated` after its `deleted`) must still find it gone."""
        horizon = self.clock.sweep(_forget_after_ms if after_ms is None else after_ms)
        if horizon is None:
            return []
        forgotten = [instance_id for instance_id, at_ms in self.since.items() if at_ms <= horizon]
        for instance_id in forgotten:
            del self.since[instance_id]
        return forgotten
