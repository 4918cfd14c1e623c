"""HostState capacity arithmetic and idempotent claims/releases."""

import dataclasses

import pytest

from eventsvm.scheduler import HostState, SchedulingRequest


def host(**overrides) -> HostState:
    fields = {"name": "compute-1", "vcpus": 8, "ram_mb": 16384, "disk_gb": 100}
    return HostState(**{**fields, **overrides})


def test_limits_apply_allocation_ratios():
    h = host(
        cpu_allocation_ratio=4.0,
        ram_allocation_ratio=1.5,
        disk_allocation_ratio=2.0,
        vcpus_used=10,
        ram_mb_used=20000,
        disk_gb_used=150,
    )
    assert h.vcpus_limit == 32
    assert h.free_vcpus == 22
    assert h.usable_ram_mb == 16384 * 1.5 - 20000
    assert h.usable_disk_gb == 50
    # Physical free goes negative when overcommitted; that is what the weighers see.
    assert h.free_ram_mb == 16384 - 20000
    assert h.free_disk_gb == -50


def test_claim_adds_usage_and_records_the_instance():
    h = host().claim("i-1", vcpus=2, ram_mb=4096, disk_gb=20)
    assert (h.vcpus_used, h.ram_mb_used, h.disk_gb_used) == (2, 4096, 20)
    assert h.instances == {"i-1"}


def test_claim_returns_a_new_state_and_leaves_the_old_one_alone():
    before = host()
    before.claim("i-1", vcpus=2, ram_mb=4096, disk_gb=20)
    assert before.ram_mb_used == 0 and before.instances == frozenset()


def test_double_claim_is_a_no_op():
    once = host().claim("i-1", vcpus=2, ram_mb=4096, disk_gb=20)
    twice = once.claim("i-1", vcpus=2, ram_mb=4096, disk_gb=20)
    assert twice == once
    assert twice.ram_mb_used == 4096


def test_release_gives_back_exactly_what_was_claimed():
    base = host(vcpus_used=1, ram_mb_used=512, disk_gb_used=5)
    released = base.claim("i-1", vcpus=2, ram_mb=4096, disk_gb=20).release("i-1")
    assert released == base


def test_release_of_unknown_instance_and_double_release_are_no_ops():
    claimed = host().claim("i-1", vcpus=2, ram_mb=4096, disk_gb=20)
    assert claimed.release("i-unknown") == claimed
    once = claimed.release("i-1")
    assert once.release("i-1") == once
    assert once.ram_mb_used == 0


def test_replaying_a_log_with_duplicates_gives_the_same_state_as_without():
    clean = host().claim("a", 1, 1024, 10).claim("b", 2, 2048, 20).release("a")
    replayed = (
        host()
        .claim("a", 1, 1024, 10)
        .claim("a", 1, 1024, 10)
        .claim("b", 2, 2048, 20)
        .release("a")
        .release("a")
        .claim("b", 2, 2048, 20)
    )
    assert replayed == clean


def test_fits_respects_every_limit_and_physical_cpus():
    h = host(vcpus=4, cpu_allocation_ratio=16.0, ram_mb=2048, disk_gb=10)
    assert h.fits(4, 2048, 10)
    assert not h.fits(5, 1024, 1)  # more vCPUs than the host has CPUs, however much overcommit
    assert not h.fits(1, 2049, 1)
    assert not h.fits(1, 1024, 11)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"vcpus": 0},
        {"ram_mb": 0},
        {"disk_gb": -1},
        {"server_group_policy": "sort-of-affinity"},
        {"num_alternates": -1},
    ],
)
def test_request_rejects_nonsense(kwargs):
    fields = {"instance_id": "i-1", "vcpus": 1, "ram_mb": 512, "disk_gb": 1}
    with pytest.raises(ValueError):
        SchedulingRequest(**{**fields, **kwargs})


def test_request_freezes_host_sets():
    r = SchedulingRequest("i-1", 1, 512, 1, group_hosts={"a"}, ignore_hosts=["b"])
    assert r.group_hosts == frozenset({"a"}) and r.ignore_hosts == frozenset({"b"})


def test_a_state_whose_usage_does_not_cover_its_claims_is_refused():
    claimed = host().claim("i-1", vcpus=2, ram_mb=4096, disk_gb=20)
    with pytest.raises(ValueError, match="ram_mb_used 0 is less than its claims hold"):
        HostState(
            name="compute-1",
            vcpus=8,
            ram_mb=16384,
            disk_gb=100,
            vcpus_used=2,
            disk_gb_used=20,
            claims=claimed.claims,
        )


def test_inventory_change_keeps_claimed_usage_when_carried_with_replace():
    claimed = host().claim("i-1", vcpus=2, ram_mb=4096, disk_gb=20)
    resized = dataclasses.replace(claimed, ram_mb=32768, ram_allocation_ratio=1.5)
    assert resized.ram_mb_used == 4096 and resized.instances == {"i-1"}
    assert resized.release("i-1").ram_mb_used == 0
