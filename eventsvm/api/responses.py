"""Pydantic models of the bodies the main routes answer with, so the OpenAPI document says what comes back.

The models follow the views (server_view, flavor_view, image_view, ...), never the other way round:
the OpenStack clients depend on the exact shapes. FastAPI validates a route's answer against its
model and serialises it again, so every model here is strict (a value is never coerced into another
type), keeps the keys it does not name (extra="allow"; OpenStack's bodies are open dicts), and the
routes set `response_model_exclude_unset`, so a field the view left out stays out and an explicit
null stays null. tests/unit/test_api_responses.py holds the answers to that promise.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class Shown(BaseModel):
    """A body part as a view builds it: checked strictly, unnamed keys passed through."""

    model_config = ConfigDict(strict=True, extra="allow", populate_by_name=True)


class Link(Shown):
    """A nova/cinder link: `rel` is self, bookmark or next."""

    rel: str
    href: str


# -- nova: servers ----------------------------------------------------------------------------
class ResourceRef(Shown):
    """A server's image or flavor: its id and a bookmark link."""

    id: str | None
    links: list[Link]


class Address(Shown):
    """One fixed address of a server on a network."""

    version: int
    addr: str
    type: str = Field(alias="OS-EXT-IPS:type")
    mac_addr: str = Field(alias="OS-EXT-IPS-MAC:mac_addr")


class SecurityGroupName(Shown):
    """A security group as a server lists it."""

    name: str


class Fault(Shown):
    """Why a server is in ERROR; `details` only for admins."""

    code: int
    message: str
    created: str | None
    details: str | None = None


class ServerCore(Shown):
    """A server as PUT /servers/{id} answers it: nova's view without the extensions' fields."""

    id: str
    name: str
    status: str
    tenant_id: str | None
    user_id: str | None
    metadata: dict[str, str]
    host_id: str = Field(alias="hostId")
    image: ResourceRef | Literal[""] = Field(description='"" for a server booted from a volume')
    flavor: ResourceRef
    created: str | None
    updated: str | None
    addresses: dict[str, list[Address]]
    access_ipv4: str = Field(alias="accessIPv4")
    access_ipv6: str = Field(alias="accessIPv6")
    links: list[Link]
    disk_config: str = Field(alias="OS-DCF:diskConfig")
    progress: int = Field(default=0, description="only while ACTIVE, BUILD, REBUILD, RESIZE, VERIFY_RESIZE "
                                                 "or MIGRATING, as nova shows it")
    fault: Fault | None = Field(default=None, description="only while the server is in ERROR")
    locked: bool | None = Field(default=None, description="from microversion 2.9")


class UpdatedServerBody(Shown):
    """{"server": {...}} answering PUT /servers/{id}."""

    server: ServerCore


class Server(ServerCore):
    """A server as GET /servers/{id} and /servers/detail show it (nova 2.1)."""

    availability_zone: str = Field(alias="OS-EXT-AZ:availability_zone")
    config_drive: str
    key_name: str | None
    launched_at: str | None = Field(alias="OS-SRV-USG:launched_at")
    terminated_at: str | None = Field(alias="OS-SRV-USG:terminated_at")
    task_state: str | None = Field(alias="OS-EXT-STS:task_state")
    vm_state: str | None = Field(alias="OS-EXT-STS:vm_state")
    power_state: int | None = Field(alias="OS-EXT-STS:power_state")
    volumes_attached: list[dict[str, Any]] = Field(alias="os-extended-volumes:volumes_attached")
    security_groups: list[SecurityGroupName]
    host: str | None = Field(default=None, alias="OS-EXT-SRV-ATTR:host", description="admin only")
    hypervisor_hostname: str | None = Field(
        default=None, alias="OS-EXT-SRV-ATTR:hypervisor_hostname", description="admin only")
    instance_name: str | None = Field(
        default=None, alias="OS-EXT-SRV-ATTR:instance_name", description="admin only")


class ServerBrief(Shown):
    """A server in GET /servers: id, name, links."""

    id: str
    name: str
    links: list[Link]


class ServerCreated(Shown):
    """What POST /servers answers (202); the rest comes with GET /servers/{id}."""

    id: str
    links: list[Link]
    disk_config: str = Field(alias="OS-DCF:diskConfig")
    security_groups: list[SecurityGroupName]
    adminPass: str | None = None  # noqa: N815 (nova's field; absent when enable_instance_password is off)


class ServerBody(Shown):
    """{"server": {...}}"""

    server: Server


class ServerCreatedBody(Shown):
    """{"server": {...}} answering POST /servers, or {"reservation_id": "r-..."} when the request
    asked for return_reservation_id."""

    server: ServerCreated | None = None
    reservation_id: str | None = None


class ServerList(Shown):
    """GET /servers; `servers_links` holds a next link when a full page came back."""

    servers: list[ServerBrief]
    servers_links: list[Link] | None = None


class ServerDetailList(Shown):
    """GET /servers/detail."""

    servers: list[Server]
    servers_links: list[Link] | None = None


# -- nova: flavors and keypairs ---------------------------------------------------------------
class FlavorBrief(Shown):
    """A flavor in GET /flavors: id, name, links."""

    id: str
    name: str
    links: list[Link]


class Flavor(FlavorBrief):
    """A flavor in full: ram in MB, disk and ephemeral in GB; swap is "" when there is none."""

    ram: int
    disk: int
    vcpus: int
    ephemeral: int = Field(alias="OS-FLV-EXT-DATA:ephemeral")
    disabled: bool = Field(alias="OS-FLV-DISABLED:disabled")
    swap: int | Literal[""]
    rxtx_factor: float
    is_public: bool = Field(alias="os-flavor-access:is_public")


