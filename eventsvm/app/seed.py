"""What devstack seeds on a new cloud, as events: projects, users and roles, flavors, the cirros
image, the private and public networks. Appended once, on the first start of a log."""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from eventsvm.events.model import Event, EventType, new_event
from eventsvm.identity.passwords import hash_password
from eventsvm.state.identity import IdentityState

# devstack's flavors: (id, name, vcpus, ram MB, disk GB)
FLAVORS = (
    ("1", "m1.tiny", 1, 512, 1),
    ("2", "m1.small", 1, 2048, 20),
    ("3", "m1.medium", 2, 4096, 40),
    ("4", "m1.large", 4, 8192, 80),
    ("5", "m1.xlarge", 8, 16384, 160),
)


def flavor_body(flavor_id: str, name: str, vcpus: int, ram_mb: int, disk_gb: int) -> dict[str, Any]:
    """The catalog.flavor_created body of a public flavor with no ephemeral disk or swap."""
    return {
        "id": flavor_id,
        "name": name,
        "vcpus": vcpus,
        "ram_mb": ram_mb,
        "disk_gb": disk_gb,
        "ephemeral_gb": 0,
        "swap_mb": 0,
        "is_public": True,
        "extra_specs": {},
    }


def cirros_body(
    image_id: str, owner: str, properties: dict[str, str], location: str | None
) -> dict[str, Any]:
    """The catalog.image_created body of devstack's public cirros image."""
    return {
        "id": image_id,
        "name": "cirros",
        "disk_format": "qcow2",
        "container_format": "bare",
        "size_bytes": 21430272,
        "min_disk": 0,
        "min_ram": 0,
        "visibility": "public",
        "owner": owner,
        "properties": properties,
        "location": location,
    }


@dataclass(frozen=True)
class SeedPasswords:
    """The admin and demo passwords, and whether they were generated here (then they are shown)."""

    admin: str
    demo: str
    generated: bool


def choose_passwords(admin: str | None, demo: str | None) -> SeedPasswords:
    """Passwords from the environment, else fresh random ones."""
    generated = admin is None or demo is None
    return SeedPasswords(admin or secrets.token_urlsafe(12), demo or secrets.token_urlsafe(12), generated)


def is_seeded(identity: IdentityState) -> bool:
    """True once the admin project exists in the log."""
    return identity.project_by_name("admin", "default") is not None


def seed_events(
    passwords: SeedPasswords,
    image_location: str | None = None,
    image_properties: dict[str, str] | None = None,
) -> list[Event]:
    """Every event of a fresh devstack-like cloud, in an order any reader can fold."""
    events: list[Event] = []
    request_id = f"req-{uuid.uuid4()}"

    def add(kind: EventType, aggregate: str, body: dict[str, Any], project_id: str | None = None) -> None:
        events.append(new_event(kind, aggregate, body, request_id=request_id, project_id=project_id))

    admin_project, demo_project = uuid.uuid4().hex, uuid.uuid4().hex
    admin_user, demo_user = uuid.uuid4().hex, uuid.uuid4().hex
    for pid, name in ((admin_project, "admin"), (demo_project, "demo")):
        add(
            EventType.PROJECT_CREATED,
            pid,
            {
                "id": pid,
                "name": name,
                "domain_id": "default",
                "enabled": True,
                "description": f"devstack's {name} project",
            },
        )
    for uid, name, project, password in (
        (admin_user, "admin", admin_project, passwords.admin),
        (demo_user, "demo", demo_project, passwords.demo),
    ):
        add(
            EventType.USER_CREATED,
            uid,
            {
                "id": uid,
                "name": name,
                "domain_id": "default",
                "default_project_id": project,
                "enabled": True,
                "password_hash": hash_password(password),
            },
        )
    for uid, pid, role in (
        (admin_user, admin_project, "admin"),
        (admin_user, demo_project, "admin"),
        (demo_user, demo_project, "member"),
        (demo_user, demo_project, "reader"),
    ):
        add(EventType.ROLE_ASSIGNED, f"{uid}:{pid}", {"user_id": uid, "project_id": pid, "role": role})
    for flavor in FLAVORS:
        add(EventType.FLAVOR_CREATED, flavor[0], flavor_body(*flavor))
    image_id = str(uuid.uuid4())
    add(EventType.IMAGE_CREATED, image_id,
        cirros_body(image_id, admin_project, dict(image_properties or {}), image_location), admin_project)
    for name, cidr, external in (("private", "10.0.0.0/24", False), ("public", "172.24.4.0/24", True)):
        net_id, subnet_id = str(uuid.uuid4()), str(uuid.uuid4())
        prefix = cidr.rsplit(".", 1)[0]
        add(
            EventType.NETWORK_CREATED,
            net_id,
            {
                "id": net_id,
                "name": name,
                "shared": external,
                "external": external,
                "owner": demo_project if not external else admin_project,
                "mtu": 1500,
            },
            demo_project if not external else admin_project,
        )
        add(
            EventType.SUBNET_CREATED,
            subnet_id,
            {
                "id": subnet_id,
                "network_id": net_id,
                "name": f"{name}-subnet",
                "cidr": cidr,
                "gateway_ip": f"{prefix}.1",
                "allocation_start": f"{prefix}.2",
                "allocation_end": f"{prefix}.254",
                "ip_version": 4,
                "enable_dhcp": True,
                "dns_nameservers": [],
            },
        )
    return events


def write_clouds_yaml(path: Path, auth_url: str, passwords: SeedPasswords) -> None:
    """clouds.yaml with clouds `eventsvm` (demo) and `eventsvm-admin`, readable by its owner only."""

    def cloud(user: str, password: str) -> dict[str, Any]:
        return {
            "auth": {
                "auth_url": auth_url,
                "username": user,
                "password": password,
                "project_name": user,
                "user_domain_name": "Default",
                "project_domain_name": "Default",
            },
            "region_name": "RegionOne",
            "identity_api_version": 3,
            "interface": "public",
            # the seeded `public` network is external: without this, openstacksdk's
            # wait_for_server would try to attach a floating IP, which this cloud does not offer
            "floating_ip_source": "None",
        }

    document = {
        "clouds": {
            "eventsvm": cloud("demo", passwords.demo),
            "eventsvm-admin": cloud("admin", passwords.admin),
        }
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600, exist_ok=True)
    path.chmod(0o600)
    path.write_text(yaml.safe_dump(document, sort_keys=False))


def update_clouds_yaml_url(path: Path, auth_url: str) -> bool:
    """Point an existing clouds.yaml at a new address; False when there is none."""
    if not path.exists():
        return False
    document = yaml.safe_load(path.read_text()) or {}
    for cloud in (document.get("clouds") or {}).values():
        cloud.setdefault("auth", {})["auth_url"] = auth_url
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return True
