"""The fork server runs the real `openstack` as `subprocess.run` would: the environment given, the
status and both streams back, and a hung invocation killed at its timeout without taking the
zygote with it."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from osc_forkserver import ClientForkServer


@pytest.fixture
def clients() -> Iterator[ClientForkServer]:
    server = ClientForkServer()
    yield server
    server.close()


def _clouds_yaml(tmp_path: Path, port: int) -> dict[str, str]:
    path = tmp_path / "clouds.yaml"
    path.write_text(
        "clouds:\n  here:\n    identity_api_version: 3\n    auth:\n"
        f"      auth_url: http://127.0.0.1:{port}/identity/v3\n"
        "      username: u\n      password: p\n      project_name: x\n"
        "      user_domain_name: Default\n      project_domain_name: Default\n"
    )
    return {"OS_CLIENT_CONFIG_FILE": str(path), "PATH": "/usr/bin:/bin", "NO_PROXY": "127.0.0.1"}


def test_the_status_and_streams_are_the_clients(clients: ClientForkServer, tmp_path: Path) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    refused = clients.run(["--os-cloud", "here", "server", "list"], _clouds_yaml(tmp_path, port), 60)
    assert refused.returncode == 1 and refused.stdout == ""
    assert f"127.0.0.1:{port}" in refused.stderr  # the client's own message names the endpoint
    unknown = clients.run(["--os-cloud", "nowhere", "server", "list"], _clouds_yaml(tmp_path, port), 60)
    assert unknown.returncode == 1 and "nowhere" in unknown.stderr
    version = clients.run(["--version"], _clouds_yaml(tmp_path, port), 60)
    assert version.returncode == 0 and (version.stdout + version.stderr).startswith("openstack ")


def test_a_hung_invocation_times_out_and_the_next_one_runs(clients: ClientForkServer, tmp_path: Path) -> None:
    with socket.socket() as silent:  # accepts connections (the backlog) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        env = _clouds_yaml(tmp_path, silent.getsockname()[1])
        with pytest.raises(subprocess.TimeoutExpired):
            clients.run(["--os-cloud", "here", "server", "list"], env, 3)
        again = clients.run(["--version"], env, 60)
    assert again.returncode == 0
