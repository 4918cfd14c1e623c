"""POST /servers, validated against the read model and turned into an instance.requested body.

Every check nova-api makes before it casts to the conductor is made here, with nova's messages,
so a request the pipeline would only reject later is refused at once with a 400 and nothing
reaches the log. Quota is checked here against the read model, as nova's API does (403 at once);
the authenticator decides it again, authoritatively, for the races between API processes.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import secrets
import string
import unicodedata
from dataclasses import dataclass
from typing import Any

from eventsvm.api import microversion
from eventsvm.api.auth import Identity
from eventsvm.api.compute_usage import project_usage
from eventsvm.api.errors import BadRequest, Conflict, Forbidden
from eventsvm.api.models import BlockDeviceMapping, NetworkChoice, ServerCreate, ServerSpec
from eventsvm.api.server_groups import group_members
from eventsvm.api.wire import is_uuid
from eventsvm.identity.quota import QuotaExceeded, ResourceCount, servers_that_fit, within
from eventsvm.projections.readmodel import Models
from eventsvm.state.catalog import Body
from eventsvm.state.identity import quota_for
from eventsvm.state.printable import printable
from eventsvm.state.server_snapshot import ACTIVE

# nova's utils.generate_password: [DEFAULT] password_length characters, none that read alike
_PASSWORD_LENGTH = 12
_PASSWORD_SYMBOLS = "".join(c for c in string.ascii_letters + string.digits if c not in "0O1lI")
# nova's reservation ids: "r-" and eight characters (utils.generate_uid)
_RESERVATION_SYMBOLS = string.ascii_lowercase + string.digits


@dataclass(frozen=True, slots=True)
class ServerCount:
    """How many servers one POST /servers asks for: at least `least`, at most `most`."""

    least: int
    most: int


def server_count(spec: ServerSpec) -> ServerCount:
    """min_count and max_count as nova reads them: max_count defaults to min_count."""
    most = spec.max_count if spec.max_count is not None else spec.min_count
    if spec.min_count > most:
        raise BadRequest("min_count must be <= max_count")
    return ServerCount(spec.min_count, most)


def servers_admitted(models: Models, caller: Identity, flavor: Body, count: ServerCount) -> int:
    """How many servers the caller's project may create now (nova's quota check at the API):
    `count.most` reduced to what fits; Forbidden with nova's message when not even `count.least` do."""
    project_id = caller.project_id
    try:
        return servers_that_fit(
            quota_for(models.identity, project_id),
            project_usage(models, project_id),
            ResourceCount(instances=1, cores=flavor["vcpus"], ram_mb=flavor["ram_mb"]),
            count.least,
            count.most,
        )
    except QuotaExceeded as exc:
        raise Forbidden(str(exc)) from None


def reservation_bodies(body: dict[str, Any], servers: int, reservation_id: str) -> list[dict[str, Any]]:
    """One instance.requested body per server of a reservation; several servers are named
    `name-N`, from 1 (nova's multi_instance_display_name_template, '%(name)s-%(count)d')."""
    if servers == 1:
        return [{**body, "reservation_id": reservation_id, "reservation_size": 1, "launch_index": 0}]
    return [
        {**body, "name": f"{body['name']}-{n}", "reservation_id": reservation_id, "reservation_size": servers,
         "launch_index": n - 1}
        for n in range(1, servers + 1)
    ]


def random_symbols(alphabet: str, count: int) -> str:
    """`count` symbols of `alphabet`, each uniformly chosen by the system's CSPRNG: one read of
    random bytes per call (secrets.choice reads once per symbol, 13% of a create's time under
    load), bytes past the largest multiple of the alphabet's size dropped so none is favoured."""
    size = len(alphabet)
    usable = 256 - 256 % size
    out: list[str] = []
    while len(out) < count:
        out.extend(alphabet[b % size] for b in secrets.token_bytes(2 * (count - len(out))) if b < usable)
    return "".join(out[:count])


def new_reservation_id() -> str:
    """A reservation id as nova makes one: r- and eight random characters."""
    return "r-" + random_symbols(_RESERVATION_SYMBOLS, 8)


def admin_password(spec: ServerSpec) -> str:
    """The guest password nova answers a create with: the one asked for, else a generated one."""
    return guest_password(spec.adminPass)


def guest_password(given: str | None) -> str:
    """The guest password nova answers a create or a rebuild with: `given`, else a generated one."""
    if given is not None:
        return given
    return random_symbols(_PASSWORD_SYMBOLS, _PASSWORD_LENGTH)


