"""The bake: a version in, an AMI out, nothing temporary left behind.

    base AMI → package + publish (unless the repo has it) → reuse an image baked from the same
    inputs, or: key pair → security group → instance → SSH → chef-solo → stop → CreateImage
    → tear down → share + copy to regions → release record

Every temporary resource is one context manager (provisioner.resources); the bake nests them, so
an error, a failed chef run, SIGINT or SIGTERM releases them in reverse order. An image is kept
only once it is available and tagged; until then it is deregistered with its snapshots on exit.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime

import semver
import tenacity
from botocore.exceptions import ClientError

from cloud import foundations, locks, stacks
from cloud import tags as kiln_tags
from cloud.aws import Aws, account_spec
from cloud.console import say
from cloud.errors import KilnError
from cloud.images import all_images
from provisioner import base_ami, chef, provision, record, resources, signals, waits
from provisioner.signals import interruptible

# Provenance tags every baked image carries, besides the standard kiln:* set.
INPUTS_DIGEST = "kiln:inputs-digest"
# The bake settings that change what ends up in the image: a change means a new image.
IMAGE_SETTINGS = ("instance_type", "volume_size", "staging_dir", "sudo", "chef_version",
                  "chef_install_command", "chef_solo", "chef_license", "smoke_commands")
# The team's part of the chef run, with the value that leaves the digest as it was without it.
TEAM_SETTINGS = {"run_list": chef.RUN_LIST, "attributes": {}, "environment": None}
CHECKIP_URL = "https://checkip.amazonaws.com"
# The steps in the order a fresh bake runs them (the release record's timings use these names).
STEPS = ("base-ami", "package", "reuse", "key-pair", "security-group", "launch", "ssh",
         "provision", "stop", "image", "teardown", "copy", "share")
SSH_KEY_TYPE = "ed25519"


@dataclass
class Clock:
    """Seconds and AWS API calls per step; entering a step ends the previous one, on stderr."""

    calls: object = None  # cloud.aws.ApiCalls
    timings: dict[str, float] = field(default_factory=dict)
    api_calls: dict[str, int] = field(default_factory=dict)
    current: str | None = None
    since: float = 0.0
    calls_since: int = 0

    def step(self, name: str) -> None:
        self.stop()
        signals.check()
        if name == "teardown":  # from here a signal waits until everything is released
            signals.defer()
        else:
            signals.resume()
        say(f"bake: step {name}")
        self.current, self.since = name, time.monotonic()
        self.calls_since = self.calls.total if self.calls else 0

    def stop(self) -> None:
        if self.current:
            elapsed = time.monotonic() - self.since
            self.timings[self.current] = round(self.timings.get(self.current, 0) + elapsed, 3)
            made = (self.calls.total if self.calls else 0) - self.calls_since
            self.api_calls[self.current] = self.api_calls.get(self.current, 0) + made
        self.current = None


@dataclass
class Bake:
    """Everything one bake needs to know, settled before anything is created."""

    aws: Aws
    settings: object
    version: str
    manifest: str
    regions: list[str]
    share: list[str]
    run_id: str = field(default_factory=kiln_tags.new_run_id)
    clock: Clock = field(default_factory=Clock)
    package: dict = field(default_factory=dict)
    base: dict = field(default_factory=dict)
    outputs: dict = field(default_factory=dict)
    cookbook_digest: str = ""
    iteration: str | None = None  # --iteration over the manifest's
    foundation: str | None = None  # the foundation this bake makes (no app, no package)
    on: dict = field(default_factory=dict)  # the foundation image an app bakes on
    published: dict = field(default_factory=dict)  # a foundation's parameter, per region

    @property
    def bake(self):
        return self.settings.bake

    @property
    def app(self) -> str:
        if self.foundation:
            return foundations.app_label(self.foundation)
        return self.package["name"]

    @property
    def record_name(self) -> str:
        """The release record's name part: the app, or foundation-<name>."""
        return f"foundation-{self.foundation}" if self.foundation else self.app

    @property
    def release(self) -> str | None:
        """The package iteration: with the version, what names this release (version-release)."""
        release = self.package.get("release")
        return str(release) if release else None

    def tags(self, role: str, temporary: bool = True, **extra: str) -> dict[str, str]:
        release = {kiln_tags.RELEASE: self.release} if self.release else {}
        if self.foundation:
            release[foundations.FOUNDATION] = self.foundation
        return kiln_tags.kiln_tags(
            self.app, role, run_id=self.run_id, version=self.version,
            expires_in_minutes=self.bake.expires_minutes if temporary else None,
            **release, **extra)


