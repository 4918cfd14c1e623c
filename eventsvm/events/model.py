"""The event envelope, the catalogue of event types and the topics they live on.

Ids are plain strings and times are integer milliseconds on purpose: building uuid.UUID and
datetime objects costs more than the whole rest of a decode (shared/performance-notes.md).
"""

from __future__ import annotations

import hashlib
import time
import uuid
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Topic(StrEnum):
    """Every topic the system writes. Instance topics are keyed by instance UUID."""

    REQUESTED = "eventsvm.instance.requested"
    AUTHENTICATED = "eventsvm.instance.authenticated"
    SCHEDULED = "eventsvm.instance.scheduled"
    RESOURCES_RESOLVED = "eventsvm.instance.resources-resolved"
    SPAWNED = "eventsvm.instance.spawned"
    FAILED = "eventsvm.instance.failed"
    DELETE_REQUESTED = "eventsvm.instance.delete-requested"
    DELETE_DISPATCHED = "eventsvm.instance.delete-dispatched"
    DELETED = "eventsvm.instance.deleted"
    # what the owner changes on a live server through the API (name, access IPs, metadata)
    UPDATED = "eventsvm.instance.updated"
    # server actions after the boot (DESIGN §7): the command, routed to the host, and its outcome
    ACTION_REQUESTED = "eventsvm.instance.action-requested"
    ACTION_COMPLETED = "eventsvm.instance.action-completed"
    ACTION_FAILED = "eventsvm.instance.action-failed"
    HOSTS = "eventsvm.host.inventory"
    CATALOG = "eventsvm.catalog"
    IDENTITY = "eventsvm.identity"
    DEAD_LETTER = "eventsvm.dead-letter"
    BILLING = "eventsvm.billing.usage"


INSTANCE_TOPICS: tuple[Topic, ...] = (
    Topic.REQUESTED,
    Topic.AUTHENTICATED,
    Topic.SCHEDULED,
    Topic.RESOURCES_RESOLVED,
    Topic.SPAWNED,
    Topic.FAILED,
    Topic.DELETE_REQUESTED,
    Topic.DELETE_DISPATCHED,
    Topic.DELETED,
    Topic.UPDATED,
    Topic.ACTION_REQUESTED,
    Topic.ACTION_COMPLETED,
    Topic.ACTION_FAILED,
)

# Topics whose partition is chosen by compute host rather than by key, so that a spawner reads only
# its own host's work (see docs/decisions.md, "Routing work to a compute host").
HOST_ROUTED_TOPICS: tuple[Topic, ...] = (
    Topic.RESOURCES_RESOLVED, Topic.DELETE_DISPATCHED, Topic.ACTION_REQUESTED)


