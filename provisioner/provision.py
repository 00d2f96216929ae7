"""Provision the bake instance over SSH with Fabric: upload the cookbooks, run chef-solo, verify.

The bake calls two functions:

    wait_for_ssh(target: SshTarget, timeout: float) -> float
        Bounded wait (tenacity, exponential backoff) until `target` accepts the key and runs a
        command; returns the seconds waited. Else KilnError "SSH to i-… at host:port not ready
        after N s".

    provision(target: SshTarget, plan: ProvisionPlan, settings: Settings) -> dict
        Upload chef/ + node.json + solo.rb (one tar.gz) to kiln.bake.staging_dir while making
        sure chef-solo is there (else run kiln.bake.chef_install_command, check again); then run
        chef-solo, streaming its output to stderr as "chef| …" lines; verify the exact package
        version-release is installed and every smoke command passes. Any failure raises KilnError
        naming the step and exit code. Returns {"instance_id", "staging_dir", "chef_version",
        "chef_installed", "cookbook_digest", "timings": {step: seconds}}.

`SshTarget.private_key` is the temporary key pair's private key, as the KeyMaterial text that
CreateKeyPair returns or a paramiko key: it stays in memory, no key file is ever written.
"""

from __future__ import annotations

import base64
import collections
import hashlib
import io
import json
import re
import shlex
import socket
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import paramiko
from fabric import Config, Connection
from invoke.exceptions import CommandTimedOut
from tenacity import (
    RetryError,
    Retrying,
    retry_if_exception_type,
    stop_after_delay,
    wait_exponential,
)

from cloud.console import say
from cloud.errors import KilnError
from cloud.settings import Settings
from provisioner import chef

CHEF_DIR = Path(__file__).resolve().parent.parent / "chef"
ARCHIVE = "kiln-chef.tar.gz"
# How dnf and rpm say why they failed, inside chef's output (its STDERR: and [execute] lines):
# the line that names the cause, rather than chef's own last words about the resource.
TOOL_ERROR = re.compile(r"((?:Error|error): \S.*|nothing provides .+|No match for argument: .+|"
                        r"\S+ scriptlet failed.*|Error in \S+ scriptlet in rpm package .+)$")
CHEF_LOG = re.compile(r"\] (?:FATAL|ERROR|WARN): |had an error")
# Errors that mean "not ready yet" while an instance boots: no listener, sshd starting, or
# cloud-init not having installed the key pair's public key yet.
NOT_READY = (OSError, EOFError, paramiko.SSHException)


@dataclass(frozen=True)
class SshTarget:
    """Where to reach the bake instance, and the temporary key pair's private key."""

    instance_id: str
    host: str
    port: int
    user: str
    private_key: str | paramiko.PKey = field(repr=False)
    # SHA256 fingerprints of the host keys the instance printed to its console: the only host
    # keys SSH accepts (an empty tuple accepts none).
    host_fingerprints: tuple[str, ...] = ()

    @property
    def where(self) -> str:
        return f"{self.instance_id} at {self.host}:{self.port}"

    def pkey(self) -> paramiko.PKey:
        if isinstance(self.private_key, paramiko.PKey):
            return self.private_key
        return load_private_key(self.private_key, self.instance_id)


