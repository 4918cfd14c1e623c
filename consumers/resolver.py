"""resolver: glance, neutron and cinder's part of a build — image metadata, a port with a fixed IP
and MAC, and volumes — and the router of all work bound for a compute host.

Inputs: instance.scheduled, instance.delete-requested and instance.deleted. Output for a host goes
to the partition of the host's slot (`Output.route`), which only that host's spawner reads. A
delete of an instance that never reached a host completes here (nova's "local delete"); once any
instance is deleted, its volumes are detached here (available again, or deleted with it when its
block device mapping said delete_on_termination), as nova's _local_cleanup_bdm_volumes does.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from eventsvm.events.builders import deleted, placement_failed
from eventsvm.events.model import Event, EventType, Topic, new_event
from eventsvm.runtime.service import Output, Rejected, Service, StepContext
from eventsvm.scheduler.claims import claim_in
from eventsvm.state.catalog import CatalogState, evolve_catalog
from eventsvm.state.compact import SHARED, Departures, remember_answer
from eventsvm.state.ipam import IpAllocations, NoMoreAddresses
from eventsvm.state.server_moves import image_record, volume_backed_image
from eventsvm.state.volumes import (
    attachments_of,
    boot_device,
    detached_body,
    reconnected_volumes,
    server_attachments,
    unavailable_reason,
)
from eventsvm.virt.xml import domain_name_for


@dataclass
class ResolverState:
    """Catalog, host slots, address allocations, where each instance's work was routed, and the
    placements (scheduled events) resolved for each live instance."""

    catalog: CatalogState = field(default_factory=CatalogState)
    host_slots: dict[str, int] = field(default_factory=dict)
    ipam: IpAllocations = field(default_factory=IpAllocations)
    routed_to: dict[str, str] = field(default_factory=dict)
    deleting: set[str] = field(default_factory=set)
    gone: Departures = field(default_factory=Departures)
    # per live instance, the ids of the placements (scheduled events) resolved
    resolved: dict[str, tuple[str, ...]] = field(default_factory=dict)


def evolve(state: ResolverState, event: Event) -> ResolverState:
    """Fold catalog, hosts, allocations and deletions."""
    kind, body, instance_id = event.type, event.body, event.aggregate_id
    if kind.startswith("catalog."):
        evolve_catalog(state.catalog, event)
    elif kind == EventType.HOST_REGISTERED:
        state.host_slots[body["name"]] = body["slot"]
    elif kind == EventType.INSTANCE_RESOURCES_RESOLVED and instance_id not in state.gone:
        # a record the log holds twice, folded again later, must not route the instance back
        if event.causation_id not in state.resolved.get(instance_id, ()):
            state.ipam.record(instance_id, body["ports"])
            state.routed_to[instance_id] = SHARED(body["host"])
        if event.causation_id:
            remember_answer(state.resolved, instance_id, event.causation_id)
    elif kind == EventType.INSTANCE_DELETE_DISPATCHED:
        state.deleting.add(instance_id)
    elif kind == EventType.INSTANCE_DELETED or (kind == EventType.INSTANCE_FAILED and body["final"]):
        state.gone.add(instance_id, event.occurred_at)
        state.deleting.discard(instance_id)
        state.ipam.release(instance_id)
        state.routed_to.pop(instance_id, None)
        state.resolved.pop(instance_id, None)
    state.gone.saw(event.occurred_at)
    return state


def settle(state: ResolverState) -> ResolverState:
    """Forget the instances gone an hour (log time) ago: no placement or delete of theirs is
    still in flight (Service.settle: every state topic is folded to its end)."""
    state.gone.forget()
    return state


def decide(state: ResolverState, event: Event, ctx: StepContext) -> Sequence[Output]:
    """Resolve a scheduled instance's resources, or route a delete to where the instance is."""
    instance_id = event.aggregate_id
    if event.type == EventType.INSTANCE_DELETED:
        return _release_volumes(state, event)
    if instance_id in state.gone:
        return []
    if event.type == EventType.INSTANCE_SCHEDULED:
        # a placement already resolved (a record delivered twice) is not resolved again: that
        # would route the instance's work, and its delete, back to a host it has left
        if instance_id in state.deleting or event.event_id in state.resolved.get(instance_id, ()):
            return []
        return _resolve(state, event, ctx)
    if event.type == EventType.INSTANCE_DELETE_REQUESTED:
        if instance_id in state.deleting:
            return []
        host = state.routed_to.get(instance_id)
        if host is None:
            return [Output(deleted(event, None, "resolver"))]
        body = {"host": host, "domain_name": domain_name_for(instance_id)}
        return [
            Output(
                new_event(EventType.INSTANCE_DELETE_DISPATCHED, instance_id, body, cause=event),
                route=state.host_slots.get(host, 0),
            )
        ]
    return []


