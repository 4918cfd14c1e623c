"""select_destinations: the chosen host, its alternates, and NoValidHost explanations."""

import pytest

from eventsvm.scheduler import NoValidHost, SchedulerPolicy, select_destinations
from tests.factories import host_state as host
from tests.factories import scheduling_request as request


def test_chooses_the_emptiest_host_and_two_alternates_best_first():
    hosts = [
        host("c-1", ram_mb_used=6144),
        host("c-2"),
        host("c-3", ram_mb_used=2048),
        host("c-4", ram_mb_used=4096),
    ]
    selection = select_destinations(hosts, request())
    assert selection.host == "c-2"
    assert selection.alternates == ["c-3", "c-4"]


def test_alternates_only_come_from_hosts_that_passed_every_filter():
    hosts = [host("c-1"), host("c-2", enabled=False), host("c-3", ram_mb_used=8192)]
    selection = select_destinations(hosts, request())
    assert selection.host == "c-1"
    assert selection.alternates == []


def test_num_alternates_is_honoured():
    hosts = [host(f"c-{i}") for i in range(6)]
    assert len(select_destinations(hosts, request(num_alternates=4)).alternates) == 4
    assert select_destinations(hosts, request(num_alternates=0)).alternates == []


def test_reschedule_skips_hosts_already_tried():
    hosts = [host("c-1"), host("c-2", ram_mb_used=1024), host("c-3", ram_mb_used=2048)]
    selection = select_destinations(hosts, request(ignore_hosts=frozenset({"c-1"})))
    assert selection.host == "c-2"
    assert "c-1" not in selection.alternates


def test_anti_affinity_group_spreads_and_affinity_group_stacks():
    hosts = [host("c-1"), host("c-2", ram_mb_used=4096)]
    apart = request(server_group_policy="anti-affinity", group_hosts=frozenset({"c-1"}))
    together = request(server_group_policy="affinity", group_hosts=frozenset({"c-2"}))
    assert select_destinations(hosts, apart).host == "c-2"
    assert select_destinations(hosts, together).host == "c-2"


def test_no_valid_host_names_every_filter_with_counts_and_the_need():
    hosts = [
        host("compute-1", ram_mb=1024),
        host("compute-2", ram_mb=4096, ram_mb_used=2048),
        host("compute-3", ram_mb=2048, ram_mb_used=1024),
    ]
    policy = SchedulerPolicy(filters=["ComputeFilter", "RamFilter", "DiskFilter"])
    with pytest.raises(NoValidHost) as caught:
        select_destinations(hosts, request(ram_mb=4096), policy)
    assert str(caught.value) == (
        "No valid host was found. ComputeFilter: 3 -> 3; "
        "RamFilter: 3 -> 0 (needs 4096 MB RAM, most free 2048 MB on compute-2)"
    )


def test_no_valid_host_shows_partial_drops_and_the_retry_step():
    hosts = [
        host("c-1"),
        host("c-2", enabled=False, disabled_reason="maintenance"),
        host("c-3", cpu_arch="aarch64"),
    ]
    policy = SchedulerPolicy(filters=["ComputeFilter", "ImagePropertiesFilter"])
    r = request(ignore_hosts=frozenset({"c-1"}), image_properties={"hw_architecture": "x86_64"})
    with pytest.raises(NoValidHost) as caught:
        select_destinations(hosts, r, policy)
    assert caught.value.explanation == (
        "IgnoreHostsFilter: 3 -> 2 (already tried c-1); "
        "ComputeFilter: 2 -> 1 (needs an enabled compute service, disabled: c-2 (maintenance)); "
        "ImagePropertiesFilter: 1 -> 0 (image needs architecture x86_64, refused aarch64/kvm (c-3))"
    )


def test_no_valid_host_when_there_are_no_hosts():
    with pytest.raises(NoValidHost, match="no compute hosts"):
        select_destinations([], request())


def test_wrong_zone_explains_which_zones_exist():
    with pytest.raises(
        NoValidHost,
        match=r"AvailabilityZoneFilter: 2 -> 0 \(needs availability zone 'az-9', "
        r"hosts are in az-1, az-2\)",
    ):
        select_destinations(
            [host("a", availability_zone="az-1"), host("b", availability_zone="az-2")],
            request(availability_zone="az-9"),
        )


def test_the_same_host_given_twice_is_a_caller_error():
    with pytest.raises(ValueError, match="c-1"):
        select_destinations([host("c-1"), host("c-1")], request())


def test_selection_is_deterministic_under_input_order():
    hosts = [host("c-3"), host("c-1"), host("c-2")]
    first = select_destinations(hosts, request())
    assert first == select_destinations(list(reversed(hosts)), request())
    assert (first.host, first.alternates) == ("c-1", ["c-2", "c-3"])