@dataclass(frozen=True)
class ProvisionPlan:
    """What to install: the release, the repo it comes from, and the checks it must pass."""

    app: str
    version: str
    release: str
    package: str                    # the RPM's name
    service: str | None
    repo_baseurl: str
    gpgkey_url: str
    smoke_commands: tuple[str, ...] = ()
    rpm_version: str | None = None  # default: the RPM spelling of `version`
    chef_dir: Path = CHEF_DIR
    smoke_retries: int = 10         # the cookbook's retries of a failing smoke command
    smoke_retry_delay: int = 3
    # What the repository must be signed by (the cookbook checks the served key against it), and
    # "<header sha256> <payload digest>" of the package Kiln published (signing leaves both).
    gpgkey_fingerprint: str | None = None
    package_digest: str | None = None
    # The team's part (kiln.bake): its run list around recipe[kiln_app], its normal attributes,
    # and its cookbook, role and environment folders (None: Kiln's chef/ alone).
    run_list: tuple[str, ...] = tuple(chef.RUN_LIST)
    attributes: dict | None = None
    team: chef.Layout | None = None

    @classmethod
    def for_release(cls, settings: Settings, **values) -> ProvisionPlan:
        """A plan whose smoke commands are kiln.bake.smoke_commands filled with `values`, with
        the team's run list, attributes and folders of kiln.bake."""
        bake = settings.bake
        plan = cls(**values)
        commands = chef.smoke_commands(
            bake.smoke_commands, app=plan.app, version=plan.version,
            release=plan.release, package=plan.package, service=plan.service,
            version_release=plan.expected, **placeholders(settings))
        return cls(**{**values, "smoke_commands": tuple(commands),
                      "smoke_retries": bake.smoke_retries,
                      "smoke_retry_delay": bake.smoke_retry_delay,
                      "run_list": tuple(bake.run_list), "attributes": bake.attributes or None,
                      "team": chef.Layout.of(bake, plan.chef_dir)})

    @classmethod
    def for_foundation(cls, settings: Settings, name: str, version: str) -> ProvisionPlan:
        """A foundation's plan: its run list and attributes, its smoke commands ({app} is the
        foundation's name, {version} its version), no package to install or verify."""
        return cls.for_release(settings, app=name, version=version, release="", package="",
                               service=None, repo_baseurl="", gpgkey_url="")

    @property
    def layout(self) -> chef.Layout:
        """Everything uploaded for chef-solo: Kiln's chef/ and the team's folders."""
        return self.team or chef.Layout(self.chef_dir)

    @property
    def expected(self) -> str:
        """`%{VERSION}-%{RELEASE}` of the package once installed."""
        return f"{self.rpm_version or chef.to_rpm_version(self.version)}-{self.release}"

    def node(self) -> dict:
        if not self.package:  # a foundation: the team's run list and attributes alone
            return {**(self.attributes or {}), "run_list": list(self.run_list)}
        node = chef.node_json(self.app, self.version, self.release, self.package, self.service,
                              self.repo_baseurl, self.gpgkey_url, list(self.smoke_commands),
                              rpm_version=self.rpm_version,
                              gpgkey_fingerprint=self.gpgkey_fingerprint,
                              run_list=list(self.run_list), attributes=self.attributes)
        node["kiln_app"]["smoke"].update(retries=self.smoke_retries,
                                         retry_delay=self.smoke_retry_delay)
        return node


def placeholders(settings: Settings) -> dict[str, str]:
    """The smoke commands' placeholders that come from the app's deploy settings."""
    deploy = settings.deploy
    return {"port": str(deploy.get("port", 8080)), "health_path": deploy.health_check.path}


def load_private_key(text: str, name: str = "key pair") -> paramiko.PKey:
    """A paramiko key from PEM/OpenSSH text (RSA, ed25519 or ECDSA), read in memory."""
    for kind in (paramiko.RSAKey, paramiko.Ed25519Key, paramiko.ECDSAKey):
        try:
            return kind.from_private_key(io.StringIO(text))
        except (paramiko.SSHException, ValueError):
            continue
    raise KilnError(f"private key of {name}: not an RSA, ed25519 or ECDSA private key")


class ConsoleHostKeys(paramiko.MissingHostKeyPolicy):
    """Accept the server's host key only when its fingerprint is one the instance printed."""

    def __init__(self, target: SshTarget):
        self.target = target

    def missing_host_key(self, client, hostname, key) -> None:
        found = fingerprint(key)
        if found not in self.target.host_fingerprints:  # a KilnError: not retried as not ready
            raise KilnError(
                f"host key {found} of {self.target.where} is not one the instance printed to "
                f"its console ({', '.join(self.target.host_fingerprints) or 'none found'})")


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH's SHA256:<base64> fingerprint of a public key."""
    digest = base64.b64encode(hashlib.sha256(key.asbytes()).digest()).decode()
    return f"SHA256:{digest.rstrip('=')}"


def console_fingerprints(text: str) -> tuple[str, ...]:
    """The SHA256 fingerprints between cloud-init's BEGIN/END SSH HOST KEY FINGERPRINTS lines."""
    found, inside = [], False
    for line in text.splitlines():
        if "-----BEGIN SSH HOST KEY FINGERPRINTS-----" in line:
            inside = True
        elif "-----END SSH HOST KEY FINGERPRINTS-----" in line:
            inside = False
        elif inside:
            found += re.findall(r"SHA256:[A-Za-z0-9+/]{43}", line)
    return tuple(found)


