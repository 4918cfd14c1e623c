"""A live cloud for the real OpenStack clients: what the tests hold on to (the fixture that starts
it is in conftest.py). A plain module, so test modules can import it by a name no other
directory's conftest shares."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from osc_forkserver import ClientForkServer

ROOT = Path(__file__).resolve().parents[2]
BIN = ROOT / ".venv" / "bin"
# every `openstack` of the session forks from one warm interpreter (osc_forkserver.py says why)
CLIENTS = ClientForkServer()


@dataclass
class LiveCloud:
    """A running `eventsvm up` and how to reach it with the clients."""

    engine: str
    url: str
    data_dir: Path
    clouds_yaml: Path
    log_file: Path
    public_key_file: Path

    @property
    def env(self) -> dict[str, str]:
        """The environment the clients run in: only our clouds.yaml, no stray OS_* settings."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
        env.update(OS_CLIENT_CONFIG_FILE=str(self.clouds_yaml), NO_PROXY="127.0.0.1,localhost",
                   no_proxy="127.0.0.1,localhost")
        return env

    def openstack(self, *args: str, cloud: str = "eventsvm", timeout: float = 180,
                  check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run the `openstack` command against this cloud."""
        done = CLIENTS.run(["--os-cloud", cloud, *args], self.env, timeout)
        if check and done.returncode != 0:
            raise AssertionError(f"openstack {' '.join(args)} failed ({done.returncode}):\n{done.stderr}\n"
                                 f"--- server log ---\n{self.log_tail()}")
        return done

    def log_tail(self, lines: int = 40) -> str:
        """The end of the server's output, for failure messages."""
        return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
