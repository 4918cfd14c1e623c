"""Pydantic models of the request bodies the API accepts, as the OpenStack clients send them.

Models accept unknown fields (the clients send more than this cloud uses) and bound every number
and string, so nothing that passes here can overflow an Avro int or bloat the permanent log.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, AliasChoices, BaseModel, ConfigDict, Field, StrictBool

from eventsvm.identity.passwords import NUL_REFUSED, acceptable

INT32 = 2**31 - 1
Name = Annotated[str, Field(min_length=1, max_length=255)]
OptionalName = Annotated[str | None, Field(default=None, max_length=255)]
Count = Annotated[int, Field(ge=0, le=INT32)]


def _password(value: str) -> str:
    if not acceptable(value):
        raise ValueError(NUL_REFUSED)  # pydantic's message names the field, never the value
    return value


Password = Annotated[str, Field(max_length=4096, repr=False), AfterValidator(_password)]


class Lenient(BaseModel):
    """A body part that ignores the fields it does not name."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)


# -- keystone ---------------------------------------------------------------------------------
class DomainRef(Lenient):
    """A domain by id or name."""

    id: OptionalName = None
    name: OptionalName = None


class PasswordUser(Lenient):
    """The user of a password authentication, by id or by name and domain."""

    id: OptionalName = None
    name: OptionalName = None
    domain: DomainRef | None = None
    password: Password


class PasswordMethod(Lenient):
    """The `password` method of an auth request."""

    user: PasswordUser


class TokenMethod(Lenient):
    """The `token` method: re-scope an existing token."""

    id: str = Field(max_length=4096, repr=False)


class AuthIdentity(Lenient):
    """Which methods authenticate the caller."""

    methods: list[Annotated[str, Field(max_length=64)]] = Field(min_length=1, max_length=4)
    password: PasswordMethod | None = None
    token: TokenMethod | None = None


class ProjectRef(Lenient):
    """A project by id, or by name and domain."""

    id: OptionalName = None
    name: OptionalName = None
    domain: DomainRef | None = None


class AuthScope(Lenient):
    """The scope of the token asked for; only project scope exists here."""

    project: ProjectRef | None = None


class AuthBody(Lenient):
    """The body of an auth request."""

    identity: AuthIdentity
    scope: AuthScope | Literal["unscoped"] | None = None


class AuthRequest(Lenient):
    """POST /identity/v3/auth/tokens."""

    auth: AuthBody


class ProjectSpec(Lenient):
    """A new project."""

    name: Name
    domain_id: Annotated[str, Field(min_length=1, max_length=64)] = "default"
    description: Annotated[str, Field(max_length=1024)] = ""
    enabled: StrictBool = True


class ProjectCreate(Lenient):
    """POST /identity/v3/projects."""

    project: ProjectSpec


class UserSpec(Lenient):
    """A new user."""

    name: Name
    password: Annotated[Password, Field(min_length=1)]
    domain_id: Annotated[str, Field(min_length=1, max_length=64)] = "default"
    default_project_id: OptionalName = None
    enabled: StrictBool = True


class UserCreate(Lenient):
    """POST /identity/v3/users."""

    user: UserSpec


# -- nova -------------------------------------------------------------------------------------
class NetworkChoice(Lenient):
    """One entry of `server.networks`."""

    uuid: OptionalName = None
    port: OptionalName = None
    fixed_ip: OptionalName = None


class BlockDeviceMapping(Lenient):
    """One entry of `server.block_device_mapping_v2`."""

    source_type: Literal["image", "volume", "blank", "snapshot"] = "image"
    destination_type: Literal["local", "volume"] | None = None
    uuid: OptionalName = None
    volume_size: Annotated[int | None, Field(default=None, ge=0, le=INT32)] = None
    boot_index: Annotated[int | None, Field(default=None, ge=-1, le=INT32)] = None
    delete_on_termination: bool = False