def connection(target: SshTarget, connect_timeout: float = 15) -> Connection:
    """A Fabric connection that uses only the given key: no agent, no ~/.ssh keys or config,
    and only the host keys the instance printed to its console (never trust on first use)."""
    timeout = max(1, int(connect_timeout))
    conn = Connection(
        target.host, user=target.user, port=target.port, connect_timeout=timeout,
        config=Config(overrides={"load_ssh_configs": False, "run": {"in_stream": False}}),
        connect_kwargs={"pkey": target.pkey(), "look_for_keys": False, "allow_agent": False,
                        "banner_timeout": timeout, "auth_timeout": timeout})
    conn.client.set_missing_host_key_policy(ConsoleHostKeys(target))
    return conn


def wait_for_ssh(target: SshTarget, timeout: float) -> float:
    """Wait until SSH on `target` accepts the key and runs a command; seconds waited."""
    started = time.monotonic()
    retrying = Retrying(stop=stop_after_delay(timeout),
                        wait=wait_exponential(multiplier=0.25, max=10),
                        retry=retry_if_exception_type(NOT_READY))
    try:
        for attempt in retrying:
            with attempt:
                left = timeout - (time.monotonic() - started)
                with connection(target, connect_timeout=min(10, max(1, left))) as conn:
                    try:
                        conn.run("true", hide=True)
                    finally:
                        # Fabric closes only a connection that opened: a refused one would
                        # wait in the instance sshd's queue (MaxStartups) until its grace time.
                        conn.client.close()
    except RetryError as error:
        cause = error.last_attempt.exception()
        raise KilnError(f"SSH to {target.where} not ready after {timeout:g} s "
                        f"(last error: {_describe(cause)})") from None
    return time.monotonic() - started


def provision(target: SshTarget, plan: ProvisionPlan, settings: Settings) -> dict:
    """Upload, make sure chef-solo is there, run it, verify. Raises KilnError on any failure."""
    bake = settings.bake
    timings: dict[str, float] = {}
    # The connection closes before the pool waits: a failed upload or an interrupt ends the
    # check's channel instead of waiting for it (a chef install may take minutes).
    with ThreadPoolExecutor(max_workers=1) as pool, connection(target) as conn:
        session = _Session(conn, target, bake)
        session.open()  # once, before two threads use the connection
        # chef-solo's check (a Ruby start, a second or two) runs on a channel of its own
        # while the cookbooks upload; "chef_check" is what is left of it after the upload.
        checking = pool.submit(session.ensure_chef)
        with _timed(timings, "upload"):
            staging = session.upload(plan)
        with _timed(timings, "chef_check"):
            chef_version, installed = checking.result()
        with _timed(timings, "chef_run"):
            session.run_chef(staging)
        with _timed(timings, "verify"):
            session.verify(plan)
        with _timed(timings, "cleanup"):  # node.json and solo.rb stay out of the image
            session.run("cleanup", f"{session.sudo}rm -rf -- {shlex.quote(staging)}", hide=True)
    return {"instance_id": target.instance_id, "staging_dir": staging,
            "chef_version": chef_version, "chef_installed": installed,
            "cookbook_digest": plan.layout.digest(), "timings": timings}


