"""POST→ACTIVE of `eventsvm up` as threads of one process against supervised child processes with
one and with two API workers (issue 15 item 3), on the embedded engine.

The same open-loop measurement as bench/pipeline_bench.py (8 test-driver hosts, a /16 network, the
lean load generator in its own process, timings from the events' own timestamps, lost and
duplicated servers counted), once per layout, at two offered rates.
"""

from __future__ import annotations

from bench.pipeline_bench import OPTIONS, curve
from bench.suite import Context, benchmark

RATES = (50.0, 100.0)
LAYOUTS = {
    "threads": (),
    "processes.1api": ("--processes",),
    "processes.2api": ("--processes", "--api-workers", "2"),
}


@benchmark("layout.sqlite", unit="inst/s; ms")
def layouts(ctx: Context) -> dict[str, list[float]]:
    """POST→ACTIVE at 50 and 100 creates/s offered, `eventsvm up` on SQLite with 8 hosts: as threads
    of one process, as child processes with 1 API worker, and with 2 (`<layout>.<rate>.<metric>`)."""
    out: dict[str, list[float]] = {}
    for name, flags in LAYOUTS.items():
        for metric, values in curve(ctx, None, RATES, (*OPTIONS, *flags)).items():
            out[f"{name}.{metric}"] = values
    return out
