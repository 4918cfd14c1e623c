"""Realistic events of every type, valid for the current schemas; used by tests and benchmarks.

Values look like a real cloud's: keystone hex ids, `req-` request ids, nova flavors, neutron ports
with fa:16:3e MACs, instances chained by sequence and prev_hash. Pass an `rng` for reproducible
events; the default generator is seeded, so one process always builds the same sequence.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from eventsvm.app.writers import may_write, spawner_writer, writer_codec
from eventsvm.config import LogConfig
from eventsvm.events.codec import Codec, decode, default_codec, encode
from eventsvm.events.model import Event, EventType, event_digest, event_hash
from eventsvm.log.factory import open_log
from eventsvm.log.port import EventLog, OutRecord
from eventsvm.projections.readmodel import Models, fold
from eventsvm.scheduler import HostState, SchedulingRequest

_RNG = random.Random(20241126)
BASE_MS = 1_732_600_000_000  # 2024-11-26, a fixed epoch keeps sizes realistic and stable

FLAVORS: list[dict[str, Any]] = [
    {"id": "1", "name": "m1.tiny", "vcpus": 1, "ram_mb": 512, "disk_gb": 1},
    {"id": "2", "name": "m1.small", "vcpus": 1, "ram_mb": 2048, "disk_gb": 20},
    {"id": "3", "name": "m1.medium", "vcpus": 2, "ram_mb": 4096, "disk_gb": 40},
    {"id": "4", "name": "m1.large", "vcpus": 4, "ram_mb": 8192, "disk_gb": 80,
     "extra_specs": {"hw:cpu_policy": "dedicated", "hw:mem_page_size": "large"}},
]
IMAGE: dict[str, Any] = {
    "id": "b7a4e2c1-3f5d-4e8a-9c6b-1d2e3f4a5b6c",
    "name": "cirros-0.6.2-x86_64-disk",
    "disk_format": "qcow2",
    "container_format": "bare",
    "size_bytes": 21430272,
    "properties": {"hw_disk_bus": "virtio", "hw_vif_model": "virtio", "os_distro": "cirros"},
    "location": "file:///var/lib/eventsvm/images/b7a4e2c1-3f5d-4e8a-9c6b-1d2e3f4a5b6c",
}
NETWORK_ID = "3c9d2f4e-6a1b-4c7d-8e9f-0a1b2c3d4e5f"
SUBNET_ID = "7e1f3a5b-9c2d-4e6f-8a0b-1c2d3e4f5a6b"
VOLUME_ID = "5b8e2a1c-4d3f-4e6a-9b7c-2d1e0f3a4b5c"
PUBLIC_KEY = (
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGq3xJ7Ykz0f9m2Tq8d1VbN4rLw6pE5sHc0aZyXuWvKt ops@bastion"
)
HOSTS = [f"compute-{i:02d}" for i in range(1, 17)]
# The event types of one instance's boot, in the order instance_chain builds them.
BOOT_FLOW = (
    EventType.INSTANCE_REQUESTED,
    EventType.INSTANCE_AUTHENTICATED,
    EventType.INSTANCE_SCHEDULED,
    EventType.INSTANCE_RESOURCES_RESOLVED,
    EventType.INSTANCE_SPAWNED,
)


def uid(rng: random.Random | None = None) -> str:
    """A UUID4 string drawn from `rng`."""
    return str(uuid.UUID(int=(rng or _RNG).getrandbits(128), version=4))


def hex_id(rng: random.Random | None = None) -> str:
    """A keystone-style id: 32 hex digits."""
    return uuid.UUID(int=(rng or _RNG).getrandbits(128), version=4).hex


def _flavor(index: int) -> dict[str, Any]:
    return {"ephemeral_gb": 0, "swap_mb": 0, "extra_specs": {}, **FLAVORS[index % len(FLAVORS)]}


def _event(
    type: EventType,
    aggregate_id: str,
    body: dict[str, Any],
    rng: random.Random,
    cause: Event | None = None,
    at: int | None = None,
    user_id: str | None = None,
    project_id: str | None = None,
) -> Event:
    """An event; when it answers `cause` it inherits request id, actor and chain position."""
    if cause is None:
        return Event(type, uid(rng), aggregate_id, 1, f"req-{uid(rng)}", None, user_id, project_id,
                     at or BASE_MS + rng.randrange(86_400_000), None, body)
    same = cause.aggregate_id == aggregate_id
    return Event(
        type, uid(rng), aggregate_id, cause.sequence + 1 if same else 1, cause.request_id, cause.event_id,
        cause.user_id, cause.project_id, at or cause.occurred_at + rng.randrange(5, 400),
        event_hash(encode(cause)) if same else None, body,
    )


def request_spec(name: str, flavor: dict[str, Any]) -> dict[str, Any]:
    """The RequestSpec carried from `authenticated` to `resources_resolved`."""
    return {
        "name": name,
        "flavor": flavor,
        "image_id": IMAGE["id"],
        "image_properties": dict(IMAGE["properties"]),
        "availability_zone": "nova",
        "server_group_id": None,
        "server_group_policy": None,
        "networks": [{"network_id": NETWORK_ID, "port_id": None, "fixed_ip": None}],
        "key_name": "ops-key",
        "block_devices": [],
        "metadata": {"role": "web", "owner": "team-a"},
    }


def plain_request(name: str, flavor_id: str, image_id: str, network_id: str, token_audit_id: str
                  ) -> dict[str, Any]:
    """The instance.requested body of a plain POST /servers by a member: one network, and no key,
    zone, server group, volume or metadata."""
    return {
        "name": name,
        "flavor_id": flavor_id,
        "image_id": image_id,
        "networks": [{"network_id": network_id, "port_id": None, "fixed_ip": None}],
        "key_name": None,
        "availability_zone": None,
        "server_group_id": None,
        "block_devices": [],
        "metadata": {},
        "roles": ["member"],
        "token_audit_id": token_audit_id,
    }


def requested_event(
    rng: random.Random | None = None, name: str | None = None, flavor_index: int = 1, **body: Any
) -> Event:
    """`POST /servers` accepted: the first event of a new instance."""
    rng = rng or _RNG
    flavor = _flavor(flavor_index)
    name = name or f"web-{rng.randrange(1000):03d}"
    fields: dict[str, Any] = {
        "name": name,
        "flavor_id": flavor["id"],
        "image_id": IMAGE["id"],
        "networks": [{"network_id": NETWORK_ID, "port_id": None, "fixed_ip": None}],
        "key_name": "ops-key",
        "availability_zone": "nova",
        "server_group_id": None,
        "block_devices": [],
        "metadata": {"role": "web", "owner": "team-a"},
        "roles": ["member", "reader"],
        "token_audit_id": f"{rng.getrandbits(128):032x}"[:22],
        "description": f"{name} for the storefront",
        "tags": ["web", "prod"],
        "access_ipv4": "203.0.113.81",
        "access_ipv6": None,
        "token_chain_audit_id": None,
        "reservation_id": "r-7kq2m9xa",
        "reservation_size": 1,
        "user_data": None,
        "launch_index": 0,
    }
    fields.update(body)
    return _event(EventType.INSTANCE_REQUESTED, uid(rng), fields, rng, user_id=hex_id(rng),
                  project_id=hex_id(rng))


def instance_chain(rng: random.Random | None = None, flavor_index: int = 1) -> list[Event]:
    """One instance through the boot flow: requested, authenticated, scheduled,
    resources_resolved, spawned, each answering (and hash-chained to) the one before."""
    rng = rng or _RNG
    requested = requested_event(rng, flavor_index=flavor_index)
    iid = requested.aggregate_id
    flavor = _flavor(flavor_index)
    spec = request_spec(requested.body["name"], flavor)
    host, *alternates = rng.sample(HOSTS, 3)
    authenticated = _event(EventType.INSTANCE_AUTHENTICATED, iid,
                           {"spec": spec, "roles": ["member", "reader"], "reservation_id": "r-7kq2m9xa",
                            "reservation_size": 1}, rng, requested)
    claim = {k: flavor[k] for k in ("vcpus", "ram_mb", "disk_gb")}
    # a placement's spec says whether it is an unshelve (scheduled v2, resources_resolved v3)
    placed = {**spec, "unshelve": False}
    scheduled = _event(EventType.INSTANCE_SCHEDULED, iid,
                       {"spec": placed, "host": host, "alternates": alternates, "attempt": 1, "claim": claim},
                       rng, authenticated)
    port = {
        "port_id": uid(rng),
        "network_id": NETWORK_ID,
        "subnet_id": SUBNET_ID,
        "ip_address": f"10.0.{rng.randrange(256)}.{rng.randrange(2, 255)}",
        "mac_address": "fa:16:3e:" + ":".join(f"{rng.randrange(256):02x}" for _ in range(3)),
        "cidr": "10.0.0.0/16",
        "gateway_ip": "10.0.0.1",
    }
    image = dict(IMAGE)
    resolved = _event(EventType.INSTANCE_RESOURCES_RESOLVED, iid,
                      {"spec": placed, "host": host, "alternates": alternates, "attempt": 1, "image": image,
                       "ports": [port], "volumes": [], "public_key": PUBLIC_KEY, "claim": claim},
                      rng, scheduled)
    spawned = _event(EventType.INSTANCE_SPAWNED, iid,
                     {"host": host, "domain_name": f"instance-{rng.randrange(1 << 24):08x}", "power_state": 1,
                      "launched_at": resolved.occurred_at + 900, "attempt": 1, "flavor": flavor,
                      "addresses": [port], "claim": claim}, rng, resolved)
    return [requested, authenticated, scheduled, resolved, spawned]


def deletion_chain(spawned: Event, rng: random.Random | None = None) -> list[Event]:
    """The deletion of the instance `spawned` booted: delete requested, dispatched to its host,
    deleted there, each answering (and hash-chained to) the one before."""
    rng = rng or _RNG
    host, iid = spawned.body["host"], spawned.aggregate_id
    requested = _event(EventType.INSTANCE_DELETE_REQUESTED, iid, {"host": host}, rng, spawned)
    dispatched = _event(EventType.INSTANCE_DELETE_DISPATCHED, iid,
                        {"host": host, "domain_name": spawned.body["domain_name"]}, rng, requested)
    deleted = _event(EventType.INSTANCE_DELETED, iid,
                     {"host": host, "terminated_at": dispatched.occurred_at + 50, "stage": "spawner"},
                     rng, dispatched)
    return [requested, dispatched, deleted]


def pipeline_events(n_instances: int, rng: random.Random | None = None) -> list[Event]:
    """`n_instances` instance chains (5 events each), instance after instance."""
    rng = rng or _RNG
    return [e for i in range(n_instances) for e in instance_chain(rng, flavor_index=i)]


def move_body(rng: random.Random, **changes: Any) -> dict[str, Any]:
    """The body of a move event (instance.move_requested / move_step / move_failed): a resize of
    m1.small to m1.medium from compute-1 to compute-2, as the API asks for it, with `changes`."""
    old, new = _flavor(1), _flavor(2)
    port = {"port_id": uid(rng), "network_id": NETWORK_ID, "subnet_id": SUBNET_ID, "ip_address": "10.0.3.17",
            "mac_address": "fa:16:3e:0a:0b:0c", "cidr": "10.0.0.0/16", "gateway_ip": "10.0.0.1"}
    body: dict[str, Any] = {
        "action": "resize", "step": "api_resize", "host": "compute-1", "source_host": "compute-1",
        "dest_host": None, "source_slot": 0, "dest_slot": None, "vm_state": "active",
        "task_state": "resize_prep",
        "power_state": None, "flavor": new, "old_flavor": old,
        "claim": {k: new[k] for k in ("vcpus", "ram_mb", "disk_gb")},
        "old_claim": {k: old[k] for k in ("vcpus", "ram_mb", "disk_gb")},
        "guest": {"name": "db-01", "image": dict(IMAGE), "ports": [port]}, "old_image": None,
        "availability_zone": None, "image_properties": dict(IMAGE["properties"]), "boot_from_volume": False,
        "name": None, "metadata": None, "access_ipv4": None, "access_ipv6": None, "reason": None,
        "code": None}
    return body | changes


def _bodies(rng: random.Random) -> dict[EventType, dict[str, Any]]:
    flavor = _flavor(2)
    spec = request_spec("db-01", flavor)
    host = rng.choice(HOSTS)
    return {
        EventType.INSTANCE_FAILED: {
            "stage": "scheduler", "reason": "No valid host was found. There are not enough hosts available.",
            "code": 500, "retryable": False, "final": True, "host": None, "attempt": 1, "details": None,
            "alternates": [], "spec": {**spec, "unshelve": False}, "reservation_id": None},
        EventType.INSTANCE_DELETE_REQUESTED: {"host": host},
        EventType.INSTANCE_DELETE_DISPATCHED: {"host": host, "domain_name": "instance-0000002a"},
        EventType.INSTANCE_DELETED: {"host": host, "terminated_at": BASE_MS + 3_600_000, "stage": "spawner"},
        EventType.INSTANCE_UPDATED: {"name": "db-01-renamed", "access_ipv4": "203.0.113.7",
                                     "access_ipv6": None, "description": "primary", "description_set": True},
        EventType.INSTANCE_TAGS_CHANGED: {"added": ["primary"], "removed": ["draining"], "replace": False},
        EventType.INSTANCE_METADATA_CHANGED: {"set": {"role": "primary", "tier": "db"},
                                              "removed": ["draining"], "replace": False},
        EventType.INSTANCE_ACTION_REQUESTED: {
            "action": "reboot", "host": host, "vm_state": "active", "task_state": "rebooting_hard",
            "reboot_type": "HARD", "locked_reason": None, "locked_by": None, "image_id": None},
        EventType.INSTANCE_ACTION_COMPLETED: {
            "action": "reboot", "host": host, "vm_state": "active", "power_state": 1,
            "detail": "the guest did not shut down within 120 s; rebooted hard"},
        EventType.INSTANCE_ACTION_FAILED: {
            "action": "pause", "host": host, "vm_state": "active", "power_state": 4,
            "reason": "pause of instance failed: domain is not running"},
        EventType.INSTANCE_MOVE_REQUESTED: {**move_body(rng), "description": None, "description_set": False},
        EventType.INSTANCE_MOVE_STEP: move_body(
            rng, step="conductor_migrate_server", host="compute-2", dest_host="compute-2", dest_slot=1,
            task_state="resize_migrating"),
        EventType.INSTANCE_MOVE_FAILED: move_body(
            rng, step="compute_prep_resize", host=None, dest_host="compute-2", dest_slot=1, task_state=None,
            reason="Insufficient compute resources: Free memory 1024 MB < requested 4096 MB.", code=500),
        EventType.HOST_REGISTERED: {
            "name": host, "slot": HOSTS.index(host), "vcpus": 32, "ram_mb": 131072, "disk_gb": 1000,
            "availability_zone": "nova", "enabled": True, "cpu_allocation_ratio": 4.0,
            "ram_allocation_ratio": 1.0, "disk_allocation_ratio": 1.0, "hypervisor_type": "test",
            "hypervisor_uri": "test:///default", "cpu_arch": "x86_64"},
        EventType.HOST_UPDATED: {"name": host, "enabled": False, "disabled_reason": "hardware maintenance"},
        EventType.FLAVOR_CREATED: {**flavor, "is_public": True},
        EventType.FLAVOR_DELETED: {"id": flavor["id"]},
        EventType.IMAGE_CREATED: {**IMAGE, "min_disk": 1, "min_ram": 128,
                                  "visibility": "public", "owner": hex_id(rng), "status": "active"},
        EventType.IMAGE_UPDATED: {"id": IMAGE["id"], "status": "active", "size_bytes": 21233664,
                                  "disk_format": "qcow2", "container_format": "bare",
                                  "location": "file:///var/lib/eventsvm/images/image.qcow2",
                                  "checksum": "443b7623e27ecf03dc9e01ee93f67afe", "os_hash_algo": "sha512",
                                  "os_hash_value": "6513f21e44aa3da349f248188a44bc304a3653a04122d8fb4535423c"
                                                   "8e1d14cd6a153f735bb0982e2161b5b5186106570c17a9e58b64dd39"
                                                   "390617cd5a350f78",
                                  "virtual_size": 117440512},
        EventType.IMAGE_DELETED: {"id": IMAGE["id"]},
        EventType.IMAGE_CHANGED: {"id": IMAGE["id"], "changed": ["name", "tags", "properties"],
                                  "name": "cirros-0.6", "visibility": "private", "min_disk": 0, "min_ram": 0,
                                  "protected": False, "tags": ["golden"], "set": {"os_distro": "cirros"},
                                  "removed": ["hw_qemu_guest_agent"]},
        EventType.NETWORK_CREATED: {"id": NETWORK_ID, "name": "private", "shared": False, "external": False,
                                    "owner": hex_id(rng), "mtu": 1450, "description": "the web tier",
                                    "admin_state_up": True},
        EventType.SUBNET_CREATED: {
            "id": SUBNET_ID, "network_id": NETWORK_ID, "name": "private-subnet", "cidr": "10.0.0.0/16",
            "gateway_ip": "10.0.0.1", "allocation_start": "10.0.0.2", "allocation_end": "10.0.255.254",
            "ip_version": 4, "enable_dhcp": True, "dns_nameservers": ["9.9.9.9", "1.1.1.1"],
            "description": "", "host_routes": [{"destination": "10.20.0.0/24", "nexthop": "10.0.0.254"}]},
        EventType.NETWORK_UPDATED: {"id": NETWORK_ID, "changed": ["name", "admin_state_up"], "name": "web",
                                    "description": "", "admin_state_up": False, "mtu": 1500,
                                    "shared": False, "external": False},
        EventType.NETWORK_DELETED: {"id": NETWORK_ID},
        EventType.SUBNET_UPDATED: {
            "id": SUBNET_ID, "changed": ["gateway_ip", "host_routes"], "name": "", "description": "",
            "gateway_ip": None, "enable_dhcp": True, "dns_nameservers": [],
            "host_routes": [{"destination": "10.30.0.0/24", "nexthop": "10.0.0.253"}],
            "allocation_start": "", "allocation_end": ""},
        EventType.SUBNET_DELETED: {"id": SUBNET_ID, "network_id": NETWORK_ID},
        EventType.VOLUME_CREATED: {"id": uid(rng), "name": "db-data", "size_gb": 100, "owner": hex_id(rng),
                                   "status": "available", "description": "orders",
                                   "metadata": {"tier": "gold"}},
        EventType.VOLUME_RESERVED: {"volume_id": VOLUME_ID, "attachment_id": uid(rng), "server_id": uid(rng),
                                    "device": "/dev/vdb", "delete_on_termination": False, "boot_index": None},
        EventType.VOLUME_ATTACHED: {"volume_id": VOLUME_ID, "attachment_id": uid(rng), "server_id": uid(rng),
                                    "host": host, "device": "/dev/vdb"},
        EventType.VOLUME_DETACHING: {"volume_id": VOLUME_ID, "attachment_id": uid(rng),
                                     "server_id": uid(rng)},
        EventType.VOLUME_DETACHED: {"volume_id": VOLUME_ID, "attachment_id": uid(rng), "server_id": uid(rng),
                                    "host": host, "reason": None, "delete_volume": False},
        EventType.VOLUME_DELETED: {"volume_id": VOLUME_ID},
        EventType.VOLUME_UPDATED: {"volume_id": VOLUME_ID, "name": "db-data-2",
                                   "description": "the orders db", "set": {"tier": "gold"},
                                   "removed": ["old"], "replace": False, "readonly": True, "bootable": True},
        EventType.INSTANCE_VOLUME_ATTACH_REQUESTED: {"host": host, "volume_id": VOLUME_ID,
                                                     "attachment_id": uid(rng), "device": "/dev/vdb",
                                                     "size_gb": 100},
        EventType.INSTANCE_VOLUME_DETACH_REQUESTED: {"host": host, "volume_id": VOLUME_ID,
                                                     "attachment_id": uid(rng), "device": "/dev/vdb"},
        EventType.KEYPAIR_CREATED: {"name": "ops-key", "user_id": hex_id(rng), "public_key": PUBLIC_KEY,
                                    "fingerprint": "SHA256:3vJ0mW5y0R5kzQ8p2Lk4nXc7aBd9eFg1hIj2kLm3nOp",
                                    "key_type": "ssh"},
        EventType.KEYPAIR_DELETED: {"name": "ops-key", "user_id": hex_id(rng)},
        EventType.SERVER_GROUP_CREATED: {"id": uid(rng), "name": "db-cluster", "policy": "anti-affinity"},
        EventType.SERVER_GROUP_DELETED: {"id": uid(rng)},
        EventType.PROJECT_CREATED: {"id": hex_id(rng), "name": "storefront", "domain_id": "default",
                                    "enabled": True, "description": "customer-facing shop"},
        EventType.USER_CREATED: {
            "id": hex_id(rng), "name": "alice", "domain_id": "default", "default_project_id": hex_id(rng),
            "enabled": True,
            # a salted hash of a random value, the only credential form the log may hold
            "password_hash": "$pbkdf2-sha256$29000$" + f"{rng.getrandbits(256):064x}"},
        EventType.USER_UPDATED: {"id": hex_id(rng), "enabled": False, "password_hash": None,
                                 "domain_id": "default", "name": "alice-renamed", "default_project_id": None},
        EventType.PROJECT_UPDATED: {"id": hex_id(rng), "domain_id": "default", "name": "storefront-eu",
                                    "enabled": None, "description": "the shop, in Europe"},
        EventType.PROJECT_DELETED: {"id": hex_id(rng), "domain_id": "default"},
        EventType.USER_DELETED: {"id": hex_id(rng), "domain_id": "default"},
        EventType.ROLE_UNASSIGNED: {"user_id": hex_id(rng), "project_id": hex_id(rng), "role": "member"},
        EventType.ROLE_ASSIGNED: {"user_id": hex_id(rng), "project_id": hex_id(rng), "role": "member"},
        EventType.TOKEN_REVOKED: {"audit_id": f"{rng.getrandbits(128):032x}"[:22],
                                  "expires_at": BASE_MS + 3_600_000},
        EventType.QUOTA_SET: {"project_id": hex_id(rng), "instances": 10, "cores": 20, "ram_mb": 51200,
                              "server_groups": 10, "server_group_members": 10},
        EventType.DEAD_LETTER_RECORDED: {
            "source_topic": "eventsvm.instance.scheduled", "source_partition": 2, "source_offset": 41873,
            "group": "resolver", "reason": "image b7a4e2c1 has no location", "error_type": "ImageNotFound",
            "key": uid(rng).encode(), "payload": bytes(rng.getrandbits(8) for _ in range(120))},
        EventType.USAGE_OPENED: {"host": "compute-3", "started_at": BASE_MS + 90_000,
                                 "flavor": {"id": "2", "name": "m1.small", "vcpus": 1, "ram_mb": 2048,
                                            "disk_gb": 20, "ephemeral_gb": 0, "swap_mb": 0}},
        EventType.USAGE_CLOSED: {"host": "compute-3", "ended_at": BASE_MS + 7_290_000},
        EventType.USAGE_RESIZED: {"host": "compute-4", "at": BASE_MS + 3_690_000,
                                  "flavor": {"id": "3", "name": "m1.medium", "vcpus": 2, "ram_mb": 4096,
                                             "disk_gb": 40, "ephemeral_gb": 0, "swap_mb": 0}},
    }


def sample_event(event_type: EventType, rng: random.Random | None = None) -> Event:
    """One realistic event of `event_type`, valid for its current schema."""
    rng = rng or _RNG
    if event_type in BOOT_FLOW:
        return instance_chain(rng)[BOOT_FLOW.index(event_type)]
    body = _bodies(rng)[event_type]
    aggregate = str(body.get("id") or body.get("volume_id") or body.get("name") or body.get("audit_id")
                    or body.get("project_id"))
    if event_type.value.startswith("instance."):
        aggregate = uid(rng)
    return _event(event_type, aggregate, body, rng, user_id=hex_id(rng), project_id=hex_id(rng))


def every_type_sample(rng: random.Random | None = None) -> list[Event]:
    """One sample event of every event type."""
    return [sample_event(t, rng) for t in EventType]


_WORDS = ("nova", "glance", "neutron", "cinder", "web", "db", "ceph", "az1", "gpu", "süd", "東京", "ünïcode")


def random_datum(schema: Any, names: dict[str, Any], rng: random.Random | None = None) -> Any:
    """A random value valid for a fastavro-parsed `schema` (logical types ignored), with the edges
    a codec must get right: non-ASCII and long strings, negative and 64-bit numbers, empty and
    multi-item arrays and maps, every union branch."""
    rng = rng or _RNG
    if isinstance(schema, list):
        return random_datum(rng.choice(schema), names, rng)
    if isinstance(schema, str) and schema in names:
        return random_datum(names[schema], names, rng)
    kind = schema if isinstance(schema, str) else schema["type"]
    if isinstance(kind, (dict, list)):
        return random_datum(kind, names, rng)
    if kind == "null":
        return None
    if kind == "boolean":
        return rng.random() < 0.5
    if kind == "int":
        return rng.choice([0, 1, 63, 64, -1, -65, 2048, 2**31 - 1, -(2**31), rng.randrange(-(2**31), 2**31)])
    if kind == "long":
        return rng.choice([0, 5, BASE_MS + rng.randrange(10**9), 2**63 - 1, -(2**63), -rng.randrange(2**40)])
    if kind in ("float", "double"):
        return rng.choice([0.0, 1.0, 4.0, -1.5, 16.25, 1e10 if kind == "double" else 0.5])
    if kind == "string":
        return rng.choice([
            "", uid(rng), hex_id(rng), f"req-{uid(rng)}", " ".join(rng.choices(_WORDS, k=rng.randrange(40))),
        ])
    if kind in ("bytes", "fixed"):
        size = schema["size"] if kind == "fixed" else rng.choice([0, 5, 70, 300])
        return bytes(rng.getrandbits(8) for _ in range(size))
    if kind == "enum":
        return rng.choice(schema["symbols"])
    if kind == "array":
        return [random_datum(schema["items"], names, rng) for _ in range(rng.choice([0, 1, 2, 3, 70]))]
    if kind == "map":
        count = rng.choice([0, 1, 3])
        return {f"{rng.choice(_WORDS)}:{i}": random_datum(schema["values"], names, rng) for i in range(count)}
    if kind in ("record", "error"):
        return {f["name"]: random_datum(f["type"], names, rng) for f in schema["fields"]}
    raise ValueError(f"no generator for Avro type {kind!r}")


def event_records(events: list[Event], stored_at: int | None = None) -> list[OutRecord]:
    """`events` as the records the API and the services append: on the event's topic, keyed by its
    aggregate, encoded with the current schema (stored at `stored_at` ms, or now)."""
    return [OutRecord(str(e.topic), e.aggregate_id.encode(), encode(e), timestamp_ms=stored_at)
            for e in events]


# the writers a signed test log's events come from, first match wins; else the host's spawner
_WRITERS = ("api", "authenticator", "scheduler", "resolver", "billing")


def writer_of(event: Event) -> str:
    """The cloud's writer that may write `event` (eventsvm.app.writers' policy)."""
    for writer in _WRITERS:
        if may_write(writer, event) is None:
            return writer
    return spawner_writer(str(event.body.get("host") or event.body.get("name") or event.aggregate_id))


def signed_records(data_dir: Path, events: list[Event], stored_at: int | None = None) -> list[OutRecord]:
    """`events` as `event_records` makes them, but each signed by the writer that may write it, with
    keys under `data_dir`, and chained to its cause's signed bytes (what the cloud stores)."""
    codecs: dict[str, Codec] = {}
    digests: dict[str, str] = {}
    records = []
    for event in events:
        if event.prev_hash is not None and event.causation_id in digests:
            event.prev_hash = digests[event.causation_id]
        writer = writer_of(event)
        if writer not in codecs:
            codecs[writer] = writer_codec(data_dir, writer, default_codec(), ring=None)
        data = codecs[writer].encode(event)
        digests[event.event_id] = event_hash(data)
        records.append(OutRecord(str(event.topic), event.aggregate_id.encode(), data, timestamp_ms=stored_at))
    return records


