"""One build's shell on its machine: every command of a buildspec in the same bash, as root.

CodeBuild (buildspec 0.2) runs all the commands of a build in one shell instance, so a `cd` or an
`export` in one command holds in the next, and in the next phase; with no `run-as`, as root.
Here that shell is a bash entered into the build's sandbox machine (sandbox.machines.instances),
fed one command at a time on its standard input; after each, it prints a line with a random mark
and the command's exit status, which is how the runner learns it (the line is not logged).
"""

from __future__ import annotations

import queue
import secrets
import shlex
import subprocess
import threading
from collections.abc import Callable

from sandbox.machines import instances as machines


class ShellGone(Exception):
    """The shell ended (a command ran `exit`, or the machine was ended)."""


class Shell:
    def __init__(self, state_dir, machine: str, env: dict[str, str], log: Callable[[str], None]):
        self.mark = "kiln-sandbox-status-" + secrets.token_hex(8)
        self.log = log
        self.statuses: queue.Queue = queue.Queue()
        argv = [*machines.enter_command(state_dir, machine), "sudo", "-n", "-H",
                "/bin/bash", "--noprofile", "--norc"]
        self.process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.send("".join(f"export {name}={shlex.quote(value)}\n"
                          for name, value in env.items()))

    def send(self, text: str) -> None:
        try:
            self.process.stdin.write(text.encode())
            self.process.stdin.flush()
        except (BrokenPipeError, OSError):
            raise ShellGone() from None

    def run(self, command: str, timeout: float | None) -> int:
        """The command's exit status; ShellGone if the shell ended, TimeoutError if it ran
        past `timeout` seconds."""
        self.send(f"{{ {command}\n}} </dev/null\necho \"{self.mark} $?\"\n")
        try:
            status = self.statuses.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError() from None
        if status is None:
            raise ShellGone()
        return status

    def _read(self) -> None:
        for raw in self.process.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            before, found, status = line.partition(self.mark + " ")
            if before or not found:  # output that ended without a newline comes first
                self.log(before)
            if found:
                self.statuses.put(int(status))
        self.statuses.put(None)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=10)
