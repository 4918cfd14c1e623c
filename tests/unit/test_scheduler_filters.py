"""Each filter, with one host and one request and nothing else."""

import pytest

from eventsvm.scheduler import HostState, SchedulingRequest
from eventsvm.scheduler.filters import (
    AvailabilityZoneFilter,
    ComputeFilter,
    CoreFilter,
    DiskFilter,
    IgnoreHostsFilter,
    ImagePropertiesFilter,
    RamFilter,
    ServerGroupAffinityFilter,
    ServerGroupAntiAffinityFilter,
)
from tests.factories import host_state, scheduling_request


def host(name: str = "compute-1", **overrides) -> HostState:
    return host_state(name, **{"ram_mb": 16384, **overrides})


def request(**overrides) -> SchedulingRequest:
    return scheduling_request(**{"vcpus": 2, "ram_mb": 4096, "disk_gb": 20, **overrides})


# ComputeFilter


def test_compute_filter_passes_enabled_host_and_refuses_disabled_one():
    f = ComputeFilter()
    assert f.host_passes(host(), request())
    assert not f.host_passes(host(enabled=False, disabled_reason="maintenance"), request())


def test_compute_filter_explains_with_the_operator_reason():
    detail = ComputeFilter().explain(
        request(), [host("c-1", enabled=False, disabled_reason="bad disk"), host("c-2")]
    )
    assert "c-1 (bad disk)" in detail and "c-2" not in detail


# RamFilter and DiskFilter


@pytest.mark.parametrize(
    ("capacity_filter", "used", "fits", "one_more"),
    [
        (RamFilter, {"ram_mb": 8192, "ram_mb_used": 4096}, {"ram_mb": 4096}, {"ram_mb": 4097}),
        (DiskFilter, {"disk_gb": 100, "disk_gb_used": 80}, {"disk_gb": 20}, {"disk_gb": 21}),
    ],
)
def test_a_capacity_filter_passes_an_exact_fit_and_refuses_one_more(capacity_filter, used, fits, one_more):
    h = host(**used)
    assert capacity_filter().host_passes(h, request(**fits))
    assert not capacity_filter().host_passes(h, request(**one_more))


def test_ram_filter_applies_allocation_ratio():
    h = host(ram_mb=8192, ram_mb_used=8192, ram_allocation_ratio=1.5)
    assert RamFilter().host_passes(h, request(ram_mb=4096))
    assert not RamFilter().host_passes(host(ram_mb=8192, ram_mb_used=8192), request(ram_mb=1))


def test_ram_filter_explanation_names_the_roomiest_host():
    hosts = [host("c-1", ram_mb=2048), host("c-2", ram_mb=3072, ram_mb_used=1024), host("c-3", ram_mb=1024)]
    assert RamFilter().explain(request(ram_mb=4096), hosts) == "needs 4096 MB RAM, most free 2048 MB on c-1"


def test_disk_filter_applies_allocation_ratio():
    h = host(disk_gb=100, disk_gb_used=100, disk_allocation_ratio=2.0)
    assert DiskFilter().host_passes(h, request(disk_gb=100))
    assert not DiskFilter().host_passes(h, request(disk_gb=101))


# CoreFilter


def test_core_filter_uses_cpu_allocation_ratio():
    h = host(vcpus=4, vcpus_used=14, cpu_allocation_ratio=4.0)  # limit 16, 2 left
    assert CoreFilter().host_passes(h, request(vcpus=2))
    assert not CoreFilter().host_passes(h, request(vcpus=3))
    assert not CoreFilter().host_passes(
        host(vcpus=4, vcpus_used=4, cpu_allocation_ratio=1.0), request(vcpus=1)
    )


def test_core_filter_refuses_more_vcpus_than_physical_cpus_even_on_an_idle_host():
    h = host(vcpus=4, cpu_allocation_ratio=16.0)
    assert not CoreFilter().host_passes(h, request(vcpus=5))
    assert CoreFilter().explain(request(vcpus=5), [h]) == "needs 5 vCPU, largest host compute-1 has 4 CPUs"


def test_core_filter_explains_free_vcpus():
    h = host(vcpus=4, vcpus_used=7, cpu_allocation_ratio=2.0)
    assert CoreFilter().explain(request(vcpus=2), [h]) == "needs 2 vCPU, most free 1 vCPU on compute-1"


# AvailabilityZoneFilter


def test_az_filter_passes_any_host_when_no_zone_requested():
    assert AvailabilityZoneFilter().host_passes(host(availability_zone="az-2"), request())


def test_az_filter_matches_requested_zone_only():
    f = AvailabilityZoneFilter()
    assert f.host_passes(host(availability_zone="az-1"), request(availability_zone="az-1"))
    assert not f.host_passes(host(availability_zone="az-2"), request(availability_zone="az-1"))
    assert f.explain(request(availability_zone="az-1"), [host(availability_zone="az-2")]) == (
        "needs availability zone 'az-1', hosts are in az-2"
    )