def build_requested_body(models: Models, request: ServerCreate, caller: Identity,
                         optional_fields: frozenset[str]) -> dict[str, Any]:
    """The body of the instance.requested event for a valid request; BadRequest/Conflict otherwise.

    `optional_fields` are the body fields the current schema has beyond v1 (description, tags,
    access IPs).
    """
    check_create_schema(request)
    spec = request.server
    count = server_count(spec)
    catalog = models.catalog
    flavor = catalog.flavor_by_name_or_id(str(spec.flavorRef))
    if flavor is None:
        raise BadRequest(f"Flavor {spec.flavorRef} could not be found.")
    block_devices = [_block_device(models, bdm, caller) for bdm in spec.block_device_mapping_v2 or []]
    if count.most > 1 and any(b["source_type"] == "volume" for b in block_devices):
        # one existing volume cannot be every server's disk (nova's _validate_bdm)
        raise BadRequest("Cannot attach one or more volumes to multiple instances")
    image_id = _image_id(models, spec.imageRef, block_devices, caller)
    if spec.key_name is not None and catalog.keypair(caller.user_id, spec.key_name) is None:
        raise BadRequest("Invalid key_name provided.")
    if spec.availability_zone:
        zones = {str(h.get("availability_zone") or "nova") for h in models.hosts.values()} or {"nova"}
        if spec.availability_zone.split(":", 1)[0] not in zones:
            raise BadRequest("The requested availability zone is not available")
    group_id = request.scheduler_hints.group if request.scheduler_hints else None
    if group_id is not None:
        group = catalog.server_groups.get(group_id)
        if group is None or not caller.sees("nova", group.get("project_id")):
            raise BadRequest(f"Invalid server group: {group_id} could not be found.")
        members_limit = quota_for(models.identity, caller.project_id).server_group_members
        if not within(members_limit, len(group_members(models, group_id)), count.most):
            raise Forbidden("Quota exceeded, too many servers in group")
    body: dict[str, Any] = {
        "name": spec.name,
        "flavor_id": flavor["id"],
        "image_id": image_id,
        "networks": _networks(models, spec.networks, caller),
        "key_name": spec.key_name,
        "availability_zone": spec.availability_zone or None,
        "server_group_id": group_id,
        "block_devices": block_devices,
        "metadata": dict(spec.metadata or {}),
        "roles": list(caller.roles),
        "token_audit_id": caller.audit_id,
    }
    if "description" in optional_fields:
        body["description"] = spec.description
    if "tags" in optional_fields:
        body["tags"] = list(dict.fromkeys(spec.tags or []))
    if "user_data" in optional_fields:
        body["user_data"] = None if spec.user_data is None else user_data(spec.user_data)
    if "token_chain_audit_id" in optional_fields:
        body["token_chain_audit_id"] = caller.chain_audit_id
    if "access_ipv4" in optional_fields:
        for field, value, version in (("accessIPv4", spec.accessIPv4, 4), ("accessIPv6", spec.accessIPv6, 6)):
            body[f"access_ipv{version}"] = None if value is None else access_ip(field, value, version)
    return body


def _image_id(models: Models, image_ref: str, block_devices: list[dict[str, Any]], caller: Identity) -> str:
    if not image_ref:
        boot_volume = next(
            (b for b in block_devices if b["boot_index"] == 0 and b["source_type"] == "volume"), None
        )
        boot_image = next(
            (b for b in block_devices if b["boot_index"] == 0 and b["source_type"] == "image"), None
        )
        if boot_image is not None:
            return str(boot_image["uuid"])
        if boot_volume is None:
            raise BadRequest("Missing imageRef attribute")
        return ""
    # nova accepts an image id or an href whose last segment is the id
    image_id = image_ref.rstrip("/").rsplit("/", 1)[-1]
    if not is_uuid(image_id):
        raise BadRequest("Invalid imageRef provided.")
    image = models.catalog.images.get(image_id)
    if image is None or not _image_visible(image, caller):
        raise BadRequest(f"Image {image_id} could not be found.")
    require_active(image)
    return image_id


def _image_visible(image: Body, caller: Identity) -> bool:
    # nova asks glance with the caller's token: glance's visibility
    return image.get("visibility") in ("public", "community") or caller.sees("glance", image.get("owner"))


def require_active(image: Body) -> None:
    """Nova's 400 for an image to boot or rebuild from that has no data yet (queued: registered
    and never uploaded, or a snapshot its host has not filled)."""
    if image.get("status", ACTIVE) != ACTIVE:
        raise BadRequest(f"Image {image['id']} is not active.")


