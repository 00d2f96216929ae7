"""The sandbox's SSH daemon: OpenSSH's own sshd on loopback, standing in for the bake instance's.

It runs as the current user with its own configuration; everything it reads or writes lives under
`<state_dir>/sshd/`: `sshd_config`, the host key, `sshd.pid`, `sshd.port`, `sshd.log` and the
`authorized_keys` file that the sandbox's EC2 fills at RunInstances (see sandbox.instances). Only
public-key logins are accepted, and only for the current user.
"""

from __future__ import annotations

import fcntl
import os
import pwd
import socket
import subprocess
from contextlib import contextmanager
from pathlib import Path

from tenacity import retry, retry_if_exception_type, stop_after_delay, wait_exponential

from cloud.console import say
from cloud.errors import KilnError

SSHD = "/usr/sbin/sshd"
SFTP_SERVER = "/usr/lib/openssh/sftp-server"
# sshd started by root checks that its privilege-separation directory exists.
PRIVSEP_DIR = Path("/run/sshd")

CONFIG = """\
# Written by the Kiln sandbox; regenerated at every start.
Port {port}
ListenAddress {host}
HostKey {host_key}
PidFile {pid_file}
AuthorizedKeysFile {authorized_keys}
AllowUsers {user}
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitEmptyPasswords no
PermitRootLogin prohibit-password
UsePAM no
StrictModes no
PrintMotd no
PrintLastLog no
X11Forwarding no
AllowAgentForwarding no
AllowTcpForwarding no
LogLevel VERBOSE
Subsystem sftp {sftp_server}
"""


def current_user() -> str:
    return pwd.getpwuid(os.getuid()).pw_name


class Sshd:
    """The sshd of one sandbox, identified by the sandbox's state directory."""

    def __init__(self, state_dir: str | Path, host: str = "127.0.0.1"):
        self.dir = Path(state_dir).resolve() / "sshd"
        self.host = host
        self.config = self.dir / "sshd_config"
        self.host_key = self.dir / "ssh_host_ed25519_key"
        self.pid_file = self.dir / "sshd.pid"
        self.port_file = self.dir / "sshd.port"
        self.log = self.dir / "sshd.log"
        self.authorized_keys = self.dir / "authorized_keys"

    @property
    def port(self) -> int | None:
        return _read_int(self.port_file)

    @property
    def pid(self) -> int | None:
        return _read_int(self.pid_file)

    def running(self) -> bool:
        pid, port = self.pid, self.port
        return bool(pid and port and _alive(pid) and _accepts(self.host, port))

    def up(self) -> int:
        """Start sshd unless it runs already; return its port."""
        self.dir.mkdir(parents=True, exist_ok=True)
        with self._lock():
            if self.running():
                return self.port
            self._prepare(port := _free_port(self.host))
            log = open(self.log, "ab")  # noqa: SIM115 - handed to the child
            process = subprocess.Popen(
                [SSHD, "-D", "-f", str(self.config), "-E", str(self.log)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True)
            self.pid_file.write_text(f"{process.pid}\n")
            self.port_file.write_text(f"{port}\n")
            try:
                self._wait_until_listening(process, port)
            except Exception:
                self.down()
                raise
            say(f"sandbox: sshd listening on {self.host}:{port} (log: {self.log})")
            return port

    def down(self) -> bool:
        """Stop sshd; True if one was running. Open sessions end with it."""
        pid = self.pid
        for path in (self.pid_file, self.port_file):
            path.unlink(missing_ok=True)
        if not (pid and _alive(pid)):
            return False
        try:
            os.killpg(pid, 15)
        except ProcessLookupError:
            return False
        return True

    def _prepare(self, port: int) -> None:
        if os.geteuid() == 0:
            PRIVSEP_DIR.mkdir(mode=0o755, exist_ok=True)
        if not self.host_key.exists():
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "kiln-sandbox",
                            "-f", str(self.host_key)], check=True, stdin=subprocess.DEVNULL)
        self.authorized_keys.touch(mode=0o600, exist_ok=True)
        self.config.write_text(CONFIG.format(
            port=port, host=self.host, host_key=self.host_key, pid_file=self.pid_file,
            authorized_keys=self.authorized_keys, user=current_user(), sftp_server=SFTP_SERVER))
        check = subprocess.run([SSHD, "-t", "-f", str(self.config)], capture_output=True,
                               text=True)
        if check.returncode != 0:
            raise KilnError(f"sandbox sshd refuses {self.config}: {check.stderr.strip()}")

    def _wait_until_listening(self, process: subprocess.Popen, port: int) -> None:
        @retry(stop=stop_after_delay(20), wait=wait_exponential(0.02, max=0.5),
               retry=retry_if_exception_type(ConnectionError), reraise=True)
        def probe() -> None:
            if process.poll() is not None:
                raise KilnError(f"sandbox sshd exited with {process.returncode}; see {self.log}")
            if not _accepts(self.host, port):
                raise ConnectionError(f"sshd on {self.host}:{port} is not listening yet")

        probe()

    @contextmanager
    def _lock(self):
        with open(self.dir / "up.lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]
