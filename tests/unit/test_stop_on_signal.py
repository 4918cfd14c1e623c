"""A burst of SIGTERMs stops a service process cleanly: the handler never takes a lock the main
thread may hold (a restarted child of `up --processes` gets two SIGTERMs at once, and hung on the
second one until it was SIGKILLed)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

# The main thread waits on the Event in short steps, as the runner's loop does, so a signal
# landing while it holds the Event's lock is likely within a burst.
CHILD = """
import signal, sys, threading
from eventsvm.app.options import on_sigterm
stop = threading.Event()
on_sigterm(stop.set)
print("ready", flush=True)
while not stop.wait(0.0001):
    pass
# the rest of the burst may still be on its way: stopping is decided, let it not end the process
signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("stopped", flush=True)
"""


def _signalled(signum: int, times: int) -> tuple[int, str, float]:
    """Start the child, send it `signum` `times` times once it is ready: its exit status, its
    output and how long it took to stop (a hung child is killed after 10 s)."""
    child = subprocess.Popen([sys.executable, "-c", CHILD], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline() == "ready\n"
        started = time.monotonic()
        for _ in range(times):
            child.send_signal(signum)
        out, _ = child.communicate(timeout=10)
        return child.returncode, out, time.monotonic() - started
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def test_a_burst_of_sigterms_stops_the_process_every_time() -> None:
    for _ in range(5):
        status, out, _ = _signalled(signal.SIGTERM, 200)
        assert status == 0 and out == "stopped\n"


def test_sigint_stops_it_as_sigterm_does() -> None:
    status, out, seconds = _signalled(signal.SIGINT, 1)
    assert status == 0 and out == "stopped\n" and seconds < 5