def network_visible(network: Body, caller: Identity) -> bool:
    """Whether the caller's project may attach to or see a network (neutron's default policy)."""
    return (
        bool(network.get("shared"))
        or bool(network.get("external"))
        or network.get("owner") is None
        or caller.sees("neutron", network.get("owner"))
    )


def _networks(
    models: Models, choice: list[NetworkChoice] | str | None, caller: Identity
) -> list[dict[str, Any]]:
    if choice == "none":
        return []
    if choice is None or isinstance(choice, str):
        # nova with neutron: without a choice the server gets the one network the project can use
        candidates = [
            n
            for n in models.catalog.networks.values()
            if not n.get("external") and (n.get("owner") == caller.project_id or n.get("shared"))
        ]
        if len(candidates) > 1:
            raise Conflict("Multiple possible networks found, use a Network ID to be more specific.")
        return [{"network_id": n["id"], "port_id": None, "fixed_ip": None} for n in candidates]
    result: list[dict[str, Any]] = []
    for entry in choice:
        if entry.fixed_ip is not None:
            raise BadRequest(
                "fixed_ip is not supported by this cloud: addresses are allocated from the subnet."
            )
        if entry.port is not None:
            raise BadRequest(
                "Booting with an existing port is not supported by this cloud; pass a network uuid."
            )
        if entry.uuid is None:
            raise BadRequest("Bad networks format: network uuid is required.")
        if not is_uuid(entry.uuid):
            raise BadRequest(f"Bad networks format: network uuid is not in proper format ({entry.uuid})")
        network = models.catalog.networks.get(entry.uuid)
        if network is None or not network_visible(network, caller):
            raise BadRequest(f"Network {entry.uuid} could not be found.")
        if any(r["network_id"] == entry.uuid for r in result):
            raise BadRequest(f"Network {entry.uuid} is duplicated.")
        if not models.catalog.subnets_of(entry.uuid):
            raise BadRequest(f"Network {entry.uuid} requires a subnet in order to boot instances on.")
        result.append({"network_id": entry.uuid, "port_id": None, "fixed_ip": None})
    return result


def _block_device(models: Models, bdm: BlockDeviceMapping, caller: Identity) -> dict[str, Any]:
    destination = bdm.destination_type or ("local" if bdm.source_type == "image" else "volume")
    if bdm.source_type in ("image", "volume", "snapshot"):
        if bdm.uuid is None or not is_uuid(bdm.uuid):
            raise BadRequest(
                f"Block Device Mapping is Invalid: a {bdm.source_type} source needs a valid uuid."
            )
        if bdm.source_type == "image":
            image = models.catalog.images.get(bdm.uuid)
            if image is None or not _image_visible(image, caller):
                raise BadRequest(f"Image {bdm.uuid} could not be found.")
            require_active(image)
        elif bdm.source_type == "volume":
            volume = models.catalog.volumes.get(bdm.uuid)
            # nova asks cinder with the caller's token: cinder's visibility
            if volume is None or not caller.sees("cinder", volume.get("owner")):
                raise BadRequest(f"Block Device Mapping is Invalid: failed to get volume {bdm.uuid}.")
        else:
            raise BadRequest("Block Device Mapping is Invalid: snapshots are not supported by this cloud.")
    elif destination == "volume" and not bdm.volume_size:
        raise BadRequest("Block Device Mapping is Invalid: a blank volume needs a volume_size.")
    return {
        "source_type": bdm.source_type,
        "destination_type": destination,
        "uuid": bdm.uuid,
        "volume_size": bdm.volume_size,
        "boot_index": bdm.boot_index,
        "delete_on_termination": bdm.delete_on_termination,
    }


def invalid(path: str, value: Any, message: str) -> BadRequest:
    """Nova's schema-validation 400: the field, the value and the reason, each cut short, since a
    value may be as large as the body."""
    return BadRequest(f"Invalid input for field/attribute {path[:80]}. Value: {repr(value)[:80]}. "
                      f"{message[:160]}")


def user_data(value: Any) -> str:
    """user_data as nova's schema takes it: base64 text of at most 65535 characters."""
    if not isinstance(value, str):
        raise invalid("user_data", value, f"{value!r} is not of type 'string'")
    if len(value) > _USER_DATA_LONGEST:
        raise invalid("user_data", value, f"{value[:20]!r}... is too long")
    try:
        base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise invalid("user_data", value, f"{value!r} is not a 'base64'") from None
    return value


