"""Read-process-write is exactly once on both engines, proven by SIGKILLing a real worker process
between processing and committing and at random points, then restarting it until all input is done."""

from __future__ import annotations

import json
import random
import select
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from eventsvm.log.port import OutRecord

WORKER = Path(__file__).with_name("log_step_worker.py")


def start(spec: dict[str, Any]) -> subprocess.Popen[bytes]:
    """The worker as a real process; its stdout unbuffered so `step N` lines arrive as printed."""
    command = [sys.executable, str(WORKER), json.dumps(spec)]
    return subprocess.Popen(command, stdout=subprocess.PIPE, bufsize=0)


def kill_after_steps(spec: dict[str, Any], steps: int, rng: random.Random) -> int:
    """Start the worker, SIGKILL it somewhere in the step after its `steps`-th; how many it began."""
    proc = start(spec)
    assert proc.stdout is not None
    seen, deadline = 0, time.monotonic() + 60
    while seen < steps:
        left = deadline - time.monotonic()
        assert left > 0, f"worker made {seen} steps in 60 s"
        ready, _, _ = select.select([proc.stdout], [], [], left)
        if ready:
            if not proc.stdout.readline():
                break  # it finished all the input before we got to kill it
            seen += 1
    # Anywhere in the next stretch: inside commit_step, in the next poll or the next processing.
    time.sleep(rng.uniform(0, spec["step_delay_s"] * 1.5))
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    return seen


def test_every_input_gives_exactly_one_output_although_the_worker_is_killed(engine):
    log = engine.open(partitions=3)
    log.create_topics(["in", "out"])
    inputs = [OutRecord("in", f"instance-{i % 7}".encode(), f"event-{i}".encode()) for i in range(60)]
    done_at: dict[int, int] = {}
    for part, offset in log.append(inputs):
        done_at[part] = max(done_at.get(part, 0), offset + 1)
    spec = {"url": engine.url, "namespace": engine.namespace, "partitions": 3, "group": "copier",
            "batch": 4, "step_delay_s": 0.02, "session_timeout_s": engine.short_session_s,
            "done_at": done_at}

    suicide = start({**spec, "kill_at": 2})
    out, _ = suicide.communicate(timeout=60)
    assert suicide.returncode == -signal.SIGKILL
    assert out.split() == [b"step", b"1", b"step", b"2"], "it must die between processing and committing"

    rng = random.Random(20_251_126)
    for _ in range(3):
        kill_after_steps(spec, rng.randint(1, 3), rng)

    finisher = start(spec)
    finisher.communicate(timeout=90)
    assert finisher.returncode == 0

    produced = Counter(r.value for r in _read_all(engine.open(partitions=3)))
    assert produced == Counter(b"out:" + r.value for r in inputs), "lost or duplicated outputs"
    assert log.committed("copier", "in") == done_at


def _read_all(log: Any) -> list:
    reader = log.reader(["out"])
    found: list = []
    deadline = time.monotonic() + 10
    while not (found and reader.at_end()):
        assert time.monotonic() < deadline
        found += reader.poll(timeout=0.1)
    return found
