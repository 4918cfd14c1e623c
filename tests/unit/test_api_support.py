"""A small cloud for the API unit tests: a read model over a SQLite log in tmp_path, seeded with
identity and catalog events, the API app over it, and helpers that play the pipeline's part.

Imported by the test_api_*.py modules for its `cloud` fixture; it holds no tests itself.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from eventsvm.api.app import create_app
from eventsvm.api.context import ApiContext
from eventsvm.app.seed import cirros_body, flavor_body
from eventsvm.config import LogConfig
from eventsvm.events.codec import Codec
from eventsvm.events.model import Event, EventType, new_event, now_ms
from eventsvm.identity.keys import ensure_keys
from eventsvm.identity.passwords import hash_password
from eventsvm.identity.tokens import TokenService
from eventsvm.log.factory import open_log
from eventsvm.log.port import BEGINNING, Record
from eventsvm.projections.readmodel import ALL_TOPICS, ReadModel
from eventsvm.state.instances import Instance

PASSWORD = "correct horse battery staple"
FLAVORS = (("1", "m1.tiny", 1, 512, 1), ("2", "m1.small", 1, 2048, 20), ("3", "m1.medium", 2, 4096, 40))
PUBLIC_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGb+FzHUyW8Zub3n0bBaWf2yZV/FW5ltCc1MJ7DhXr0k test@eventsvm"


@functools.cache
def _password_hash() -> str:
    return hash_password(PASSWORD)  # one scrypt per session, not one per user per test


@dataclass
class Cloud:
    """The API under test, its read model, and the ids of what was seeded."""

    client: TestClient
    readmodel: ReadModel
    tokens: TokenService
    ids: dict[str, str]

    def token(self, user: str = "demo") -> str:
        """A token of a seeded user (admin, demo or alice) scoped to the user's own project."""
        roles = {
            "admin": ("admin",),
            "demo": ("member", "reader"),
            "alice": ("member",),
            "reader": ("reader",),
        }[user]
        return self.tokens.issue(
            self.ids[f"user:{user}"], self.ids[f"project:{self.home(user)}"], roles
        ).token

    @staticmethod
    def home(user: str) -> str:
        """The project a seeded user belongs to."""
        return {"admin": "admin", "demo": "demo", "alice": "other", "reader": "demo"}[user]

    def headers(self, user: str = "demo") -> dict[str, str]:
        """X-Auth-Token headers for a seeded user."""
        return {"X-Auth-Token": self.token(user)}

    def records(self) -> list[Record]:
        """Every record in the log, all topics."""
        reader = self.readmodel.log.reader([str(t) for t in ALL_TOPICS], BEGINNING)
        try:
            found: list[Record] = []
            for _ in range(100):
                batch = reader.poll(10000, timeout=0.05)
                found.extend(batch)
                if not batch and reader.at_end():
                    break
            return found
        finally:
            reader.close()

    def events(self, kind: EventType) -> list[Event]:
        """Every event of one type in the log, in append order per partition."""
        codec = self.readmodel.codec
        return [e for e in (codec.decode(r.value) for r in self.records()) if e.type == kind]

    def instance(self, server_id: str) -> Instance:
        """The projection of one server."""
        inst = self.readmodel.models.instances.get(server_id)
        assert inst is not None
        return inst

    def server_request(self, name: str = "vm1", **extra: Any) -> dict[str, Any]:
        """A POST /servers body as novaclient sends it."""
        server = {
            "name": name,
            "imageRef": self.ids["image"],
            "flavorRef": "1",
            "key_name": "keypair-1",
            "min_count": 1,
            "max_count": 1,
            "networks": [{"uuid": self.ids["network:private"]}],
        }
        server.update(extra)
        return {"server": server}

    def create_server(self, name: str = "vm1", user: str = "demo", **extra: Any) -> str:
        """POST /servers and return the new id (asserting the 202)."""
        answer = self.client.post(
            "/compute/v2.1/servers", json=self.server_request(name, **extra), headers=self.headers(user)
        )
        assert answer.status_code == 202, answer.text
        return str(answer.json()["server"]["id"])

    def advance(
        self,
        server_id: str,
        to: str = "active",
        host: str = "host-1",
        launched_at: int | None = None,
        terminated_at: int | None = None,
    ) -> None:
        """Append what the pipeline would, up to `to` (authenticated, resolved, active, error, deleted)."""
        inst = self.instance(server_id)
        flavor = next(f for f in FLAVORS if f[0] == inst.flavor_ref)
        snapshot = {
            "id": flavor[0],
            "name": flavor[1],
            "vcpus": flavor[2],
            "ram_mb": flavor[3],
            "disk_gb": flavor[4],
            "ephemeral_gb": 0,
            "swap_mb": 0,
            "extra_specs": {},
        }
        spec = {
            "name": inst.name,
            "flavor": snapshot,
            "image_id": inst.image_id,
            "image_properties": {},
            "availability_zone": None,
            "server_group_id": None,
            "server_group_policy": None,
            "networks": inst.requested_networks,
            "key_name": inst.key_name,
            "block_devices": [],
            "metadata": {},
        }
        port = {
            "port_id": str(uuid.uuid4()),
            "network_id": self.ids["network:private"],
            "subnet_id": self.ids["subnet:private"],
            "ip_address": "10.0.0.5",
            "mac_address": "fa:16:3e:00:00:05",
            "cidr": "10.0.0.0/24",
            "gateway_ip": "10.0.0.1",
        }
        steps: list[tuple[EventType, dict[str, Any]]] = [
            (EventType.INSTANCE_AUTHENTICATED, {"spec": spec, "roles": []})
        ]
        if to in ("resolved", "active", "deleted"):
            image = {
                "id": inst.image_id,
                "name": "cirros",
                "disk_format": "qcow2",
                "container_format": "bare",
                "size_bytes": 0,
                "properties": {},
                "location": None,
            }
            claim = {"vcpus": flavor[2], "ram_mb": flavor[3], "disk_gb": flavor[4]}
            steps += [
                (
                    EventType.INSTANCE_SCHEDULED,
                    {"spec": spec, "host": host, "alternates": [], "attempt": 1, "claim": claim},
                ),
                (
                    EventType.INSTANCE_RESOURCES_RESOLVED,
                    {
                        "spec": spec,
                        "host": host,
                        "alternates": [],
                        "attempt": 1,
                        "image": image,
                        "ports": [port],
                        "volumes": [],
                        "public_key": None,
                    },
                ),
            ]
        if to in ("active", "deleted"):
            steps.append(
                (
                    EventType.INSTANCE_SPAWNED,
                    {
                        "host": host,
                        "domain_name": f"instance-{server_id[:8]}",
                        "power_state": 1,
                        "launched_at": launched_at or now_ms(),
                        "attempt": 1,
                        "flavor": snapshot,
                        "addresses": [port],
                    },
                )
            )
        if to == "error":
            steps.append(
                (
                    EventType.INSTANCE_FAILED,
                    {
                        "stage": "scheduler",
                        "reason": "No valid host was found. There are not enough hosts available.",
                        "code": 500,
                        "retryable": False,
                        "final": True,
                        "host": None,
                        "attempt": 1,
                        "details": None,
                        "alternates": [],
                        "spec": None,
                    },
                )
            )
        if to == "deleted":
            steps += [
                (EventType.INSTANCE_DELETE_REQUESTED, {"host": host}),
                (
                    EventType.INSTANCE_DELETED,
                    {"host": host, "terminated_at": terminated_at or now_ms(), "stage": "spawner"},
                ),
            ]
        for kind, body in steps:
            inst = self.instance(server_id)
            self.readmodel.append(
                [
                    Event(
                        type=kind,
                        event_id=str(uuid.uuid4()),
                        aggregate_id=server_id,
                        sequence=inst.last_sequence + 1,
                        request_id=inst.request_id,
                        causation_id=inst.last_event_id,
                        user_id=inst.user_id,
                        project_id=inst.project_id,
                        occurred_at=now_ms(),
                        prev_hash=inst.last_hash,
                        body=body,
                    )
                ]
            )


