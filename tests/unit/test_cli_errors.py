"""Bad configuration ends with one clear line on stderr and a non-zero exit: never a traceback,
never a hang."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

EVENTSVM = str(Path(sys.executable).parent / "eventsvm")
DATA = "<a data directory of the test's own>"


def run(*args: str, timeout: float = 60) -> tuple[int, str, float]:
    started = time.monotonic()
    proc = subprocess.run([EVENTSVM, *args], capture_output=True, text=True, timeout=timeout)
    return proc.returncode, proc.stderr, time.monotonic() - started


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("run", "scheduler", "--log", "bogus://somewhere"), "unknown log engine"),
        (("run", "scheduler", "--log", "kafka://"), "names no broker"),
        (
            ("run", "scheduler", "--data-dir", "/proc/eventsvm-cannot-be-here"),
            "/proc/eventsvm-cannot-be-here",
        ),
        (("run", "scheduler", "--kafka", "127.0.0.1:9"), "127.0.0.1:9"),
        (("up", "--hosts", "0", "--data-dir", DATA), "--hosts"),
        (("up", "--host-capacity", "ram=lots", "--data-dir", DATA), "host-capacity"),
        (("run", "spawner", "--data-dir", DATA), "--host"),
    ],
)
def test_bad_configuration_is_one_clear_line(args: tuple[str, ...], says: str, tmp_path: Path) -> None:
    # a data directory of its own: one shared with other runs may need tightening, which is logged
    code, stderr, seconds = run(*(str(tmp_path / "data") if a == DATA else a for a in args))
    assert code == 2, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("eventsvm: error:")
    assert says in lines[0]
    assert "Traceback" not in stderr
    assert seconds < 45, "an unreachable broker must be given up on within a bounded wait"


def test_an_unwritable_sqlite_file_is_named(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        code, stderr, _ = run("run", "scheduler", "--log", f"sqlite://{locked}/sub/log.db")
    finally:
        locked.chmod(0o700)
    assert code == 2 and "Traceback" not in stderr
    assert str(locked) in stderr


@pytest.mark.parametrize("layout", [(), ("--processes",)])
def test_a_port_already_taken_is_one_clear_line_before_anything_says_up(
        layout: tuple[str, ...], tmp_path: Path) -> None:
    """uvicorn used to bind after the cloud had started and said "eventsvm is up", then log its
    own error and exit 3; the port is claimed first now."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        started = time.monotonic()
        proc = subprocess.run([EVENTSVM, "up", "--data-dir", str(tmp_path / "data"), "--port", str(port),
                               *layout], capture_output=True, text=True, timeout=60)
        seconds = time.monotonic() - started
    assert proc.returncode == 2, proc.stderr
    assert "is up" not in proc.stdout
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    refused = f"eventsvm: error: cannot listen on 127.0.0.1:{port}: Address already in use"
    assert lines == [refused], proc.stderr
    assert seconds < 30
