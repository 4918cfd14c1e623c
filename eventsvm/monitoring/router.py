"""/metrics for Prometheus, and /dashboard: one static page that polls /dashboard/state.

What a monitoring user needs without logging in is the pipeline's health: counts per stage and
status, latency, host capacity, consumer lag, failures counted by stage and category. That much
is open, as /metrics is (whose labels name stages, statuses, categories, hosts and topics, never a
project, user or server). Project data (a failed or stuck server's id, name and reason) is shown
only to a caller whose X-Auth-Token is an admin's, checked as the API checks every token; a token
that is not valid is a 401, so an expired one is noticed rather than silently showing less.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from importlib import resources
from typing import Any

from fastapi import APIRouter, Header, HTTPException
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from eventsvm.events.model import now_ms
from eventsvm.identity import policy
from eventsvm.identity.tokens import TokenClaims
from eventsvm.monitoring.lag import ConsumerLag
from eventsvm.monitoring.metrics import FLOW, PipelineMonitor, host_usage
from eventsvm.projections.readmodel import ReadModel

STUCK_SHOWN = 50
# the API's token check (eventsvm.api.auth.valid_claims), handed in by the composition root
ClaimsOf = Callable[[str], TokenClaims | None]


@dataclass
class Monitoring:
    """The monitor fed by the read model, the lag poller, and the routes that show them."""

    monitor: PipelineMonitor
    lag: ConsumerLag
    router: APIRouter
    readmodel: ReadModel

    def state(self, project_data: bool = True) -> dict[str, Any]:
        """Everything the dashboard draws, as one JSON document; without `project_data` the
        failed and stuck servers are counted, never named, identified or given a reason."""
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
        failures = [asdict(f) for f in monitor.failures_list()] if project_data else []
        shown_stuck = stuck[:STUCK_SHOWN] if project_data else []
        return {
            "generated_at": now_ms(),
            "view": "admin" if project_data else "summary",
            "stages": [{"name": s, "passed": passed[s], "now": counts.get(s, 0)} for s in FLOW],
            "waiting": {s: counts.get(s, 0) for s in ("rescheduling", "deleting")},
            "statuses": statuses,
            "latency": monitor.percentiles(),
            "hosts": hosts,
            "failures": failures,
            "failure_counts": monitor.failure_counts(),
            "stuck": {"after_s": monitor.stuck_after_ms / 1000, "count": len(stuck),
                      "instances": [{**s, "name": names.get(s["id"], "")} for s in shown_stuck]},
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
                    start_lag: bool = True, claims_of: ClaimsOf | None = None) -> Monitoring:
    """Attach a monitor to `readmodel` and build the routes; `stuck_after_s` is how long an
    instance may wait in one stage before it counts as stuck; `claims_of` checks a caller's token
    (without it no token is accepted and the dashboard shows counts only)."""
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
    def dashboard_state(x_auth_token: str | None = Header(default=None)) -> JSONResponse:
        admin = False
        if x_auth_token:
            claims = claims_of(x_auth_token) if claims_of is not None else None
            if claims is None:
                raise HTTPException(401)  # the API's handlers answer it in keystone's shape
            admin = policy.is_admin(claims.roles)
        return JSONResponse(monitoring.state(project_data=admin),
                            headers={"Cache-Control": "no-store", "Vary": "X-Auth-Token"})

    if start_lag:
        lag.start()
    return monitoring


def make_router(readmodel: ReadModel, *, stuck_after_s: float = 300.0, lag_interval_s: float = 5.0
                ) -> APIRouter:
    """The monitoring routes over `readmodel` (see make_monitoring)."""
    return make_monitoring(readmodel, stuck_after_s=stuck_after_s, lag_interval_s=lag_interval_s).router