def _seed(ids: dict[str, str]) -> list[Event]:
    events: list[Event] = []

    def add(kind: EventType, aggregate: str, body: dict[str, Any]) -> None:
        events.append(new_event(kind, aggregate, body))

    def created(kind: EventType, key: str, entity_id: str, fields: dict[str, Any]) -> None:
        """The create event of a new entity, whose id the tests find in `ids` under `key`."""
        ids[key] = entity_id
        add(kind, entity_id, {"id": entity_id, **fields})

    for name in ("admin", "demo", "other"):
        created(EventType.PROJECT_CREATED, f"project:{name}", uuid.uuid4().hex,
                {"name": name, "domain_id": "default", "enabled": True, "description": ""})
    for user, project, roles in (
        ("admin", "admin", ("admin",)),
        ("demo", "demo", ("member", "reader")),
        ("alice", "other", ("member",)),
        ("reader", "demo", ("reader",)),
    ):
        created(EventType.USER_CREATED, f"user:{user}", uuid.uuid4().hex, {
            "name": user,
            "domain_id": "default",
            "default_project_id": ids[f"project:{project}"],
            "enabled": True,
            "password_hash": _password_hash(),
        })
        for role in roles:
            add(
                EventType.ROLE_ASSIGNED,
                f"{user}:{project}",
                {"user_id": ids[f"user:{user}"], "project_id": ids[f"project:{project}"], "role": role},
            )
    for flavor in FLAVORS:
        add(EventType.FLAVOR_CREATED, flavor[0], flavor_body(*flavor))
    ids["image"] = str(uuid.uuid4())
    add(EventType.IMAGE_CREATED, ids["image"],
        cirros_body(ids["image"], ids["project:admin"], {"hw_machine_type": "q35"}, None))
    for name, cidr, external, owner in (
        ("private", "10.0.0", False, "demo"),
        ("public", "172.24.4", True, "admin"),
    ):
        created(EventType.NETWORK_CREATED, f"network:{name}", str(uuid.uuid4()), {
            "name": name,
            "shared": external,
            "external": external,
            "owner": ids[f"project:{owner}"],
            "mtu": 1500,
        })
        created(EventType.SUBNET_CREATED, f"subnet:{name}", str(uuid.uuid4()), {
            "network_id": ids[f"network:{name}"],
            "name": f"{name}-subnet",
            "cidr": f"{cidr}.0/24",
            "gateway_ip": f"{cidr}.1",
            "allocation_start": f"{cidr}.2",
            "allocation_end": f"{cidr}.254",
            "ip_version": 4,
            "enable_dhcp": True,
            "dns_nameservers": [],
        })
    add(
        EventType.KEYPAIR_CREATED,
        f"{ids['user:demo']}:keypair-1",
        {
            "name": "keypair-1",
            "user_id": ids["user:demo"],
            "public_key": PUBLIC_KEY,
            "fingerprint": "00:11",
            "key_type": "ssh",
        },
    )
    add(
        EventType.HOST_REGISTERED,
        "host-1",
        {
            "name": "host-1",
            "slot": 0,
            "vcpus": 8,
            "ram_mb": 16384,
            "disk_gb": 200,
            "availability_zone": "nova",
            "enabled": True,
            "cpu_allocation_ratio": 4.0,
            "ram_allocation_ratio": 1.0,
            "disk_allocation_ratio": 1.0,
            "hypervisor_type": "test",
            "hypervisor_uri": "test:///default",
            "cpu_arch": "x86_64",
        },
    )
    return events


