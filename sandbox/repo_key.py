"""The sandbox's own repository signing key, made once under the sandbox state directory.

`overlay(settings)` fills `kiln.repo.gpg_key` and `kiln.repo.gpg_home` when they are null, so the
sandbox signs RPMs and repomd.xml like a real deployment does, with a key nobody else holds.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import subprocess
import time
from pathlib import Path

from cloud.errors import KilnError

USER_ID = "Kiln sandbox repository <repo@kiln.sandbox.invalid>"
AGENT_EXIT_TIMEOUT = 5  # seconds a stopped agent has to end before it is killed


def ensure_key(state_dir: str | Path) -> tuple[str, str]:
    """(gpg_home, fingerprint) of the sandbox key, generating it on first use (RSA 3072)."""
    home = Path(state_dir).resolve() / "gnupg"
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    with open(home.parent / "gnupg.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        fingerprint = _fingerprint(home)
        if fingerprint is None:
            # RSA: the rpm of EL9 verifies RSA signatures; no passphrase, no expiry.
            _gpg(home, "--passphrase", "", "--quick-gen-key", USER_ID, "rsa3072", "sign", "never")
            fingerprint = _fingerprint(home)
    if fingerprint is None:
        raise KilnError(f"sandbox: no signing key in {home} after generating one")
    return str(home), fingerprint


def overlay(settings, generate: bool = True) -> None:
    """Point the repo signing settings at the sandbox key unless they are set. Without
    `generate` (a task that only reads) an existing key is used and none is made: the repository's
    metadata is still checked against it."""
    repo = settings.repo
    if not repo.sign or repo.gpg_key:
        return
    if not generate:
        home = Path(settings.sandbox.state_dir).resolve() / "gnupg"
        fingerprint = _fingerprint(home) if home.is_dir() else None
        if fingerprint:
            repo["gpg_home"] = repo.gpg_home or str(home)
            repo["gpg_key"] = fingerprint
        return
    home, fingerprint = ensure_key(settings.sandbox.state_dir)
    repo["gpg_home"] = repo.gpg_home or home
    repo["gpg_key"] = fingerprint


def stop_agent(gpg_home: str | Path) -> None:
    """Stop the gpg-agent serving `gpg_home` (it outlives gpg otherwise), and wait until it is
    gone: gpgconf only asks it to end."""
    subprocess.run(["gpgconf", "--kill", "gpg-agent"], env={**os.environ,
                   "GNUPGHOME": str(gpg_home)}, capture_output=True, check=False)
    deadline = time.monotonic() + AGENT_EXIT_TIMEOUT
    while (left := _agents(gpg_home)) and time.monotonic() < deadline:
        time.sleep(0.02)
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _agents(gpg_home: str | Path) -> list[int]:
    """The gpg-agents serving `gpg_home`, by their command line."""
    home = str(Path(gpg_home)).encode()
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            line = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if b"gpg-agent" in line and home in line:
            found.append(int(entry.name))
    return found


def _fingerprint(home: Path) -> str | None:
    out = _gpg(home, "--with-colons", "--list-secret-keys", USER_ID, check=False)
    for line in out.splitlines():
        if line.startswith("fpr:"):
            return line.split(":")[9]
    return None


def _gpg(home: Path, *args: str, check: bool = True) -> str:
    result = subprocess.run(["gpg", "--batch", "--homedir", str(home), *args],
                            capture_output=True, text=True)
    if check and result.returncode != 0:
        raise KilnError(f"sandbox: gpg {args[0]} failed in {home}: {result.stderr.strip()}")
    return result.stdout
