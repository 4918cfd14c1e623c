"""What each process of the cloud spends on a server (issue 15 items 1 and 8):
`python -m bench.cpu_split RATE SECONDS [--repetitions N] [--out FILE]`.

Starts `eventsvm up --processes` on the embedded engine with the pipeline benchmark's 8 hosts,
offers creates open-loop at RATE a second for SECONDS (after a 2 s warm-up) with the lean load
generator, and reads each child's CPU time from /proc before and after: milliseconds of CPU per
server made ACTIVE, per process (the API, each service, each spawner pool, the supervisor). The
pipeline benchmark gives the whole cloud's figure; this one says which process it is spent in, for
comparing two trees alternately (check one out, run, the other, run) on one machine.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

from bench.api_bench import running_cloud
from bench.pipeline_bench import OPTIONS, Timeline, load_point, process_cpu_s, wide_network
from bench.profile_pipeline import service_children
from bench.run import machine
from eventsvm.log.factory import open_log


def split(rate: float, seconds: float) -> dict[str, float]:
    """One run: the point's metrics, and `cpu_ms.<process>` per server made ACTIVE."""
    with tempfile.TemporaryDirectory(prefix="cpu-split-") as scratch, \
            running_cloud(Path(scratch), None, (*OPTIONS, "--processes")) as cloud:
        timeline = Timeline(open_log(cloud.log_config))
        body = {**cloud.server, "name": "load", "networks": [wide_network(cloud)]}
        load_point(cloud, timeline, body, rate, 2.0)  # warm up
        children = {**service_children(Path(scratch)), "up": cloud.pid}
        before = {name: process_cpu_s(pid) for name, pid in children.items()}
        out = load_point(cloud, timeline, body, rate, seconds)
        after = {name: process_cpu_s(pid) for name, pid in children.items()}
    active = out["throughput"] * seconds
    for name in children:
        out[f"cpu_ms.{name}"] = 1000 * (after[name] - before[name]) / max(active, 1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("rate", type=float)
    parser.add_argument("seconds", type=float)
    parser.add_argument("--repetitions", type=int, default=1)
    parser.add_argument("--out", type=Path, help="write the runs and the machine as JSON here")
    args = parser.parse_args()
    runs = []
    for _ in range(args.repetitions):
        load = os.getloadavg()[0]
        out = split(args.rate, args.seconds)
        runs.append({"load_average_at_start": load, **out})
        processes = sorted((k for k in out if k.startswith("cpu_ms.")), key=lambda k: -out[k])
        print(f"offered {args.rate:.0f}/s: {out['throughput']:.1f} servers/s, p50 {out['p50_ms']:.0f} ms, "
              f"p99 {out['p99_ms']:.0f} ms, lost {out['lost']:.0f}, duplicated {out['duplicated']:.0f}; "
              f"cloud CPU {out['cloud_cpu_ms_per_server']:.2f} ms a server")
        for key in processes:
            print(f"  {key.removeprefix('cpu_ms.'):14s} {out[key]:6.2f} ms")
    if args.out is not None:
        args.out.write_text(json.dumps({"machine": machine(), "rate": args.rate, "seconds": args.seconds,
                                        "runs": runs}, indent=1) + "\n")


if __name__ == "__main__":
    main()