class ServerSpec(Lenient):
    """The `server` object of POST /servers."""

    # kept, not ignored: nova's schema is closed, server_request refuses a field nova does not know
    model_config = ConfigDict(extra="allow", populate_by_name=True)

    name: Name
    imageRef: Annotated[str, Field(max_length=1024)] = ""  # noqa: N815 (nova's field name)
    # any JSON: pydantic would take `true` as flavor 1; server_request checks it as nova's schema does
    flavorRef: Annotated[Any, Field(json_schema_extra={"type": ["string", "integer"]})]  # noqa: N815
    networks: list[NetworkChoice] | Literal["auto", "none"] | None = Field(default=None, max_length=64)
    key_name: OptionalName = None
    availability_zone: OptionalName = None
    metadata: dict[Annotated[str, Field(min_length=1, max_length=255)],
                   Annotated[str, Field(max_length=255)]] | None = Field(default=None, max_length=128)
    min_count: Annotated[int, Field(ge=1, le=INT32)] = 1
    max_count: Annotated[int | None, Field(default=None, ge=1, le=INT32)] = None
    block_device_mapping_v2: list[BlockDeviceMapping] | None = Field(default=None, max_length=32)
    description: Annotated[str | None, Field(default=None, max_length=255)] = None
    # nova's schema takes any JSON here and refuses a non-address with its own message (server_request)
    accessIPv4: Any = None  # noqa: N815 (nova's field name)
    accessIPv6: Any = None  # noqa: N815
    tags: list[Annotated[str, Field(min_length=1, max_length=60)]] | None = Field(default=None, max_length=50)
    # nova's schema: base64 of at most 65535 characters; server_request checks it with nova's words
    user_data: Any = None
    return_reservation_id: bool = False
    # nova's admin password for the guest: answered once, never recorded (docs/decisions.md)
    adminPass: Annotated[str, Field(max_length=4096), AfterValidator(_password)] | None = Field(  # noqa: N815
        default=None, repr=False)


class SchedulerHints(Lenient):
    """`os:scheduler_hints`; only `group` (a server group id) is used."""

    group: OptionalName = None


class ServerCreate(Lenient):
    """POST /compute/v2.1/servers."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)  # closed in nova: see ServerSpec
    server: ServerSpec
    scheduler_hints: SchedulerHints | None = Field(
        default=None, validation_alias=AliasChoices("os:scheduler_hints", "OS-SCH-HNT:scheduler_hints"))


class FlavorSpec(Lenient):
    """A new flavor, with nova's field names."""

    name: Name
    ram: Annotated[int, Field(ge=1, le=INT32)]
    vcpus: Annotated[int, Field(ge=1, le=INT32)]
    disk: Count
    id: Annotated[str | None, Field(default=None, min_length=1, max_length=255, pattern=r"^[\w. -]+$")] = None
    ephemeral: Count = Field(default=0, alias="OS-FLV-EXT-DATA:ephemeral")
    swap: Annotated[int, Field(ge=0, le=INT32)] | Literal[""] = 0
    is_public: StrictBool = Field(default=True, alias="os-flavor-access:is_public")


class FlavorCreate(Lenient):
    """POST /compute/v2.1/flavors."""

    flavor: FlavorSpec


class KeypairSpec(Lenient):
    """A keypair to import."""

    name: Annotated[str, Field(min_length=1, max_length=255)]
    public_key: Annotated[str | None, Field(default=None, max_length=16384)] = None
    type: Literal["ssh", "x509"] = "ssh"
    # nova 2.10: an admin names the user the keypair is for
    user_id: Annotated[str | None, Field(default=None, min_length=1, max_length=255)] = None


class KeypairCreate(Lenient):
    """POST /compute/v2.1/os-keypairs."""

    keypair: KeypairSpec


QuotaValue = Annotated[int, Field(ge=-1, le=INT32)]


class QuotaSpec(Lenient):
    """The limits to change; others keep their value."""

    instances: QuotaValue | None = None
    cores: QuotaValue | None = None
    ram: QuotaValue | None = None
    server_groups: QuotaValue | None = None
    server_group_members: QuotaValue | None = None


class QuotaUpdate(Lenient):
    """PUT /compute/v2.1/os-quota-sets/{project_id}."""

    quota_set: QuotaSpec


# -- glance, neutron, cinder ------------------------------------------------------------------
class ImageCreate(Lenient):
    """POST /image/v2/images (glance's body is the image itself, no wrapper)."""

    model_config = ConfigDict(extra="allow")

    name: Annotated[str, Field(max_length=255)] = ""
    id: OptionalName = None
    disk_format: Literal["qcow2", "raw", "vmdk", "vdi", "iso", "ami", "ari", "aki", "vhd", "vhdx",
                         "ploop"] = "qcow2"
    container_format: Literal["bare", "ovf", "ova", "aki", "ari", "ami", "docker", "compressed"] = "bare"
    visibility: Literal["public", "private", "shared", "community"] = "private"
    min_disk: Count = 0
    min_ram: Count = 0


