"""Quota arithmetic with nova's defaults, its messages, and -1 as unlimited."""

from eventsvm.identity.quota import QuotaLimits, ResourceCount, check_quota


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
