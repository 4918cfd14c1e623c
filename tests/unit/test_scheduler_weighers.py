"""Weighers: normalisation, multipliers, spread vs stack, and the name tie-break."""

import pytest

from eventsvm.scheduler import (
    HostState,
    SchedulerPolicy,
    SchedulingRequest,
    select_destinations,
    weigh_hosts,
)
from eventsvm.scheduler.weighers import normalize

REQUEST = SchedulingRequest(instance_id="i-1", vcpus=1, ram_mb=512, disk_gb=1)


def host(name: str, ram_free: int = 8192, disk_free: int = 100, vcpus_free: int = 8) -> HostState:
    return HostState(
        name=name,
        vcpus=16,
        ram_mb=16384,
        disk_gb=200,
        cpu_allocation_ratio=1.0,
        ram_mb_used=16384 - ram_free,
        disk_gb_used=200 - disk_free,
        vcpus_used=16 - vcpus_free,
    )


def order(hosts, weighers: dict[str, float]) -> list[str]:
    return [h.name for h, _ in weigh_hosts(hosts, REQUEST, SchedulerPolicy(weighers=weighers))]


def test_normalize_maps_min_to_0_and_max_to_1_and_all_equal_to_0():
    assert normalize([10.0, 20.0, 15.0]) == [0.0, 1.0, 0.5]
    assert normalize([-5.0, 5.0]) == [0.0, 1.0]
    assert normalize([3.0, 3.0]) == [0.0, 0.0]
    assert normalize([]) == []


def test_more_free_ram_wins():
    hosts = [host("a", ram_free=1024), host("b", ram_free=8192), host("c", ram_free=4096)]
    assert order(hosts, {"RAMWeigher": 1.0}) == ["b", "c", "a"]


def test_negative_multiplier_stacks_onto_the_fullest_host():
    hosts = [host("a", ram_free=1024), host("b", ram_free=8192), host("c", ram_free=4096)]
    assert order(hosts, {"RAMWeigher": -1.0}) == ["a", "c", "b"]


def test_more_free_disk_and_more_free_vcpus_win():
    assert order([host("a", disk_free=10), host("b", disk_free=90)], {"DiskWeigher": 1.0}) == ["b", "a"]
    assert order([host("a", vcpus_free=12), host("b", vcpus_free=2)], {"CPUWeigher": 1.0}) == ["a", "b"]


def test_multipliers_decide_between_resources_after_normalisation():
    # "ram" has the most RAM, "disk" the most disk; raw MB would dwarf GB without normalisation.
    hosts = [host("ram", ram_free=16000, disk_free=10), host("disk", ram_free=1000, disk_free=190)]
    assert order(hosts, {"RAMWeigher": 1.0, "DiskWeigher": 2.0}) == ["disk", "ram"]
    assert order(hosts, {"RAMWeigher": 3.0, "DiskWeigher": 2.0}) == ["ram", "disk"]


def test_total_weight_is_the_sum_of_multiplied_normalised_weights():
    hosts = [
        host("a", ram_free=1000, vcpus_free=2),
        host("b", ram_free=3000, vcpus_free=4),
        host("c", ram_free=2000, vcpus_free=8),
    ]
    weights = {
        h.name: w
        for h, w in weigh_hosts(
            hosts, REQUEST, SchedulerPolicy(weighers={"RAMWeigher": 2.0, "CPUWeigher": 1.0})
        )
    }
    assert weights["a"] == pytest.approx(0.0)
    assert weights["b"] == pytest.approx(2.0 * 1.0 + 1.0 * (2 / 6))
    assert weights["c"] == pytest.approx(2.0 * 0.5 + 1.0 * 1.0)


def test_ties_break_by_host_name_whatever_the_input_order():
    hosts = [host("rack-b2"), host("rack-a3"), host("rack-c1")]
    assert order(hosts, {"RAMWeigher": 1.0}) == ["rack-a3", "rack-b2", "rack-c1"]
    assert order(list(reversed(hosts)), {}) == ["rack-a3", "rack-b2", "rack-c1"]


# -- the soft server group policies (nova 2.15): weighers, never filters ---------------------------
def _grouped(policy: str, counts: dict[str, int]) -> SchedulingRequest:
    return SchedulingRequest(instance_id="i-9", vcpus=1, ram_mb=512, disk_gb=1, server_group_policy=policy,
                             group_hosts=frozenset(counts), group_member_counts=counts)


def _soft_order(hosts: list[HostState], request: SchedulingRequest) -> list[str]:
    return [h.name for h, _ in weigh_hosts(hosts, request, SchedulerPolicy())]


def test_soft_affinity_prefers_the_host_with_most_members_and_soft_anti_affinity_the_fewest():
    hosts = [host("a"), host("b"), host("c")]
    counts = {"b": 2, "c": 1}
    assert _soft_order(hosts, _grouped("soft-affinity", counts)) == ["b", "c", "a"]
    assert _soft_order(hosts, _grouped("soft-anti-affinity", counts)) == ["a", "c", "b"]
    # no soft policy: the group weighs nothing, the name breaks the tie
    assert _soft_order(hosts, _grouped("affinity", counts)) == ["a", "b", "c"]
    assert _soft_order(hosts, REQUEST) == ["a", "b", "c"]


def test_a_soft_group_never_fails_a_boot_it_only_ranks():
    # the only host that fits holds a member: soft-anti-affinity still lands there
    only = [host("a"), host("b", ram_free=0)]
    assert select_destinations(only, _grouped("soft-anti-affinity", {"a": 3})).host == "a"
    # the member's host is full: soft-affinity goes elsewhere instead of failing
    full = [host("a", ram_free=0), host("b")]
    assert select_destinations(full, _grouped("soft-affinity", {"a": 1})).host == "b"
    spread = [host("a"), host("b")]
    assert select_destinations(spread, _grouped("soft-anti-affinity", {"a": 1})).host == "b"
    assert select_destinations(spread, _grouped("soft-affinity", {"b": 1})).host == "b"


def test_the_scheduler_service_counts_a_groups_members_per_host_for_the_weighers():
    from consumers.scheduler import SchedulerState, _request

    state = SchedulerState(group_members={"g": {"m-1": "a", "m-2": "a", "m-3": "b", "i-9": "c"}})
    spec = {"flavor": {"vcpus": 1, "ram_mb": 512, "disk_gb": 1}, "server_group_id": "g",
            "server_group_policy": "soft-anti-affinity", "block_devices": []}
    made = _request("i-9", spec, state, 2)
    # the instance itself is no member to weigh against
    assert made.group_member_counts == {"a": 2, "b": 1}
    assert made.group_hosts == frozenset({"a", "b"})
    assert made.server_group_policy == "soft-anti-affinity"
