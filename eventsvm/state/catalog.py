"""The catalog fold: flavors (nova), images (glance), networks and subnets (neutron), volumes
(cinder), keypairs and server groups, each as it stands after the catalog topic's events.

Folds here update in place and return the same object: a replay folds hundreds of thousands of
events and copying state per event would dominate its cost.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from eventsvm.events.model import Event, EventType
from eventsvm.state.names import claim
from eventsvm.state.server_snapshot import QUEUED
from eventsvm.state.volumes import VOLUME_EVENT_TYPES, evolve_volume

Body = dict[str, Any]


@dataclass
class CatalogState:
    """Everything the catalog topic says exists, by id."""

    flavors: dict[str, Body] = field(default_factory=dict)
    images: dict[str, Body] = field(default_factory=dict)
    networks: dict[str, Body] = field(default_factory=dict)
    subnets: dict[str, Body] = field(default_factory=dict)
    volumes: dict[str, Body] = field(default_factory=dict)
    keypairs: dict[tuple[str, str], Body] = field(default_factory=dict)
    server_groups: dict[str, Body] = field(default_factory=dict)
    created_at: dict[str, int] = field(default_factory=dict)
    flavor_names: dict[str, str] = field(default_factory=dict)
    # networks deleted: a subnet's create keyed by its own id may sit on another partition than
    # its network's delete, so a replay can meet it after; it must not bring a subnet back
    deleted_networks: set[str] = field(default_factory=set)
    # event ids of creates that named a taken name or id (see eventsvm.state.names), and of volume
    # reservations and detaches the volume's state refused (see eventsvm.state.volumes)
    refused: set[str] = field(default_factory=set)

    def flavor_by_name_or_id(self, ref: str) -> Body | None:
        """A flavor by id, or by exact name as the clients pass either."""
        if ref in self.flavors:
            return self.flavors[ref]
        flavor_id = self.flavor_names.get(ref)
        return None if flavor_id is None else self.flavors.get(flavor_id)

    def subnets_of(self, network_id: str) -> list[Body]:
        """The subnets of a network, in creation order."""
        return [s for s in self.subnets.values() if s["network_id"] == network_id]

    def keypair(self, user_id: str, name: str) -> Body | None:
        """A user's keypair by name."""
        return self.keypairs.get((user_id, name))


# what catalog.image_changed may change, besides the properties
_IMAGE_FIELDS = frozenset({"name", "visibility", "min_disk", "min_ram", "protected", "tags"})
# what catalog.network_updated and catalog.subnet_updated may change (never an id or an owner)
NETWORK_FIELDS = frozenset({"name", "description", "admin_state_up", "mtu", "shared", "external"})
_SUBNET_FIELDS = frozenset({"name", "description", "gateway_ip", "enable_dhcp", "dns_nameservers",
                            "host_routes", "allocation_start", "allocation_end"})


def initial_catalog() -> CatalogState:
    """An empty catalog."""
    return CatalogState()