class EventType(StrEnum):
    """Every event type; each has one Avro schema under schemas/<type>/."""

    # the boot flow (DESIGN §1)
    INSTANCE_REQUESTED = "instance.requested"
    INSTANCE_AUTHENTICATED = "instance.authenticated"
    INSTANCE_SCHEDULED = "instance.scheduled"
    INSTANCE_RESOURCES_RESOLVED = "instance.resources_resolved"
    INSTANCE_SPAWNED = "instance.spawned"
    INSTANCE_FAILED = "instance.failed"
    INSTANCE_DELETE_REQUESTED = "instance.delete_requested"
    INSTANCE_DELETE_DISPATCHED = "instance.delete_dispatched"
    INSTANCE_DELETED = "instance.deleted"
    # edits of a server (PUT /servers/{id}, /servers/{id}/metadata): no saga, folded by the read side
    INSTANCE_UPDATED = "instance.updated"
    INSTANCE_METADATA_CHANGED = "instance.metadata_changed"
    INSTANCE_TAGS_CHANGED = "instance.tags_changed"
    # server actions (stop, start, reboot, pause, suspend, lock ...): command and outcome
    INSTANCE_ACTION_REQUESTED = "instance.action_requested"
    INSTANCE_ACTION_COMPLETED = "instance.action_completed"
    INSTANCE_ACTION_FAILED = "instance.action_failed"
    # os-volume_attachments: the host's part of an attach or a detach (the volume's state is on
    # the catalog, see eventsvm.state.volumes)
    INSTANCE_VOLUME_ATTACH_REQUESTED = "instance.volume_attach_requested"
    INSTANCE_VOLUME_DETACH_REQUESTED = "instance.volume_detach_requested"
    # moves of a server (resize, confirmResize, revertResize, rebuild): the command, each step, a failure
    INSTANCE_MOVE_REQUESTED = "instance.move_requested"
    INSTANCE_MOVE_STEP = "instance.move_step"
    INSTANCE_MOVE_FAILED = "instance.move_failed"
    # compute hosts
    HOST_REGISTERED = "host.registered"
    HOST_UPDATED = "host.updated"
    # catalog: flavors (nova), images (glance), networks (neutron), volumes (cinder), keypairs
    FLAVOR_CREATED = "catalog.flavor_created"
    FLAVOR_DELETED = "catalog.flavor_deleted"
    IMAGE_CREATED = "catalog.image_created"
    # an image's data stored (a server snapshot's fill by its host, glance's PUT .../file; v2 adds
    # the checksums), and glance's image delete
    IMAGE_UPDATED = "catalog.image_updated"
    IMAGE_DELETED = "catalog.image_deleted"
    # glance's PATCH of an image (name, visibility, minimums, protection, tags, properties) and its
    # tag calls
    IMAGE_CHANGED = "catalog.image_changed"
    NETWORK_CREATED = "catalog.network_created"
    SUBNET_CREATED = "catalog.subnet_created"
    # neutron's PUT and DELETE of networks and subnets (a network's delete takes its subnets)
    NETWORK_UPDATED = "catalog.network_updated"
    NETWORK_DELETED = "catalog.network_deleted"
    SUBNET_UPDATED = "catalog.subnet_updated"
    SUBNET_DELETED = "catalog.subnet_deleted"
    VOLUME_CREATED = "catalog.volume_created"
    KEYPAIR_CREATED = "catalog.keypair_created"
    KEYPAIR_DELETED = "catalog.keypair_deleted"
    SERVER_GROUP_CREATED = "catalog.server_group_created"
    SERVER_GROUP_DELETED = "catalog.server_group_deleted"
    # a volume's attachments (cinder's reserve, attach, begin_detaching, detach)
    VOLUME_RESERVED = "catalog.volume_reserved"
    VOLUME_ATTACHED = "catalog.volume_attached"
    VOLUME_DETACHING = "catalog.volume_detaching"
    VOLUME_DETACHED = "catalog.volume_detached"
    VOLUME_DELETED = "catalog.volume_deleted"
    # a volume's name, description or metadata changed (cinder's update and volume metadata calls)
    VOLUME_UPDATED = "catalog.volume_updated"
    # identity (keystone) and quota
    PROJECT_CREATED = "identity.project_created"
    USER_CREATED = "identity.user_created"
    USER_UPDATED = "identity.user_updated"
    ROLE_ASSIGNED = "identity.role_assigned"
    TOKEN_REVOKED = "identity.token_revoked"
    QUOTA_SET = "identity.quota_set"
    # keystone's PATCH / DELETE of projects and users, and role unassignment
    PROJECT_UPDATED = "identity.project_updated"
    PROJECT_DELETED = "identity.project_deleted"
    USER_DELETED = "identity.user_deleted"
    ROLE_UNASSIGNED = "identity.role_unassigned"
    # a record a service could not process, with the reason (never silently dropped)
    DEAD_LETTER_RECORDED = "deadletter.recorded"
    # the billing ledger, derived from spawned / deleted by the billing service
    USAGE_OPENED = "billing.usage_opened"
    USAGE_CLOSED = "billing.usage_closed"
    # a confirmed resize: billed at the new flavor from the confirmation on
    USAGE_RESIZED = "billing.usage_resized"


