"""Child processes of the tests and benchmarks (`eventsvm up`, API processes): wait until one
serves, and stop one the way an operator would (SIGTERM, then SIGKILL after a grace period); and
waiting for what such a process brings about."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest


def wait_until_serving(url: str, process: subprocess.Popen[Any], timeout: float = 90.0) -> None:
    """Return once the API at `url` answers its Keystone version document; AssertionError naming
    the exit code when the process ends first, or the timeout when it never answers."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the API at {url} exited with {process.returncode}")
        try:
            if httpx.get(f"{url}/identity/v3", timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"the API at {url} did not answer within {timeout} s")


def stop(process: subprocess.Popen[Any], grace: float = 30.0) -> None:
    """SIGTERM (a graceful shutdown commits the step in hand), SIGKILL after `grace` seconds."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


def wait_for(condition: Callable[[], bool], limit_s: float, what: str, poll_s: float = 0.5) -> None:
    """Poll `condition` every `poll_s` until it holds; fail naming `what` after `limit_s`."""
    deadline = time.monotonic() + limit_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {limit_s:g} s: {what}")
        time.sleep(poll_s)
