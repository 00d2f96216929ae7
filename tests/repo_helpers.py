"""Helpers for the repository tests: tiny real RPMs built with rpmbuild, and a repo bucket and
lock table made the way the bootstrap makes them (versioned, encrypted, readable by dnf)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

SPEC = """\
Name: {name}
Version: {version}
Release: {release}
Summary: Kiln repository test package
License: MIT
BuildArch: noarch
AutoReqProv: no
%global debug_package %{{nil}}
%global __os_install_post %{{nil}}

%description
{description}

%install
mkdir -p %{{buildroot}}/etc/{name} %{{buildroot}}/usr/share/{name}
printf '%s\\n' '{config}' > %{{buildroot}}/etc/{name}/{name}.conf
printf '%s\\n' '{version}-{release}' > %{{buildroot}}/usr/share/{name}/VERSION
{payload}

%files
%config(noreplace) /etc/{name}/{name}.conf
/usr/share/{name}
"""

TOOL_STUB = """#!/bin/sh
# Stands in for the real tool inside the test installroot: records the call, succeeds.
echo "${{0##*/}} $*" >> /var/log/kiln-base-tools.log
{tail}
"""

BASE_SPEC = """\
Name: kiln-test-base
Version: 1
Release: 1
Summary: /bin/sh and stand-in tools for an empty dnf installroot
License: MIT
BuildArch: noarch
AutoReqProv: no
Provides: python3 = 3.11.0
%global debug_package %{{nil}}
%global __os_install_post %{{nil}}
%global _binaries_in_noarch_packages_terminate_build 0

%description
The host's sh with the libraries it loads, /dev/null, and recording stand-ins for useradd, groupadd,
getent and systemctl (no systemd or shadow-utils exist in a test installroot).

%install
cp -a {tree}/. %{{buildroot}}/

%files
{files}
"""


def rpmbuild(spec_text: str, work: Path, out: Path) -> Path:
    work.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    spec = work / "package.spec"
    spec.write_text(spec_text)
    env = {**os.environ, "HOME": str(work)}  # keep rpm's own files out of the real HOME
    subprocess.run(["rpmbuild", "-bb", "--quiet", "--define", f"_topdir {work}",
                    "--define", f"_rpmdir {out}", "--define", "_build_name_fmt "
                    "%%{NAME}-%%{VERSION}-%%{RELEASE}.%%{ARCH}.rpm", str(spec)],
                   check=True, env=env, capture_output=True)
    shutil.rmtree(work)
    built = sorted(out.glob("*.rpm"), key=lambda p: p.stat().st_mtime)
    return built[-1]


def build_rpm(folder: Path, name: str, version: str, release: str = "1",
              config: str = "setting=default", description: str = "test",
              payload_bytes: int = 0) -> Path:
    """A tiny noarch RPM with a %config(noreplace) file and logging scriptlets."""
    payload = ""
    if payload_bytes:
        payload = (f"head -c {payload_bytes} /dev/urandom > "
                   f"%{{buildroot}}/usr/share/{name}/payload.bin")
    text = SPEC.format(name=name, version=version, release=release, config=config,
                       description=description, payload=payload)
    for phase in ("pre", "post", "preun", "postun"):
        text += f"\n%{phase}\necho \"{phase} $1 {version}-{release}\" >> /var/log/{name}.log\n"
    out = folder / f"{name}-{version}-{release}-{time.time_ns()}"
    return rpmbuild(text, folder / f"work-{time.time_ns()}", out)


def build_base(folder: Path) -> Path:
    """kiln-test-base: what scriptlets need in an empty installroot."""
    tree = folder / f"base-tree-{time.time_ns()}"
    shell = Path("/bin/sh").resolve()
    files = []
    for source in [shell, *_libraries(shell)]:
        target = tree / str(source).lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
        files.append(str(source))
    if str(shell) != "/bin/sh":
        (tree / "bin").mkdir(parents=True, exist_ok=True)
        (tree / "bin/sh").symlink_to(shell)
        files.append("/bin/sh")
    tails = {"getent": "exit 2", "useradd": "", "groupadd": "", "systemctl": ""}
    for tool, tail in tails.items():
        where = "usr/sbin" if tool.endswith("add") else "usr/bin"
        stub = tree / where / tool
        stub.parent.mkdir(parents=True, exist_ok=True)
        stub.write_text(TOOL_STUB.format(tail=tail))
        stub.chmod(0o755)
        files.append(f"/{where}/{tool}")
    (tree / "var/log").mkdir(parents=True)
    (tree / "dev").mkdir()
    # Scriptlets redirect to /dev/null; a base image has it (a virtual device entry here).
    files += ["%dir /var/log", "%dir /dev", "%dev(c,1,3) %attr(0666,root,root) /dev/null"]
    text = BASE_SPEC.format(tree=tree, files="\n".join(files))
    return rpmbuild(text, folder / f"base-work-{time.time_ns()}", folder / "base-out")


def _libraries(binary: Path) -> list[Path]:
    out = subprocess.run(["ldd", str(binary)], capture_output=True, text=True).stdout
    return [Path(w) for line in out.splitlines() for w in line.replace("=>", " ").split()
            if w.startswith("/")]


def make_repo_bucket(aws, bucket: str) -> None:
    """The repo bucket as the bootstrap makes it: versioned, encrypted, private, and readable by
    anonymous GETs from the sandbox's loopback (as dnf on AWS reads through a VPC endpoint)."""
    s3 = aws.client("s3")
    s3.create_bucket(Bucket=bucket)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    s3.put_bucket_encryption(Bucket=bucket, ServerSideEncryptionConfiguration={
        "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]})
    policy = {"Version": "2012-10-17", "Statement": [{
        "Sid": "DnfReadsFromCidrs", "Effect": "Allow", "Principal": "*",
        "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{bucket}/*",
        "Condition": {"IpAddress": {"aws:SourceIp": ["127.0.0.1/32"]}}}]}
    s3.put_bucket_policy(Bucket=bucket, Policy=json.dumps(policy))


def make_lock_table(aws, table: str) -> None:
    aws.client("dynamodb").create_table(
        TableName=table, KeySchema=[{"AttributeName": "LockKey", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "LockKey", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST")


class S3Log:
    """Records every S3 call (operation and key) made through a client."""

    def __init__(self, client):
        self.calls: list[tuple[str, str]] = []
        client.meta.events.register("before-parameter-build.s3", self._record)

    def _record(self, model, params, **_ignored):
        self.calls.append((model.name, params.get("Key", "")))

    def keys(self, *operations: str) -> list[str]:
        return [key for name, key in self.calls if name in operations]

    def clear(self) -> None:
        self.calls.clear()


def fresh_repo(admin_aws, mark: str) -> dict:
    """Overrides naming a fresh repo bucket and lock table in the sandbox, named as bootstrap
    names them (so the operator's policy covers them) and made by the administrator."""
    suffix = time.time_ns()
    bucket, table = f"kiln-repo-123456789012-{mark}{suffix}", f"kiln-locks-{mark}-{suffix}"
    make_repo_bucket(admin_aws, bucket)
    make_lock_table(admin_aws, table)
    return {"repo": {"bucket": bucket, "lock_table": table, "metadata_grace_seconds": 0}}


def three_rpms(folder: Path) -> dict[str, Path]:
    """alpha, beta and gamma at 1.0.0: packages for the repository tests to publish."""
    return {name: build_rpm(folder, name, "1.0.0") for name in ("alpha", "beta", "gamma")}