# ImagePropertiesFilter


@pytest.mark.parametrize(
    ("props", "passes"),
    [
        ({}, True),
        ({"hw_architecture": "x86_64"}, True),
        ({"hw_architecture": "amd64"}, True),
        ({"architecture": "X86_64"}, True),
        ({"hw_architecture": "aarch64"}, False),
        ({"img_hv_type": "kvm"}, True),
        ({"img_hv_type": "qemu"}, True),  # a KVM host also runs emulated guests
        ({"hypervisor_type": "xen"}, False),
        ({"hw_architecture": "x86_64", "img_hv_type": "xen"}, False),
        ({"os_distro": "ubuntu"}, True),  # properties the filter does not know are not requirements
    ],
)
def test_image_properties_against_x86_64_kvm_host(props, passes):
    assert ImagePropertiesFilter().host_passes(host(), request(image_properties=props)) is passes


def test_image_properties_qemu_host_does_not_run_kvm_images():
    assert not ImagePropertiesFilter().host_passes(
        host(hypervisor_type="qemu"), request(image_properties={"img_hv_type": "kvm"})
    )


def test_image_properties_host_that_reports_nothing_fails_a_demanding_image():
    bare = host(cpu_arch=None, hypervisor_type=None)
    assert ImagePropertiesFilter().host_passes(bare, request())
    assert not ImagePropertiesFilter().host_passes(
        bare, request(image_properties={"hw_architecture": "x86_64"})
    )
    assert not ImagePropertiesFilter().host_passes(bare, request(image_properties={"img_hv_type": "kvm"}))


def test_image_properties_explanation_names_need_and_offer():
    detail = ImagePropertiesFilter().explain(
        request(image_properties={"hw_architecture": "aarch64"}), [host()]
    )
    assert detail == "image needs architecture aarch64, refused x86_64/kvm (compute-1)"


def test_image_properties_explanation_groups_hosts_by_what_they_offer():
    hosts = [host("c-1"), host("c-2", hypervisor_type="qemu"), host("c-3"), host("c-4", cpu_arch="aarch64")]
    detail = ImagePropertiesFilter().explain(request(image_properties={"img_hv_type": "xen"}), hosts)
    assert (
        detail
        == "image needs hypervisor xen, refused aarch64/kvm (c-4), x86_64/kvm (c-1, c-3), x86_64/qemu (c-2)"
    )


# Server groups


def test_affinity_first_member_goes_anywhere():
    r = request(server_group_policy="affinity", group_hosts=frozenset())
    assert ServerGroupAffinityFilter().host_passes(host("c-9"), r)


def test_affinity_later_members_follow_the_group():
    r = request(server_group_policy="affinity", group_hosts=frozenset({"c-1"}))
    assert ServerGroupAffinityFilter().host_passes(host("c-1"), r)
    assert not ServerGroupAffinityFilter().host_passes(host("c-2"), r)
    assert ServerGroupAffinityFilter().explain(r, [host("c-2")]) == "affinity group needs host c-1"


def test_anti_affinity_refuses_hosts_with_members():
    r = request(server_group_policy="anti-affinity", group_hosts=frozenset({"c-1", "c-2"}))
    assert not ServerGroupAntiAffinityFilter().host_passes(host("c-1"), r)
    assert ServerGroupAntiAffinityFilter().host_passes(host("c-3"), r)
    assert ServerGroupAntiAffinityFilter().explain(r, [host("c-1"), host("c-3")]) == (
        "anti-affinity group already has members on c-1"
    )


def test_group_filters_ignore_the_other_policy_and_no_group():
    apart = request(server_group_policy="anti-affinity", group_hosts=frozenset({"c-1"}))
    together = request(server_group_policy="affinity", group_hosts=frozenset({"c-1"}))
    no_group = request(group_hosts=frozenset({"c-1"}))
    assert ServerGroupAffinityFilter().host_passes(host("c-2"), apart)
    assert ServerGroupAntiAffinityFilter().host_passes(host("c-1"), together)
    assert ServerGroupAffinityFilter().host_passes(host("c-2"), no_group)
    assert ServerGroupAntiAffinityFilter().host_passes(host("c-1"), no_group)


# IgnoreHosts (retries)


def test_ignore_hosts_skips_hosts_already_tried():
    r = request(ignore_hosts=frozenset({"c-1"}))
    assert not IgnoreHostsFilter().host_passes(host("c-1"), r)
    assert IgnoreHostsFilter().host_passes(host("c-2"), r)
    assert IgnoreHostsFilter().explain(r, [host("c-1"), host("c-2")]) == "already tried c-1"
