"""AWS's service names inside a sandbox instance, as software on an EC2 instance uses them.

On AWS an instance's AWS CLI or SDK calls `https://ssm.us-east-1.amazonaws.com` and trusts the
answer because Amazon's certificate chains to a root in the AMI's CA bundle. A sandbox instance
does the same, unchanged:
- its `/etc/hosts` (written by boot.py) sends the service names below, in every region of the
  `aws` partition, to ADDRESS on the instance's own loopback;
- there the instance's way out (forward.py) answers on port 443 with a certificate for those
  names, signed by a CA of this sandbox's own (`tls/aws/` under the state dir; it signs nothing
  else), and relays each connection to the sandbox's endpoint, Host header and all (SigV4 signs
  it), through the same route checks as every request out of the instance;
- the instance trusts that CA as an AMI trusts Amazon's: boot.py shows the instance the CA
  bundles it finds (TRUST) with the CA appended, on mounts of its own; the host's files are
  never changed. The CA of the load balancers' certificates is appended too (trusted()), as an
  AMI trusts the public CAs that sign ACM's certificates: a client on a machine (a build's
  acceptance command) checks a listener's TLS as on AWS.

The sandbox's endpoint on the host (sandbox/server.py) answers TLS with the same certificate,
which also names the host's loopback (ENDPOINT_NAMES): Kiln on the host verifies it against the
same CA (AWS_CA_BUNDLE), and the way out relays an instance's requests to it over TLS, so that
the sandbox's IAM sees them arrive over TLS (aws:SecureTransport), as AWS sees them.

    ensure(state_dir) -> {"ca", "certificate", "key"}   # made on first use, or when names change
    names() -> [host names]
"""

from __future__ import annotations

import functools
import threading
from pathlib import Path

ADDRESS = "127.0.0.2"  # on the instance's loopback, where its AWS names lead
PORT = 443
# The services whose names resolve: those a boot script, a launch check or the agents on an
# instance call. S3's virtual-hosted names (<bucket>.s3.…) are not among them: a hosts file has
# no wildcards, so the CLI's S3 commands need path-style addressing.
SERVICES = ("ssm", "secretsmanager", "autoscaling", "sts", "s3", "ec2", "kms", "logs",
            "monitoring", "elasticloadbalancing", "cloudformation")
GLOBAL = ("s3.amazonaws.com", "sts.amazonaws.com")  # us-east-1's legacy global endpoints
ENDPOINT_NAMES = ("127.0.0.1", "localhost")  # the sandbox's endpoint on the host
_making = threading.Lock()  # instances launch in parallel: one makes the files
# CA bundles an instance's programs read, where the host has them: the system's (Debian's, and
# Amazon Linux's and Fedora's), and those Python packages carry (certifi's, botocore's, the
# AWS CLI's own botocore's).
TRUST = ("etc/ssl/certs/ca-certificates.crt", "etc/pki/tls/certs/ca-bundle.crt",
         "usr/lib/python3*/*-packages/*/cacert.pem",
         "usr/lib/python3*/*-packages/*/botocore/cacert.pem")


@functools.cache
def regions() -> list[str]:
    import botocore.session

    return botocore.session.get_session().get_available_regions("ec2")


def names() -> list[str]:
    return [*(f"{service}.{region}.amazonaws.com" for region in regions()
              for service in SERVICES), *GLOBAL]


def files(state_dir: str | Path) -> dict[str, Path]:
    folder = Path(state_dir) / "tls" / "aws"
    return {"ca": folder / "ca.crt", "certificate": folder / "endpoints.crt",
            "key": folder / "endpoints.key", "names": folder / "names"}


def ensure(state_dir: str | Path) -> dict[str, Path]:
    """The CA, the endpoints' certificate and key (one wildcard name per region, and the
    sandbox's endpoint on the host)."""
    from sandbox import listener_cert

    with _making:
        return _ensure(files(state_dir), listener_cert.generate)


def _ensure(paths: dict[str, Path], generate) -> dict[str, Path]:
    wanted = [*(f"*.{region}.amazonaws.com" for region in regions()), *GLOBAL,
              *ENDPOINT_NAMES]
    recorded = paths["names"].read_text().split() if paths["names"].is_file() else []
    if recorded != wanted or not all(path.exists() for path in paths.values()):
        paths["ca"].parent.mkdir(parents=True, exist_ok=True)
        generate(paths, "Kiln sandbox AWS CA", wanted)
        paths["names"].write_text("\n".join(wanted) + "\n")
    return paths


def trusted(state_dir: str | Path) -> list[Path]:
    """The CAs a machine trusts beside its image's: that of AWS's names, and that of the load
    balancers' certificates (sandbox/listener_cert.py), as an AMI trusts the public CAs that sign
    ACM's. The latter once made: Kiln makes it before it makes any listener."""
    from sandbox import listener_cert

    listeners = listener_cert.files(state_dir)["ca"]
    return [files(state_dir)["ca"], *([listeners] if listeners.is_file() else [])]


def system_bundle() -> str:
    """The system's CA bundle in a machine (the CA appended, as boot.py shows it): what a
    build's own Python environment is pointed at (AWS_CA_BUNDLE), its certifi being the
    package's, which no AMI's trust reaches."""
    found = [path for path in TRUST[:2] if Path("/", path).is_file()]
    return f"/{found[0] if found else TRUST[0]}"


def hosts_lines() -> str:
    """The /etc/hosts lines that send the names to ADDRESS."""
    return "".join(f"{ADDRESS} {name}\n" for name in names())
