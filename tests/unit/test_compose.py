"""docker-compose.yml cannot run here (no Docker engine), so check what can be checked: every
service runs a real `eventsvm` command that this CLI accepts, and the whole pipeline is there."""

from __future__ import annotations

from pathlib import Path

import yaml

from eventsvm.app.cli import build_parser
from eventsvm.app.registry import PROCESSES, SERVICES

ROOT = Path(__file__).resolve().parents[2]


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_every_eventsvm_service_runs_a_command_the_cli_accepts() -> None:
    parser = build_parser()
    services = compose()["services"]
    commands = {name: svc["command"] for name, svc in services.items() if name != "kafka"}
    assert commands, "no eventsvm services"
    for name, command in commands.items():
        assert command[0] == "eventsvm", name
        args = parser.parse_args(command[1:])
        assert args.kafka == "kafka:9092", f"{name} must use the compose broker"


def test_every_registered_service_and_the_api_has_a_container() -> None:
    # read from the registry, so a new consumer without a container fails here
    services = compose()["services"]
    run_targets = {svc["command"][2] for svc in services.values() if svc.get("command", [""])[1:2] == ["run"]}
    missing = set(PROCESSES) - run_targets
    assert not missing, f"docker-compose.yml runs no container for {sorted(missing)}"
    assert {"api", "authenticator", "scheduler", "resolver", "billing", "spawner"} <= set(PROCESSES)


def test_a_real_kafka_broker_and_one_container_per_compute_host() -> None:
    services = compose()["services"]
    assert services["kafka"]["image"].startswith("apache/kafka:4.")
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    per_host = {name for name, entry in SERVICES.items() if entry.per_host}
    for service in per_host:
        hosts = [
            svc["command"][svc["command"].index("--host") + 1]
            for svc in services.values()
            if svc.get("command", [""])[1:3] == ["run", service]
        ]
        assert len(hosts) == len(set(hosts)) >= 1, service


def test_the_image_installs_the_project_and_its_schemas() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    for needed in (
        "COPY eventsvm",
        "COPY consumers",
        "COPY schemas eventsvm/schemas",
        "pip install",
        "libvirt-dev",
        "libjemalloc2",  # every process on jemalloc (docs/decisions.md, "The API's last creep")
        "ENV LD_PRELOAD=/usr/local/lib/libjemalloc.so.2",
    ):
        assert needed in dockerfile
