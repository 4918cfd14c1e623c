"""Two API workers over one log, each with its own read model: what one wrote, the other answers at
once (a miss is answered only after catching up with the log), a write through the other sees what
it refers to, and a token revoked through one is refused by the other though it had cached the
token. The second worker here has no tail at all, so nothing but the catch-up can bring it
another worker's writes (in `up` its tail usually gets there first; tests/e2e/test_api_workers.py
runs the real processes)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from test_api_support import Cloud, cloud_fixture  # noqa: F401

from eventsvm.api.app import create_app
from eventsvm.api.context import ApiContext
from eventsvm.config import LogConfig
from eventsvm.events.codec import Codec
from eventsvm.identity import tokens as tokens_module
from eventsvm.identity.keys import ensure_keys, rotate
from eventsvm.identity.tokens import TokenInvalid, TokenService
from eventsvm.log.factory import open_log
from eventsvm.projections.readmodel import ReadModel

KEYPAIRS = "/compute/v2.1/os-keypairs"
SERVERS = "/compute/v2.1/servers"


class Peer:
    """A second API worker: its own log connection, read model (no tail) and token cache."""

    def __init__(self, cloud: Cloud, tmp_path: Path) -> None:
        self.log = open_log(LogConfig(url=f"sqlite://{tmp_path / 'log.db'}"))
        self.readmodel = ReadModel(self.log, Codec())
        self.readmodel.start(tail=False)
        self.tokens = TokenService(tmp_path / "keys")
        context = ApiContext(readmodel=self.readmodel, tokens=self.tokens, peers=True)
        self.client = TestClient(create_app(context))

    def close(self) -> None:
        self.client.close()
        self.readmodel.close()
        self.log.close()


@pytest.fixture
def peer(cloud: Cloud, tmp_path: Path) -> Iterator[Peer]:
    other = Peer(cloud, tmp_path)
    yield other
    other.close()


def test_a_keypair_written_through_one_worker_is_shown_by_the_other(cloud: Cloud, peer: Peer) -> None:
    made = cloud.client.post(KEYPAIRS, json={"keypair": {"name": "fresh"}}, headers=cloud.headers())
    assert made.status_code == 200, made.text
    assert peer.readmodel.models.catalog.keypair(cloud.ids["user:demo"], "fresh") is None  # not folded yet
    shown = peer.client.get(f"{KEYPAIRS}/fresh", headers=cloud.headers())
    assert shown.status_code == 200, shown.text
    assert shown.json()["keypair"]["name"] == "fresh"


def test_a_server_created_through_one_worker_is_shown_by_the_other(cloud: Cloud, peer: Peer) -> None:
    server_id = cloud.create_server()
    shown = peer.client.get(f"{SERVERS}/{server_id}", headers=cloud.headers())
    assert shown.status_code == 200, shown.text
    assert shown.json()["server"]["id"] == server_id


def test_a_write_through_the_other_worker_sees_what_it_names(cloud: Cloud, peer: Peer) -> None:
    made = cloud.client.post(KEYPAIRS, json={"keypair": {"name": "named"}}, headers=cloud.headers())
    assert made.status_code == 200, made.text
    created = peer.client.post(SERVERS, json=cloud.server_request("vm-named", key_name="named"),
                               headers=cloud.headers())
    assert created.status_code == 202, created.text


def test_what_exists_nowhere_is_still_a_404(cloud: Cloud, peer: Peer) -> None:
    missing = peer.client.get(f"{KEYPAIRS}/never-made", headers=cloud.headers())
    assert missing.status_code == 404
    assert "never-made" in missing.json()["itemNotFound"]["message"]


def test_a_token_revoked_through_one_worker_is_refused_by_the_other_at_once(cloud: Cloud, peer: Peer) -> None:
    token = cloud.token()
    headers = {"X-Auth-Token": token}
    assert peer.client.get(SERVERS, headers=headers).status_code == 200  # validated and cached there
    revoked = cloud.client.delete("/identity/v3/auth/tokens", headers={**headers, "X-Subject-Token": token})
    assert revoked.status_code == 204, revoked.text
    assert peer.client.get(SERVERS, headers=headers).status_code == 401
    assert cloud.client.get(SERVERS, headers=headers).status_code == 401


def test_a_token_is_decrypted_once_while_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ensure_keys(tmp_path)
    service = TokenService(tmp_path)
    token = service.issue("user-1", "project-1", ["member"]).token
    decrypted: list[str] = []
    real = tokens_module._decrypt

    def counting(fernet: object, value: str) -> object:
        decrypted.append(value)
        return real(fernet, value)  # type: ignore[arg-type]

    monkeypatch.setattr(tokens_module, "_decrypt", counting)
    for _ in range(5):
        assert service.validate(token).user_id == "user-1"
    assert len(decrypted) == 1
    monkeypatch.setattr(tokens_module, "TOKEN_CACHE_S", 0.0)  # past the cache's time: decrypted again
    service.validate(token)
    assert len(decrypted) == 2


def test_a_cached_token_whose_key_was_pruned_is_refused(tmp_path: Path) -> None:
    ensure_keys(tmp_path)
    service = TokenService(tmp_path)
    token = service.issue("user-1", "project-1", ["member"]).token
    assert service.validate(token).user_id == "user-1"
    for _ in range(3):
        rotate(tmp_path, max_active_keys=2)  # the key it was made with is pruned
    with pytest.raises(TokenInvalid):
        service.validate(token)
