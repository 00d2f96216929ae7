"""A background process of the sandbox (the moto server, the sshd), known by files in a folder.

`<name>.pid` and `<name>.port` say where it runs, `<name>.log` what it said; a lock file makes
two starts at once safe, and a second start reuses the running process.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

from tenacity import retry, retry_if_exception_type, stop_after_delay, wait_exponential

from cloud.errors import KilnError


class Daemon:
    """One sandbox process; `ready(port)` says whether it answers on that port."""

    def __init__(self, folder: Path, name: str, host: str, ready: Callable[[int], bool]):
        self.folder = folder
        self.name = name
        self.host = host
        self.ready = ready
        self.pid_file = folder / f"{name}.pid"
        self.port_file = folder / f"{name}.port"
        self.log = folder / f"{name}.log"

    @property
    def pid(self) -> int | None:
        return _read_int(self.pid_file)

    @property
    def port(self) -> int | None:
        return _read_int(self.port_file)

    def running(self) -> bool:
        pid, port = self.pid, self.port
        return bool(pid and port and _alive(pid) and self.ready(port))

    def start(self, argv: list[str], port: int, timeout: float, launch=subprocess.Popen,
              **popen) -> None:
        """Run `argv` in its own session (started by `launch`, a Popen), then wait until it is
        ready (or stop it and fail)."""
        with open(self.log, "ab") as log:
            self._log_start = log.tell()
            process = launch(argv, stdout=log, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL, start_new_session=True, **popen)
        self.pid_file.write_text(f"{process.pid}\n")
        self.port_file.write_text(f"{port}\n")
        try:
            self._wait_until_ready(process, port, timeout)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> bool:
        """Stop the process group; True if it was running."""
        pid = self.pid
        for path in (self.pid_file, self.port_file):
            path.unlink(missing_ok=True)
        if not (pid and _alive(pid)):
            return False
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            return False
        return True

    @contextmanager
    def lock(self):
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.folder / f"{self.name}.lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield

    def _wait_until_ready(self, process: subprocess.Popen, port: int, timeout: float) -> None:
        @retry(stop=stop_after_delay(timeout), wait=wait_exponential(0.02, max=1),
               retry=retry_if_exception_type(ConnectionError), reraise=True)
        def probe() -> None:
            if process.poll() is not None:
                raise KilnError(f"sandbox {self.name} exited with {process.returncode}: "
                                f"{self._last_word()}")
            if not self.ready(port):
                raise ConnectionError(f"sandbox {self.name} on {self.host}:{port} not ready yet")

        probe()


    def _last_word(self) -> str:
        """The process's own one-line reason (`sandbox: …` in its log), else where to look."""
        try:
            with open(self.log, "rb") as log:
                log.seek(getattr(self, "_log_start", 0))
                lines = log.read().decode(errors="replace").splitlines()
        except OSError:
            lines = []
        said = [line for line in lines if line.startswith("sandbox: ")]
        return said[-1].removeprefix("sandbox: ") if said else f"see {self.log}"


def free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def port_free(host: str, port: int) -> bool:
    """Whether a server may listen on the port (connections of a dead one waiting out
    TIME_WAIT do not stop it, as a server reuses the address)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def wait_gone(pid: int | None, timeout: float = 10) -> bool:
    """Wait for a process that was told to end (and reap it if it is our child); True if gone."""
    deadline = time.monotonic() + timeout
    while pid and _alive(pid):
        with contextlib.suppress(ChildProcessError):
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
