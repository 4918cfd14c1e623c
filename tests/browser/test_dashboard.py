"""The dashboard in a real browser: headless Chromium opens /dashboard, a server is created, and the
page (never reloaded) shows it pass through the stages; a failure is counted by category, and shows
up with its server's name and reason once an admin's token is given to the page.

Chromium is driven over the DevTools protocol (a websocket); no selenium or playwright.
Set EVENTSVM_DASHBOARD_SCREENSHOT=path to also keep the screenshot (docs/dashboard.png is made so).
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import re
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from websockets.sync.client import ClientConnection, connect

from eventsvm.app.cloud import serving_app
from eventsvm.app.cluster import Cluster, ClusterOptions
from eventsvm.app.seed import choose_passwords, seed_events
from eventsvm.config import LogConfig
from eventsvm.virt.compute_host import HostCapacity
from tests.e2e.conftest import Cloud
from tests.http_wire import served

pytestmark = pytest.mark.browser
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def cloud(tmp_path: Path) -> Iterator[Cloud]:
    """Two hosts on the embedded engine, one of them failing every spawn (so failures show)."""
    config = LogConfig(url=f"sqlite://{tmp_path / 'log.db'}", partitions=2)
    options = ClusterOptions(data_dir=tmp_path, log=config,
                             hosts=2, capacity=HostCapacity(vcpus=16, ram_mb=16384, disk_gb=200),
                             broken_hosts={"compute-1": "simulated disk failure"})
    cluster = Cluster(options)
    readmodel = cluster.start_readmodel()
    readmodel.append(seed_events(choose_passwords("admin-pw", "demo-pw")))
    cluster.start_services()
    yield Cloud(cluster, options, readmodel, [cluster])
    cluster.stop()


@pytest.fixture
def dashboard_url(cloud: Cloud, tmp_path: Path) -> Iterator[str]:
    """The API and the monitoring routes over the cloud's read model, as `eventsvm up` serves them,
    by uvicorn in a thread."""
    port = free_port()
    app, _, monitoring = serving_app(cloud.readmodel, tmp_path, f"http://127.0.0.1:{port}",
                                     stuck_after_s=60, lag_interval_s=1.0)
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    with served(config):
        yield f"http://127.0.0.1:{port}/dashboard"
    monitoring.close()


class Page:
    """One Chromium tab, driven over the DevTools protocol."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.ids = itertools.count(1)

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        message_id = next(self.ids)
        self.ws.send(json.dumps({"id": message_id, "method": method, "params": params}))
        while True:
            answer = json.loads(self.ws.recv(timeout=30))
            if answer.get("id") == message_id:
                assert "error" not in answer, answer["error"]
                result: dict[str, Any] = answer["result"]
                return result

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)["result"]
        return result.get("value")

    def wait_for(self, expression: str, until: Callable[[Any], bool], timeout: float, what: str) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            seen = self.evaluate(expression)
            if until(seen):
                return seen
            assert time.monotonic() < deadline, f"{what}: the page still shows {seen!r} after {timeout} s"
            time.sleep(0.2)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Callable[[str], Page]]:
    """Opens a URL in headless Chromium and hands back its tab."""
    assert os.path.exists(CHROMIUM), "the browser tests need Debian's chromium (apt-get install chromium)"
    processes: list[subprocess.Popen[bytes]] = []
    sockets = contextlib.ExitStack()

    def open_page(url: str) -> Page:
        process = subprocess.Popen([
            CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
            f"--user-data-dir={tmp_path / 'chromium'}", "--remote-debugging-port=0",
            "--window-size=1360,1180", url], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        processes.append(process)
        assert process.stderr is not None
        deadline = time.monotonic() + 30
        port = None
        while port is None:
            assert time.monotonic() < deadline, "chromium did not open its DevTools port"
            line = process.stderr.readline().decode(errors="replace")
            found = re.search(r"DevTools listening on ws://[^:]+:(\d+)/", line)
            port = int(found.group(1)) if found else None
            assert line or process.poll() is None, "chromium exited"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as answer:
            targets = json.load(answer)
        target = next(t for t in targets if t["type"] == "page")
        ws = connect(target["webSocketDebuggerUrl"], max_size=None, open_timeout=10)
        return Page(sockets.enter_context(ws))

    yield open_page
    sockets.close()
    for process in processes:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def admin_token(dashboard_url: str) -> str:
    """A token of the seeded admin, from the cloud's own keystone."""
    base = dashboard_url.removesuffix("/dashboard")
    answer = httpx.post(f"{base}/identity/v3/auth/tokens", json={"auth": {"identity": {
        "methods": ["password"], "password": {"user": {"name": "admin", "domain": {"id": "default"},
                                                       "password": "admin-pw"}}},
        "scope": {"project": {"name": "admin", "domain": {"id": "default"}}}}}, timeout=30)
    assert answer.status_code == 201, answer.text
    return answer.headers["X-Subject-Token"]


PASSED = "document.querySelector('[data-stage=\"{}\"] .passed-count')?.textContent ?? null"
STATUS = "document.querySelector('[data-status=\"{}\"] b')?.textContent ?? null"


def test_the_dashboard_shows_a_new_server_flow_through_without_a_reload(
        cloud: Cloud, dashboard_url: str, browser: Callable[[str], Page], tmp_path: Path) -> None:
    page = browser(dashboard_url)
    page.wait_for(PASSED.format("spawned"), lambda v: v == "0", 20, "the first poll")
    page.evaluate("window.__sameDocument = true")

    ids = [cloud.submit(f"web-{n}") for n in range(5)]
    typo = cloud.submit("typo", flavor="no-such-flavor")
    cloud.wait_for([*ids, typo], {"ACTIVE", "ERROR"})
    page.wait_for(PASSED.format("spawned"), lambda v: v == "5", 20, "servers reaching spawned")
    assert page.evaluate(PASSED.format("requested")) == "6"
    page.wait_for(STATUS.format("ACTIVE"), lambda v: v == "5", 10, "the ACTIVE count")
    assert page.evaluate(STATUS.format("ERROR")) == "1"
    # without a token: the failure is counted by category, its server is not named
    counted = "document.querySelector('#failures tr[data-category=\"not_found\"]')?.textContent ?? null"
    summary = page.wait_for(counted, lambda v: v is not None, 10, "the failure counted by category")
    assert summary.startswith("1 ×") and "authenticate" in summary, summary
    assert page.evaluate("document.getElementById('view').dataset.view") == "summary"
    assert typo not in page.evaluate("document.body.textContent")
    # a token the cloud does not accept is dropped, and the page says so
    page.evaluate("document.getElementById('token').value = 'not-a-token';"
                  "document.getElementById('use-token').click()")
    page.wait_for("document.getElementById('error').textContent", lambda v: "token was refused" in v, 10,
                  "the refused token's notice")
    assert page.evaluate("document.getElementById('view').dataset.view") == "summary"
    # an admin's token, typed into the page, shows which server failed and why
    page.evaluate(f"document.getElementById('token').value = {json.dumps(admin_token(dashboard_url))};"
                  "document.getElementById('use-token').click()")
    row = f"document.querySelector('#failures tr[data-instance=\"{typo}\"]')?.textContent ?? null"
    failure = page.wait_for(row, lambda v: v is not None, 10, "the failed server in recent failures")
    assert "could not be found" in failure and "typo" in failure
    assert page.evaluate("document.getElementById('view').dataset.view") == "admin"
    assert page.evaluate("document.getElementById('error').textContent") == ""
    bar = page.evaluate(
        "document.querySelector('[data-host=\"compute-2\"] [data-resource=\"vcpus\"]').textContent")
    assert bar.startswith("vcpus 5 /"), bar
    cloud.delete(ids[0])
    cloud.wait_for([ids[0]], {"DELETED"})
    page.wait_for(STATUS.format("DELETED"), lambda v: v == "1", 10, "the DELETED count")
    assert page.evaluate("window.__sameDocument") is True, "the page reloaded instead of updating"
    assert page.evaluate("document.getElementById('live').className") == "on"

    size = page.call("Page.getLayoutMetrics")["cssContentSize"]
    whole = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
    shot = base64.b64decode(page.call("Page.captureScreenshot", format="png", clip=whole,
                                      captureBeyondViewport=True)["data"])
    assert shot.startswith(b"\x89PNG") and len(shot) > 10_000
    (tmp_path / "dashboard.png").write_bytes(shot)
    keep = os.environ.get("EVENTSVM_DASHBOARD_SCREENSHOT")
    if keep:
        Path(keep).write_bytes(shot)
