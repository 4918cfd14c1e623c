"""/metrics for Prometheus, and /dashboard: one static page that polls /dashboard/state.

Both show every project's instances and failure reasons: serve them to operators only (an admin
network, or a proxy in front), as one would nova's own admin APIs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from importlib import resources
from typing import Any

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from eventsvm.events.model import now_ms
from eventsvm.monitoring.lag import ConsumerLag
from eventsvm.monitoring.metrics import FLOW, PipelineMonitor, host_usage
from eventsvm.projections.readmodel import ReadModel

STUCK_SHOWN = 50


@dataclass
class Monitoring:
    """The monitor fed by the read model, the lag poller, and the routes that show them."""

    monitor: PipelineMonitor
    lag: ConsumerLag
    router: APIRouter
    readmodel: ReadModel

    def state(self) -> dict[str, Any]:
        """Everything the dashboard draws, as one JSON document."""
        with self.readmodel.lock:
            models = self.readmodel.models
            statuses = models.instances.by_status()
            hosts = host_usage(models)
            names = {}
            counts, stuck = self.monitor.stages_now()
            for entry in stuck[:STUCK_SHOWN]:
                inst = models.instances.get(entry["id"])
                names[entry["id"]] = inst.name if inst is not None else ""
        monitor = self.monitor
        with monitor.lock:
            passed = dict(monitor.passed)
        return {
            "generated_at": now_ms(),
            "stages": [{"name": s, "passed": passed[s], "now": counts.get(s, 0)} for s in FLOW],
            "waiting": {s: counts.get(s, 0) for s in ("rescheduling", "deleting")},
            "statuses": statuses,
            "latency": monitor.percentiles(),
            "hosts": hosts,
            "failures": [asdict(f) for f in monitor.failures_list()],
            "stuck": {"after_s": monitor.stuck_after_ms / 1000, "count": len(stuck),
                      "instances": [{**s, "name": names.get(s["id"], "")} for s in stuck[:STUCK_SHOWN]]},
            "lag": [{"group": g, "topic": t, "partition": p, "lag": n} for g, t, p, n in self.lag.rows],
        }

    def close(self) -> None:
        """Stop the lag poller and stop listening to the read model."""
        self.lag.close()
        with self.readmodel.lock:
            if self.monitor.observe in self.readmodel.listeners:
                self.readmodel.listeners.remove(self.monitor.observe)


def dashboard_html() -> str:
    """The dashboard page (static; no build step)."""
    return (resources.files("eventsvm.monitoring") / "static" / "dashboard.html").read_text(encoding="utf-8")


def make_monitoring(readmodel: ReadModel, *, stuck_after_s: float = 300.0, lag_interval_s: float = 5.0,
                    start_lag: bool = True) -> Monitoring:
    """Attach a monitor to `readmodel` and build the routes; `stuck_after_s` is how long an
    instance may wait in one stage before it counts as stuck."""
    monitor = PipelineMonitor(stuck_after_s=stuck_after_s)
    monitor.attach(readmodel)

    def host_slots() -> dict[str, int]:
        with readmodel.lock:
            return {name: int(host.get("slot", 0)) for name, host in readmodel.models.hosts.items()}

    lag = ConsumerLag(readmodel.log, host_slots, interval_s=lag_interval_s)
    monitor.extra_collectors.append(lag)
    router = APIRouter(tags=["monitoring"])
    monitoring = Monitoring(monitor, lag, router, readmodel)

    @router.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        return Response(generate_latest(monitor.registry), media_type=CONTENT_TYPE_LATEST)

    @router.get("/dashboard", include_in_schema=False)
    def dashboard() -> HTMLResponse:
        return HTMLResponse(dashboard_html(), headers={"Cache-Control": "no-cache"})

    @router.get("/dashboard/state", include_in_schema=False)
    def dashboard_state() -> JSONResponse:
        return JSONResponse(monitoring.state(), headers={"Cache-Control": "no-store"})

    if start_lag:
        lag.start()
    return monitoring


def make_router(readmodel: ReadModel, *, stuck_after_s: float = 300.0, lag_interval_s: float = 5.0
                ) -> APIRouter:
    """The monitoring routes over `readmodel` (see make_monitoring)."""
    return make_monitoring(readmodel, stuck_after_s=stuck_after_s, lag_interval_s=lag_interval_s).router