def run(aws: Aws, settings, version: str, manifest: str | None = None,
        regions: list[str] | None = None, share: list[str] | None = None,
        dry_run: bool = False, iteration: str | None = None,
        foundation: str | None = None) -> dict:
    """Bake `version` (package iteration `iteration`, default the manifest's); the release
    record (or, with `dry_run`, the plan) as a dict. With `foundation`, bake that foundation
    (`settings` its own: cloud.foundations.for_foundation) and publish its parameter."""
    if not semver.Version.is_valid(version):  # before any AWS call
        raise KilnError(f"--version: {version!r} is not a semantic version (X.Y.Z, e.g. 1.4.2 "
                        f"or 2.0.0-rc.1)")
    job = Bake(aws, settings, version, manifest or settings.manifest,
               _copy_regions(aws, regions if regions is not None else settings.bake.copy_regions),
               _share_accounts(aws, share if share is not None else settings.bake.share),
               clock=Clock(aws.calls), iteration=None if iteration is None else str(iteration),
               foundation=foundation)
    with interruptible():
        # Inputs first: a wrong base AMI, subnet or account fails before anything is made.
        job.clock.step("base-ami")
        job.base = _base(job)
        say(f"bake: base image {job.base['ImageId']} ({job.base.get('Name')})")
        job.outputs = stacks.outputs(aws, "build")
        for region in job.regions:  # a copy region without its key stack fails here, not later
            stacks.ami_key(aws, region)
        subnet, vpc = _subnet(job)
        job.cookbook_digest = _chef_layout(settings).digest()
        job.clock.step("package")
        job.package = {} if foundation else _package(job, dry_run)
        digest = inputs_digest(job)
        job.clock.step("reuse")
        if dry_run:
            return _plan(job, subnet, vpc, digest, _reusable(job, digest))
        with _one_bake_at_a_time(job):
            existing = _reusable(job, digest)
            image_id = existing["ImageId"] if existing else _new_image(job, subnet, vpc, digest)
        job.clock.step("copy")
        images = {aws.region: image_id, **_copy(job, image_id, digest)}
        job.clock.step("share")
        shares = _share(job, images)
        if foundation:
            job.published = foundations.publish(aws, foundation, version, images)
        job.clock.stop()
        return _record(job, images, shares, digest, reused=bool(existing))


def _reusable(job: Bake, digest: str) -> dict | None:
    known = job.foundation or job.package.get("sha256")
    return _existing_image(job, digest) if known else None


def _base(job: Bake) -> dict:
    """kiln.bake.base_ami, or the newest image of the foundation kiln.bake.foundation names."""
    name = job.bake.foundation
    if not name:
        return base_ami.resolve(job.aws, job.bake.base_ami)
    image = foundations.current(job.aws, name)
    job.on = {"name": name, "image_id": image["ImageId"],
              "version": foundations.version_of(image)}
    say(f"bake: on foundation {name} {job.on['version']}")
    return image


@contextmanager
def _one_bake_at_a_time(job: Bake):
    """Hold bake/<app>/<version> while this run looks for a reusable image and bakes: a second
    bake of the version waits (kiln.bake.lock_timeout), then reuses the first one's image. The
    lease, renewed while this process lives, is also how the janitor tells a live run from a
    dead one."""
    table = locks.build_table(job.aws) or _output(job, "LockTableName")
    wait = job.bake.lock_timeout
    with locks.lease(job.aws, table, locks.bake_key(job.app, job.version),
                     locks.owner_description(job.run_id), wait_seconds=wait,
                     on_wait=lambda held: say(f"bake: {held}; waiting up to {wait} s for it, "
                                              f"then using its image")):
        yield


