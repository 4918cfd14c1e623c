"""The best-first selection (eventsvm.scheduler.ranked) answers exactly what select_destinations,
the full scan it replaces, answers: the same host, the same alternates in the same order, the same
NoValidHost explanation; over random clouds, claim histories, requests and policies."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consumers.scheduler import SchedulerState
from eventsvm.scheduler import (
    DEFAULT_FILTERS,
    WEIGHERS,
    Claim,
    HostState,
    NoValidHost,
    SchedulerPolicy,
    SchedulingRequest,
    Selection,
    select_destinations,
)
from eventsvm.scheduler.host_index import HostIndex
from eventsvm.scheduler.ranked import select_ranked
from eventsvm.scheduler.weighers import HostKeyWeigher, HostWeigher

NAMES = [f"compute-{i:02d}" for i in range(24)]
ZONES = ["nova", "az-2", "az-3"]
ARCHES = [None, "x86_64", "aarch64"]
HYPERVISORS = [None, "kvm", "qemu"]
# few sizes, so that hosts tie on every figure as real clouds of one hardware model do
FLAVORS = [Claim(1, 512, 1), Claim(1, 2048, 20), Claim(2, 4096, 40), Claim(4, 8192, 80), Claim(17, 512, 0)]
# 0 weighs nothing, the tiny and huge ones make float sums absorb a whole weigher
MULTIPLIERS = [1.0, -1.0, 2.0, 0.0, -0.5, 0.1, 3.7, 1e-20, 1e20, -1e9]


@st.composite
def hosts(draw: st.DrawFn) -> list[HostState]:
    names = draw(st.lists(st.sampled_from(NAMES), min_size=1, max_size=20, unique=True))
    return [
        HostState(
            name=name,
            vcpus=draw(st.sampled_from([4, 8, 16])),
            ram_mb=draw(st.sampled_from([8192, 16384])),
            disk_gb=draw(st.sampled_from([100, 200])),
            availability_zone=draw(st.sampled_from(ZONES)),
            enabled=draw(st.sampled_from([True, True, True, False])),
            cpu_allocation_ratio=draw(st.sampled_from([1.0, 4.0, 1.5])),
            ram_allocation_ratio=draw(st.sampled_from([1.0, 1.5])),
            disk_allocation_ratio=draw(st.sampled_from([1.0, 2.0])),
            ram_mb_used=draw(st.sampled_from([0, 0, 512, 4096])),
            cpu_arch=draw(st.sampled_from(ARCHES)),
            hypervisor_type=draw(st.sampled_from(HYPERVISORS)),
        )
        for name in names
    ]


# one step of a scheduler's history: a claim, a release, a disable or enable, a re-registration
Step = tuple[str, int, int]
steps = st.lists(
    st.tuples(st.sampled_from(["claim", "claim", "claim", "release", "toggle", "reregister"]),
              st.integers(0, 30), st.integers(0, 100)),
    max_size=60,
)


def cloud(registered: list[HostState], history: list[Step]) -> SchedulerState:
    """A scheduler state built the way its fold builds it: registrations, then the history."""
    state = SchedulerState()
    for host in registered:
        state.register(host)
    names = sorted(state.hosts)
    for kind, instance, pick in history:
        name = names[pick % len(names)]
        key = f"i-{instance}"
        if kind == "claim":
            state.hold(name, key, FLAVORS[pick % len(FLAVORS)])
        elif kind == "release":
            for host in names:
                state.free(host, key)
        elif kind == "toggle":
            state.put(dataclasses.replace(state.hosts[name], enabled=not state.hosts[name].enabled))
        else:
            previous = state.hosts[name]
            moved = dataclasses.replace(previous, ram_mb=previous.ram_mb * 2, availability_zone="az-2")
            state.register(moved)
    return state


@st.composite
def requests(draw: st.DrawFn) -> SchedulingRequest:
    flavor = draw(st.sampled_from([*FLAVORS[:4], *FLAVORS]))
    properties = draw(st.sampled_from([{}, {}, {}, {"hw_architecture": "x86_64"}, {"img_hv_type": "qemu"},
                                       {"architecture": "aarch64", "hypervisor_type": "kvm"}]))
    return SchedulingRequest(
        instance_id="i-new",
        vcpus=flavor.vcpus,
        ram_mb=flavor.ram_mb,
        disk_gb=flavor.disk_gb,
        availability_zone=draw(st.sampled_from([None, None, None, *ZONES, "elsewhere"])),
        image_properties=properties,
        server_group_policy=draw(st.sampled_from([None, None, "affinity", "anti-affinity", "soft-affinity",
                                                  "soft-anti-affinity"])),
        group_hosts=frozenset(draw(st.lists(st.sampled_from(NAMES), max_size=3))),
        # the soft policies' weighers count the group's members per host
        group_member_counts=draw(st.dictionaries(st.sampled_from(NAMES), st.integers(1, 4), max_size=4)),
        ignore_hosts=frozenset(draw(st.lists(st.sampled_from(NAMES), max_size=3))),
        num_alternates=draw(st.integers(0, 8)),
    )


@st.composite
def policies(draw: st.DrawFn) -> SchedulerPolicy:
    filters = draw(st.permutations(DEFAULT_FILTERS))
    kept = filters[: draw(st.sampled_from([len(filters), len(filters), 0, 3, 6]))]
    weighers = draw(st.dictionaries(st.sampled_from(sorted(WEIGHERS)), st.sampled_from(MULTIPLIERS),
                                    min_size=draw(st.sampled_from([1, 1, 1, 0, 2, 3]))))
    return SchedulerPolicy(filters=list(kept), weighers=weighers)


def outcome(choose: object) -> Selection | str:
    try:
        return choose()  # type: ignore[operator, no-any-return]
    except NoValidHost as refusal:
        return refusal.explanation


def assert_same_choice(state: SchedulerState, request: SchedulingRequest, policy: SchedulerPolicy) -> None:
    reference = outcome(lambda: select_destinations(state.hosts.values(), request, policy))
    assert outcome(lambda: select_ranked(state.hosts, state.index, request, policy)) == reference


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hosts(), steps, requests(), policies())
def test_best_first_chooses_what_the_full_scan_chooses(
    registered: list[HostState], history: list[Step], request: SchedulingRequest, policy: SchedulerPolicy
) -> None:
    state = cloud(registered, history)
    assert_same_choice(state, request, policy)


@settings(max_examples=150, deadline=None)
@given(hosts(), steps)
def test_the_index_is_the_one_a_fresh_build_of_the_same_hosts_gives(
    registered: list[HostState], history: list[Step]
) -> None:
    state = cloud(registered, history)
    fresh = HostIndex()
    for host in state.hosts.values():
        fresh.put(host, None)
    assert state.index == fresh


def test_identical_hosts_go_in_name_order_and_a_claimed_one_last() -> None:
    state = SchedulerState()
    for name in NAMES:
        state.register(HostState(name=name, vcpus=8, ram_mb=16384, disk_gb=100))
    state.hold("compute-00", "i-1", Claim(1, 512, 1))
    request = SchedulingRequest("i-2", 1, 512, 1, num_alternates=2)
    chosen = select_ranked(state.hosts, state.index, request)
    assert chosen == Selection("compute-01", ["compute-02", "compute-03"])
    assert_same_choice(state, request, SchedulerPolicy())


def registered(*hosts: tuple[str, int, int, float]) -> SchedulerState:
    """Hosts of (name, free RAM MB, free disk GB, CPU allocation ratio) on 8 CPUs."""
    state = SchedulerState()
    for name, ram, disk, cpu_ratio in hosts:
        host = HostState(name=name, vcpus=8, ram_mb=ram, disk_gb=disk, cpu_allocation_ratio=cpu_ratio)
        state.register(host)
    return state


def test_a_tie_at_the_threshold_with_a_smaller_name_behind_the_fronts_is_found() -> None:
    # totals 1.0 each: d-a (1, 0), d-b (0, 1) and c (0.5, 0.5) in (RAM, disk); the walks meet d-a
    # and d-b first, and the threshold at c's figures ties them: c, first by name, must be found
    state = registered(("c", 12288, 150, 1.0), ("d-a", 16384, 100, 1.0), ("d-b", 8192, 200, 1.0))
    policy = SchedulerPolicy(weighers={"RAMWeigher": 1.0, "DiskWeigher": 1.0})
    request = SchedulingRequest("i-1", 1, 512, 1, num_alternates=0)
    assert select_ranked(state.hosts, state.index, request, policy) == Selection("c", [])
    assert_same_choice(state, request, policy)


def test_a_tie_a_huge_multiplier_makes_of_a_worse_figure_is_found() -> None:
    # RAM x 1e20 swallows what disk and CPU add: hosts of equal RAM tie whatever their disk, so a
    # class the disk walk meets late can tie the threshold, and ties go by name
    state = registered(("c-43", 6144, 200, 2.0), ("c-77", 4096, 150, 1.5), ("c-37", 6144, 150, 2.0),
                       ("c-54", 4096, 200, 1.0), ("c-81", 8192, 100, 1.5), ("c-28", 6144, 150, 1.5))
    policy = SchedulerPolicy(weighers={"DiskWeigher": 1.0, "CPUWeigher": 1e-20, "RAMWeigher": 1e20})
    request = SchedulingRequest("i-1", 1, 1, 0, num_alternates=1)
    assert select_ranked(state.hosts, state.index, request, policy) == Selection("c-81", ["c-28"])
    assert_same_choice(state, request, policy)


class RequestReadingWeigher(HostWeigher):
    """Weighs by whether the host holds the request's group (as a soft-affinity weigher would):
    nothing an index of hosts can sort."""

    name: ClassVar[str] = "RequestReadingWeigher"

    def raw_weight(self, host: HostState, request: SchedulingRequest) -> float:
        return 1.0 if host.name in request.group_hosts else 0.0


class OverridingWeigher(HostKeyWeigher):
    """Names an indexed figure but weighs something else: must not be taken at its word."""

    name: ClassVar[str] = "OverridingWeigher"
    host_key = "free_ram_mb"

    def raw_weight(self, host: HostState, request: SchedulingRequest) -> float:
        return -float(host.free_ram_mb) if host.name.endswith("3") else float(host.free_ram_mb)


@pytest.mark.parametrize(("weigher", "multiplier", "best"), [
    (RequestReadingWeigher, 5.0, "compute-20"),
    # trusting host_key would stack on the least free RAM, compute-04
    (OverridingWeigher, -5.0, "compute-03"),
])
def test_a_weigher_the_index_cannot_sort_gets_the_full_scan(
    monkeypatch: pytest.MonkeyPatch, weigher: type[HostWeigher], multiplier: float, best: str
) -> None:
    monkeypatch.setitem(WEIGHERS, weigher.name, weigher)
    state = SchedulerState()
    for i, name in enumerate(NAMES):
        state.register(HostState(name=name, vcpus=8, ram_mb=16384, disk_gb=100, ram_mb_used=512 * (i % 5)))
    policy = SchedulerPolicy(weighers={weigher.name: multiplier, "RAMWeigher": 1.0})
    request = SchedulingRequest("i-1", 1, 512, 1, group_hosts=frozenset({"compute-20"}), num_alternates=3)
    chosen = select_ranked(state.hosts, state.index, request, policy)
    assert chosen == select_destinations(state.hosts.values(), request, policy)
    assert chosen.host == best


class SoftAffinityLikeWeigher(HostWeigher):
    """Reads the request, but says when it weighs every host alike: outside an affinity group."""

    name: ClassVar[str] = "SoftAffinityLikeWeigher"

    def raw_weight(self, host: HostState, request: SchedulingRequest) -> float:
        if request.server_group_policy != "affinity":
            raise AssertionError("weighed although it weighs every host alike for this request")
        return 1.0 if host.name in request.group_hosts else 0.0

    def weighs_all_alike(self, request: SchedulingRequest) -> bool:
        return request.server_group_policy != "affinity"


def test_a_weigher_that_weighs_every_host_alike_for_the_request_is_left_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(WEIGHERS, SoftAffinityLikeWeigher.name, SoftAffinityLikeWeigher)
    state = SchedulerState()
    for i, name in enumerate(NAMES):
        state.register(HostState(name=name, vcpus=8, ram_mb=16384, disk_gb=100, ram_mb_used=512 * (i % 5)))
    policy = SchedulerPolicy(weighers={SoftAffinityLikeWeigher.name: 5.0, "RAMWeigher": 1.0})
    outside = SchedulingRequest("i-1", 1, 512, 1, num_alternates=2)
    assert select_ranked(state.hosts, state.index, outside, policy) == Selection(
        "compute-00", ["compute-05", "compute-10"])
    # in its group it is weighed, host by host, and agrees with the full scan
    inside = dataclasses.replace(outside, server_group_policy="affinity", group_hosts={"compute-21"})
    assert select_ranked(state.hosts, state.index, inside, policy).host == "compute-21"
