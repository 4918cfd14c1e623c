"""ImagePropertiesFilter: only hosts whose CPU architecture and hypervisor can run the image."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from eventsvm.scheduler.filters.base import HostFilter, host_list
from eventsvm.scheduler.host_state import HostState
from eventsvm.scheduler.request import SchedulingRequest

# Glance has used both names over the years; images from either era must still schedule.
ARCH_KEYS = ("hw_architecture", "architecture")
HV_TYPE_KEYS = ("img_hv_type", "hypervisor_type")

# Spellings users put in image metadata for the same architecture.
_ARCH_ALIASES = {
    "amd64": "x86_64",
    "x64": "x86_64",
    "i386": "i686",
    "i486": "i686",
    "i586": "i686",
    "arm64": "aarch64",
}

# A KVM host runs plain QEMU (emulated) guests too, so an image asking for 'qemu' fits there.
_HV_ALSO_RUNS = {"kvm": frozenset({"kvm", "qemu"})}


def canonical_arch(arch: str) -> str:
    """The architecture name nova uses for any of its common spellings."""
    lowered = arch.strip().lower()
    return _ARCH_ALIASES.get(lowered, lowered)


def _wanted(properties: Mapping[str, str], keys: Sequence[str]) -> str | None:
    for key in keys:
        value = properties.get(key)
        if value:
            return value
    return None


class ImagePropertiesFilter(HostFilter):
    """Passes hosts matching the image's architecture and hypervisor type; an image that asks
    for neither runs anywhere, and a host that does not report what an image asks for fails."""

    name = "ImagePropertiesFilter"

    def host_passes(self, host: HostState, request: SchedulingRequest) -> bool:
        """Whether the host offers the architecture and hypervisor the image asks for."""
        arch = _wanted(request.image_properties, ARCH_KEYS)
        if arch is not None:
            if host.cpu_arch is None or canonical_arch(host.cpu_arch) != canonical_arch(arch):
                return False
        hv_type = _wanted(request.image_properties, HV_TYPE_KEYS)
        if hv_type is not None:
            if host.hypervisor_type is None:
                return False
            host_hv = host.hypervisor_type.lower()
            if hv_type.lower() not in _HV_ALSO_RUNS.get(host_hv, frozenset({host_hv})):
                return False
        return True

    def explain(self, request: SchedulingRequest, candidates: Sequence[HostState]) -> str:
        """The image's needs against what each kind of host offers."""
        needs = []
        arch = _wanted(request.image_properties, ARCH_KEYS)
        if arch is not None:
            needs.append(f"architecture {arch}")
        hv_type = _wanted(request.image_properties, HV_TYPE_KEYS)
        if hv_type is not None:
            needs.append(f"hypervisor {hv_type}")
        offers: dict[str, list[HostState]] = {}
        for host in candidates:
            if not self.host_passes(host, request):
                offered = f"{host.cpu_arch or 'unknown arch'}/{host.hypervisor_type or 'unknown hypervisor'}"
                offers.setdefault(offered, []).append(host)
        # "; " separates filters in NoValidHost's message, so kinds are joined with ", ".
        offered_text = ", ".join(f"{kind} ({host_list(hosts)})" for kind, hosts in sorted(offers.items()))
        return f"image needs {' and '.join(needs)}, refused {offered_text}"