def _new_image(job: Bake, subnet: str, vpc: str, digest: str) -> str:
    """The Aminator-style heart: each `with` holds one temporary resource until the image exists."""
    aws, bake, clock = job.aws, job.bake, job.clock
    name = f"kiln-{job.app.replace('/', '-')}-{job.run_id}"
    clock.step("key-pair")
    with resources.key_pair(aws, name, job.tags("bake-key"), SSH_KEY_TYPE) as key:
        clock.step("security-group")
        with resources.security_group(aws, name, vpc, _ssh_cidrs(bake), bake.ssh_port,
                                      job.tags("bake-sg")) as group:
            clock.step("launch")
            with resources.instance(aws, launch_params(job, subnet, key.name, group)) as node:
                target = _running(job, node, key.private_key)
                clock.step("ssh")
                provision.wait_for_ssh(target, bake.ssh_timeout)
                clock.step("provision")
                provision.provision(target, _provision_plan(job), job.settings)
                clock.step("stop")
                _stop(aws, node)
                clock.step("image")
                labels = provenance(job, digest)
                with resources.image(aws, node, image_name(job), _description(job),
                                     job.tags("image", False, **labels),
                                     job.tags("image-snapshot", False, **labels)) as ami:
                    _finish_image(job, ami)
                clock.step("teardown")
    return ami


# -- package ----------------------------------------------------------------------------------
def _package(job: Bake, dry_run: bool) -> dict:
    """The RPM of this version: reused when the repo has it from the same manifest and files,
    refused when the repo has it from other ones, else built and published.

    The repo's package is judged by the object's bytes: downloaded, its sha256 must be the one
    the signed metadata lists, and its header says which manifest it was built from. The object's
    S3 metadata is not trusted (whoever writes the bucket writes it)."""
    from packager import manifest as manifests
    from packager import repo

    wanted = manifests.load(job.manifest, job.version, iteration=job.iteration)
    rpm_version, service = wanted.rpm_version, wanted.name if wanted.service_unit else None
    nevra = f"{wanted.name}-{rpm_version}-{wanted.iteration}.{wanted.arch}"
    found = repo.find_package(job.aws, wanted.name, rpm_version, wanted.iteration)
    if dry_run:
        action = "reuse the published" if found else "package and publish"
        say(f"bake: would {action} {nevra}")
        return {"name": wanted.name, "version": wanted.version, "rpm_version": rpm_version,
                "release": wanted.iteration, "manifest_digest": wanted.digest,
                "action": action, **(found or {})}
    if found is None:
        built = {**_build(job), "service": service}
        published = repo.publish(job.aws, built["path"])
        say(f"bake: published {built['nevra']} (sha256 {published['sha256'][:12]}…)")
        return {**built, "sha256": published["sha256"], "action": "published",
                "digest": signing_digest(built["path"])}
    held = _published_package(job, found)
    same = {"name": wanted.name, "version": wanted.version, "rpm_version": rpm_version,
            "release": wanted.iteration, "arch": wanted.arch, "nevra": nevra,
            "sha256": found["sha256"], "path": found["path"], "manifest_digest": wanted.digest,
            "commit": held["commit"], "service": service, "action": "reused",
            "digest": held["digest"]}
    if held["manifest-digest"] == wanted.digest:
        say(f"bake: {nevra} is already in the repo, built from the same manifest and files")
        return same
    if held["manifest-digest"]:
        raise KilnError(f"{nevra} is already in the repo, built from another manifest or other "
                        f"files (manifest digest {held['manifest-digest'][:12]}… there, "
                        f"{wanted.digest[:12]}… in {job.manifest}): bump the version, or the "
                        f"iteration{_next_iteration(wanted.iteration)}")
    # Published without Kiln's provenance (by hand, or an older Kiln): compare the contents.
    built = {**_build(job), "service": service}
    if signing_digest(built["path"]) != held["digest"]:
        raise KilnError(f"{built['nevra']} is already in the repo with other content "
                        f"(sha256 {found['sha256'][:12]}… there, built from {job.manifest}): "
                        f"bump the version, or the iteration"
                        f"{_next_iteration(wanted.iteration)}")
    say(f"bake: {built['nevra']} is already in the repo with the same content; not publishing")
    return {**built, **{k: same[k] for k in ("sha256", "path", "digest")}, "action": "reused"}


def _build(job: Bake) -> dict:
    from packager import build

    return build.package(job.settings, job.manifest, job.version, job.iteration)


def _next_iteration(iteration: str) -> str:
    """How to bump a release from the command line, e.g. ` (--iteration 3)`."""
    return f" (--iteration {int(iteration) + 1})" if iteration.isdigit() else " (--iteration N)"