@contextmanager
def sqlite_log(path: Path, partitions: int, topics: Iterable[Any]) -> Iterator[EventLog]:
    """An embedded-engine log at `path` with `topics` created, closed on exit."""
    opened = open_log(LogConfig(url=f"sqlite://{path}", partitions=partitions))
    try:
        opened.create_topics([str(topic) for topic in topics])
        yield opened
    finally:
        opened.close()


def fold_each(events: list[Event]) -> Models:
    """The live read model's fold of `events`, one by one, each with the hash of its own bytes."""
    models = Models()
    for event in events:
        data = encode(event)
        fold(models, decode(data), event_digest(data), str(event.topic))
    return models


def host_state(name: str = "compute-1", **overrides: Any) -> HostState:
    """The scheduler's view of an idle x86_64 KVM host of 8 CPUs, 8 GB RAM and 100 GB disk, with
    `overrides` changed."""
    fields = {"name": name, "vcpus": 8, "ram_mb": 8192, "disk_gb": 100, "cpu_arch": "x86_64",
              "hypervisor_type": "kvm"}
    return HostState(**{**fields, **overrides})


def scheduling_request(**overrides: Any) -> SchedulingRequest:
    """A request for 1 vCPU, 1 GB RAM and 10 GB disk, with `overrides` changed."""
    fields = {"instance_id": "i-1", "vcpus": 1, "ram_mb": 1024, "disk_gb": 10}
    return SchedulingRequest(**{**fields, **overrides})