def _resolve(state: ResolverState, event: Event, ctx: StepContext) -> Sequence[Output]:
    body = event.body
    spec = body["spec"]
    attempt = body["attempt"]

    def refuse(reason: str, code: int = 400) -> Sequence[Output]:
        return [Output(placement_failed(event, "resolve", reason, spec=spec, code=code, host=body["host"],
                                        attempt=attempt))]

    if body["host"] not in state.host_slots:
        raise Rejected(f"scheduled onto {body['host']!r}, which no host.registered event names")
    if spec["image_id"]:
        image = state.catalog.images.get(spec["image_id"])
        if image is None:
            return refuse(f"Image {spec['image_id']} could not be found.")
        booted_image = image_record(image)
    else:
        # the API takes no imageRef only for a boot from a volume (boot_index 0): the root is the volume
        booted_image = volume_backed_image()
    if spec.get("unshelve"):
        # an unshelve connects what the server holds now, not what it booted with: volumes
        # attached since stay attached while it is offloaded, and one detached since is not its own
        volumes = reconnected_volumes(state.catalog.volumes, event.aggregate_id)
    else:
        try:
            volumes = _boot_volumes(state, event.aggregate_id, spec)
        except LookupError as exc:
            return refuse(str(exc))
    ports = state.ipam.ports_by_instance.get(event.aggregate_id)
    if ports is None:
        try:
            ports = _allocate_ports(state, event, spec, ctx)
        except (LookupError, NoMoreAddresses) as exc:
            return refuse(str(exc), code=409 if isinstance(exc, NoMoreAddresses) else 400)
    public_key = None
    if spec.get("key_name"):
        keypair = state.catalog.keypair(event.user_id or "", spec["key_name"])
        if keypair is None:
            return refuse(f"Invalid key_name provided: {spec['key_name']}")
        public_key = keypair["public_key"]
    resolved = {
        "spec": spec,
        "host": body["host"],
        "alternates": body["alternates"],
        "attempt": attempt,
        "image": booted_image,
        "ports": ports,
        "volumes": volumes,
        "public_key": public_key,
        "claim": claim_in(body).as_record(),
    }
    return [
        Output(
            new_event(EventType.INSTANCE_RESOURCES_RESOLVED, event.aggregate_id, resolved, cause=event),
            route=state.host_slots.get(body["host"], 0),
        )
    ]


def _boot_volumes(state: ResolverState, instance_id: str, spec: dict[str, Any]) -> list[dict[str, Any]]:
    """The volumes of a boot's block device mapping, each reserved for this server by the API."""
    volumes: list[dict[str, Any]] = []
    for index, bdm in enumerate(spec.get("block_devices") or []):
        if bdm.get("source_type") == "volume":
            volume = state.catalog.volumes.get(bdm.get("uuid") or "")
            if volume is None:
                raise LookupError(f"Volume {bdm.get('uuid')} could not be found.")
            if attachments_of(volume) and all(a["server_id"] != instance_id
                                              for a in attachments_of(volume).values()):
                # reserved for another server: the API's reservation lost, or was never made
                raise LookupError(f"Invalid volume: {unavailable_reason(volume)}")
            volumes.append(
                {"volume_id": volume["id"], "size_gb": volume["size_gb"], "device": boot_device(index)})
    return volumes


def _release_volumes(state: ResolverState, event: Event) -> Sequence[Output]:
    """End every attachment of a deleted instance: each volume is available again, or deleted."""
    return [
        Output(new_event(EventType.VOLUME_DETACHED, volume["id"],
                         detached_body(volume["id"], attachment, None, f"server {event.aggregate_id} deleted",
                                       delete_volume=attachment["delete_on_termination"]),
                         cause=event))
        for volume, attachment in server_attachments(state.catalog.volumes, event.aggregate_id)
    ]


def _allocate_ports(
    state: ResolverState, event: Event, spec: dict[str, Any], ctx: StepContext
) -> list[dict[str, Any]]:
    requests = spec.get("networks") or []
    if not requests:
        # nova with neutron: no network asked for and exactly one tenant network → use it
        tenant = [n for n in state.catalog.networks.values() if not n.get("external")]
        requests = [{"network_id": tenant[0]["id"]}] if len(tenant) == 1 else []
    ports: list[dict[str, Any]] = []
    taken: list[tuple[str, str]] = []
    try:
        for index, request in enumerate(requests):
            network_id = request.get("network_id")
            if not network_id or network_id not in state.catalog.networks:
                raise LookupError(f"Network {network_id} could not be found.")
            subnets = state.catalog.subnets_of(network_id)
            if not subnets:
                raise LookupError(f"Network {network_id} has no subnet to allocate a fixed IP from.")
            subnet = subnets[0]
            ip, mac = state.ipam.allocate(subnet, ctx.partition, ctx.partitions)
            # hold it while the next port of the same instance is allocated
            state.ipam.used.setdefault(subnet["id"], set()).add(ip)
            taken.append((subnet["id"], ip))
            ports.append(
                {
                    "port_id": _port_id(event.aggregate_id, index),
                    "network_id": network_id,
                    "subnet_id": subnet["id"],
                    "ip_address": ip,
                    "mac_address": mac,
                    "cidr": subnet["cidr"],
                    "gateway_ip": subnet.get("gateway_ip"),
                }
            )
    finally:
        for subnet_id, ip in taken:
            state.ipam.free(subnet_id, ip)
    return ports


def _port_id(instance_id: str, index: int) -> str:
    """A port id derived from the instance, so a replayed decision names the same port."""
    return str(uuid.uuid5(uuid.UUID(instance_id), f"port-{index}"))


SERVICE: Service[ResolverState] = Service(
    name="resolver",
    inputs=(Topic.SCHEDULED, Topic.DELETE_REQUESTED, Topic.DELETED),
    state_topics=(
        Topic.CATALOG,
        Topic.HOSTS,
        Topic.RESOURCES_RESOLVED,
        Topic.DELETE_DISPATCHED,
        Topic.DELETED,
        Topic.FAILED,
        Topic.ACTION_FAILED,
    ),
    # action-failed: an unshelve this resolver cannot carry out fails as the unshelve, not the server
    outputs=(Topic.RESOURCES_RESOLVED, Topic.DELETE_DISPATCHED, Topic.DELETED, Topic.FAILED, Topic.CATALOG,
             Topic.ACTION_FAILED),
    initial_state=ResolverState,
    evolve=evolve,
    decide=decide,
    description="image, port with fixed IP and MAC, volumes; routes host work",
    settle=settle,
)