class FlavorBody(Shown):
    """{"flavor": {...}}"""

    flavor: Flavor


class FlavorList(Shown):
    """GET /flavors."""

    flavors: list[FlavorBrief]


class FlavorDetailList(Shown):
    """GET /flavors/detail."""

    flavors: list[Flavor]


class Keypair(Shown):
    """A keypair; the list shows name, public_key and fingerprint, a show adds the rest."""

    name: str
    public_key: str
    fingerprint: str
    user_id: str | None = None
    id: int | None = None
    created_at: str | None = None
    updated_at: str | None = None
    deleted: bool | None = None
    deleted_at: str | None = None
    type: str | None = Field(default=None, description="ssh or x509; from microversion 2.2")
    private_key: str | None = Field(default=None, description="a generated key's; the create's answer only")


class KeypairBody(Shown):
    """{"keypair": {...}}"""

    keypair: Keypair


class KeypairList(Shown):
    """GET /os-keypairs: each item wrapped in its own {"keypair": ...}, as nova does."""

    keypairs: list[KeypairBody]


# -- glance -----------------------------------------------------------------------------------
class Image(Shown):
    """A glance v2 image, bare (no wrapper); custom properties sit at the top level."""

    id: str
    name: str | None
    status: str
    visibility: str
    owner: str | None
    protected: bool
    os_hidden: bool
    checksum: str | None
    os_hash_algo: str | None
    os_hash_value: str | None
    min_disk: int
    min_ram: int
    size: int | None
    virtual_size: int | None
    disk_format: str | None
    container_format: str | None
    created_at: str | None
    updated_at: str | None
    tags: list[str]
    self_: str = Field(alias="self")
    file: str
    schema_: str = Field(alias="schema")


class ImageList(Shown):
    """GET /v2/images."""

    images: list[Image]
    first: str
    schema_: str = Field(alias="schema")
    next: str | None = None


# -- neutron ----------------------------------------------------------------------------------
class Network(Shown):
    """A neutron network."""

    id: str
    name: str
    status: str
    admin_state_up: bool
    shared: bool
    external: bool = Field(alias="router:external")
    mtu: int
    subnets: list[str]
    tenant_id: str | None
    project_id: str | None
    description: str
    created_at: str | None
    updated_at: str | None
    revision_number: int


class NetworkBody(Shown):
    """{"network": {...}}"""

    network: Network


class NetworkList(Shown):
    """GET /v2.0/networks."""

    networks: list[Network]


class FixedIp(Shown):
    """An address of a port on a subnet."""

    subnet_id: str
    ip_address: str


class Port(Shown):
    """A neutron port: one network interface of a server."""

    id: str
    name: str
    network_id: str
    mac_address: str
    fixed_ips: list[FixedIp]
    device_id: str
    device_owner: str
    status: str
    admin_state_up: bool
    tenant_id: str | None
    project_id: str | None
    created_at: str | None
    updated_at: str | None
    host_id: str | None = Field(default=None, alias="binding:host_id", description="admin only")


class PortBody(Shown):
    """{"port": {...}}"""

    port: Port


class PortList(Shown):
    """GET /v2.0/ports."""

    ports: list[Port]


# -- cinder -----------------------------------------------------------------------------------
class Volume(Shown):
    """A cinder v3 volume; the list without /detail shows id, name and links only."""

    id: str
    name: str | None
    links: list[Link]
    status: str | None = None
    size: int | None = None
    availability_zone: str | None = None
    created_at: str | None = None
    updated_at: str | None = None
    attachments: list[dict[str, Any]] | None = None
    bootable: str | None = None
    description: str | None = None
    metadata: dict[str, str] | None = None
    user_id: str | None = None
    tenant_id: str | None = Field(
        default=None, alias="os-vol-tenant-attr:tenant_id", description="admin only")


class VolumeBody(Shown):
    """{"volume": {...}}"""

    volume: Volume


class VolumeList(Shown):
    """GET /volumes and /volumes/detail; `volumes_links` holds a next link when a full page came back."""

    volumes: list[Volume]
    volumes_links: list[Link] | None = None


# -- keystone ---------------------------------------------------------------------------------
class NamedRef(Shown):
    """A keystone reference by id and name (domain, role)."""

    id: str
    name: str


class TokenUser(NamedRef):
    """The token's user."""

    domain: NamedRef
    password_expires_at: str | None


class TokenProject(NamedRef):
    """The project the token is scoped to."""

    domain: NamedRef


class Endpoint(Shown):
    """One URL of a service in the catalog."""

    id: str
    interface: Literal["public", "internal", "admin"]
    region: str
    region_id: str
    url: str


class CatalogEntry(Shown):
    """A service in the token's catalog."""

    type: str
    name: str
    id: str
    endpoints: list[Endpoint]


class Token(Shown):
    """A project-scoped keystone v3 token; the token itself travels in X-Subject-Token."""

    methods: list[str]
    user: TokenUser
    project: TokenProject
    roles: list[NamedRef]
    audit_ids: list[str]
    issued_at: str | None
    expires_at: str | None
    is_domain: bool
    catalog: list[CatalogEntry] | None = Field(default=None, description="left out with ?nocatalog")


class TokenBody(Shown):
    """{"token": {...}}"""

    token: Token
