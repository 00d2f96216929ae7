"""The sandbox's SSH daemon: OpenSSH's own sshd on loopback, standing in for the bake instance's.

It runs as the current user with its own configuration; everything it reads or writes lives under
`<state_dir>/sshd/`: `sshd_config`, the host key, `sshd.pid`, `sshd.port`, `sshd.log` and the
`authorized_keys` file that the sandbox's EC2 fills at RunInstances (see
sandbox.machines.ssh_access). Only public-key logins are accepted, and only for the current user.
"""

from __future__ import annotations

import os
import pwd
import subprocess
from pathlib import Path

from cloud.console import say
from cloud.errors import KilnError
from sandbox.daemon import Daemon, accepts, free_port, wait_gone

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
    """The sandbox sshd of one state directory."""

    def __init__(self, state_dir: str | Path, host: str = "127.0.0.1"):
        self.dir = Path(state_dir).resolve() / "sshd"
        self.host = host
        self.config = self.dir / "sshd_config"
        self.host_key = self.dir / "ssh_host_ed25519_key"
        self.authorized_keys = self.dir / "authorized_keys"
        self.daemon = Daemon(self.dir, "sshd", host, lambda port: accepts(host, port))
        self.pid_file = self.daemon.pid_file
        self.log = self.daemon.log

    @property
    def port(self) -> int | None:
        return self.daemon.port

    @property
    def pid(self) -> int | None:
        return self.daemon.pid

    def running(self) -> bool:
        return self.daemon.running()

    def up(self) -> int:
        """Start sshd unless it runs already; return its port."""
        with self.daemon.lock():
            if self.running():
                return self.port
            self._prepare(port := free_port(self.host))
            self.daemon.start([SSHD, "-D", "-f", str(self.config), "-E", str(self.log)], port,
                              timeout=20)
            say(f"sandbox: sshd listening on {self.host}:{port} (log: {self.log})")
            return port

    def down(self) -> bool:
        """Stop sshd and wait until it is gone; True if one was running. Open sessions end
        with it."""
        pid = self.daemon.pid
        stopped = self.daemon.stop()
        if stopped:
            wait_gone(pid)
        return stopped

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
