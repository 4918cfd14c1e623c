"""One claim, computed once: what an instance holds on its host, as nova counts it."""

from typing import Any

import pytest

from eventsvm.scheduler.claims import Claim, boots_from_volume, claim_for, claim_for_flavor, claim_in

FLAVOR = {"id": "4", "name": "m1.large", "vcpus": 4, "ram_mb": 8192, "disk_gb": 40, "ephemeral_gb": 0,
          "swap_mb": 0}


def spec(flavor: dict[str, Any] = FLAVOR, *devices: dict[str, Any]) -> dict[str, Any]:
    return {"flavor": flavor, "block_devices": list(devices)}


def device(source: str, destination: str, boot_index: int | None) -> dict[str, Any]:
    return {"source_type": source, "destination_type": destination, "uuid": "u", "boot_index": boot_index}


def test_an_image_backed_server_claims_its_root_disk_on_the_host():
    assert claim_for(spec()) == Claim(vcpus=4, ram_mb=8192, disk_gb=40)


@pytest.mark.parametrize("source", ["volume", "image", "blank"])
def test_a_server_booting_from_a_volume_claims_no_local_root_disk(source: str):
    assert claim_for(spec(FLAVOR, device(source, "volume", 0))) == Claim(vcpus=4, ram_mb=8192, disk_gb=0)


def test_a_volume_that_is_not_the_boot_device_leaves_the_root_disk_local():
    extra = device("volume", "volume", None)
    local_boot = device("image", "local", 0)
    assert not boots_from_volume(spec(FLAVOR, extra, local_boot))
    assert claim_for(spec(FLAVOR, extra, local_boot)).disk_gb == 40


def test_ephemeral_and_swap_stay_local_even_when_booting_from_a_volume():
    flavor = {**FLAVOR, "ephemeral_gb": 10, "swap_mb": 512}
    assert claim_for(spec(flavor)).disk_gb == 40 + 10 + 1
    assert claim_for(spec(flavor, device("volume", "volume", 0))).disk_gb == 10 + 1


def test_swap_is_rounded_up_to_whole_gigabytes():
    assert claim_for_flavor({**FLAVOR, "swap_mb": 1024}).disk_gb == 41
    assert claim_for_flavor({**FLAVOR, "swap_mb": 1025}).disk_gb == 42
    small = {**FLAVOR, "ephemeral_gb": 5, "swap_mb": 2048}
    assert claim_for_flavor(small, boot_from_volume=True).disk_gb == 7


def test_a_flavor_without_ephemeral_or_swap_fields_counts_them_as_zero():
    assert claim_for_flavor({"vcpus": 1, "ram_mb": 512, "disk_gb": 1}) == Claim(1, 512, 1)


def test_an_event_s_claim_wins_over_its_spec():
    """The spawner checks the numbers the scheduler placed with, even if the rule changed since."""
    body = {"spec": spec(), "claim": {"vcpus": 1, "ram_mb": 2, "disk_gb": 3}}
    assert claim_in(body) == Claim(1, 2, 3)


def test_an_event_without_a_claim_falls_back_to_its_spec():
    assert claim_in({"spec": spec(FLAVOR, device("volume", "volume", 0)), "claim": None}).disk_gb == 0
    assert claim_in({"spec": spec()}).disk_gb == 40


def test_a_claim_round_trips_through_its_record():
    claim = Claim(vcpus=2, ram_mb=4096, disk_gb=0)
    assert Claim.from_record(claim.as_record()) == claim
    assert claim.as_tuple() == (2, 4096, 0)
