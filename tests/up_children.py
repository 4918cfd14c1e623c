"""`eventsvm up --processes` for the tests: start one, read its children from the state file its
supervisor writes, and ask whether a process still lives."""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.e2e.test_up_exposure import EVENTSVM, PASSWORDS, free_port
from tests.processes import wait_until_serving

TIMEOUT_S = 60.0


@dataclass
class ChildCloud:
    """A running `eventsvm up --processes` and where to reach it."""

    process: subprocess.Popen[bytes]
    url: str
    data_dir: Path
    output: Path

    def children(self) -> dict[str, dict[str, Any]]:
        """Each child's row of the supervisor's state file (pid, up, restarts), by name."""
        rows = json.loads((self.data_dir / "supervisor.json").read_text())
        return {row["service"]: row for row in rows}

    def tail(self, lines: int = 30) -> str:
        """The end of `up`'s output, for failure messages."""
        return "\n".join(self.output.read_text(errors="replace").splitlines()[-lines:])


def start_up(tmp_path: Path, *flags: str) -> ChildCloud:
    """`eventsvm up --processes FLAGS` on a free port, serving once this returns."""
    port = free_port()
    data_dir = tmp_path / "data"
    output = tmp_path / "up.log"
    command = [EVENTSVM, "up", "--processes", "--data-dir", str(data_dir), "--port", str(port), *flags]
    with output.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT,
                                   env={**os.environ, **PASSWORDS}, start_new_session=True)
    cloud = ChildCloud(process, f"http://127.0.0.1:{port}", data_dir, output)
    try:
        wait_until_serving(cloud.url, process, timeout=180)
    except AssertionError as exc:
        process.kill()
        raise AssertionError(f"{exc}\n{cloud.tail()}") from None
    return cloud


def alive(pid: int) -> bool:
    """True while `pid` is a running (not zombie) process."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"
