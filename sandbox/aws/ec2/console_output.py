"""GetConsoleOutput of a sandbox instance prints its SSH host keys, as cloud-init does on AWS.

On AWS, cloud-init writes the instance's host key fingerprints (and keys) to the console at first
boot, between `-----BEGIN SSH HOST KEY FINGERPRINTS-----` and `-----END …-----` lines, so a
client can check the key the instance presents over SSH. A sandbox instance is reached through
the sandbox sshd: its console output prints that sshd's host key the same way (moto answered a
fixed sample text).

As on AWS, `Latest=True` (the most recent output rather than the buffered one) is for
instances on the Nitro system only: on a Xen instance type (t2, m4, c4, r4…) the call fails with
UnsupportedOperation (moto answered it on any type).
(https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_GetConsoleOutput.html)
"""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

from sandbox.aws import seams
from sandbox.sshd import Sshd

# Instance families that run on Xen, not the Nitro system.
XEN_FAMILIES = ("t1", "t2", "m1", "m2", "m3", "m4", "c1", "c3", "c4", "r3", "r4", "x1", "x1e",
                "d2", "h1", "i2", "i3", "g2", "g3", "g3s", "p2", "p3", "f1", "cc2", "cr1", "hs1")


def apply(state_dir: Path) -> None:
    from moto.ec2.responses.general import General

    seams.wrap(General, "get_console_output", lambda moto: _with_host_keys(moto, state_dir),
               signature="(self) -> moto.core.responses.ActionResult", owner=__name__)


def console_text(state_dir: Path) -> str:
    """The host key block cloud-init prints, for the sandbox sshd's key."""
    public = Path(f"{Sshd(state_dir).host_key}.pub")
    if not public.exists():
        return ""
    kind, blob = public.read_text().split()[:2]
    digest = base64.b64encode(hashlib.sha256(base64.b64decode(blob)).digest()).decode()
    name = {"ssh-ed25519": "ED25519", "ssh-rsa": "RSA"}.get(kind, "ECDSA")
    return ("ec2: #############################################################\n"
            "ec2: -----BEGIN SSH HOST KEY FINGERPRINTS-----\n"
            f"ec2: 256 SHA256:{digest.rstrip('=')} root@sandbox ({name})\n"
            "ec2: -----END SSH HOST KEY FINGERPRINTS-----\n"
            "ec2: #############################################################\n"
            "-----BEGIN SSH HOST KEY KEYS-----\n"
            f"{kind} {blob} root@sandbox\n"
            "-----END SSH HOST KEY KEYS-----\n")


def _with_host_keys(get_console_output, state_dir: Path):
    def wrapper(response, *args, **kwargs):
        if str(response._get_param("Latest")).lower() == "true":
            _refuse_latest_on_xen(response, response._get_param("InstanceId"))
        result = get_console_output(response, *args, **kwargs)
        text = console_text(state_dir)
        if text:
            from moto.ec2.utils import Base64EncodedString

            result.result["Output"] = Base64EncodedString.from_raw_string(text)
        return result

    return wrapper


def _refuse_latest_on_xen(response, instance_id: str) -> None:
    from moto.ec2.exceptions import EC2ClientError

    instance = response.ec2_backend.get_instance(instance_id)
    if str(instance.instance_type).partition(".")[0] in XEN_FAMILIES and \
            not str(instance.instance_type).endswith(".metal"):
        raise EC2ClientError("UnsupportedOperation",
                             "This instance type does not support retrieving the latest console "
                             "output. Specify false for the Latest parameter.")