def access_ip(field: str, value: Any, version: int) -> str:
    """An accessIPv4/accessIPv6 value, which nova's schema requires to be an address of that version,
    in its canonical (for IPv6, compressed) form, as nova's database column stores it."""
    if not isinstance(value, str):
        raise invalid(field, value, f"{value!r} is not of type 'string'")
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        address = None
    if address is None or address.version != version:
        raise invalid(field, value, f"{value!r} is not a 'ipv{version}'")
    return str(address)


# -- nova's closed create schema ----------------------------------------------------------------
# The fields nova 2.1's server create schema names. The model keeps what it does not name, so a
# field no nova knows is refused as nova refuses it, while one nova knows and this cloud has no use
# for (user_data, config_drive, security_groups, ...) is accepted and ignored, as before.
_NOVA_SERVER_FIELDS = frozenset({
    "name", "imageRef", "flavorRef", "adminPass", "metadata", "networks", "OS-DCF:diskConfig",
    "accessIPv4", "accessIPv6", "personality", "availability_zone", "block_device_mapping",
    "block_device_mapping_v2", "config_drive", "key_name", "min_count", "max_count",
    "return_reservation_id", "security_groups", "user_data", "description", "tags",
})
_NAME_REASON = "printable characters. Can not start or end with whitespace."
FLAVOR_REF_LONGEST = 1024
_USER_DATA_LONGEST = 65535


def unexpected(keys: list[str]) -> str:
    """Nova's (jsonschema's) words for fields a closed object does not allow."""
    return f"Additional properties are not allowed ({', '.join(map(repr, keys))} was unexpected)"


def server_description(value: Any) -> str | None:
    """A server description as nova's 2.19 schema takes it: null, or at most 255 printable
    characters (spaces and line breaks allowed by nova's description rule only as spaces)."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise invalid("description", value, f"{value!r} is not of type 'string', 'null'")
    if len(value) > 255:
        raise invalid("description", value, f"{value[:20]!r}... is too long")
    if not all(map(printable, value)):
        raise invalid("description", value, f"{value[:20]!r} does not match the printable characters rule")
    return value


def refuse_create_tags(request: ServerCreate, version: tuple[int, int]) -> None:
    """Nova's 400 for `tags` in a create body below 2.52 (its earlier schemas do not name them)."""
    spec = request.server
    if "tags" in spec.model_fields_set and version < microversion.CREATE_TAGS:
        raise invalid("server", spec.model_dump(exclude_unset=True), unexpected(["tags"]))


def described(fields: dict[str, Any], version: tuple[int, int]) -> dict[str, Any]:
    """The description and description_set of an event body from a request's `fields`, nova's
    400 when it names one below 2.19 (its schemas are closed)."""
    if "description" not in fields:
        return {"description": None, "description_set": False}
    if version < microversion.DESCRIPTION:
        raise BadRequest(unexpected(["description"]))
    return {"description": server_description(fields["description"]), "description_set": True}


def server_name(value: Any) -> str:
    """A server name as nova's schema accepts it (1-255 printable characters, no leading or trailing
    space); nova's 400 otherwise. A NUL, an escape sequence or a line break never reaches the log."""
    if not isinstance(value, str):
        raise invalid("name", value, f"{value!r} is not of type 'string'")
    if not 1 <= len(value) <= 255:
        raise invalid("name", value, f"{value!r} is too {'short' if not value else 'long'}")
    spaces = (value[0], value[-1])
    if any(unicodedata.category(c) == "Zs" for c in spaces) or not all(map(printable, value)):
        raise BadRequest(f"An invalid 'name' value was provided. The name must be: {_NAME_REASON}")
    return value


def flavor_ref(value: Any) -> str:
    """flavorRef as nova's schema takes it: a non-empty string or an integer, never a boolean."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise invalid("flavorRef", value, f"{value!r} is not of type 'string', 'integer'")
    if isinstance(value, str) and not 1 <= len(value) <= FLAVOR_REF_LONGEST:
        raise invalid("flavorRef", value, f"{value!r} is too {'short' if not value else 'long'}")
    return str(value)


def check_create_schema(request: ServerCreate) -> None:
    """What nova's JSON schema refuses and the lenient model lets through: a field nova does not
    know, a name with control characters, a flavorRef that is a boolean or an object."""
    outer = sorted(request.model_extra or {})
    if outer:
        raise BadRequest(unexpected(outer))
    spec = request.server
    unknown = sorted(k for k in spec.model_extra or {} if k not in _NOVA_SERVER_FIELDS)
    if unknown:
        raise invalid("server", spec.model_dump(exclude_unset=True), unexpected(unknown))
    server_name(spec.name)
    flavor_ref(spec.flavorRef)
