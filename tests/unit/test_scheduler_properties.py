"""Property-style checks over many seeded random clouds and requests."""

import dataclasses
import random

import pytest

from eventsvm.scheduler import (
    HostState,
    NoValidHost,
    SchedulerPolicy,
    SchedulingRequest,
    select_destinations,
    weigh_hosts,
)
from eventsvm.scheduler.filters import IgnoreHostsFilter

ZONES = ["az-1", "az-2"]
ARCHES = ["x86_64", "aarch64"]
HYPERVISORS = ["kvm", "qemu"]


def random_host(rng: random.Random, i: int) -> HostState:
    vcpus, ram, disk = rng.choice([4, 8, 16]), rng.choice([4096, 8192, 32768]), rng.choice([50, 200, 1000])
    cpu_ratio, ram_ratio, disk_ratio = (
        rng.choice([1.0, 4.0, 16.0]),
        rng.choice([1.0, 1.5]),
        rng.choice([1.0, 2.0]),
    )
    return HostState(
        name=f"compute-{i}",
        availability_zone=rng.choice(ZONES),
        enabled=rng.random() > 0.15,
        vcpus=vcpus,
        ram_mb=ram,
        disk_gb=disk,
        cpu_allocation_ratio=cpu_ratio,
        ram_allocation_ratio=ram_ratio,
        disk_allocation_ratio=disk_ratio,
        vcpus_used=rng.randint(0, int(vcpus * cpu_ratio)),
        ram_mb_used=rng.randint(0, int(ram * ram_ratio)),
        disk_gb_used=rng.randint(0, int(disk * disk_ratio)),
        cpu_arch=rng.choice(ARCHES),
        hypervisor_type=rng.choice(HYPERVISORS),
    )


def random_request(rng: random.Random, names: list[str], n: int) -> SchedulingRequest:
    props = {}
    if rng.random() < 0.3:
        props["hw_architecture"] = rng.choice(ARCHES)
    if rng.random() < 0.2:
        props["img_hv_type"] = rng.choice(HYPERVISORS)
    return SchedulingRequest(
        instance_id=f"i-{n}",
        vcpus=rng.choice([1, 2, 4, 8, 17]),
        ram_mb=rng.choice([512, 2048, 8192, 16384]),
        disk_gb=rng.choice([1, 20, 80, 500]),
        availability_zone=rng.choice([None, None, *ZONES]),
        image_properties=props,
        server_group_policy=rng.choice([None, "affinity", "anti-affinity"]),
        group_hosts=frozenset(rng.sample(names, k=rng.randint(0, min(2, len(names))))),
        ignore_hosts=frozenset(rng.sample(names, k=rng.randint(0, min(2, len(names))))),
        num_alternates=rng.randint(0, 3),
    )


def random_policy(rng: random.Random) -> SchedulerPolicy:
    weighers = {
        name: rng.uniform(-2.0, 2.0)
        for name in ["RAMWeigher", "DiskWeigher", "CPUWeigher"]
        if rng.random() < 0.7
    }
    return SchedulerPolicy(weighers=weighers)


def passes_everything(host: HostState, request: SchedulingRequest, policy: SchedulerPolicy) -> bool:
    return all(f.host_passes(host, request) for f in [IgnoreHostsFilter(), *policy.host_filters()])


@pytest.mark.parametrize("seed", range(20))
def test_chosen_and_alternate_hosts_pass_every_filter_and_nothing_is_missed(seed):
    rng = random.Random(seed)
    for n in range(25):
        hosts = [random_host(rng, i) for i in range(rng.randint(1, 8))]
        request = random_request(rng, [h.name for h in hosts], n)
        policy = random_policy(rng)
        eligible = [h for h in hosts if passes_everything(h, request, policy)]
        try:
            selection = select_destinations(hosts, request, policy)
        except NoValidHost as refusal:
            assert eligible == [], f"NoValidHost although {[h.name for h in eligible]} fit: {refusal}"
            assert refusal.steps[-1].hosts_out == 0
            assert [s.hosts_in for s in refusal.steps[1:]] == [s.hosts_out for s in refusal.steps[:-1]]
            assert refusal.explanation == "; ".join(str(step) for step in refusal.steps)
            assert all("; " not in (step.detail or "") for step in refusal.steps)
            continue
        by_name = {h.name: h for h in hosts}
        chosen = by_name[selection.host]
        assert passes_everything(chosen, request, policy)
        assert all(passes_everything(by_name[a], request, policy) for a in selection.alternates)
        assert selection.host not in selection.alternates
        assert len(selection.alternates) == min(request.num_alternates, len(eligible) - 1)
        ranked = weigh_hosts(eligible, request, policy)
        assert ranked[0][0].name == selection.host


@pytest.mark.parametrize("seed", range(10))
def test_filling_a_cloud_by_select_then_claim_never_exceeds_any_limit(seed):
    rng = random.Random(1000 + seed)
    hosts = {h.name: h for h in (random_host(rng, i) for i in range(5))}
    # Start from idle hosts so the claims are the only usage.
    hosts = {
        name: dataclasses.replace(h, vcpus_used=0, ram_mb_used=0, disk_gb_used=0) for name, h in hosts.items()
    }
    placed = 0
    for n in range(200):
        request = SchedulingRequest(
            instance_id=f"i-{n}",
            vcpus=rng.choice([1, 2, 4]),
            ram_mb=rng.choice([512, 1024, 4096]),
            disk_gb=rng.choice([1, 10, 40]),
        )
        try:
            selection = select_destinations(hosts.values(), request, random_policy(rng))
        except NoValidHost:
            continue
        target = hosts[selection.host]
        assert target.fits(request.vcpus, request.ram_mb, request.disk_gb)
        hosts[target.name] = target.claim(request.instance_id, request.vcpus, request.ram_mb, request.disk_gb)
        placed += 1
        for h in hosts.values():
            assert h.vcpus_used <= h.vcpus_limit
            assert h.ram_mb_used <= h.ram_limit_mb
            assert h.disk_gb_used <= h.disk_limit_gb
            assert all(c.vcpus <= h.vcpus for c in h.claims.values())
    assert placed > 0
