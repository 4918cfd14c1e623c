"""Which writer may write which event, and the codec each writer signs with (eventsvm.events.signing).

The table is derived, not listed: a service may write the topics its Service declares as outputs
(the registry), the API and `eventsvm seed` the topics a user's request writes, everyone the dead
letters; a compute host's spawner only events that name its own host (a move names both ends). So
an event type another change adds to a topic is covered at once, a new service by its registry entry.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from eventsvm.app.registry import SERVICES
from eventsvm.events.codec import Codec, default_codec
from eventsvm.events.model import TOPIC_OF, Event, EventType, Topic
from eventsvm.events.signing import KeyRing, Signer, key_ring, signer, signers

API = "api"
SEED = "seed"
SPAWNER_PREFIX = "spawner-"
KEY_DIR_NAME = "signing-keys"

# what a user's request appends through the API (and the seed, which is the first admin's request)
API_TOPICS: frozenset[Topic] = frozenset({
    Topic.REQUESTED, Topic.DELETE_REQUESTED, Topic.UPDATED, Topic.ACTION_REQUESTED,
    Topic.CATALOG, Topic.IDENTITY,
})
# a reader that cannot apply a record letters it, whoever that reader is
EVERYONE_TOPICS: frozenset[Topic] = frozenset({Topic.DEAD_LETTER})


def key_dir(data_dir: Path) -> Path:
    """Where the writers' signing keys live: beside the Fernet keys, outside the log."""
    return data_dir / KEY_DIR_NAME


def spawner_writer(host: str) -> str:
    """The writer name of `host`'s spawner (its key signs only events about that host)."""
    return f"{SPAWNER_PREFIX}{host.lower()}"


@cache
def _service_topics() -> dict[str, frozenset[Topic]]:
    topics: dict[str, frozenset[Topic]] = {}
    for name, entry in SERVICES.items():
        service = entry.service("policy-probe")
        outputs = frozenset(service.outputs) | (frozenset({Topic.HOSTS}) if entry.per_host else frozenset())
        topics[name] = outputs
    return topics


# the body fields that name a compute host an event is about: its own, and a move's two ends
_HOST_FIELDS = ("host", "source_host", "dest_host")


def _hosts_of(event: Event) -> set[str]:
    body = event.body or {}
    hosts = {body[f] for f in _HOST_FIELDS if isinstance(body.get(f), str)}
    if event.type in (EventType.HOST_REGISTERED, EventType.HOST_UPDATED):
        hosts.add(str(body.get("name") or event.aggregate_id))
    return {h.lower() for h in hosts}


@cache
def _writable(writer: str) -> frozenset[Topic]:
    """The topics `writer` may write (cached: writers are few)."""
    if writer in (API, SEED):
        return API_TOPICS
    if writer.startswith(SPAWNER_PREFIX):
        return _service_topics()["spawner"]
    return _service_topics().get(writer, frozenset())


@cache
def _writable_types(kind: str) -> frozenset[EventType]:
    """The event types a writer of `kind` (its name; every spawner's is the prefix) may write: a
    replay asks once an event, and a set of types is one string hash where the topic is two more
    lookups (the type's topic, then the topic, an enum)."""
    topics = _writable(kind) | EVERYONE_TOPICS
    return frozenset(t for t in EventType if TOPIC_OF[t] in topics)


def may_write(writer: str, event: Event) -> str | None:
    """The write policy the key ring applies: None when `writer` may write `event`, else why not."""
    spawner = writer.startswith(SPAWNER_PREFIX)
    if event.type not in _writable_types(SPAWNER_PREFIX if spawner else writer):
        return f"may not write {event.type} (topic {event.topic})"
    if not spawner:
        return None
    host = writer[len(SPAWNER_PREFIX):]
    body = event.body
    if body:  # most often the event names the spawner's own host: the rule below allows it
        for name in _HOST_FIELDS:
            value = body.get(name)
            if type(value) is str and value.lower() == host:
                return None
    if event.topic in EVERYONE_TOPICS:
        return None
    named = _hosts_of(event)
    # a spawned guest names one host, its own; a move step hands over to the other end's host
    if named and host not in named:
        return f"is the spawner of {host}, not of {', '.join(sorted(named))}"
    return None


def pool_codec(data_dir: Path, hosts: list[str], base: Codec | None = None,
               ring: KeyRing | None = None) -> Codec:
    """A codec for one process serving the spawners of `hosts`: each event is signed by the
    spawner of a host it names (its own, a move's end, a registration's) that the process serves,
    so every host's events carry that host's key as if its spawner ran alone; an event naming no
    host (a dead letter, a snapshot's image) by the first host's. Its keys are read at once: a
    codec per host lists the key directory once a host."""
    if not hosts:
        raise ValueError("a pool serves at least one host")
    if len(hosts) == 1:
        return writer_codec(data_dir, spawner_writer(hosts[0]), base, ring)
    keys = signers(key_dir(data_dir), [spawner_writer(h) for h in hosts])
    by_host = {host[len(SPAWNER_PREFIX):]: key for host, key in keys.items()}
    first = keys[spawner_writer(hosts[0])]

    def signer_of(event: Event) -> Signer:
        for named in _hosts_of(event):
            key = by_host.get(named)
            if key is not None:
                return key
        return first

    return (base or Codec()).keyed_per_event(signer_of, ring or writer_ring(data_dir))


def writer_ring(data_dir: Path) -> KeyRing:
    """Every writer's public keys under `data_dir`, with the write policy."""
    return key_ring(key_dir(data_dir), may_write)


def trusting_codec(data_dir: Path) -> Codec:
    """A codec for a reader that writes nothing (audit, replay, usage): it signs nothing and trusts
    only what the cloud's writers signed, as the folds do. It shares the process's compiled readers
    (default_codec): compiling every schema again costs a 100k-event replay ~4 %."""
    return default_codec().keyed(None, writer_ring(data_dir))


def writer_codec(data_dir: Path, writer: str, base: Codec | None = None,
                 ring: KeyRing | None = None) -> Codec:
    """A codec that signs as `writer` and trusts only what the ring vouches for. `ring` is shared
    by every writer of one process (it caches what it has verified); loaded after this writer's
    key exists, so a process trusts its own events."""
    own = signer(key_dir(data_dir), writer)
    return (base or Codec()).keyed(own, ring or writer_ring(data_dir))
