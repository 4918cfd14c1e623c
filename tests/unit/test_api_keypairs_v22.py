"""Nova's keypairs at microversion 2.2: `type` (ssh, x509) on create, list and show, 201 on create
and 204 on delete; 2.1 keeps 200 / 202 and refuses `type`. Keys are generated when no public key
is given, and the private key is answered once, never recorded."""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from test_api_support import Cloud, cloud_fixture  # noqa: F401

from eventsvm.events.model import EventType

KEYPAIRS = "/compute/v2.1/os-keypairs"


def _v22(cloud: Cloud) -> dict[str, str]:
    return {**cloud.headers(), "X-OpenStack-Nova-API-Version": "2.2"}


def test_a_generated_x509_keypair_at_2_2_is_typed_everywhere_and_its_private_key_kept_nowhere(cloud: Cloud):
    created = cloud.client.post(KEYPAIRS, json={"keypair": {"name": "cert", "type": "x509"}},
                                headers=_v22(cloud))
    assert created.status_code == 201
    keypair = created.json()["keypair"]
    assert keypair["type"] == "x509" and keypair["user_id"] == cloud.ids["user:demo"]
    certificate = x509.load_pem_x509_certificate(keypair["public_key"].encode())
    assert keypair["fingerprint"] == ":".join(f"{b:02x}" for b in certificate.fingerprint(hashes.SHA1()))
    private = serialization.load_pem_private_key(keypair["private_key"].encode(), password=None)
    assert private.public_key().public_numbers() == certificate.public_key().public_numbers()
    shown = cloud.client.get(f"{KEYPAIRS}/cert", headers=_v22(cloud)).json()["keypair"]
    listed = cloud.client.get(KEYPAIRS, headers=_v22(cloud)).json()["keypairs"]
    assert shown["type"] == "x509" and "private_key" not in shown
    types = {k["keypair"]["name"]: k["keypair"]["type"] for k in listed}
    assert types == {"cert": "x509", "keypair-1": "ssh"}
    secret = keypair["private_key"].split("\n")[1].encode()
    assert all(secret not in r.value for r in cloud.records())
    [event] = cloud.events(EventType.KEYPAIR_CREATED)[1:]
    assert event.body["key_type"] == "x509" and event.body["public_key"] == keypair["public_key"]
    assert cloud.client.delete(f"{KEYPAIRS}/cert", headers=_v22(cloud)).status_code == 204


def test_a_generated_ssh_keypair_defaults_to_ssh(cloud: Cloud):
    created = cloud.client.post(KEYPAIRS, json={"keypair": {"name": "gen"}}, headers=_v22(cloud))
    assert created.status_code == 201
    keypair = created.json()["keypair"]
    assert keypair["type"] == "ssh" and keypair["public_key"].startswith("ssh-rsa ")
    private = serialization.load_pem_private_key(keypair["private_key"].encode(), password=None)
    public = private.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                               serialization.PublicFormat.OpenSSH)
    assert keypair["public_key"].startswith(public.decode())


def test_at_2_1_create_is_200_delete_202_no_type_shown_and_type_refused(cloud: Cloud):
    created = cloud.client.post(KEYPAIRS, json={"keypair": {"name": "old"}}, headers=cloud.headers())
    assert created.status_code == 200 and "type" not in created.json()["keypair"]
    assert "private_key" in created.json()["keypair"]
    listed = cloud.client.get(KEYPAIRS, headers=cloud.headers()).json()["keypairs"]
    assert all("type" not in k["keypair"] for k in listed)
    assert "type" not in cloud.client.get(f"{KEYPAIRS}/old", headers=cloud.headers()).json()["keypair"]
    typed = cloud.client.post(KEYPAIRS, json={"keypair": {"name": "t", "type": "ssh"}},
                              headers=cloud.headers())
    assert typed.status_code == 400 and "'type' was unexpected" in typed.json()["badRequest"]["message"]
    assert cloud.client.delete(f"{KEYPAIRS}/old", headers=cloud.headers()).status_code == 202
