"""Resident memory of every process of a real cloud over waves of creates and deletes (issue 15
item 7).

`eventsvm up --processes --hosts 8` on the embedded engine (SQLite), the pipeline benchmark's
options (test-driver hosts too large to refuse, no build backlog, a /16 network). Ten waves: the
lean load generator (bench/loadgen.py, its own process, open loop) sends PER_WAVE creates at RATE a
second, the benchmark waits until each has spawned (or failed) in the log, then sends a DELETE of
each at the same rate and waits until the log has every `instance.deleted` and GET /servers lists
none. Each process of the cloud (the supervisor, the API, each service child; named by its
command line, found by walking /proc's children from the `up`) has its resident memory (VmRSS)
read once up and idle, at each wave's peak (all of the wave ACTIVE) and once its deletes settled.

Per process (`<process>.<metric>` for its VmRSS, `<process>.anon.<metric>` for its RssAnon, the
memory of its own: VmRSS also counts the pages of the log's file a SQLite reader has mapped): idle
MB; each wave's peak and settled MB (`peak_mb.wNN`, `settled_mb.wNN`); growth from wave 1's settled
to the last wave's settled, in MB and in bytes per instance created in between (flat across waves
is ~0); per wave, peak minus the same wave's settled and peak minus the previous settled (idle for
wave 1), each divided by the wave's size (bytes of RSS per live instance; the samples are the
waves). Per wave: lost (accepted, never spawned nor failed), duplicated (spawned twice), failed,
deletes refused or never deleted, the seconds it took and the log's size on disk.

What a cloud forgets only after a while would hide in the growth of a run shorter than that while:
the API's read model keeps each deleted server for `--deleted-retention-hours` of log time (24 by
default, as nova keeps its rows until archived), each service (billing too) remembers a departed
instance for `--forget-departed-after-minutes` (60 by default). A full run lasts 30-40 minutes, so
with those defaults nothing is forgotten in it, and every wave adds what the deleted servers hold
until then (bench/results/2026-12-06-waves-retention-*.json: 1.7 KB a deleted server in the read
model alone). `memory.waves` therefore runs the cloud with both set to a minute (HORIZON_FLAGS),
shorter than a wave, as an operator would who wants the least memory: memory that still grows
across waves is then what is never forgotten, a leak. `run_waves` takes other flags.
A spawner's RSS also holds libvirt's in-process test driver, whose domains (tens of KB each) are
the simulated guests, not the service's state: its first wave raises it, later waves reuse it.
Python rarely hands freed memory back to the system, so a wave's peak minus its settled RSS
understates what a live instance holds; the rise from the previous settled RSS is the other bound.
One run whatever --repetitions says, on the demo token (an hour: the run must end within it).

`up` runs its children on jemalloc when it is installed (`--allocator auto`; the supervisor
stays on glibc's malloc); `allocator.jemalloc` says whether the API child had it mapped (1) or
not (0). On glibc's malloc the API's resident memory creeps, held free in its heap rather than
by Python objects (docs/decisions.md, "The API's last creep"); `EVENTSVM_ALLOCATOR=system make
bench` measures that.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import httpx

from bench.api_bench import REQUEST_TIMEOUT_S, Cloud, running_cloud
from bench.pipeline_bench import CONNECTIONS, OPTIONS, ROOT, Timeline, cloud_processes, wide_network
from bench.suite import Context, benchmark, scratch_dir
from eventsvm.app.children import c_allocator
from eventsvm.log.factory import open_log
from eventsvm.state.compact import FORGET_AFTER_MS
from eventsvm.state.instances import DELETED_RETENTION_MS

WAVES = 10
PER_WAVE = 10_000
# creates (and then deletes) a second: `up --processes` carries ~150 creates/s on two cores, and a
# rate below it keeps the wave's servers from queueing (the peak is then the wave, not a backlog)
RATE = 120.0
MB = 1024 * 1024


def _name(argv: list[str]) -> str:
    """A process of the cloud by its command line: `up` for the supervisor, else the child's
    member name without the supervisor's pid (a spawner's pool or host), else the service run."""
    if "run" not in argv:
        return "up" if "up" in argv else " ".join(argv[-2:])
    if "--member" in argv:
        return argv[argv.index("--member") + 1].rsplit(".up-", 1)[0]
    return argv[argv.index("run") + 1]


def _processes(root: int) -> dict[str, int]:
    """Every process of the cloud by name (see _name), the supervisor `root` included."""
    found: dict[str, int] = {}
    for pid in cloud_processes(root):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_text().split("\0")[:-1]
        except OSError:
            continue  # ended meanwhile
        name = _name(argv)
        while name in found:  # API workers share a command line
            name += "+"
        found[name] = pid
    return found


def _rss(pids: dict[str, int]) -> dict[str, float]:
    """Resident bytes of each named process (absent if it ended meanwhile): `<name>` all of it
    (VmRSS), `<name>.anon` its own memory (RssAnon: the heap, what its state costs). The rest is
    file pages mapped in, mostly the log: a SQLite reader maps the log's file (mmap_size), and the
    pages it touched count in VmRSS though they are the page cache's, shared, and grow with the log."""
    out: dict[str, float] = {}
    for name, pid in pids.items():
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        out[name] = float(int(status.split("VmRSS:")[1].split()[0]) * 1024)
        out[f"{name}.anon"] = float(int(status.split("RssAnon:")[1].split()[0]) * 1024)
    return out