def evolve_catalog(state: CatalogState, event: Event) -> CatalogState:
    """Fold one event; events of other topics leave the catalog as it is. A create of a taken flavor
    id or name, image id, or keypair name of its user changes nothing and is recorded as refused."""
    body = event.body
    kind = event.type
    if kind == EventType.FLAVOR_CREATED:
        if body["id"] in state.flavors:
            state.refused.add(event.event_id)
            return state
        if not claim(state.flavor_names, body["name"], body["id"], state.refused, event.event_id):
            return state
        state.flavors[body["id"]] = body
    elif kind == EventType.FLAVOR_DELETED:
        flavor = state.flavors.pop(body["id"], None)
        if flavor is not None and state.flavor_names.get(flavor["name"]) == body["id"]:
            del state.flavor_names[flavor["name"]]
    elif kind == EventType.IMAGE_CREATED:
        if not claim(state.images, body["id"], body, state.refused, event.event_id):
            return state
        if "status" not in body:
            # written before images had a status (schema v1), or by a writer that leaves the default:
            # the decoder's default, so a live fold and a replay hold the same image
            state.images[body["id"]] = {**body, "status": "active"}
    elif kind == EventType.IMAGE_UPDATED:
        # an image's data stored (a snapshot's fill, glance's upload): only a queued image still
        # there takes it, as glance moves an image from queued to active once; a second fill (two
        # uploads at once through two API processes) or one after a delete is refused, and the
        # uploader learns it lost (eventsvm.api.image_data)
        image = state.images.get(body["id"])
        if image is None or image.get("status") != QUEUED:
            state.refused.add(event.event_id)
            return state
        # a field left None (a v1 fill, or a snapshot's with no checksums) is not set: a live fold
        # of a body without the v2 fields and its replay, which the decoder fills with None, agree
        filled = {k: v for k, v in body.items() if v is not None}
        state.images[body["id"]] = {**image, **filled, "updated_at": event.occurred_at}
        return state
    elif kind == EventType.IMAGE_CHANGED:
        image = state.images.get(body["id"])
        if image is None:
            state.refused.add(event.event_id)
            return state
        changed = {name: body[name] for name in body["changed"] if name in _IMAGE_FIELDS}
        if "properties" in body["changed"]:
            kept = {k: v for k, v in (image.get("properties") or {}).items() if k not in body["removed"]}
            changed["properties"] = {**kept, **body["set"]}
        # a new dict: the one held may be the create's body, which a reader of the event keeps
        state.images[body["id"]] = {**image, **changed, "updated_at": event.occurred_at}
        return state
    elif kind == EventType.IMAGE_DELETED:
        state.images.pop(body["id"], None)
        state.created_at.pop(body["id"], None)
        return state
    elif kind == EventType.NETWORK_CREATED:
        if body["id"] in state.deleted_networks:
            return state
        # what the schema's v2 added, as its decoder fills it in: a live fold of a body written
        # without them (the seed, a v1 writer) and a replay of it hold the same network
        state.networks[body["id"]] = {"description": "", "admin_state_up": True, **body}
    elif kind == EventType.SUBNET_CREATED:
        if body["network_id"] in state.deleted_networks:
            state.refused.add(event.event_id)
            return state
        state.subnets[body["id"]] = {"description": "", "host_routes": [], **body}
    elif kind in (EventType.NETWORK_UPDATED, EventType.SUBNET_UPDATED):
        # updates and deletes are keyed as their create, so they are folded after it
        held, fields = ((state.networks, NETWORK_FIELDS) if kind == EventType.NETWORK_UPDATED
                        else (state.subnets, _SUBNET_FIELDS))
        found = held.get(body["id"])
        if found is None:
            state.refused.add(event.event_id)
            return state
        # a new dict: the one held may be the create's body, which a reader of the event keeps
        held[body["id"]] = {**found, **{name: body[name] for name in body["changed"] if name in fields},
                            "updated_at": event.occurred_at, "revision": found.get("revision", 1) + 1}
        return state
    elif kind == EventType.NETWORK_DELETED:
        state.deleted_networks.add(body["id"])
        state.networks.pop(body["id"], None)
        state.created_at.pop(body["id"], None)
        for subnet in state.subnets_of(body["id"]):
            del state.subnets[subnet["id"]]
            state.created_at.pop(subnet["id"], None)
        return state
    elif kind == EventType.SUBNET_DELETED:
        state.subnets.pop(body["id"], None)
        state.created_at.pop(body["id"], None)
        return state
    elif kind == EventType.VOLUME_CREATED:
        # a copy: its status and attachments change with later events, the event's body must not;
        # the creator (cinder's user_id) is the event's actor
        state.volumes[body["id"]] = {**body, "user_id": event.user_id}
    elif kind in VOLUME_EVENT_TYPES:
        evolve_volume(state.volumes, state.refused, event)
        return state
    elif kind == EventType.KEYPAIR_CREATED:
        if not claim(state.keypairs, (body["user_id"], body["name"]), body, state.refused, event.event_id):
            return state
    elif kind == EventType.KEYPAIR_DELETED:
        state.keypairs.pop((body["user_id"], body["name"]), None)
    elif kind == EventType.SERVER_GROUP_CREATED:
        state.server_groups[body["id"]] = {**body, "project_id": event.project_id, "user_id": event.user_id}
    elif kind == EventType.SERVER_GROUP_DELETED:
        state.server_groups.pop(body["id"], None)
        state.created_at.pop(body["id"], None)
        return state
    else:
        return state
    state.created_at.setdefault(event.aggregate_id, event.occurred_at)
    return state
