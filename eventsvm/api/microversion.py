"""Nova's microversion handshake: the version a request asks for, checked against what this API
serves, and named back on every compute answer, as nova does (tempest refuses an answer whose
version header does not match the one it sent)."""

from __future__ import annotations

import re

from fastapi import Request

# the compute API serves every change of nova's microversions up to the maximum on the APIs it has
# (docs/decisions.md: the versions that change APIs this cloud lacks change nothing here)
MIN_VERSION = (2, 1)
MAX_VERSION = (2, 26)
# where a version changes what this cloud answers
KEYPAIR_TYPES = (2, 2)  # keypair `type`; 201 / 204 for keypair create / delete
EXTENDED_ATTRIBUTES = (2, 3)  # OS-EXT-SRV-ATTR for admins, delete_on_termination of attached volumes
IP6_FILTER = (2, 5)  # ip6 filters the server list for non-admins too
LOCKED_SHOWN = (2, 9)  # `locked` in the server view
KEYPAIR_USERS = (2, 10)  # an admin names the user whose keypairs to list, show, create or delete
SERVER_GROUP_OWNERS = (2, 13)  # project_id and user_id in the server group view
SOFT_AFFINITY = (2, 15)  # soft-affinity and soft-anti-affinity server groups
HOST_STATUS = (2, 16)  # host_status in the server view, for admins
CRASH_DUMP = (2, 17)  # the trigger_crash_dump server action
DESCRIPTION = (2, 19)  # a server's description on create, rebuild and update, and in its view
SHELVED_VOLUMES = (2, 20)  # volume attach and detach on a shelved-offloaded server
DELETED_ACTIONS = (2, 21)  # os-instance-actions of a deleted server
SERVER_TAGS = (2, 26)  # server tags: their routes, `tags` in the view, the tag filters of the list
# tags given in a server create body: nova's create schema names them from 2.52, above this API's
# maximum, so a create that names them is refused as nova's closed 2.1 .. 2.51 schemas refuse it
CREATE_TAGS = (2, 52)
# where RequestEnvelope leaves the negotiated version for the routes (request.state)
STATE_KEY = "compute_version"
_VERSION = re.compile(r"^([1-9]\d*)\.([1-9]\d*|0)$")


def _show(version: tuple[int, int]) -> str:
    return f"{version[0]}.{version[1]}"


def requested_version(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The compute microversion named in the request: the standard header first, then nova's own."""
    legacy = None
    for name, value in headers:
        lowered = name.lower()
        if lowered == b"openstack-api-version":
            # "compute 2.1" (several services may share the header, comma separated)
            for part in value.decode("latin-1").split(","):
                service, _, version = part.strip().partition(" ")
                if service.lower() == "compute" and version.strip():
                    return version.strip()
        elif lowered == b"x-openstack-nova-api-version":
            legacy = value.decode("latin-1").strip()
    return legacy


def negotiate(asked: str | None) -> tuple[str, tuple[int, str] | None]:
    """(the version that serves this request, or a refusal as (status, message)), as nova decides:
    none asked → the minimum; "latest" → the maximum; malformed → 400; out of range → 406."""
    if asked is None:
        return _show(MIN_VERSION), None
    if asked.lower() == "latest":
        return _show(MAX_VERSION), None
    match = _VERSION.match(asked)
    if match is None:
        return _show(MIN_VERSION), (400, f"API Version String {asked} is of invalid format. "
                                         "Must be of format MajorNum.MinorNum.")
    version = (int(match.group(1)), int(match.group(2)))
    if not MIN_VERSION <= version <= MAX_VERSION:
        return _show(MIN_VERSION), (406, f"Version {asked} is not supported by the API. Minimum is "
                                         f"{_show(MIN_VERSION)} and maximum is {_show(MAX_VERSION)}.")
    return _show(version), None


def response_headers(version: str) -> list[tuple[bytes, bytes]]:
    """The headers every compute answer carries, naming the version that served it."""
    return [
        (b"openstack-api-version", f"compute {version}".encode()),
        (b"x-openstack-nova-api-version", version.encode()),
        (b"vary", b"OpenStack-API-Version, X-OpenStack-Nova-API-Version"),
    ]


def served(request: Request) -> tuple[int, int]:
    """The microversion serving this compute request, as negotiated by RequestEnvelope."""
    version = getattr(request.state, STATE_KEY, None)
    if version is None:
        return MIN_VERSION
    major, _, minor = str(version).partition(".")
    return int(major), int(minor)


def max_version() -> str:
    """The highest microversion served, as the version documents name it."""
    return _show(MAX_VERSION)