def _send(cloud: Cloud, spec: dict[str, Any], count: int) -> list[list[Any]]:
    """Run the load generator with `spec` (its url, token and rate filled in); every request's record."""
    full = {"url": cloud.compute, "token": cloud.token, "rate": RATE, "connections": CONNECTIONS, **spec}
    done = subprocess.run([sys.executable, "-m", "bench.loadgen"], input=json.dumps(full),
                          capture_output=True, text=True, cwd=ROOT, check=False,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=count / RATE + 600)
    if done.returncode != 0:
        raise RuntimeError(f"the load generator failed: {done.stderr[-2000:]}")
    sent: list[list[Any]] = json.loads(done.stdout)["sent"]
    return sent


def _listed(cloud: Cloud) -> int:
    """How many servers GET /servers shows (0 or 1: one is enough to say the deletes are not done)."""
    answer = httpx.get(f"{cloud.compute}/servers?limit=1", headers={"X-Auth-Token": cloud.token},
                       timeout=REQUEST_TIMEOUT_S)
    answer.raise_for_status()
    return len(answer.json()["servers"])


def _wait_unlisted(cloud: Cloud, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while _listed(cloud):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.5)
    return True


def _wave(cloud: Cloud, outcomes: Timeline, body: dict[str, Any], per_wave: int,
          ) -> tuple[dict[str, float], dict[str, float], dict[str, float], dict[str, int]]:
    """One wave: (its counts and seconds, RSS at the peak, RSS settled, the pids seen)."""
    started = time.monotonic()
    sent = _send(cloud, {"body": body, "count": per_wave}, per_wave)
    accepted = {r[4] for r in sent if r[3] == 202}
    left = outcomes.wait(accepted, lambda i: i in outcomes.failed or outcomes.spawns.get(i, 0) > 0,
                         per_wave / 5 + 120)
    created_s = time.monotonic() - started
    pids = _processes(cloud.pid)
    peak = _rss(pids)
    deleting = time.monotonic()
    removed = _send(cloud, {"method": "DELETE", "ids": sorted(accepted)}, len(accepted))
    taken = {r[4] for r in removed if r[3] == 204}
    gone = outcomes.wait(taken, lambda i: outcomes.deleted.get(i, 0) > 0, per_wave / 5 + 120)
    unlisted = _wait_unlisted(cloud, 120)
    deleted_s = time.monotonic() - deleting
    # caught up: each service settles (forgets what it may) once it has read its topics to the end
    time.sleep(2)
    pids.update(_processes(cloud.pid))
    settled = _rss(pids)
    counts = {
        "refused": float(per_wave - len(accepted)),
        "lost": float(len(left)),
        "duplicated": float(sum(1 for i in accepted if outcomes.spawns.get(i, 0) > 1)),
        "failed": float(len(accepted & outcomes.failed)),
        "delete_refused": float(len(accepted) - len(taken)),
        "delete_lost": float(len(gone)),
        "still_listed": 0.0 if unlisted else 1.0,
        "create_s": created_s,
        "delete_s": deleted_s,
    }
    return counts, peak, settled, pids