def _published_package(job: Bake, found: dict) -> dict:
    """The repo's package, downloaded and checked against the sha256 in the signed metadata:
    its commit and manifest digest (from its header) and its header and payload digest."""
    import tempfile
    from pathlib import Path

    from packager import repo

    with tempfile.TemporaryDirectory(prefix="kiln-reuse-") as tmp:
        local = Path(tmp) / "package.rpm"
        repo.Repo.of(job.aws).download(found["path"], local)
        actual = repo.sha256_file(local)
        if actual != found["sha256"]:
            raise KilnError(f"{found['path']}: sha256 {actual[:12]}… is not the "
                            f"{found['sha256'][:12]}… the signed repository metadata lists: "
                            f"the object was replaced; refusing it")
        provenance = repo.rpm_info(local).provenance
        return {"commit": provenance.get("commit"),
                "manifest-digest": provenance.get("manifest-digest"),
                "digest": signing_digest(local)}


def signing_digest(path) -> str:
    from pathlib import Path

    from packager import signing

    return signing.package_digest(Path(path))


# -- settings → AWS parameters ---------------------------------------------------------------
def _copy_regions(aws: Aws, regions: list[str]) -> list[str]:
    """Regions to copy to, checked against botocore's region list before anything is created."""
    regions = [r for r in dict.fromkeys(regions) if r and r != aws.region]
    known = {r for partition in aws.session.get_available_partitions()
             for r in aws.session.get_available_regions("ec2", partition)}
    for region in regions:
        if region not in known:
            near = difflib.get_close_matches(region, sorted(known), n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            raise KilnError(f"--regions / kiln.bake.copy_regions: unknown region {region!r}{hint}")
    return regions


def _share_accounts(aws: Aws, names: list[str]) -> list[str]:
    """Account names to share with, checked before anything is created."""
    names = [n for n in dict.fromkeys(names) if n]
    for name in names:
        account_spec(aws.settings, name)  # KilnError naming kiln.accounts when unknown
    return [n for n in names if n != aws.account_name]


def _subnet(job: Bake) -> tuple[str, str]:
    """(subnet id, VPC id): kiln.bake.subnet (checked), else the bootstrap's bake subnet."""
    configured = job.bake.subnet
    if not configured:
        return _output(job, "BakeSubnetId"), _output(job, "BakeVpcId")
    try:
        found = job.aws.client("ec2").describe_subnets(SubnetIds=[configured])["Subnets"]
    except ClientError as error:
        if not error.response["Error"]["Code"].startswith("InvalidSubnet"):
            raise
        found = []
    if not found:
        raise KilnError(f"kiln.bake.subnet: subnet {configured} not found in region "
                        f"{job.aws.region} of account {job.aws.account_id}")
    return configured, found[0]["VpcId"]


def _output(job: Bake, key: str) -> str:
    if key not in job.outputs:
        return stacks.output(job.aws, "build", key)  # the error names the stack and the output
    return job.outputs[key]


def _ssh_cidrs(bake) -> list[str]:
    """kiln.bake.ssh_cidrs, or this machine's public address as a /32."""
    if bake.ssh_cidrs:
        return list(bake.ssh_cidrs)
    import urllib.request

    try:
        with urllib.request.urlopen(CHECKIP_URL, timeout=10) as answer:
            address = answer.read().decode().strip()
    except OSError as error:
        raise KilnError(f"kiln.bake.ssh_cidrs is empty and {CHECKIP_URL} did not answer "
                        f"({error}): set the CIDRs SSH may come from") from None
    return [f"{address}/32"]


def launch_params(job: Bake, subnet: str, key_name: str, group: str) -> dict:
    """RunInstances parameters: IMDSv2 only, encrypted root volume, terminate on shutdown."""
    bake, base = job.bake, job.base
    root = base.get("RootDeviceName", "/dev/xvda")
    network = {"DeviceIndex": 0, "SubnetId": subnet, "Groups": [group],
               "DeleteOnTermination": True}
    if bake.ssh_interface == "public_ip":
        network["AssociatePublicIpAddress"] = True
    return {
        "ImageId": base["ImageId"], "InstanceType": bake.instance_type,
        "MinCount": 1, "MaxCount": 1, "KeyName": key_name, "ClientToken": job.run_id,
        "NetworkInterfaces": [network],
        "IamInstanceProfile": {"Name": _output(job, "BakeInstanceProfileName")},
        "MetadataOptions": {"HttpTokens": "required", "HttpEndpoint": "enabled",
                            "HttpPutResponseHopLimit": 1},
        "BlockDeviceMappings": [{"DeviceName": root, "Ebs": {
            "VolumeSize": _volume_size(job), "VolumeType": "gp3", "Encrypted": True,
            "KmsKeyId": _output(job, "AmiKmsKeyArn"), "DeleteOnTermination": True}}],
        "InstanceInitiatedShutdownBehavior": "terminate",
        "TagSpecifications": [kiln_tags.spec("instance", job.tags("bake-instance")),
                              kiln_tags.spec("volume", job.tags("bake-volume"))],
    }


def _volume_size(job: Bake) -> int:
    """kiln.bake.volume_size, but never smaller than the base image's root snapshot."""
    root = job.base.get("RootDeviceName")
    sizes = [m["Ebs"].get("VolumeSize", 0) for m in job.base.get("BlockDeviceMappings", [])
             if m.get("DeviceName") == root and "Ebs" in m]
    return max([job.bake.volume_size, *sizes])


def image_name(job: Bake) -> str:
    """app-version-iteration-arch-YYYYmmddHHMM, in the characters AMI names allow."""
    arch = job.base.get("Architecture", job.package.get("arch", "x86_64"))
    stamp = datetime.now(UTC).strftime("%Y%m%d%H%M")
    name = f"{job.app}-{job.version}-{job.package.get('release')}-{arch}-{stamp}"
    if job.foundation:
        name = f"foundation-{job.foundation}-{job.version}-{arch}-{stamp}"
    return re.sub(r"[^A-Za-z0-9()\[\]./\-'@_]", "_", name)[:128]


def _description(job: Bake) -> str:
    return (f"Kiln: {job.package.get('nevra', job.app)} on {job.base['ImageId']} "
            f"(run {job.run_id})")[:255]


# -- inputs and provenance ---------------------------------------------------------------------
def _chef_layout(settings) -> chef.Layout:
    """Kiln's chef/ and the team's folders of kiln.bake, checked (roles included) before
    anything is made."""
    layout = chef.Layout.of(settings.bake, provision.CHEF_DIR)
    layout.check()
    layout.check_roles(settings.bake.run_list)
    return layout


def inputs_digest(job: Bake) -> str:
    """What decides the image's content; a second bake with the same digest reuses the image.

    The team's chef settings enter only when set (an app that uses none keeps the digest it
    had); their folders' contents are in the cookbook digest."""
    settings = {key: job.bake.get(key) for key in IMAGE_SETTINGS}
    settings.update({key: value for key, unset in TEAM_SETTINGS.items()
                     if (value := job.bake.get(key)) and value != unset})
    inputs = {"base_ami": job.base["ImageId"], "rpm_sha256": job.package.get("sha256"),
              "cookbook_digest": job.cookbook_digest,
              "kms_key": job.outputs.get("AmiKmsKeyArn"), "bake_settings": settings}
    text = json.dumps(inputs, sort_keys=True, default=str)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def provenance(job: Bake, digest: str) -> dict[str, str]:
    package, base = job.package, job.base
    values = {
        "kiln:rpm-nevra": package.get("nevra"), "kiln:rpm-sha256": package.get("sha256"),
        "kiln:base-ami-id": base["ImageId"], "kiln:base-ami-name": base.get("Name"),
        "kiln:git-commit": package.get("commit"), "kiln:cookbook-digest": job.cookbook_digest,
        "kiln:manifest-digest": package.get("manifest_digest"), INPUTS_DIGEST: digest,
        foundations.FOUNDATION: job.on.get("name"),
        foundations.FOUNDATION_AMI: job.on.get("image_id"),
        foundations.FOUNDATION_VERSION: job.on.get("version"),
    }
    # Tag values are at most 256 characters; a missing one is left out rather than invented.
    return {k: str(v)[:256] for k, v in values.items() if v}


def _existing_image(job: Bake, digest: str) -> dict | None:
    images = all_images(job.aws.client("ec2"), Owners=["self"], Filters=[
        {"Name": f"tag:{INPUTS_DIGEST}", "Values": [digest]},
        {"Name": f"tag:{kiln_tags.APP}", "Values": [job.app]},
        {"Name": "state", "Values": ["available"]}])
    if not images:
        return None
    newest = max(images, key=lambda i: i.get("CreationDate", ""))
    say(f"bake: reusing image {newest['ImageId']} ({newest.get('Name')}): same base AMI, RPM, "
        f"cookbooks and bake settings")
    return newest


# -- the instance ------------------------------------------------------------------------------
def _running(job: Bake, instance_id: str, private_key: str) -> provision.SshTarget:
    response = waits.wait(job.aws, "instance_running", f"instance {instance_id} running",
                          InstanceIds=[instance_id])
    found = response["Reservations"][0]["Instances"][0]
    key = "PublicIpAddress" if job.bake.ssh_interface == "public_ip" else "PrivateIpAddress"
    if not found.get(key):
        raise KilnError(f"instance {instance_id} has no {key} (kiln.bake.ssh_interface is "
                        f"{job.bake.ssh_interface}; does subnet {found.get('SubnetId')} route "
                        f"to the internet?)")
    return provision.SshTarget(instance_id, found[key], job.bake.ssh_port, job.bake.ssh_user,
                               private_key, _host_fingerprints(job, instance_id))


class _NoFingerprints(Exception):
    """The console shows no host key fingerprints yet (cloud-init prints them at first boot)."""


def console_output(ec2, instance_id: str) -> str:
    """The instance's latest console output where its type offers it (Nitro), else the buffered
    one: Xen types (t2, m4, c4…) refuse Latest with UnsupportedOperation."""
    try:
        return ec2.get_console_output(InstanceId=instance_id, Latest=True).get("Output") or ""
    except ClientError as error:
        if error.response["Error"]["Code"] != "UnsupportedOperation":
            raise
    return ec2.get_console_output(InstanceId=instance_id).get("Output") or ""


def _host_fingerprints(job: Bake, instance_id: str) -> tuple[str, ...]:
    """The SSH host key fingerprints the instance prints to its console at first boot (cloud-init),
    waited for up to kiln.bake.ssh_timeout: the only host keys the bake's SSH accepts."""
    ec2 = job.aws.client("ec2")

    @tenacity.retry(retry=tenacity.retry_if_exception_type(_NoFingerprints),
                    wait=tenacity.wait_fixed(5),
                    stop=tenacity.stop_after_delay(job.bake.ssh_timeout),
                    before_sleep=lambda _: signals.check(), reraise=True)
    def read() -> tuple[str, ...]:
        found = provision.console_fingerprints(console_output(ec2, instance_id))
        if not found:
            raise _NoFingerprints
        return found

    try:
        return read()
    except _NoFingerprints:
        raise KilnError(f"instance {instance_id} printed no SSH host key fingerprints to its "
                        f"console within {job.bake.ssh_timeout} s (kiln.bake.ssh_timeout); "
                        f"refusing to trust its host key unseen") from None


def _provision_plan(job: Bake) -> provision.ProvisionPlan:
    from packager import repo

    if job.foundation:
        return provision.ProvisionPlan.for_foundation(job.settings, job.foundation, job.version)
    package = job.package
    return provision.ProvisionPlan.for_release(
        job.settings, app=job.app, version=job.version, release=str(package["release"]),
        package=package["name"], service=package.get("service"),
        repo_baseurl=repo.baseurl(job.aws), gpgkey_url=repo.gpgkey_url(job.aws),
        rpm_version=package.get("rpm_version"),
        gpgkey_fingerprint=repo.Repo.of(job.aws).pinned, package_digest=package.get("digest"))


def _stop(aws: Aws, instance_id: str) -> None:
    aws.client("ec2").stop_instances(InstanceIds=[instance_id])
    waits.wait(aws, "instance_stopped", f"instance {instance_id} stopped",
               InstanceIds=[instance_id])


def _finish_image(job: Bake, image_id: str) -> None:
    image = waits.image_available(job.aws, image_id)
    snapshots = [m["Ebs"]["SnapshotId"] for m in image.get("BlockDeviceMappings", [])
                 if m.get("Ebs", {}).get("SnapshotId")]
    say(f"bake: image {image_id} is available ({len(snapshots)} snapshot(s))")


# -- share, copy, record -----------------------------------------------------------------------
def _copy(job: Bake, image_id: str, digest: str) -> dict[str, str]:
    """Copies in the other regions, each tagged and shared there (provisioner.share)."""
    if not job.regions:
        return {}
    from provisioner import share

    tags = job.tags("image", False, **provenance(job, digest))
    return share.copy_to_regions(job.aws, image_id, job.regions, tags, share=job.share)


def _share(job: Bake, images: dict[str, str]) -> list[dict]:
    """Share the image in this region; the copies were shared as they were made. Accounts no
    longer in kiln.bake.share lose their grant on this region's key."""
    if not job.share:
        return []
    from provisioner import share

    region = job.aws.region
    shares = share.share_image(job.aws, images[region], region, job.share, retire_others=True)
    for copy_region, copy_id in images.items():
        if copy_region != region:
            shares += [{"account": name, "region": copy_region, "image_id": copy_id}
                       for name in job.share]
    return shares


def _record(job: Bake, images: dict[str, str], shares: list[dict], digest: str,
            reused: bool) -> dict:
    package = job.package
    result = {
        "app": job.app, "version": job.version, "release": job.release, "run_id": job.run_id,
        "account": job.aws.account_id, "region": job.aws.region,
        "images": images, "image_id": images[job.aws.region], "reused": reused,
        "inputs_digest": digest, "shares": shares,
        "rpm": {"nevra": package.get("nevra"), "sha256": package.get("sha256"),
                "path": str(package.get("path")), "action": package.get("action")},
        "base_ami": {"id": job.base["ImageId"], "name": job.base.get("Name")},
        "cookbook_digest": job.cookbook_digest,
        "manifest_digest": package.get("manifest_digest"), "commit": package.get("commit"),
        **_foundation_part(job),
        "baked_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "timings": job.clock.timings,
        # The bake's own calls; packaging and publishing are the repo's, counted apart.
        "api_calls": job.aws.calls.total - job.clock.api_calls.get("package", 0),
        "api_calls_package": job.clock.api_calls.get("package", 0),
        "api_calls_by_step": job.clock.api_calls,
        "api_calls_by_operation": dict(sorted(job.aws.calls.by_operation.items())),
    }
    where = record.write(job.settings, job.record_name, job.version, result, job.release)
    say(f"bake: {'reused' if reused else 'baked'} {result['image_id']} for {job.app} "
        f"{kiln_tags.release_id(job.tags('image'))}; release record {where} "
        f"({result['api_calls']} AWS API calls)")
    return result


def _foundation_part(job: Bake) -> dict:
    """A foundation's name and parameter; an app's foundation image (id, version)."""
    if job.foundation:
        return {"foundation": {"name": job.foundation, "parameter": foundations.parameter_name(
            job.settings, job.foundation), "published": job.published}}
    return {"on_foundation": job.on} if job.on else {}


def _plan(job: Bake, subnet: str, vpc: str, digest: str, existing: dict | None) -> dict:
    """What a bake would do, as data; nothing is created."""
    job.clock.stop()
    name = f"kiln-{job.app.replace('/', '-')}-{job.run_id}"
    params = launch_params(job, subnet, name, "<security group of this bake>")
    plan = {
        "dry_run": True, "app": job.app, "version": job.version,
        "package": {k: job.package.get(k) for k in ("name", "rpm_version", "release",
                                                     "sha256", "action")},
        "base_ami": {"id": job.base["ImageId"], "name": job.base.get("Name")},
        "reuse": existing["ImageId"] if existing else None, "inputs_digest": digest,
        "chef": {"run_list": list(job.bake.run_list), "cookbook_digest": job.cookbook_digest,
                 "cookbook_paths": list(job.bake.cookbook_paths)},
        "key_pair": name, "security_group": {"name": name, "vpc": vpc,
                                             "ssh_from": job.bake.ssh_cidrs or ["<your /32>"],
                                             "port": job.bake.ssh_port},
        "instance": {k: v for k, v in params.items() if k != "ClientToken"},
        "copy_regions": job.regions, "share": job.share, **_foundation_part(job),
    }
    say(f"bake: dry run; base image {plan['base_ami']['id']}, "
        + (f"would reuse image {plan['reuse']}" if existing else
           f"would launch a {job.bake.instance_type} in {subnet} and bake a new image")
        + (f", copy to {', '.join(job.regions)}" if job.regions else "")
        + (f", share with {', '.join(job.share)}" if job.share else ""))
    return plan
