"""Start, stop, reset and describe the sandbox's moto server.

State lives under the sandbox's state directory (`kiln.sandbox.state_dir`, default `.sandbox/`):
`moto.pid`, `moto.port` and `moto.log`. Any task that needs AWS while the target is `sandbox`
starts the server if it is not running; a second start reuses the running one.
"""

from __future__ import annotations

import fcntl
import os
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

from tenacity import retry, retry_if_exception_type, stop_after_delay, wait_exponential

from cloud.console import say
from cloud.errors import KilnError
from sandbox import bootstrap, instances, signing

DUMMY_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
}


class Sandbox:
    """One sandbox, identified by its state directory."""

    def __init__(self, state_dir: str | Path, host: str = "127.0.0.1", port: int | None = None,
                 region: str = "us-east-1"):
        self.state_dir = Path(state_dir).resolve()
        self.host = host
        self.wanted_port = port
        self.region = region

    @classmethod
    def from_settings(cls, settings) -> Sandbox:
        return cls(settings.sandbox.state_dir, settings.sandbox.host, settings.sandbox.port,
                   settings.aws.region)

    # -- state files -------------------------------------------------------------------------
    def _file(self, name: str) -> Path:
        return self.state_dir / name

    def _read_int(self, name: str) -> int | None:
        try:
            return int(self._file(name).read_text().strip())
        except (OSError, ValueError):
            return None

    @property
    def endpoint(self) -> str | None:
        port = self._read_int("moto.port")
        return f"http://{self.host}:{port}" if port else None

    def running(self) -> bool:
        pid, endpoint = self._read_int("moto.pid"), self.endpoint
        return bool(pid and endpoint and _alive(pid) and _answers(endpoint))

    # -- lifecycle ---------------------------------------------------------------------------
    def up(self) -> str:
        """Start the moto server unless it runs already; return its endpoint URL."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with self._lock():
            if self.running():
                instances.start(self.state_dir)  # the sshd standing in for bake instances
                return self.endpoint
            port = self.wanted_port or _free_port(self.host)
            log = open(self._file("moto.log"), "ab")  # noqa: SIM115 - handed to the child
            process = subprocess.Popen(
                [sys.executable, "-m", "sandbox.server", "--host", self.host, "--port", str(port),
                 "--state-dir", str(self.state_dir)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, cwd=_project_root(), env=self._server_env())
            self._file("moto.pid").write_text(f"{process.pid}\n")
            self._file("moto.port").write_text(f"{port}\n")
            endpoint = f"http://{self.host}:{port}"
            try:
                _wait_until_answering(endpoint, process)
            except Exception:
                _stop(process.pid)
                raise
            say(f"sandbox: moto server started at {endpoint} (log: {self._file('moto.log')})")
            instances.start(self.state_dir)
            return endpoint

    def down(self) -> bool:
        """Stop the server (and the sandbox sshd); True if one was running."""
        instances.stop(self.state_dir)
        pid = self._read_int("moto.pid")
        for name in ("moto.pid", "moto.port"):
            self._file(name).unlink(missing_ok=True)
        return bool(pid and _stop(pid))

    def reset(self) -> None:
        """Clear every resource in the server (moto's own reset), keeping it running."""
        if not self.running():
            raise KilnError(f"sandbox in {self.state_dir} is not running: nothing to reset")
        request = urllib.request.Request(f"{self.endpoint}/moto-api/reset", method="POST")
        urllib.request.urlopen(request, timeout=30).close()

    def env(self) -> dict[str, str]:
        """Environment variables that point boto3 and the aws CLI at this sandbox."""
        if not self.endpoint:
            raise KilnError(f"sandbox in {self.state_dir} is not running (invoke sandbox.up)")
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_DEFAULT_REGION": self.region,
                "AWS_REGION": self.region, **DUMMY_CREDENTIALS}

    def _server_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env.update(DUMMY_CREDENTIALS)
        return env

    @contextmanager
    def _lock(self):
        with open(self._file("up.lock"), "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield


def ensure_up(settings) -> Sandbox:
    """Start the sandbox if needed and point this process's boto3 at it."""
    box = Sandbox.from_settings(settings)
    box.up()
    os.environ.pop("AWS_PROFILE", None)
    os.environ.update(box.env())
    instances.overlay(settings, box.state_dir)
    signing.overlay(settings)
    bootstrap.overlay(settings)
    return box


def _project_root() -> Path:
    return Path(__file__).resolve().parent.parent


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _answers(endpoint: str) -> bool:
    try:
        urllib.request.urlopen(f"{endpoint}/moto-api/config", timeout=2).close()
        return True
    except (urllib.error.URLError, OSError):
        return False


def _wait_until_answering(endpoint: str, process: subprocess.Popen) -> None:
    @retry(stop=stop_after_delay(60), wait=wait_exponential(0.05, max=1),
           retry=retry_if_exception_type(ConnectionError), reraise=True)
    def probe() -> None:
        if process.poll() is not None:
            raise KilnError(f"sandbox moto server exited with {process.returncode}; see moto.log")
        if not _answers(endpoint):
            raise ConnectionError(f"moto server at {endpoint} is not answering yet")

    probe()


def _stop(pid: int) -> bool:
    if not _alive(pid):
        return False
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    return True