class _Session:
    """The provisioning steps over one open connection."""

    def __init__(self, conn: Connection, target: SshTarget, bake: Settings):
        self.conn, self.target, self.bake = conn, target, bake
        self.chef_solo = shlex.quote(bake.chef_solo)
        self.sudo = "sudo -n " if bake.sudo else ""

    def upload(self, plan: ProvisionPlan) -> str:
        """chef/, node.json and solo.rb into the staging directory; its absolute path."""
        relative = shlex.quote(self.bake.staging_dir)
        # A plain `cd` goes to $HOME first: staging_dir is relative to the user's home. Cookbooks
        # left by an earlier attempt go, so a deleted file cannot linger.
        layout = plan.layout
        archive = layout.archive()  # checked before the instance is touched
        folders = f"cookbooks {chef.TEAM_COOKBOOKS} {chef.ROLES} {chef.ENVIRONMENTS}"
        staging = self.run("staging", f"cd && mkdir -p -- {relative} && cd -- {relative} && "
                           f"rm -rf {folders} && mkdir -p cache && pwd", hide=True).stdout
        staging = staging.strip().splitlines()[-1]  # a chatty login script may print first
        extra = {"node.json": json.dumps(plan.node(), indent=2, sort_keys=True).encode(),
                 "solo.rb": chef.solo_rb(staging, self.bake.chef_license, layout).encode()}
        archive = layout.archive(extra)
        say(f"bake: uploading cookbooks ({len(archive)} bytes) to {self.target.where}:{staging}")
        here = shlex.quote(staging)
        try:
            self.conn.put(io.BytesIO(archive), f"{staging}/{ARCHIVE}")
        except (OSError, paramiko.SSHException) as error:
            raise KilnError(f"upload to {self.target.where}:{staging} failed: "
                            f"{_describe(error)}") from None
        self.run("upload", f"cd -- {here} && tar -xzf {ARCHIVE} && rm -f {ARCHIVE}", hide=True)
        return staging

    def ensure_chef(self) -> tuple[str, bool]:
        """(chef version, whether Kiln installed it); installs with the configured command."""
        check = f"{self.sudo}{self.chef_solo} --version"
        found = self.run("chef check", check, hide=True, warn=True)
        if found.ok:
            version = self._version(found.stdout)
            if version != self.bake.chef_version:
                say(f"bake: {self.target.where} has chef {version}, not the pinned "
                    f"kiln.bake.chef_version {self.bake.chef_version}; using it as it is")
            return version, False
        command = self.bake.chef_install_command
        if not command:
            raise KilnError(f"chef check: {self.bake.chef_solo} is not on {self.target.where} "
                            f"(exit code {found.exited}) and kiln.bake.chef_install_command is "
                            f"not set")
        version = self.bake.chef_version
        say(f"bake: {self.bake.chef_solo} not found on {self.target.where}; installing "
            f"chef {version}")
        try:
            command = command.format(version=version)
        except (KeyError, IndexError, ValueError) as error:
            raise KilnError(f"kiln.bake.chef_install_command: bad placeholder {error} "
                            f"(only {{version}} is known)") from None
        self.stream("chef install", command, "install| ")
        found = self.run("chef check", check, hide=True, warn=True)
        if not found.ok:
            output = _last_line(found.stdout + found.stderr)
            raise KilnError(f"chef check: {self.bake.chef_solo} still missing on "
                            f"{self.target.where} after kiln.bake.chef_install_command "
                            f"(exit code {found.exited}: {output})")
        return self._version(found.stdout), True

    def run_chef(self, staging: str) -> None:
        here = shlex.quote(staging)
        say(f"bake: running {self.bake.chef_solo} on {self.target.where}")
        self.stream("chef-solo",
                    f"cd -- {here} && {self.sudo}{self.chef_solo} -c {here}/solo.rb "
                    f"-j {here}/node.json", "chef| ", timeout=self.bake.chef_timeout)

    def verify(self, plan: ProvisionPlan) -> None:
        """The exact version-release is installed, and every smoke check passes."""
        if plan.package:
            self.verify_package(plan)
        for command in plan.smoke_commands:
            check = self.run("smoke check", command, hide=True, warn=True)
            if not check.ok:
                output = _last_line(check.stdout + check.stderr)
                raise KilnError(f"smoke check failed on {self.target.where} with exit code "
                                f"{check.exited}: {command} ({output})")
        what = f"{plan.package}-{plan.expected}" if plan.package else f"foundation {plan.app}"
        say(f"bake: verified {what} and {len(plan.smoke_commands)} smoke check(s) on "
            f"{self.target.where}")

    def verify_package(self, plan: ProvisionPlan) -> None:
        query = f"rpm -q --qf '%{{VERSION}}-%{{RELEASE}}\\n' {shlex.quote(plan.package)}"
        result = self.run("verify", query, hide=True, warn=True)
        installed = result.stdout.split()
        if not result.ok:
            raise KilnError(f"verify: {plan.package} is not installed on {self.target.where} "
                            f"(rpm -q exit code {result.exited}: {_last_line(result.stdout)})")
        if installed != [plan.expected]:
            raise KilnError(f"verify: {self.target.where} has {plan.package} "
                            f"{', '.join(installed)} installed, expected {plan.expected}")
        if plan.package_digest:
            self.verify_digest(plan)

    def verify_digest(self, plan: ProvisionPlan) -> None:
        """The installed package has the header and payload of the one Kiln published (the
        same name-version-release from anyone else's repository would not)."""
        query = (f"rpm -q --qf '%{{SHA256HEADER}} %{{PAYLOADDIGEST}}\\n' "
                 f"{shlex.quote(plan.package)}")
        found = " ".join(self.run("verify", query, hide=True).stdout.split())
        if found != plan.package_digest:
            raise KilnError(f"verify: {plan.package}-{plan.expected} on {self.target.where} is "
                            f"not the package Kiln published (header and payload sha256 "
                            f"{found[:16]}…, expected {plan.package_digest[:16]}…)")

    # -- running commands ----------------------------------------------------------------------
    def open(self) -> None:
        try:
            self.conn.open()
        except (OSError, EOFError, paramiko.SSHException) as error:
            raise KilnError(f"connect to {self.target.where}: SSH failed: "
                            f"{_describe(error)}") from None

    def run(self, step: str, command: str, **kwargs):
        started = time.monotonic()
        try:
            result = self.conn.run(command, in_stream=False, **kwargs)
        except CommandTimedOut as error:
            raise KilnError(f"{step} on {self.target.where} timed out after "
                            f"{error.timeout} s") from None
        except (OSError, EOFError, paramiko.SSHException) as error:
            raise KilnError(f"{step} on {self.target.where}: SSH failed: "
                            f"{_describe(error)}") from None
        timeout = kwargs.get("timeout")
        # Invoke's timer closes the channel and only then counts as expired: a run can end
        # in that gap with no exit status (-1) and no CommandTimedOut.
        if timeout and result.exited == -1 and time.monotonic() - started >= timeout:
            raise KilnError(f"{step} on {self.target.where} timed out after {timeout} s")
        if not kwargs.get("warn") and not result.ok:
            raise KilnError(f"{step} failed on {self.target.where} with exit code "
                            f"{result.exited}: {_last_line(result.stdout + result.stderr)}")
        return result

    def stream(self, step: str, command: str, prefix: str, timeout: int | None = None) -> None:
        """Run `command`, copying its output line by line to stderr; KilnError on non-zero."""
        out = LinePrefixer(prefix)
        result = self.run(step, f"{command} 2>&1", warn=True, hide=False, out_stream=out,
                          err_stream=out, timeout=timeout)
        out.close()
        if not result.ok:
            last = f" (last output: {out.last})" if out.last else ""
            if out.reason:
                last = f" ({out.reason})"
            raise KilnError(f"{step} failed on {self.target.where} with exit code "
                            f"{result.exited}{last}")

    @staticmethod
    def _version(output: str) -> str:
        match = re.search(r"\d+\.\d+(?:\.\d+)*", output)
        return match.group(0) if match else output.strip()


