"""Two live processes under one member name: the later refuses to start, loudly, on both engines
(issue 14). Before, each fenced the other in turn, and every fence cost a rebuild of the state.
A process that died holds nothing: its restart takes the name (on Kafka once its session is over)."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from eventsvm.log.port import MemberNameTaken
from tests.contract.conftest import Engine

ROOT = Path(__file__).resolve().parents[2]
GROUP, NAME = "eventsvm.scheduler", "scheduler-1"

pytestmark = pytest.mark.timeout(240)


def test_a_member_name_is_held_by_one_holder_until_it_lets_go(engine: Engine) -> None:
    first = engine.open(session_timeout_s=engine.short_session_s).hold_member_name(GROUP, NAME)
    other = engine.open(session_timeout_s=engine.short_session_s)
    taken = f"member '{NAME}' of group '{GROUP}' is held by a live process"
    with pytest.raises(MemberNameTaken, match=taken):
        other.hold_member_name(GROUP, NAME)
    # another name, or the same name in another group, is free
    other.hold_member_name(GROUP, "scheduler-2").release()
    other.hold_member_name("eventsvm.resolver", NAME).release()
    first.release()
    other.hold_member_name(GROUP, NAME).release()


def _run_scheduler(engine: Engine, data_dir: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, "-m", "eventsvm.app.cli", "run", "scheduler", "--log", engine.url,
               "--namespace", engine.namespace, "--member", NAME, "--data-dir", str(data_dir)]
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _started(process: subprocess.Popen[bytes], timeout: float = 90) -> bool:
    """True once it says it runs; False when it exited first."""
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    line = process.stdout.readline() if ready else b""
    return b"scheduler running" in line


# On Kafka the refusal waits out two sessions (a holder that died may still be in the group) and the
# restart one more: ~50 s, so that case runs with `make test-slow`; the hold itself is tested on
# Kafka above, in `make test`.
@pytest.mark.parametrize(
    "engine", ["sqlite", pytest.param("kafka", marks=[pytest.mark.kafka, pytest.mark.slow])], indirect=True)
def test_a_second_process_started_under_a_live_ones_member_name_exits_naming_it(
        engine: Engine, tmp_path: Path) -> None:
    if engine.name == "kafka":
        # the processes need the topics' namespace on the broker; one log handle makes it usable
        engine.open()
    first = _run_scheduler(engine, tmp_path)
    processes = [first]
    try:
        assert _started(first), first.stderr.read().decode()[-2000:]  # type: ignore[union-attr]
        second = _run_scheduler(engine, tmp_path)
        processes.append(second)
        code = second.wait(timeout=120)
        message = second.stderr.read().decode()  # type: ignore[union-attr]
        assert code != 0, message
        assert f"member '{NAME}' of group" in message and "held by a live process" in message, message
        # the first is untouched by it: still running, never fenced
        time.sleep(1)
        assert first.poll() is None

        # a process that dies holds nothing: its restart runs (on Kafka once its session expired)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
        restarted = _run_scheduler(engine, tmp_path)
        processes.append(restarted)
        assert _started(restarted), restarted.stderr.read().decode()[-2000:]  # type: ignore[union-attr]
    finally:
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