TOPIC_OF: dict[EventType, Topic] = {
    EventType.INSTANCE_REQUESTED: Topic.REQUESTED,
    EventType.INSTANCE_AUTHENTICATED: Topic.AUTHENTICATED,
    EventType.INSTANCE_SCHEDULED: Topic.SCHEDULED,
    EventType.INSTANCE_RESOURCES_RESOLVED: Topic.RESOURCES_RESOLVED,
    EventType.INSTANCE_SPAWNED: Topic.SPAWNED,
    EventType.INSTANCE_FAILED: Topic.FAILED,
    EventType.INSTANCE_DELETE_REQUESTED: Topic.DELETE_REQUESTED,
    EventType.INSTANCE_DELETE_DISPATCHED: Topic.DELETE_DISPATCHED,
    EventType.INSTANCE_DELETED: Topic.DELETED,
    EventType.INSTANCE_UPDATED: Topic.UPDATED,
    EventType.INSTANCE_METADATA_CHANGED: Topic.UPDATED,
    EventType.INSTANCE_TAGS_CHANGED: Topic.UPDATED,
    EventType.INSTANCE_ACTION_REQUESTED: Topic.ACTION_REQUESTED,
    EventType.INSTANCE_ACTION_COMPLETED: Topic.ACTION_COMPLETED,
    EventType.INSTANCE_ACTION_FAILED: Topic.ACTION_FAILED,
    EventType.INSTANCE_VOLUME_ATTACH_REQUESTED: Topic.ACTION_REQUESTED,
    EventType.INSTANCE_VOLUME_DETACH_REQUESTED: Topic.ACTION_REQUESTED,
    # every step of a move is routed to the host that takes the next one, so all ride the host-routed topic
    EventType.INSTANCE_MOVE_REQUESTED: Topic.ACTION_REQUESTED,
    EventType.INSTANCE_MOVE_STEP: Topic.ACTION_REQUESTED,
    EventType.INSTANCE_MOVE_FAILED: Topic.ACTION_REQUESTED,
    EventType.HOST_REGISTERED: Topic.HOSTS,
    EventType.HOST_UPDATED: Topic.HOSTS,
    EventType.DEAD_LETTER_RECORDED: Topic.DEAD_LETTER,
    EventType.USAGE_OPENED: Topic.BILLING,
    EventType.USAGE_CLOSED: Topic.BILLING,
    EventType.USAGE_RESIZED: Topic.BILLING,
}
for _t in EventType:
    if _t.value.startswith("catalog."):
        TOPIC_OF[_t] = Topic.CATALOG
    elif _t.value.startswith("identity."):
        TOPIC_OF[_t] = Topic.IDENTITY


def now_ms() -> int:
    """Wall-clock time in integer milliseconds, the unit of every event timestamp."""
    return time.time_ns() // 1_000_000


def new_id() -> str:
    """A fresh UUID4 as its canonical string."""
    return str(uuid.uuid4())


@dataclass(slots=True)
class Event:
    """One event: the common envelope (DESIGN §2) plus a type-specific body.

    `aggregate_id` is the instance UUID for instance events and the entity's id otherwise
    (host name, flavor id, user id ...). `sequence` is the aggregate version, starting at 1.
    `prev_hash` is the SHA-256 (hex) of the encoded bytes of the event this one follows within
    the same aggregate, which makes every aggregate a hash chain an auditor can verify.
    """

    type: EventType
    event_id: str
    aggregate_id: str
    sequence: int
    request_id: str
    causation_id: str | None
    user_id: str | None
    project_id: str | None
    occurred_at: int
    prev_hash: str | None
    body: dict[str, Any] = field(default_factory=dict)

    @property
    def topic(self) -> Topic:
        """The topic this event type is appended to."""
        return TOPIC_OF[self.type]


def new_event(
    type: EventType,
    aggregate_id: str,
    body: dict[str, Any],
    *,
    cause: Event | None = None,
    cause_hash: str | None = None,
    request_id: str | None = None,
    user_id: str | None = None,
    project_id: str | None = None,
    sequence: int | None = None,
    prev_hash: str | None = None,
    occurred_at: int | None = None,
) -> Event:
    """Build an event; when it answers `cause`, inherit request id, actor and chain position.

    `cause_hash` is the hash of the cause's encoded bytes (the runner knows it); it becomes this
    event's `prev_hash` when the cause belongs to the same aggregate.
    """
    if cause is not None:
        same_aggregate = cause.aggregate_id == aggregate_id
        return Event(
            type=type,
            event_id=new_id(),
            aggregate_id=aggregate_id,
            sequence=sequence if sequence is not None else (cause.sequence + 1 if same_aggregate else 1),
            request_id=request_id or cause.request_id,
            causation_id=cause.event_id,
            user_id=user_id if user_id is not None else cause.user_id,
            project_id=project_id if project_id is not None else cause.project_id,
            occurred_at=occurred_at if occurred_at is not None else now_ms(),
            prev_hash=prev_hash if prev_hash is not None else (cause_hash if same_aggregate else None),
            body=body,
        )
    return Event(
        type=type,
        event_id=new_id(),
        aggregate_id=aggregate_id,
        sequence=sequence if sequence is not None else 1,
        request_id=request_id or f"req-{new_id()}",
        causation_id=None,
        user_id=user_id,
        project_id=project_id,
        occurred_at=occurred_at if occurred_at is not None else now_ms(),
        prev_hash=prev_hash,
        body=body,
    )


def event_hash(encoded: bytes) -> str:
    """The chain hash of an event: SHA-256 over exactly the bytes stored in the log."""
    return hashlib.sha256(encoded).hexdigest()


def event_digest(encoded: bytes) -> bytes:
    """`event_hash` as its 32 raw bytes, for a state that keeps one per instance (half the size of
    the hex string)."""
    return hashlib.sha256(encoded).digest()
