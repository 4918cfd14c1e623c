"""Services as real `eventsvm run` processes, with the test process as the API (it appends
requests and folds the read model). Used to kill, restart and scale services for real."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from eventsvm.app.seed import choose_passwords, seed_events
from eventsvm.app.writers import writer_codec
from eventsvm.config import LogConfig
from eventsvm.log.factory import open_log
from eventsvm.projections.readmodel import ReadModel
from tests.e2e.conftest import Cloud

EVENTSVM = str(Path(sys.executable).parent / "eventsvm")


@dataclass
class Processes:
    """`eventsvm run` processes by label, each started with the same log flags."""

    flags: list[str]
    data_dir: Path
    processes: dict[str, subprocess.Popen[str]] = field(default_factory=dict)
    commands: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def start(self, label: str, *args: str) -> subprocess.Popen[str]:
        """Start `eventsvm run ARGS` and wait until it says it is running."""
        log_file = open(self.data_dir / f"{label}.log", "a")  # noqa: SIM115 - lives as long as the process
        proc = subprocess.Popen(
            [EVENTSVM, "run", *args, *self.flags], stdout=subprocess.PIPE, stderr=log_file, text=True
        )
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if "running" not in line:
            proc.kill()
            pytest.fail(
                f"{label} did not start: {line!r}; see {self.data_dir / (label + '.log')}: "
                f"{(self.data_dir / (label + '.log')).read_text()[-2000:]}"
            )
        self.processes[label] = proc
        self.commands[label] = args
        return proc

    def restart(self, label: str) -> subprocess.Popen[str]:
        """Start `label` again as it was first started."""
        return self.start(label, *self.commands[label])

    def kill(self, label: str) -> None:
        """SIGKILL: no chance to finish the step in hand."""
        proc = self.processes.pop(label)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)

    def pause(self, label: str) -> None:
        """SIGSTOP: the process holds whatever it read, and reads nothing more, until resumed."""
        self.processes[label].send_signal(signal.SIGSTOP)

    def resume(self, label: str) -> None:
        """SIGCONT after `pause`."""
        self.processes[label].send_signal(signal.SIGCONT)

    def terminate(self, label: str, timeout: float = 30) -> int:
        """SIGTERM and wait for the exit status."""
        proc = self.processes.pop(label)
        proc.send_signal(signal.SIGTERM)
        return proc.wait(timeout=timeout)

    def terminate_all(self, timeout: float = 30) -> dict[str, int]:
        """SIGTERM to every process at once, then each one's exit status by label."""
        for proc in self.processes.values():
            proc.send_signal(signal.SIGTERM)
        codes = {label: proc.wait(timeout=timeout) for label, proc in self.processes.items()}
        self.processes.clear()
        return codes

    def kill_all(self) -> None:
        """SIGKILL whatever still runs (a test's teardown)."""
        for proc in self.processes.values():
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
        self.processes.clear()


@dataclass(kw_only=True)
class ProcessCloud(Processes):
    """Service processes, and a Cloud-like driver over a read model in this process."""

    driver: Cloud
    log_config: LogConfig


@pytest.fixture(params=["sqlite", pytest.param("kafka", marks=pytest.mark.kafka)])
def process_cloud(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ProcessCloud]:
    """A seeded log with no services yet; the test starts the processes it wants."""
    if request.param == "kafka":
        bootstrap = request.getfixturevalue("kafka_bootstrap")
        namespace = f"chaos{uuid.uuid4().hex[:8]}."
        flags = ["--kafka", bootstrap, "--namespace", namespace, "--data-dir", str(tmp_path)]
        config = LogConfig(url=f"kafka://{bootstrap}", namespace=namespace, partitions=4)
    else:
        flags = ["--data-dir", str(tmp_path)]
        config = LogConfig(url=f"sqlite://{(tmp_path / 'log.db').resolve()}", partitions=4)
    log_ = open_log(config)
    readmodel = ReadModel(log_, writer_codec(tmp_path, "api"))  # the driver is an API: it signs as one
    readmodel.start()
    readmodel.append(seed_events(choose_passwords("admin-pw", "demo-pw")))
    cloud = ProcessCloud(flags, tmp_path,
                         driver=Cloud(cluster=None, options=None, readmodel=readmodel),  # type: ignore[arg-type]
                         log_config=config)
    cloud.driver.unlimited_quota()
    yield cloud
    cloud.kill_all()
    readmodel.close()
    log_.close()


ENV = dict(os.environ)