class NetworkSpec(Lenient):
    """A new network."""

    name: Annotated[str, Field(max_length=255)] = ""
    description: Annotated[str, Field(max_length=255)] = ""
    admin_state_up: StrictBool = True
    shared: StrictBool = False
    external: StrictBool = Field(default=False, alias="router:external")
    mtu: Annotated[int, Field(ge=68, le=9216)] = 1500


class NetworkCreate(Lenient):
    """POST /network/v2.0/networks."""

    network: NetworkSpec


class NetworkChanges(NetworkSpec):
    """What PUT /network/v2.0/networks/{id} may change (a create's fields); only the fields sent
    change."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)  # read-only ones are refused


class NetworkUpdate(Lenient):
    """PUT /network/v2.0/networks/{id}."""

    network: NetworkChanges


class HostRoute(Lenient):
    """A route a subnet's DHCP hands its servers: `destination` (a CIDR) via `nexthop`."""

    destination: Annotated[str, Field(min_length=1, max_length=64)]
    nexthop: Annotated[str, Field(min_length=1, max_length=64)]


class AllocationPool(Lenient):
    """An address range of a subnet."""

    start: Annotated[str, Field(max_length=64)]
    end: Annotated[str, Field(max_length=64)]


class SubnetSpec(Lenient):
    """A new subnet."""

    network_id: Name
    cidr: Annotated[str, Field(min_length=1, max_length=64)]
    name: Annotated[str, Field(max_length=255)] = ""
    ip_version: Literal[4, 6] = 4
    gateway_ip: Annotated[str | None, Field(default=None, max_length=64)] = None
    allocation_pools: list[AllocationPool] | None = Field(default=None, max_length=1)
    enable_dhcp: StrictBool = True
    dns_nameservers: list[Annotated[str, Field(max_length=64)]] = Field(default_factory=list, max_length=5)
    description: Annotated[str, Field(max_length=255)] = ""
    host_routes: list[HostRoute] = Field(default_factory=list, max_length=20)


class SubnetCreate(Lenient):
    """POST /network/v2.0/subnets."""

    subnet: SubnetSpec


class SubnetChanges(Lenient):
    """What PUT /network/v2.0/subnets/{id} may change; only the fields sent change (a subnet's
    cidr, network and IP version are fixed at its create)."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)  # read-only ones are refused

    name: Annotated[str, Field(max_length=255)] = ""
    description: Annotated[str, Field(max_length=255)] = ""
    gateway_ip: Annotated[str | None, Field(default=None, max_length=64)] = None
    allocation_pools: list[AllocationPool] = Field(default_factory=list, min_length=1, max_length=1)
    enable_dhcp: StrictBool = True
    dns_nameservers: list[Annotated[str, Field(max_length=64)]] = Field(default_factory=list, max_length=5)
    host_routes: list[HostRoute] = Field(default_factory=list, max_length=20)


class SubnetUpdate(Lenient):
    """PUT /network/v2.0/subnets/{id}."""

    subnet: SubnetChanges


# cinder's limits on a metadata item: a key of 1-255 characters, a value of up to 255
MetadataKey = Annotated[str, Field(min_length=1, max_length=255)]
VolumeMetadata = dict[MetadataKey, Annotated[str, Field(max_length=255)]]


class VolumeSpec(Lenient):
    """A new volume."""

    size: Annotated[int, Field(ge=1, le=16384)]
    name: OptionalName = None
    # where the volume's data would come from, and its type: refused when they name nothing (there
    # are no snapshots here, and one type), instead of making an empty volume as if they did
    snapshot_id: OptionalName = None
    source_volid: OptionalName = None
    volume_type: OptionalName = None
    description: OptionalName = None
    metadata: VolumeMetadata | None = None


class VolumeCreate(Lenient):
    """POST /volume/v3/{project_id}/volumes."""

    volume: VolumeSpec


class VolumeChange(Lenient):
    """What PUT /volumes/{id} may change; an absent field is unchanged, metadata is replaced."""

    name: OptionalName = None
    description: OptionalName = None
    metadata: VolumeMetadata | None = None


class VolumeUpdate(Lenient):
    """PUT /volume/v3/{project_id}/volumes/{volume_id}."""

    volume: VolumeChange


class VolumeMetadataBody(Lenient):
    """POST (merged) and PUT (replacing) /volumes/{id}/metadata."""

    metadata: VolumeMetadata


class VolumeMetaItem(Lenient):
    """PUT /volumes/{id}/metadata/{key}: {"meta": {key: value}}, the key the path's."""

    meta: VolumeMetadata