@contextmanager
def running_cloud(tmp_path: Path, **settings: Any) -> Iterator[Cloud]:
    """A seeded cloud behind the API, with `settings` of its ApiContext (e.g. an image store)."""
    log = open_log(LogConfig(url=f"sqlite://{tmp_path / 'log.db'}"))
    readmodel = ReadModel(log, Codec())
    readmodel.start(tail=False)
    ids: dict[str, str] = {}
    readmodel.append(_seed(ids))
    ensure_keys(tmp_path / "keys")
    tokens = TokenService(tmp_path / "keys")
    app = create_app(ApiContext(readmodel=readmodel, tokens=tokens, **settings))
    with TestClient(app) as client:
        yield Cloud(client, readmodel, tokens, ids)
    readmodel.close()
    log.close()


@pytest.fixture(name="cloud")
def cloud_fixture(tmp_path: Path) -> Iterator[Cloud]:
    """A seeded cloud behind the API (no pipeline: tests advance servers with Cloud.advance)."""
    with running_cloud(tmp_path) as cloud:
        yield cloud


@pytest.fixture(name="active")
def active_fixture(cloud: Cloud) -> str:
    """A server of demo's, advanced to ACTIVE."""
    server_id = cloud.create_server()
    cloud.advance(server_id, "active")
    return server_id


def shown(cloud: Cloud, server_id: str) -> dict[str, Any]:
    """GET /servers/{id} as demo: the server view."""
    answer = cloud.client.get(f"/compute/v2.1/servers/{server_id}", headers=cloud.headers())
    return dict(answer.json()["server"])