def _per_process(out: dict[str, list[float]], name: str, idle: dict[str, float],
                 peaks: list[dict[str, float]], settles: list[dict[str, float]], per_wave: int) -> None:
    """The metrics of one process's samples (`name`: its VmRSS, `name.anon`: its RssAnon)."""
    if name in idle:
        out[f"{name}.idle_mb"].append(idle[name] / MB)
    for number, (peak, settled) in enumerate(zip(peaks, settles, strict=True), start=1):
        if name in peak:
            out[f"{name}.peak_mb.w{number:02d}"].append(peak[name] / MB)
        if name in settled:
            out[f"{name}.settled_mb.w{number:02d}"].append(settled[name] / MB)
    first, last = settles[0].get(name), settles[-1].get(name)
    if first is not None and last is not None:
        out[f"{name}.growth_mb"].append((last - first) / MB)
        # the instances created after wave 1 settled: what a process keeps per server it ran
        out[f"{name}.growth_b_per_created"].append((last - first) / (per_wave * (WAVES - 1)))
    before = idle
    for peak, settled in zip(peaks, settles, strict=True):
        if name in peak and name in settled:
            out[f"{name}.per_live_b"].append((peak[name] - settled[name]) / per_wave)
        if name in peak and name in before:
            out[f"{name}.rise_per_live_b"].append((peak[name] - before[name]) / per_wave)
        before = settled


# a deleted server is forgotten a minute (log time) after its deletion, by the read model and by
# every service: shorter than a wave, so each wave's deletions are gone before the next settles
HORIZON_FLAGS = ("--deleted-retention-hours", str(1 / 60), "--forget-departed-after-minutes", "1")


@benchmark("memory.waves", unit="MB; B")
def waves(ctx: Context) -> dict[str, list[float]]:
    """RSS of each process of `up --processes --hosts 8` (SQLite) over 10 waves of creates and deletes,
    deleted servers forgotten after a minute (HORIZON_FLAGS).

    Idle, each wave's peak and settled MB, growth across waves, bytes per live instance; per wave
    the lost, duplicated and failed servers and the seconds it took."""
    return run_waves(ctx, HORIZON_FLAGS)


def run_waves(ctx: Context, flags: tuple[str, ...]) -> dict[str, list[float]]:
    """The waves on a cloud started with `flags` besides the pipeline benchmark's options and
    --processes (e.g. --deleted-retention-hours 0, to see what the read model's retention costs)."""
    per_wave = ctx.size(PER_WAVE)
    out: dict[str, list[float]] = defaultdict(list)
    began = time.monotonic()
    with scratch_dir(ctx, "waves-bench-") as workdir, \
            running_cloud(workdir, None, (*OPTIONS, "--processes", *flags)) as cloud:
        log_ = open_log(cloud.log_config)
        try:
            outcomes = Timeline(log_)
            body = {**cloud.server, "name": "wave", "networks": [wide_network(cloud)]}
            time.sleep(5)  # idle: every child has folded the seed and the hosts
            pids = _processes(cloud.pid)
            idle = _rss(pids)
            on_jemalloc = c_allocator(pids["api"]) == "jemalloc"
            seen: dict[str, set[int]] = {name: {pid} for name, pid in pids.items()}
            peaks: list[dict[str, float]] = []
            settles: list[dict[str, float]] = []
            for number in range(1, WAVES + 1):
                counts, peak, settled, wave_pids = _wave(cloud, outcomes, body, per_wave)
                for name, pid in wave_pids.items():
                    seen.setdefault(name, set()).add(pid)
                peaks.append(peak)
                settles.append(settled)
                for metric, value in counts.items():
                    out[f"wave.{metric}"].append(value)
                # what a reader maps of the log grows with it (see _rss)
                out[f"wave.log_mb.w{number:02d}"].append(
                    sum(f.stat().st_size for f in workdir.glob("log.db*")) / MB)
                print(f"waves bench: wave {number} {counts} peak MB "
                      f"{ {n: round(v / MB, 1) for n, v in peak.items()} } settled MB "
                      f"{ {n: round(v / MB, 1) for n, v in settled.items()} }", file=sys.stderr, flush=True)
            print(f"waves bench: idle MB { {n: round(v / MB, 1) for n, v in idle.items()} }", file=sys.stderr,
                  flush=True)
        finally:
            log_.close()
    out["total_s"].append(time.monotonic() - began)
    out["instances"].append(float(per_wave * WAVES))
    out["allocator.jemalloc"].append(1.0 if on_jemalloc else 0.0)
    settings = dict(zip(flags[::2], flags[1::2], strict=True))
    out["api.deleted_retention_h"].append(
        float(settings.get("--deleted-retention-hours", DELETED_RETENTION_MS / 3_600_000)))
    out["services.forget_after_h"].append(
        float(settings.get("--forget-departed-after-minutes", FORGET_AFTER_MS / 60_000)) / 60)
    for proc in sorted(seen):
        out[f"{proc}.restarts"].append(float(len(seen[proc]) - 1))
        for name in (proc, f"{proc}.anon"):
            _per_process(out, name, idle, peaks, settles, per_wave)
    return dict(out)
