"""Unique names, decided by the log: each namespace of names has one partition, and the first claim
of a name on it wins.

Several API processes append to one log, so no process can decide alone that a name is free. Every
event that takes or frees a name in a namespace (a user's keypairs, flavors, a domain's projects or
users, and a project's or user's update, which may rename it, and its delete) goes to one partition
of its topic, the one the namespace's name maps to as a record key; there the log gives all claims
one order that every reader sees. The folds call `claim`, so a later
claim of a taken name changes nothing and is recorded as refused, and every reader (API process,
consumer, replay) reaches the same verdict.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import TypeVar

from eventsvm.events.model import Event, EventType

K = TypeVar("K")
V = TypeVar("V")


def keypairs_of(user_id: str) -> str:
    """The namespace of one user's keypair names (nova: unique per user)."""
    return f"nova.keypair:{user_id}"


# Image ids may be chosen by the caller (glance), so they are claimed like names.
IMAGES = "glance.image"

# Flavor ids and names are unique across the cloud, so one namespace holds both.
FLAVORS = "nova.flavor"


def projects_in(domain: str) -> str:
    """The namespace of the project names of one domain (keystone: unique per domain, any case of its id)."""
    return f"keystone.project:{domain.lower()}"


def users_in(domain: str) -> str:
    """The namespace of the user names of one domain."""
    return f"keystone.user:{domain.lower()}"


def namespace_of(event: Event) -> str | None:
    """The namespace of names `event` takes or frees, None for an event that names nothing unique.
    Every appender places such an event by this (the read model does), so no claim can miss it."""
    body = event.body
    kind = event.type
    if kind in (EventType.KEYPAIR_CREATED, EventType.KEYPAIR_DELETED):
        return keypairs_of(body["user_id"])
    if kind in (EventType.FLAVOR_CREATED, EventType.FLAVOR_DELETED):
        return FLAVORS
    if kind in (EventType.IMAGE_CREATED, EventType.IMAGE_UPDATED, EventType.IMAGE_CHANGED,
                EventType.IMAGE_DELETED):
        # one partition holds an image's whole life, so its fill, edits or delete are folded after
        # its create
        return IMAGES
    if kind in (EventType.PROJECT_CREATED, EventType.PROJECT_UPDATED, EventType.PROJECT_DELETED):
        return projects_in(body.get("domain_id") or "default")
    if kind in (EventType.USER_CREATED, EventType.USER_DELETED):
        return users_in(body.get("domain_id") or "default")
    if kind == EventType.USER_UPDATED and body.get("domain_id"):
        # every update since v2 names the domain (a rename takes a name); v1 ones stayed on the user's key
        return users_in(body["domain_id"])
    return None


def rename(names: MutableMapping[K, V], old: K, new: K, holder: V, refused: set[str], event_id: str) -> bool:
    """Move `holder` from name `old` to `new` unless another holds `new` (then refused, as a claim).
    True when the rename won (or names nothing new)."""
    if new == old:
        return True
    if not claim(names, new, holder, refused, event_id):
        return False
    release(names, old, holder)
    return True


def release(names: MutableMapping[K, V], name: K, holder: V) -> None:
    """Free `name` if `holder` holds it (a delete), so a later create may claim it."""
    if names.get(name) == holder:
        del names[name]


def claim(names: MutableMapping[K, V], name: K, holder: V, refused: set[str], event_id: str) -> bool:
    """Give `name` to `holder` unless an earlier claim holds it; a refused claim's event id is kept
    in `refused` so the API that appended it can answer 409. True when the claim won."""
    if name in names:
        refused.add(event_id)
        return False
    names[name] = holder
    return True
