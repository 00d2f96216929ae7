"""The moto server's side of the load balancers' process (`fronts`): starting it, feeding it,
ending it.

The server starts the process once, from its main thread, and the process ends with the server
however the server ends: the kernel signals it when the server dies (parent-death signal), its
stdin reaches its end, the server's exit ends it, and a server starting after a crash ends one
left running under its recorded pid and identity (`fronts.pid`, sandbox/process_identity.py).
States go down its stdin as JSON lines; acknowledgements and the metrics of each request come
back on its stdout. Its stderr is the server's (moto.log).
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from sandbox import process_identity

PR_SET_PDEATHSIG = 1
RECORD = "fronts.pid"  # "<pid> <identity>" of the running process, in the state dir


class Fronts:
    """The load balancers' process, seen from the server; `on_metric(record)` gets each
    request's metrics record."""

    def __init__(self, state_dir: Path, on_metric: Callable[[list], None]):
        self.state_dir = state_dir
        self.on_metric = on_metric
        self.process: subprocess.Popen | None = None
        self._seq = 0
        self._acked = 0
        self._sent = ""
        self.ended = False  # stopped for good: the server is ending
        self._lock = threading.Lock()  # one state at a time down the pipe
        self._acks = threading.Condition()

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def start(self) -> None:
        """Start the process (from a thread that lives as long as the server: the parent-death
        signal follows the thread that started it)."""
        end_recorded(self.state_dir)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "sandbox.network.fronts", "--state-dir", str(self.state_dir),
             "--server", str(os.getpid())],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=None, text=True, bufsize=1,
            cwd=Path(__file__).resolve().parents[2])
        record = self.state_dir / RECORD
        record.write_text(f"{self.process.pid} {process_identity.of(self.process.pid) or ''}\n")
        record.chmod(0o600)
        self._sent = ""
        threading.Thread(target=self._read, args=(self.process,), daemon=True,
                         name="fronts-channel").start()
        atexit.register(self.stop)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def send(self, state: dict) -> int:
        """Send the state unless it is the one last sent; the number to `wait` for (0: the
        process is not running, the next tick starts it again)."""
        with self._lock:
            text = json.dumps(state, sort_keys=True, default=str)
            if text != self._sent:
                if not self.alive():
                    return 0
                self._seq += 1
                try:
                    self.process.stdin.write(json.dumps({**state, "seq": self._seq},
                                                        default=str) + "\n")
                    self.process.stdin.flush()
                except (OSError, ValueError):
                    return 0
                self._sent = text
            return self._seq

    def wait(self, seq: int, timeout: float) -> bool:
        """Wait until the process has applied state `seq` (its listeners listen)."""
        with self._acks:
            return self._acks.wait_for(lambda: self._acked >= seq, timeout=timeout)

    def _read(self, process: subprocess.Popen) -> None:
        for line in process.stdout:
            try:
                message = json.loads(line)
            except ValueError:
                continue
            if "metric" in message:
                self.on_metric(message["metric"])
            elif "ack" in message:
                with self._acks:
                    self._acked = max(self._acked, message["ack"] or 0)
                    self._acks.notify_all()

    def stop(self) -> None:
        self.ended = True
        process, self.process = self.process, None
        if process is None:
            return
        with contextlib.suppress(OSError, ValueError):
            process.stdin.close()
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
        (self.state_dir / RECORD).unlink(missing_ok=True)


def end_recorded(state_dir: Path) -> None:
    """End a load balancers' process that a server which did not stop cleanly left behind (only
    the very process recorded: a pid reused since by another is left alone)."""
    record = state_dir / RECORD
    try:
        pid_text, _, identity = record.read_text().strip().partition(" ")
        pid = int(pid_text)
    except (OSError, ValueError):
        return
    if identity and process_identity.same(pid, identity):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    record.unlink(missing_ok=True)


def die_with_parent(parent: int) -> None:
    """In the load balancers' process, first: the kernel kills it when the server (`parent`)
    dies, and it ends now if the server died before it could ask for that."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:
        os._exit(0)
