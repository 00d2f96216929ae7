"""Start, stop, reset and describe the sandbox: the moto server and the sshd beside it.

State lives under the sandbox's state directory (`kiln.sandbox.state_dir`, default `.sandbox/`):
`moto.pid`, `moto.port`, `moto.log`, `sshd/`, the signing key's `gnupg/`, the bake instances'
`instances/`, `aws-state.pickle` (the AWS state the next server restores: see
sandbox/aws/persistence.py) and `credentials.json` (0600): the access keys of the sandbox's
admin and operator users (sandbox/aws/iam/identities.py), without which the server answers
nothing. Any task that
needs AWS while the target is `sandbox` starts the sandbox if it is not running; a second start
reuses the running one.
"""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

from cloud.console import say
from cloud.errors import KilnError
from sandbox import bootstrap, listener_cert, repo_key, userns
from sandbox.aws import persistence
from sandbox.aws.iam import identities
from sandbox.daemon import Daemon, free_port, port_free, wait_gone
from sandbox.machines import ssh_access

LAST_PORT = "moto.last-port"


class Sandbox:
    """One sandbox, identified by its state directory."""

    def __init__(self, state_dir: str | Path, host: str = "127.0.0.1", port: int | None = None,
                 region: str = "us-east-1", chef_solo: str | None = None, base_provides=(),
                 time_scale: float | None = None, prefix: str = "kiln",
                 account_state: str | None = None, keep_state: bool = True):
        self.state_dir = Path(state_dir).resolve()
        self.chef_solo, self.base_provides = chef_solo, tuple(base_provides)
        self.time_scale = time_scale
        self.account_state = account_state
        self.keep_state = keep_state
        self.prefix = prefix
        self.host = host
        self.wanted_port = port
        self.region = region
        self.moto = Daemon(self.state_dir, "moto", host, self._answers)

    @classmethod
    def from_settings(cls, settings) -> Sandbox:
        sandbox = settings.sandbox
        return cls(sandbox.state_dir, sandbox.host, sandbox.port, settings.aws.region,
                   sandbox.get("chef_solo"), sandbox.get("base_provides") or (),
                   sandbox.get("time_scale"), settings.stacks.prefix,
                   sandbox.get("account_state"), sandbox.get("keep_state", True))

    @property
    def endpoint(self) -> str | None:
        """The server's plain-HTTP URL: its control calls, proxies in front of it, and what
        reads the repository at the URL it was given before. Requests to it are not over TLS
        (aws:SecureTransport false)."""
        port = self.moto.port
        return f"http://{self.host}:{port}" if port else None

    @property
    def secure_endpoint(self) -> str | None:
        """The same port's HTTPS URL, as AWS's endpoints are: the one Kiln's sandbox target and
        `invoke sandbox.env` use, verified against `ca_bundle`."""
        port = self.moto.port
        return f"https://{self.host}:{port}" if port else None

    @property
    def ca_bundle(self) -> Path:
        """The CA the server's certificate chains to (sandbox.machines.aws_names)."""
        from sandbox.machines import aws_names

        return aws_names.files(self.state_dir)["ca"]

    def running(self) -> bool:
        return self.moto.running()

    # -- lifecycle ---------------------------------------------------------------------------
    def up(self) -> str:
        """Start the moto server (and the sandbox sshd) unless running; return the endpoint."""
        private_folder(self.state_dir)
        with self.moto.lock():
            if self.time_scale is not None:
                self.set_time_scale(self.time_scale)
            if self.account_state is not None:
                self.set_account_state(self.account_state)
            if not self.running():
                persistence.keep(self.state_dir, self.keep_state)
                lost = self._reap_crashed()
                # KILN_SANDBOX_IAM=audit logs denials to iam.log instead of refusing them
                identities.write_credentials(self.state_dir, self.prefix,
                                             os.environ.get("KILN_SANDBOX_IAM", "enforce"))
                self._start_moto()
                self._say_restored(lost)
            # What instances get from this host: its chef-solo, base capabilities, the endpoint.
            ssh_access.configure(self.state_dir, self.moto.port, self.chef_solo,
                                self.base_provides)
            ssh_access.start(self.state_dir)  # the sshd standing in for bake instances
            return self.endpoint

    def _say_restored(self, lost: int | None) -> None:
        """One line on what the new server restored from the last one's snapshot and what it
        could not (sandbox/aws/persistence.py), after a crash (`lost`: its pid) or a restart."""
        report = persistence.read_report(self.state_dir)
        crashed = (f"the server in {self.state_dir} had stopped without `sandbox.down` (pid "
                   f"{lost}) and its machines were ended; ") if lost else ""
        if not report.get("snapshot"):
            if lost:
                why = " (kiln.sandbox.keep_state is false)" if report.get("off") else ""
                say(f"sandbox: {crashed}it had saved no state{why}, so what it held (stacks, "
                    "the repository, images, server groups) is gone: run `invoke bootstrap`, "
                    "then bake again")
            return
        advice = ""
        if report.get("unreadable"):
            advice = ": run `invoke bootstrap`, then bake again"
        elif report.get("left_out"):
            advice = " (see aws-state.json): `invoke bootstrap.verify` shows what is missing"
        say(f"sandbox: {crashed}{persistence.summary(report)}{advice}")

    def _reap_crashed(self) -> int | None:
        """The pid of a server that died without `down` (killed, or the host rebooted), after
        ending the machines it had started and forgetting their keys; None after a clean stop."""
        pid = self.moto.pid
        if pid is None or (self.moto._ours(pid) and _is_server(pid)):
            return None  # stopped cleanly, or alive (a slow start is not a crash)
        self.moto.stop()  # its pid and port files
        ssh_access.forget_all(self.state_dir)
        return pid

    def _start_moto(self) -> None:
        port = self.wanted_port or self._last_port() or free_port(self.host)
        self.moto.start([sys.executable, "-m", "sandbox.server", "--host", self.host,
                         "--port", str(port), "--state-dir", str(self.state_dir)], port,
                        timeout=60, cwd=_project_root(), env=self._server_env(),
                        # Without root, the server (and so every instance) runs in a user
                        # namespace of its own (sandbox/userns.py).
                        launch=userns.spawn if userns.needed() else subprocess.Popen)
        (self.state_dir / LAST_PORT).write_text(f"{port}\n")
        say(f"sandbox: moto server started at {self.secure_endpoint} (log: {self.moto.log})")

    def _last_port(self) -> int | None:
        """The port of the last server, when free: what its state names (the repository's
        URL in `kiln.repo` and in baked images, the endpoint of a task's settings) still
        answers after a restart."""
        try:
            port = int((self.state_dir / LAST_PORT).read_text())
        except (OSError, ValueError):
            return None
        return port if port_free(self.host, port) else None

    def set_time_scale(self, factor: float | None) -> None:
        """How fast AWS's pending states pass (sandbox/aws/timing.py); None: the default."""
        path = self.state_dir / "time-scale"
        if factor is None:
            path.unlink(missing_ok=True)
        else:
            self.state_dir.mkdir(parents=True, exist_ok=True)
            path.write_text(f"{float(factor)}\n")

    def set_account_state(self, state: str) -> None:
        """`lived-in` or `new`: what an account holds from its first request after this, and
        after every reset (sandbox/aws/lived_in.py)."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        (self.state_dir / "account-state").write_text(f"{state}\n")

    def down(self) -> bool:
        """Stop the server, then every instance, the sandbox sshd and the signing key's agent;
        True if moto ran. The server goes first, so that nothing launches an instance (Auto
        Scaling, say) once the instances have been ended."""
        pid = self.moto.pid
        stopped = self.moto.stop()
        if stopped:
            wait_gone(pid)
        ssh_access.stop(self.state_dir)
        repo_key.stop_agent(self.state_dir / "gnupg")
        (self.state_dir / identities.CREDENTIALS).unlink(missing_ok=True)  # next up: new keys
        return stopped

    def reset(self) -> None:
        """Clear every resource in the server (moto's own reset), keeping it running."""
        if not self.running():
            raise KilnError(f"sandbox in {self.state_dir} is not running: nothing to reset")
        request = urllib.request.Request(
            f"{self.endpoint}/moto-api/reset", method="POST",
            headers={identities.RESET_HEADER: identities.reset_token(self.state_dir)})
        urllib.request.urlopen(request, timeout=30).close()

    def env(self, identity: str = "operator") -> dict[str, str]:
        """Environment variables that point boto3 and the aws CLI at this sandbox over TLS
        (AWS_CA_BUNDLE: the sandbox's CA, which the SDKs and the CLI read as they would a
        proxy's), signing as its operator (day-to-day tasks) or admin (bootstrap)."""
        if not self.endpoint:
            raise KilnError(f"sandbox in {self.state_dir} is not running (invoke sandbox.up)")
        return {"AWS_ENDPOINT_URL": self.secure_endpoint, "AWS_CA_BUNDLE": str(self.ca_bundle),
                "AWS_DEFAULT_REGION": self.region, "AWS_REGION": self.region,
                **self.credentials(identity)}

    def credentials(self, identity: str = "operator") -> dict[str, str]:
        """AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY of the sandbox's admin or operator."""
        keys = identities.read_credentials(self.state_dir)[identity]
        return {"AWS_ACCESS_KEY_ID": keys["AccessKeyId"],
                "AWS_SECRET_ACCESS_KEY": keys["SecretAccessKey"]}

    def _server_env(self) -> dict[str, str]:
        return {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}

    def _answers(self, port: int) -> bool:
        try:
            urllib.request.urlopen(f"http://{self.host}:{port}/moto-api/config", timeout=2).close()
            return True
        except (urllib.error.URLError, OSError):
            return False


class BuildSandbox:
    """The sandbox a process is in when it runs in one of the sandbox's CodeBuild builds (a
    stage of an app's pipeline): its AWS is the one the build runs in, as a build on AWS uses
    the AWS it runs in. The endpoint is the one the sandbox's CodeBuild gives every build
    (AWS_ENDPOINT_URL, which the SDKs and the CLI read, as AWS_REGION points them at AWS's
    regional endpoints); the credentials are the build's, its project's service role, which
    the SDK's default chain finds. Nothing is started; the state directory (the repository's
    signing key, the HTTPS certificate) is the host's, not the build's."""

    def __init__(self, endpoint: str):
        self.endpoint = endpoint

    def credentials(self, identity: str = "operator") -> dict[str, str]:
        return {}  # the build's own, whoever Kiln would sign as elsewhere

    def overlay(self, settings) -> None:
        """The bake reaches its instance over the sandbox sshd, and waiters poll at the
        sandbox's pace, as on the host (ssh_access.overlay, _scale_waiters): the sandbox's
        CodeBuild says where the sshd is and the time scale (KILN_SANDBOX_SSH, _TIME_SCALE)."""
        user, _, place = os.environ.get("KILN_SANDBOX_SSH", "").rpartition("@")
        host, _, port = place.rpartition(":")
        bake = settings.get("bake")
        if bake is not None and port:
            bake.update({"ssh_port": int(port), "ssh_user": user,
                         "ssh_cidrs": bake.get("ssh_cidrs") or [f"{host}/32"],
                         "chef_install_command": ssh_access.CHEF_MISSING})
        aws = settings.get("aws")
        scale = os.environ.get("KILN_SANDBOX_TIME_SCALE")
        if aws is not None and aws.get("waiter_delay") is None and scale:
            aws["waiter_delay"] = max(0.02, 15 * float(scale))


def in_build() -> BuildSandbox | None:
    """The sandbox this process runs in, when it runs in a build of the sandbox's CodeBuild:
    CODEBUILD_BUILD_ARN (CodeBuild's, in every build) with the sandbox's endpoint and time scale
    (AWS_ENDPOINT_URL, KILN_SANDBOX_TIME_SCALE: the sandbox's CodeBuild's). In a build of AWS's
    CodeBuild (a CI job running the sandbox, say), the sandbox target starts its own as
    anywhere else."""
    endpoint = os.environ.get("AWS_ENDPOINT_URL")
    if os.environ.get("CODEBUILD_BUILD_ARN") and endpoint and \
            os.environ.get("KILN_SANDBOX_TIME_SCALE"):
        return BuildSandbox(endpoint)
    return None


def ensure_up(settings, start: bool = True) -> Sandbox | BuildSandbox:
    """Start the sandbox if needed and point this process's boto3 at it. With `start` False (a
    task that only reads) nothing is started: a sandbox that is not running is one line. In a
    build of the sandbox's CodeBuild, the sandbox the build runs in (BuildSandbox)."""
    found = in_build()
    if found is not None:
        found.overlay(settings)
        bootstrap.overlay(settings)
        _overlay_watch(settings)
        return found
    box = Sandbox.from_settings(settings)
    if start:
        box.up()
    elif not box.running():
        raise KilnError(f"the sandbox in {box.state_dir} is not running, so there is nothing to "
                        f"read: `invoke sandbox.up` starts it")
    os.environ.pop("AWS_PROFILE", None)
    own = {keys["AWS_ACCESS_KEY_ID"] for keys in map(box.credentials, identities.USERS)}
    env = box.env()
    if os.environ.get("AWS_ACCESS_KEY_ID") in own:  # already signing as one of ours: keep it
        env = {k: v for k, v in env.items() if not k.startswith("AWS_SECRET")
               and k != "AWS_ACCESS_KEY_ID"}
    os.environ.pop("AWS_SESSION_TOKEN", None)
    os.environ.update(env)
    if settings.aws.get("endpoint_url"):  # a proxy in front of the sandbox's endpoint, on purpose
        os.environ["AWS_ENDPOINT_URL"] = settings.aws.endpoint_url
    if start:  # the bake's sshd and the repo's signing key: not for a task that only reads
        ssh_access.overlay(settings, box.state_dir)
    repo_key.overlay(settings, generate=start)  # a read still checks against an existing key
    bootstrap.overlay(settings)
    if start:  # the environments' HTTPS certificate, in ACM of the deploy account
        listener_cert.overlay(settings, box)
    _overlay_watch(settings)
    _scale_waiters(settings, box)
    return box


def _overlay_watch(settings) -> None:
    """kiln.sandbox.watch caps kiln.deploy.watch and kiln.deploy.canary.judge.max_wait: no alarm
    changes in the sandbox unless a test or a person sets it, so a watch of minutes per step
    would only wait. --watch still wins."""
    from cloud.inputs import seconds

    cap, deploy = settings.sandbox.get("watch"), settings.get("deploy")
    if cap is None or deploy is None:
        return
    if seconds(cap, "kiln.sandbox.watch") < seconds(deploy.watch, "kiln.deploy.watch"):
        deploy["watch"] = cap
    # The wait for a canary verdict's evidence is capped alike: without traffic none comes,
    # and the watch then fails (no_verdict) after seconds, not minutes. It never passes for it.
    judge = deploy.get("canary", {}).get("judge")
    if judge and judge.get("max_wait") is not None and seconds(
            cap, "kiln.sandbox.watch") < seconds(judge.max_wait,
                                                 "kiln.deploy.canary.judge.max_wait"):
        judge["max_wait"] = cap


def _scale_waiters(settings, box: Sandbox) -> None:
    aws = settings.get("aws")
    if aws is not None and aws.get("waiter_delay") is None:
        aws["waiter_delay"] = waiter_delay(box)


def waiter_delay(box: Sandbox) -> float:
    """Poll as often, relative to the sandbox's scaled durations, as botocore polls AWS."""
    from sandbox import clock

    return max(0.02, 15 * clock.scale_of(box.state_dir))


def _is_server(pid: int) -> bool:
    """Whether `pid` is a sandbox server still (after a reboot the number may be another's)."""
    try:
        return b"sandbox.server" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _project_root() -> Path:
    return Path(__file__).resolve().parent.parent


def private_folder(folder: Path) -> None:
    """The state dir is its owner's alone (0700), made so or made so again: its logs record
    requests and its files name keys and instances, none of which another local user reads."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    folder.chmod(0o700)
