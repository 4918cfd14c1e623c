"""The libvirt side of a compute host: domain XML as nova writes it, and an idempotent hypervisor."""

from eventsvm.virt.hypervisor import (
    DEFAULT_URI,
    DomainInfo,
    DomainNotFound,
    DomainState,
    Hypervisor,
    HypervisorError,
    HypervisorUnavailable,
    NodeCapacity,
    SpawnError,
)
from eventsvm.virt.node import test_uri_for, write_node_xml
from eventsvm.virt.xml import (
    NOVA_NS,
    FlavorMeta,
    GuestPort,
    GuestSpec,
    InvalidGuestSpec,
    OwnerMeta,
    build_domain_xml,
    domain_name_for,
)

__all__ = [
    "DEFAULT_URI",
    "NOVA_NS",
    "DomainInfo",
    "DomainNotFound",
    "DomainState",
    "FlavorMeta",
    "GuestPort",
    "GuestSpec",
    "Hypervisor",
    "HypervisorError",
    "HypervisorUnavailable",
    "InvalidGuestSpec",
    "NodeCapacity",
    "OwnerMeta",
    "SpawnError",
    "build_domain_xml",
    "domain_name_for",
    "test_uri_for",
    "write_node_xml",
]