class LinePrefixer(io.TextIOBase):
    """A text stream that writes each complete line to stderr with a prefix, as it arrives."""

    def __init__(self, prefix: str, keep: int = 20):
        self.prefix = prefix
        self.pending = ""
        self.lines: collections.deque[str] = collections.deque(maxlen=keep)
        self.reasons: list[str] = []

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self.pending += text.replace("\r\n", "\n")
        *complete, self.pending = self.pending.split("\n")
        for line in complete:
            self._emit(line)
        return len(text)

    def close(self) -> None:
        if self.pending:
            self._emit(self.pending)
            self.pending = ""
        super().close()

    @property
    def last(self) -> str:
        return next((line for line in reversed(self.lines) if line.strip()), "")

    @property
    def reason(self) -> str:
        """The last error a tool under chef reported in its own words (dnf, rpm), if any."""
        return self.reasons[-1] if self.reasons else ""

    def _emit(self, line: str) -> None:
        self.lines.append(line)
        found = None if CHEF_LOG.search(line) else TOOL_ERROR.search(line)
        if found:
            self.reasons.append(found.group(1).strip())
        # sys.stderr at write time, not import time: callers may redirect it.
        sys.stderr.write(f"{self.prefix}{line}\n")
        sys.stderr.flush()


@contextmanager
def _timed(timings: dict[str, float], step: str):
    started = time.monotonic()
    try:
        yield
    finally:
        timings[step] = round(time.monotonic() - started, 3)


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def _describe(error: BaseException | None) -> str:
    if error is None:
        return "unknown"
    if isinstance(error, socket.timeout | TimeoutError):
        return "timed out"
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
