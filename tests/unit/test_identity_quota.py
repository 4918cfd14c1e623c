"""Quota arithmetic with nova's defaults, its messages, and -1 as unlimited."""

import pytest

from eventsvm.identity.quota import QuotaExceeded, QuotaLimits, ResourceCount, check_quota, servers_that_fit


def test_nova_defaults():
    assert QuotaLimits() == QuotaLimits(instances=10, cores=20, ram_mb=51200)


def test_a_request_that_fits_passes():
    used = ResourceCount(instances=9, cores=18, ram_mb=50000)
    assert check_quota(QuotaLimits(), used, ResourceCount(1, 2, 1200)) is None


def test_exceeding_cores_is_reported_in_novas_words():
    used = ResourceCount(instances=3, cores=18, ram_mb=2048)
    message = check_quota(QuotaLimits(), used, ResourceCount(instances=1, cores=4, ram_mb=512))
    assert message == "Quota exceeded for cores: Requested 4, but already used 18 of 20 cores"


def test_several_exceeded_resources_are_all_named():
    used = ResourceCount(instances=10, cores=20, ram_mb=51200)
    message = check_quota(QuotaLimits(), used, ResourceCount(instances=1, cores=1, ram_mb=512))
    assert message == (
        "Quota exceeded for cores, instances, ram: Requested 1, 1, 512, "
        "but already used 20, 10, 51200 of 20, 10, 51200 cores, instances, ram"
    )


def test_minus_one_means_unlimited():
    limits = QuotaLimits(instances=-1, cores=-1, ram_mb=-1)
    huge = ResourceCount(instances=10**6, cores=10**6, ram_mb=10**9)
    assert check_quota(limits, huge, huge) is None


def test_zero_allows_nothing():
    message = check_quota(QuotaLimits(instances=0), ResourceCount(), ResourceCount(instances=1))
    assert message == "Quota exceeded for instances: Requested 1, but already used 0 of 0 instances"


def test_a_lowered_limit_only_blocks_what_the_request_asks_for():
    # already over on cores after an admin lowered the quota; a request for no cores is still fine
    used = ResourceCount(instances=1, cores=8, ram_mb=0)
    assert check_quota(QuotaLimits(cores=4), used, ResourceCount(ram_mb=128)) is None
    assert check_quota(QuotaLimits(cores=4), used, ResourceCount(cores=1)) is not None


def test_exactly_at_the_limit_is_allowed():
    used = ResourceCount(instances=9, cores=19, ram_mb=51199)
    assert check_quota(QuotaLimits(), used, ResourceCount(1, 1, 1)) is None


# -- several servers in one request (nova's _check_num_instances_quota) ----------------------------
SMALL = ResourceCount(instances=1, cores=1, ram_mb=512)


def test_all_servers_asked_for_fit():
    assert servers_that_fit(QuotaLimits(), ResourceCount(), SMALL, 1, 10) == 10


def test_max_count_is_reduced_to_what_fits():
    used = ResourceCount(instances=7, cores=7, ram_mb=3584)
    assert servers_that_fit(QuotaLimits(), used, SMALL, 2, 5) == 3


def test_cores_and_ram_reduce_the_count_too():
    big = ResourceCount(instances=1, cores=4, ram_mb=1024)
    assert servers_that_fit(QuotaLimits(), ResourceCount(cores=8), big, 1, 5) == 3
    assert servers_that_fit(QuotaLimits(ram_mb=2048), ResourceCount(), big, 1, 5) == 2


@pytest.mark.parametrize(
    ("instances_used", "least", "most", "message"),
    [
        # fewer than min_count fit: the whole request is refused, in nova's words
        (8, 3, 3, "Quota exceeded for instances: Requested 3, but already used 8 of 10 instances"),
        # a range is named min-max
        (10, 2, 4, "Quota exceeded for instances: Requested 2-4, but already used 10 of 10 instances"),
        # one server reads as check_quota's message
        (10, 1, 1, "Quota exceeded for instances: Requested 1, but already used 10 of 10 instances"),
    ],
)
def test_too_few_servers_fit(instances_used: int, least: int, most: int, message: str):
    used = ResourceCount(instances=instances_used, cores=instances_used, ram_mb=512 * instances_used)
    with pytest.raises(QuotaExceeded) as refused:
        servers_that_fit(QuotaLimits(), used, SMALL, least, most)
    assert str(refused.value) == message
    if least == most == 1:
        assert message == check_quota(QuotaLimits(), used, SMALL)


def test_unlimited_never_reduces():
    limits = QuotaLimits(instances=-1, cores=-1, ram_mb=-1)
    assert servers_that_fit(limits, ResourceCount(10**6, 10**6, 10**9), SMALL, 1, 500) == 500
