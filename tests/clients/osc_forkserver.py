"""The real `openstack` command, started from a warm interpreter: a fork server.

Each `openstack` invocation spends ~0.8 s of CPU importing python-openstackclient, loading its
~900 plugin entry points and scanning every installed distribution, before it sends a request;
the client tests run a few hundred of them. A zygote process does that once; each invocation is
then a fork of it running the client's own `main(argv)` in a fresh process, with its own
environment, stdin from /dev/null and stdout / stderr captured, as `subprocess.run` gives.
The code that runs is the unmodified client's; only the import happens earlier.

Run as a script, this is the zygote: one JSON request per line on stdin, one JSON answer per line
on stdout. It holds no thread (a fork copies only the calling one) and never talks to a cloud.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
from importlib import metadata
from pathlib import Path
from typing import Any


def _warm() -> None:
    """Import what every invocation would: the shell, every `openstack.*` plugin, and cliff's
    map of distributions (built once per process, 0.2 s)."""
    import cliff.command
    import openstackclient.shell  # noqa: F401  (the import is the point)

    entries = [e for dist in metadata.distributions() for e in dist.entry_points]
    for entry in entries:
        if entry.group.startswith("openstack."):
            with contextlib.suppress(Exception):  # a broken plugin fails in the child as it would alone
                entry.load()
    with contextlib.suppress(Exception):
        cliff.command._get_distributions_by_modules()


def _run_child(request: dict[str, Any]) -> None:
    """In the forked child: become `openstack ARGS` and exit with its status."""
    from openstackclient import shell

    os.setpgid(0, 0)  # its own group: a timeout kills whatever it started too
    stdin = os.open(os.devnull, os.O_RDONLY)
    out = os.open(request["stdout"], os.O_WRONLY)
    err = os.open(request["stderr"], os.O_WRONLY)
    for fd, target in ((stdin, 0), (out, 1), (err, 2)):
        os.dup2(fd, target)
    sys.stdin = open(0, closefd=False)  # noqa: SIM115  (the process ends with it)
    sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115
    os.environ.clear()
    os.environ.update(request["env"])
    sys.argv = ["openstack", *request["argv"]]
    status = 1
    try:
        status = int(shell.main(request["argv"]) or 0)
    except SystemExit as exit_:
        status = exit_.code if isinstance(exit_.code, int) else 1
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)


def _serve() -> None:
    # cliff names the program from sys.argv[0] when it is imported ("openstack: error: ...")
    sys.argv = [str(Path(sys.executable).parent / "openstack")]
    with contextlib.redirect_stdout(io.StringIO()):
        _warm()
    answers = os.fdopen(os.dup(1), "w")
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            _run_child(request)
        print(json.dumps({"pid": pid}), file=answers, flush=True)
        _, status = os.waitpid(pid, 0)
        print(json.dumps({"returncode": os.waitstatus_to_exitcode(status)}), file=answers, flush=True)


class ClientForkServer:
    """Runs `openstack ARGS` as forks of one warm zygote; one invocation at a time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._zygote: subprocess.Popen[bytes] | None = None
        self._unread = b""

    def _started(self) -> subprocess.Popen[bytes]:
        if self._zygote is None or self._zygote.poll() is not None:
            self._zygote = subprocess.Popen([sys.executable, __file__], stdin=subprocess.PIPE,
                                            stdout=subprocess.PIPE, bufsize=0)
            self._unread = b""
        return self._zygote

    def _answer(self, timeout: float) -> dict[str, Any] | None:
        """The zygote's next answer line; None when none came within `timeout` seconds."""
        assert self._zygote is not None and self._zygote.stdout is not None
        fd = self._zygote.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._unread:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                return None
            chunk = os.read(fd, 4096)
            if not chunk:
                raise RuntimeError("the openstack client's zygote ended")
            self._unread += chunk
        line, self._unread = self._unread.split(b"\n", 1)
        return dict(json.loads(line))

    def run(self, argv: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
        """`openstack *argv` in `env`; its status and output. TimeoutExpired after `timeout` s."""
        with self._lock, tempfile.TemporaryDirectory(prefix="osc-") as scratch:
            out, err = Path(scratch, "stdout"), Path(scratch, "stderr")
            out.touch()
            err.touch()
            zygote = self._started()
            assert zygote.stdin is not None
            zygote.stdin.write(json.dumps({"argv": argv, "env": env, "stdout": str(out),
                                           "stderr": str(err)}).encode() + b"\n")
            started = self._answer(30)
            if started is None:
                raise RuntimeError("the openstack client's zygote did not fork within 30 s")
            answer = self._answer(timeout)
            if answer is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(int(started["pid"]), signal.SIGKILL)
                self._answer(30)  # the zygote reaps it and says so
                raise subprocess.TimeoutExpired(["openstack", *argv], timeout, out.read_text(),
                                                err.read_text())
            return subprocess.CompletedProcess(["openstack", *argv], int(answer["returncode"]),
                                               out.read_text(), err.read_text())

    def close(self) -> None:
        """Stop the zygote."""
        zygote, self._zygote = self._zygote, None
        if zygote is not None:
            assert zygote.stdin is not None
            zygote.stdin.close()
            try:
                zygote.wait(10)
            except subprocess.TimeoutExpired:
                zygote.kill()
                zygote.wait()


if __name__ == "__main__":
    _serve()
