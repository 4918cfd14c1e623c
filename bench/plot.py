"""The pipeline benchmark as a picture: `python -m bench.plot RESULTS.json [OUT.png]` (issue 15 item 9).

Two panels against the offered load (creates per second): the POST→ACTIVE throughput achieved,
with the line where it would equal the offer, and the POST→ACTIVE latency p50 and p99 (log
scale), one colour per engine. Each point is the median of the run's repetitions; the bars span
their min and max, since the machines these run on are noisy.
"""

from __future__ import annotations

import json
import re
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display: a file for docs/
import matplotlib.pyplot as plt  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "docs" / "pipeline.png"
_ROW = re.compile(r"^pipeline\.(?P<engine>\w+)\.(?P<rate>[\d.]+)\.(?P<metric>throughput|p50_ms|p99_ms)$")

Series = dict[str, dict[str, list[tuple[float, float, float, float]]]]


def series(results: list[dict[str, Any]]) -> Series:
    """engine → metric → [(offered, median, min, max)], sorted by offered load."""
    out: Series = defaultdict(lambda: defaultdict(list))
    for row in results:
        found = _ROW.match(row["name"])
        if found is None or "median" not in row:
            continue
        point = (float(found["rate"]), row["median"], row["min"], row["max"])
        out[found["engine"]][found["metric"]].append(point)
    for metrics in out.values():
        for points in metrics.values():
            points.sort()
    return out


def _errorbars(axis: Any, points: list[tuple[float, float, float, float]], **style: Any) -> None:
    xs = [p[0] for p in points]
    ys = [p[1] for p in points]
    spread = [[p[1] - p[2] for p in points], [p[3] - p[1] for p in points]]
    axis.errorbar(xs, ys, yerr=spread, capsize=3, marker="o", **style)


def plot(record: dict[str, Any], out: Path) -> Path:
    """Draw the record's pipeline rows into `out`."""
    data = series(record["results"])
    if not data:
        raise SystemExit("no pipeline.<engine>.<rate>.* rows in these results "
                         "(run: bench/run.py --only pipeline)")
    figure, (rate_axis, latency_axis) = plt.subplots(1, 2, figsize=(11, 4.2))
    colours = {"sqlite": "tab:blue", "kafka": "tab:orange"}
    top = 0.0
    for engine, metrics in sorted(data.items()):
        colour = colours.get(engine, None)
        _errorbars(rate_axis, metrics["throughput"], color=colour, label=engine)
        _errorbars(latency_axis, metrics["p50_ms"], color=colour, label=f"{engine} p50")
        _errorbars(latency_axis, metrics["p99_ms"], color=colour, linestyle="--", label=f"{engine} p99")
        top = max([top, *(p[0] for p in metrics["throughput"])])
    rate_axis.plot([0, top], [0, top], color="grey", linewidth=0.8, linestyle=":", label="= offered")
    rate_axis.set(xlabel="offered load (creates/s)", ylabel="POST→ACTIVE throughput (instances/s)",
                  title="Throughput")
    latency_axis.set(xlabel="offered load (creates/s)", ylabel="POST→ACTIVE latency (ms)", yscale="log",
                     title="Latency, open-loop load")
    latency_axis.axhline(1000, color="grey", linewidth=0.8, linestyle=":")
    for axis in (rate_axis, latency_axis):
        axis.grid(True, alpha=0.3)
        axis.legend(fontsize=8)
    machine = record.get("machine", {})
    figure.suptitle(f"eventsvm up, 8 test-driver hosts — {machine.get('cores')} cores, "
                    f"{machine.get('cpu_model', '')}, {record.get('when', '')}", fontsize=9)
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=110)
    plt.close(figure)
    return out


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__.splitlines()[0], file=sys.stderr)
        return 2
    record = json.loads(Path(argv[0]).read_text())
    out = plot(record, Path(argv[1]) if len(argv) > 1 else DEFAULT_OUT)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
