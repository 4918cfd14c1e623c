"""The benchmark's own tools: the open-loop load generator keeps its schedule whatever the server
does, and the plot reads the pipeline rows of a results file."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path

from bench.loadgen import generate
from bench.plot import plot, series


def _slow_api(delay_s: float) -> tuple[int, threading.Event]:
    """A raw HTTP server on a free port answering every POST with 202 after `delay_s`; its port."""
    ready = threading.Event()
    port: list[int] = []
    served = [0]

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:
                break
            length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length"))
            await reader.readexactly(length)
            await asyncio.sleep(delay_s)
            served[0] += 1
            body = json.dumps({"server": {"id": f"id-{served[0]}"}}).encode()
            writer.write(b"HTTP/1.1 202 Accepted\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        writer.close()

    async def serve() -> None:
        server = await asyncio.start_server(answer, "127.0.0.1", 0)
        port.append(server.sockets[0].getsockname()[1])
        ready.set()
        async with server:
            await server.serve_forever()

    threading.Thread(target=lambda: asyncio.run(serve()), daemon=True).start()
    ready.wait(5)
    return port[0], ready


def test_the_load_generator_sends_on_schedule_while_answers_are_slow() -> None:
    # Open loop: 20 requests at 40/s are all sent within half a second even though each answer
    # takes a whole second; closed-loop clients on 4 connections would have needed 5 s.
    port, _ = _slow_api(1.0)
    started = time.monotonic()
    url = f"http://127.0.0.1:{port}/compute/v2.1"
    sent = asyncio.run(generate(url, "token", {"name": "x"}, 40.0, 20, 64))
    elapsed = time.monotonic() - started
    assert [s.status for s in sent] == [202] * 20
    assert len({s.server_id for s in sent}) == 20
    gaps = [b.sent_ms - a.sent_ms for a, b in zip(sent, sent[1:], strict=False)]
    assert all(abs(gap - 25.0) < 1e-6 for gap in gaps), gaps
    assert all(s.latency_ms >= 1000 for s in sent)
    assert elapsed < 3.0, elapsed


def test_the_plot_draws_each_engines_points_from_a_results_file(tmp_path: Path) -> None:
    rows = [{"name": f"pipeline.{engine}.{rate}.{metric}", "median": value, "min": value * 0.9,
             "max": value * 1.1}
            for engine in ("sqlite", "kafka") for rate in (25, 50)
            for metric, value in (("throughput", rate * 0.9), ("p50_ms", 120.0), ("p99_ms", 900.0))]
    rows.append({"name": "api.servers.sqlite.accepted", "median": 200, "min": 190, "max": 210})
    found = series(rows)
    assert sorted(found) == ["kafka", "sqlite"]
    assert [(p[0], p[1]) for p in found["sqlite"]["throughput"]] == [(25.0, 22.5), (50.0, 45.0)]
    assert [p[0] for p in found["kafka"]["p99_ms"]] == [25.0, 50.0]
    out = plot({"results": rows, "machine": {"cores": 2}, "when": "now"}, tmp_path / "p.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_clouds_cpu_counts_the_processes_under_it() -> None:
    import os
    import subprocess
    import sys

    from bench.pipeline_bench import _cloud_cpu_s

    # a parent that starts a child burning ~0.3 s of CPU from a thread, as a supervisor does
    script = ("import subprocess, sys, threading\n"
              "t = threading.Thread(target=lambda: subprocess.run([sys.executable, '-c', "
              "'import time\\nend = time.process_time() + 0.3\\nwhile time.process_time() < end: pass\\n"
              "time.sleep(30)']))\n"
              "t.start(); t.join()\n")
    parent = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.monotonic() + 20
        while _cloud_cpu_s(parent.pid) < 0.3 and time.monotonic() < deadline:
            time.sleep(0.1)
        # the parent alone spends a few hundredths: the rest is its thread's child
        assert 0.3 <= _cloud_cpu_s(parent.pid) < 5
    finally:
        for child in Path(f"/proc/{parent.pid}/task").iterdir():
            for pid in (child / "children").read_text().split():
                os.kill(int(pid), 9)
        parent.kill()
        parent.wait()
