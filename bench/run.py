"""Run the benchmarks and record the results: `python -m bench.run` (or `python bench/run.py`).

Writes bench/results/<UTC date>-<hostname>.json (samples, summary and the machine) and
bench/results/latest.md (the table for the README), and prints the table.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import os
import platform
import re
import socket
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.suite import MODULES, REGISTRY, Context, Result, Skip  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict[str, Any]:
    """What the numbers were measured on; the machines are shared, so the load is recorded too."""
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    meminfo = Path("/proc/meminfo").read_text() if Path("/proc/meminfo").exists() else ""
    cpu = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.M)
    mem = re.search(r"^MemTotal:\s*(\d+) kB", meminfo, re.M)
    out: dict[str, Any] = {
        "hostname": socket.gethostname(),
        "cpu_model": cpu.group(1).strip() if cpu else platform.processor(),
        "cores": os.cpu_count(),
        "memory_gb": round(int(mem.group(1)) / 1024**2, 1) if mem else None,
        "load_average": os.getloadavg(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
    }
    import fastavro

    out["fastavro"] = fastavro.__version__
    try:
        import confluent_kafka

        out["confluent_kafka"] = confluent_kafka.__version__
        out["librdkafka"] = confluent_kafka.libversion()[0]
    except ImportError:
        out["confluent_kafka"] = None
    return out


def run(ctx: Context, only: str | None) -> list[Result]:
    """Every registered benchmark whose name contains `only` (all when None)."""
    for module in MODULES:
        importlib.import_module(module)
    results: list[Result] = []
    for bench in REGISTRY:
        if only and only not in bench.name:
            continue
        print(f"running {bench.name} ...", file=sys.stderr, flush=True)
        started = time.perf_counter()
        try:
            samples = bench.run(ctx)
        except Skip as exc:
            results.append(Result(bench.name, bench.unit, bench.description, skipped=str(exc)))
            continue
        elapsed = time.perf_counter() - started
        metrics = samples if isinstance(samples, dict) else {"": samples}
        for suffix, values in metrics.items():
            name = f"{bench.name}.{suffix}" if suffix else bench.name
            results.append(Result(name, bench.unit, bench.description, list(values), seconds=elapsed))
    return results


def _fmt(value: float) -> str:
    return f"{value:,.0f}"


def table(results: list[Result], info: dict[str, Any]) -> str:
    """The results as a markdown table plus one line naming the machine."""
    lines = [
        f"{info['cpu_model']}, {info['cores']} cores, {info['memory_gb']} GB, Python {info['python']}, "
        f"fastavro {info['fastavro']}, confluent-kafka {info.get('confluent_kafka')} "
        f"(librdkafka {info.get('librdkafka')}); load average at start {info['load_average'][0]:.2f}",
        "",
        "| benchmark | unit | median | min | max | IQR | runs |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        s = r.summary()
        if r.skipped is not None:
            lines.append(f"| {r.name} | {r.unit} | skipped: {r.skipped} | | | | |")
            continue
        lines.append(f"| {r.name} | {r.unit} | {_fmt(s['median'])} | {_fmt(s['min'])} | {_fmt(s['max'])} "
                     f"| {_fmt(s['q1'])}–{_fmt(s['q3'])} | {s['n']} |")
    lines += ["", *(f"- `{r.name}`: {r.description}" for r in results if not r.name.endswith(".consume"))]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Parse the flags, run, write the results, print the table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", help="run the benchmarks whose name contains this")
    parser.add_argument("--repetitions", type=int, default=5)
    parser.add_argument("--scale", type=float, default=1.0, help="size factor; 0.1 for a smoke run")
    parser.add_argument("--no-save", action="store_true", help="print only, write no result files")
    parser.add_argument("--results", metavar="NAME",
                        help="write bench/results/NAME.json only (a partial run: latest.md stays)")
    args = parser.parse_args(argv)
    info = machine()
    with tempfile.TemporaryDirectory(prefix="eventsvm-bench-") as workdir:
        ctx = Context(args.repetitions, args.scale, os.environ.get("EVENTSVM_BENCH_KAFKA", "127.0.0.1:9092"),
                      Path(workdir))
        results = run(ctx, args.only)
    text = table(results, info)
    print(text)
    if not args.no_save:
        RESULTS.mkdir(exist_ok=True)
        now = datetime.datetime.now(datetime.UTC)
        record = {"when": now.isoformat(timespec="seconds"), "machine": info,
                  "repetitions": args.repetitions, "scale": args.scale,
                  "results": [r.summary() for r in results]}
        stem = args.results or f"{now:%Y-%m-%d}-{info['hostname']}"
        path = RESULTS / f"{stem}.json"
        path.write_text(json.dumps(record, indent=2) + "\n")
        if args.results is None:
            (RESULTS / "latest.md").write_text(text)
        print(f"wrote {path.relative_to(RESULTS.parent.parent)}", file=sys.stderr)
        if any(r.name.startswith("pipeline.") and r.skipped is None for r in results):
            from bench.plot import DEFAULT_OUT, plot

            print(f"wrote {plot(record, DEFAULT_OUT).relative_to(RESULTS.parent.parent)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
