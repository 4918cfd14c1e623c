"""SchedulerPolicy: defaults, name lookup and configuration errors."""

import pytest

from eventsvm.scheduler import FILTERS, WEIGHERS, SchedulerPolicy


def test_defaults_name_nova_filters_and_spreading_weighers():
    policy = SchedulerPolicy()
    assert [f.name for f in policy.host_filters()] == policy.filters
    assert policy.filters[0] == "ComputeFilter"
    assert {
        "RamFilter",
        "DiskFilter",
        "CoreFilter",
        "AvailabilityZoneFilter",
        "ImagePropertiesFilter",
        "ServerGroupAffinityFilter",
        "ServerGroupAntiAffinityFilter",
    } <= set(policy.filters)
    assert policy.weighers == {
        "RAMWeigher": 1.0, "DiskWeigher": 1.0, "CPUWeigher": 1.0,
        "ServerGroupSoftAffinityWeigher": 1.0, "ServerGroupSoftAntiAffinityWeigher": 1.0}


def test_every_registered_class_carries_its_own_name():
    assert all(cls.name == name for name, cls in FILTERS.items())
    assert all(cls.name == name for name, cls in WEIGHERS.items())


def test_filters_run_in_configured_order():
    policy = SchedulerPolicy(filters=["RamFilter", "ComputeFilter"])
    assert [f.name for f in policy.host_filters()] == ["RamFilter", "ComputeFilter"]


def test_unknown_filter_is_a_config_time_error_naming_it_and_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown scheduler filter\(s\) 'RAMFilter'.*RamFilter"):
        SchedulerPolicy(filters=["ComputeFilter", "RAMFilter"])


def test_unknown_weigher_is_a_config_time_error():
    with pytest.raises(ValueError, match=r"unknown scheduler weigher\(s\) 'RamWeigher'.*RAMWeigher"):
        SchedulerPolicy(weighers={"RamWeigher": 1.0})


def test_repeated_filter_and_bad_multiplier_are_rejected():
    with pytest.raises(ValueError, match="more than once: RamFilter"):
        SchedulerPolicy(filters=["RamFilter", "RamFilter"])
    with pytest.raises(ValueError, match="finite number"):
        SchedulerPolicy(weighers={"RAMWeigher": float("nan")})
    with pytest.raises(ValueError, match="finite number"):
        SchedulerPolicy(weighers={"RAMWeigher": "2"})


def test_retry_step_is_not_an_operator_choice():
    with pytest.raises(ValueError, match="IgnoreHostsFilter"):
        SchedulerPolicy(filters=["IgnoreHostsFilter"])
