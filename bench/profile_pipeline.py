"""Where the time goes under load (issue 15 item 8): `python -m bench.profile_pipeline OUT_DIR`.

Starts `eventsvm up --processes` on the embedded engine (or on a broker, `--kafka BOOTSTRAP`) with
8 test-driver hosts, offers creates open-loop at RATE per second for SECONDS with the lean load
generator, and meanwhile samples every child (the API and each service) with py-spy; writes one
folded-stack file per child to OUT_DIR and prints, per child, its CPU share and its ten hottest
frames (self time). The point's own numbers (throughput, latencies) are printed too, from the same
Timeline the pipeline bench uses. py-spy sees Python threads only: librdkafka's own threads, where
much of a Kafka cloud's CPU goes, are not in these profiles.
"""

from __future__ import annotations

import argparse
import collections
import json
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from bench.api_bench import running_cloud
from bench.pipeline_bench import OPTIONS, Timeline, load_point, wide_network
from eventsvm.log.factory import open_log

PY_SPY = Path(sys.executable).parent / "py-spy"


def service_children(workdir: Path) -> dict[str, int]:
    """The children's pids by name, from the supervisor's state file."""
    rows = json.loads((workdir / "supervisor.json").read_text())
    return {row["service"]: int(row["pid"]) for row in rows if row.get("pid")}


def _hottest(folded: Path, top: int = 10) -> tuple[int, list[tuple[str, float]]]:
    """Samples in all, and the `top` frames by self time (share of the samples)."""
    self_time: collections.Counter[str] = collections.Counter()
    total = 0
    for line in folded.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        n = int(count)
        total += n
        self_time[stack.split(";")[-1]] += n
    return total, [(frame, n / max(total, 1)) for frame, n in self_time.most_common(top)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out", type=Path)
    parser.add_argument("--rate", type=float, default=60.0)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--kafka", metavar="BOOTSTRAP",
                        help="run the cloud on this Kafka broker (its own namespace) instead of SQLite")
    parser.add_argument("--gil", action="store_true",
                        help="sample only the thread holding the GIL (py-spy --gil): where the Python "
                        "CPU goes, without the threads waiting for it; C calls that let the GIL go "
                        "are not seen")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="profile-") as scratch, \
            running_cloud(Path(scratch), args.kafka, (*OPTIONS, "--processes")) as cloud:
        log_ = open_log(cloud.log_config)
        timeline = Timeline(log_)
        body = {**cloud.server, "name": "load", "networks": [wide_network(cloud)]}
        load_point(cloud, timeline, body, args.rate, 2.0)  # warm up
        children = service_children(Path(scratch))
        spies = {
            name: subprocess.Popen([str(PY_SPY), "record", "--pid", str(pid), "--format", "raw",
                                    "--duration", str(int(args.seconds)), "--rate", "100", "--nonblocking",
                                    *(["--gil"] if args.gil else []),
                                    "--output", str(args.out / f"{name}.folded")],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for name, pid in children.items()
        }
        result: dict[str, float] = {}
        load = threading.Thread(target=lambda: result.update(
            load_point(cloud, timeline, body, args.rate, args.seconds)))
        load.start()
        for spy in spies.values():
            spy.wait()
        load.join()
        log_.close()
    print(json.dumps({k: round(v, 1) for k, v in result.items()}))
    for name in spies:
        folded = args.out / f"{name}.folded"
        if not folded.exists():
            print(f"{name}: no profile")
            continue
        total, hottest = _hottest(folded)
        print(f"\n{name}: {total} samples ({total / (100 * args.seconds):.0%} of a core)")
        for frame, share in hottest:
            print(f"  {share:6.1%}  {frame}")


if __name__ == "__main__":
    main()
