"""The benchmark registry, the measurement context and the statistics of repeated runs.

A benchmark is a function registered with @benchmark that returns one throughput sample per
repetition, or a dict of them per metric (or raises Skip); bench/run.py imports every module in
MODULES and runs what they registered, so a new benchmark (full replay, API throughput) is one more
decorated function, in a new module added to MODULES if need be.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Modules whose import registers benchmarks, in the order they run.
MODULES = [
    "bench.codec_bench", "bench.log_bench", "bench.replay", "bench.scheduler_bench", "bench.api_bench",
    "bench.idle_bench", "bench.read_bench", "bench.burst_bench", "bench.pipeline_bench",
    "bench.state_memory_bench", "bench.procs_bench", "bench.hosts_bench", "bench.waves_bench",
]


class Skip(Exception):
    """The benchmark cannot run here (engine missing, broker down); the reason is recorded."""


@dataclass(frozen=True)
class Context:
    """What every benchmark may use: how many repetitions, a size factor, the Kafka broker."""

    repetitions: int
    scale: float
    kafka_bootstrap: str
    workdir: Path

    def size(self, full: int) -> int:
        """`full` scaled for a quick run, never below 100."""
        return max(100, int(full * self.scale))


# One throughput sample per repetition, or several named metrics measured together
# (e.g. {"append": [...], "consume": [...]}).
Samples = list[float] | dict[str, list[float]]
Benchmark = Callable[[Context], Samples]


@dataclass(frozen=True)
class Registered:
    """A benchmark and how to read its samples."""

    name: str
    unit: str
    run: Benchmark
    description: str


REGISTRY: list[Registered] = []


def benchmark(name: str, unit: str = "events/s") -> Callable[[Benchmark], Benchmark]:
    """Register a benchmark; its docstring's first line is its description in the table."""

    def register_fn(fn: Benchmark) -> Benchmark:
        doc = (fn.__doc__ or "").strip().splitlines()
        register(name, fn, doc[0] if doc else "", unit)
        return fn

    return register_fn


def register(name: str, run: Benchmark, description: str, unit: str = "events/s") -> None:
    """Register a benchmark made by code rather than written as a function (see bench.logs)."""
    REGISTRY.append(Registered(name, unit, run, description))


@dataclass
class Result:
    """The samples of one benchmark and their summary."""

    name: str
    unit: str
    description: str
    samples: list[float] = field(default_factory=list)
    skipped: str | None = None
    seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        """Median, spread (min/max and the interquartile range) and the raw samples."""
        out: dict[str, Any] = {"name": self.name, "unit": self.unit, "description": self.description,
                               "seconds": round(self.seconds, 2)}
        if self.skipped is not None:
            return {**out, "skipped": self.skipped}
        s = sorted(self.samples)
        q1, _, q3 = statistics.quantiles(s, n=4, method="inclusive") if len(s) > 1 else (s[0], 0, s[0])
        return {**out, "n": len(s), "median": statistics.median(s), "min": s[0], "max": s[-1],
                "q1": q1, "q3": q3, "samples": s}


def rate(count: int, fn: Callable[[], object]) -> float:
    """`count` divided by the wall-clock seconds `fn` takes."""
    start = time.perf_counter()
    fn()
    return count / (time.perf_counter() - start)


@contextmanager
def scratch_dir(ctx: Context, prefix: str) -> Iterator[Path]:
    """A fresh directory under the run's work directory, removed afterwards."""
    with tempfile.TemporaryDirectory(prefix=prefix, dir=ctx.workdir) as path:
        yield Path(path)
