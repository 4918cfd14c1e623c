"""A read-process-write worker for the exactly-once contract test, run as a real process.

It copies every record of `in` to `out` one small step at a time through a consumer group and prints
`step N` right before each commit_step, so a test can SIGKILL it between processing and committing;
with `kill_at` in its spec it kills itself there. It exits 0 once the group has committed past
every input record (`done_at`: partition -> offset after its last input record).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time

from eventsvm.config import LogConfig
from eventsvm.log.factory import open_log
from eventsvm.log.port import OutRecord


def main(spec: dict) -> int:
    """Run the copy loop described by `spec` (see tests/contract/test_log_exactly_once.py)."""
    log = open_log(LogConfig(url=spec["url"], namespace=spec["namespace"], partitions=spec["partitions"],
                             session_timeout_s=spec["session_timeout_s"]))
    member = log.member(spec["group"], ["in"], member_name="copier-1")
    steps = 0
    while True:
        records = member.poll(max_records=spec["batch"], timeout=0.2)
        if not records:
            committed = log.committed(spec["group"], "in")
            if all(committed.get(int(p), 0) >= end for p, end in spec["done_at"].items()):
                break
            continue
        outputs = [OutRecord("out", r.key, b"out:" + r.value) for r in records]
        time.sleep(spec["step_delay_s"])  # the "processing", so outside kills land at varied points
        steps += 1
        print(f"step {steps}", flush=True)
        if steps == spec.get("kill_at"):
            os.kill(os.getpid(), signal.SIGKILL)
        member.commit_step(outputs, records)
    member.close()
    log.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(json.loads(sys.argv[1])))
