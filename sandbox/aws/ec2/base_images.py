"""Amazon Linux 2023 base images in every region, with real creation dates, after every reset.

On AWS, Amazon (owner 137112412989, alias `amazon`) publishes dated Amazon Linux 2023 images in
every region, and "the most recent image matching these filters" picks one by CreationDate.
moto's bundled images all carry the time the server loaded them as their creation date, so among
its several `al2023-ami-2023.*` images "most recent" is a tie. The sandbox replaces that family
with a fixed, dated set (two x86_64 releases, so "most recent" has a choice, one arm64, and the
x86_64 kernel-6.12 line Amazon publishes beside the default kernel-6.1 one) with
the attributes of the real ones: EBS root on /dev/xvda, hvm, ENA, uefi-preferred, IMDSv2. Image
ids are stable per region and name, so a pinned id survives a reset. Hooked into moto's default
image loading, so every region's backend, new or reset, has them.

Amazon also publishes the newest image of each line as a public SSM parameter
(https://docs.aws.amazon.com/linux/al2023/ug/ec2.html#launch-from-ec2-console):
`/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-<arch>` (and `-kernel-6.1-`).
moto's copies of those parameters name images the sandbox does not have; the sandbox serves them
with its own newest image ids, and drops the other AL2023 lines it has no images for.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path

from sandbox.aws import seams

AMAZON = "137112412989"
FAMILY = "al2023-ami-2023."
# (version, kernel, architecture, creation date), newest first.
IMAGES = [
    ("2023.6.20241121.0", "6.12", "x86_64", "2024-11-21T19:52:34"),
    ("2023.6.20241121.0", "6.1", "x86_64", "2024-11-21T19:52:30"),
    ("2023.6.20241121.0", "6.1", "arm64", "2024-11-21T19:52:31"),
    ("2023.6.20241111.0", "6.1", "x86_64", "2024-11-11T22:10:05"),
]


def apply(state_dir: Path) -> None:
    from moto.ec2.models.amis import AmiBackend
    from moto.ssm.models import ParameterDict

    seams.wrap(AmiBackend, "_load_amis", _with_base_images, signature="(self) -> 'None'",
               owner=__name__)
    seams.wrap(ParameterDict, "_load_latest_amis", _with_latest_parameters,
               signature="(self) -> 'None'", owner=__name__)


PARAMETERS = "/aws/service/ami-amazon-linux-latest/"
DEFAULT_KERNEL = "6.1"  # what Amazon's kernel-default parameters point at


def latest_parameters(region: str) -> dict[str, str]:
    """Parameter name → the newest sandbox image of its architecture."""
    found: dict[str, str] = {}
    for version, kernel, arch, _created in IMAGES:  # newest first
        for line in ("default", kernel) if kernel == DEFAULT_KERNEL else (kernel,):
            name = f"{PARAMETERS}al2023-ami-kernel-{line}-{arch}"
            found.setdefault(name, image_id(region, image_name(version, kernel, arch)))
    return found


def _with_latest_parameters(load):
    def wrapper(parameters) -> None:
        load(parameters)
        ours = latest_parameters(parameters.region_name)
        for name in [n for n in dict.keys(parameters) if n.startswith(f"{PARAMETERS}al2023-")]:
            if name not in ours:
                dict.__delitem__(parameters, name)
        for name, value in ours.items():
            versions = dict.get(parameters, name) or []
            if versions:
                versions[-1].value = value
            else:
                _add_parameter(parameters, name, value)

    return wrapper


def _add_parameter(parameters, name: str, value: str) -> None:
    from moto.ssm.models import Parameter

    dict.setdefault(parameters, name, []).append(Parameter(
        account_id=parameters.account_id, name=name, value=value, parameter_type="String",
        description=None, allowed_pattern=None, keyid=None,
        last_modified_date=datetime(2024, 11, 21, tzinfo=UTC).timestamp(), version=1,
        data_type="aws:ec2:image"))


def image_name(version: str, kernel: str, arch: str) -> str:
    return f"al2023-ami-{version}-kernel-{kernel}-{arch}"


def image_id(region: str, name: str) -> str:
    return "ami-0" + hashlib.sha256(f"{region}/{name}".encode()).hexdigest()[:16]


def _with_base_images(load_amis):
    def wrapper(backend) -> None:
        load_amis(backend)
        for ami_id in [i for i, ami in backend.amis.items() if _in_family(ami)]:
            del backend.amis[ami_id]
        for version, kernel, arch, created in IMAGES:
            _add(backend, version, kernel, arch, created)

    return wrapper


def _in_family(ami) -> bool:
    return ami.owner_id == AMAZON and (ami.name or "").startswith(FAMILY)


def _add(backend, version: str, kernel: str, arch: str, created: str) -> None:
    from moto.ec2.models.amis import Ami

    name = image_name(version, kernel, arch)
    ami = Ami(backend, image_id(backend.region_name, name), name=name,
              description=f"Amazon Linux 2023 AMI {version} {arch} HVM kernel-{kernel}",
              owner_id=AMAZON, owner_alias="amazon", public=True, virtualization_type="hvm",
              architecture=arch, hypervisor="xen", root_device_type="ebs",
              root_device_name="/dev/xvda", boot_mode="uefi-preferred",
              creation_date=datetime.fromisoformat(created).replace(tzinfo=UTC),
              image_location=f"amazon/{name}", region_name=f"{backend.region_name}a")
    ami.ena_support = True
    ami.imds_support = "v2.0"
    backend.amis[ami.id] = ami
