"""The sandbox's certificate for the app environments' HTTPS listeners.

On AWS an environment's listener serves an ACM certificate the operator names
(`kiln.deploy.listener.certificate`). The sandbox makes its own: a private CA and a certificate
for `*.kiln.sandbox.test` signed by it, kept under the state directory (`tls/`, the key 0600),
imported into ACM in the deploy account and region as AWS's ImportCertificate does, and named in
the settings only when the target is the sandbox and none is configured. Clients verify the load
balancer against `tls/ca.crt`, with the certificate's name as the TLS server name.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from pathlib import Path

from cloud.apps import merge
from cloud.aws import new_session
from sandbox.aws.iam import identities

DOMAIN = "kiln.sandbox.test"
_IMPORTED: set[str] = set()  # ARNs this process put in the settings (re-checked after a reset)


def files(state_dir: str | Path) -> dict[str, Path]:
    folder = Path(state_dir) / "tls"
    return {"ca": folder / "ca.crt", "certificate": folder / "listener.crt",
            "key": folder / "listener.key"}


def ensure(state_dir: str | Path) -> dict[str, Path]:
    """The CA, certificate and key files, made on first use."""
    paths = files(state_dir)
    if not all(path.exists() for path in paths.values()):
        generate(paths, "Kiln sandbox CA", [DOMAIN, f"*.{DOMAIN}"])
    return paths


def generate(paths: dict[str, Path], authority: str, names: list[str]) -> None:
    """A new CA named `authority` ("ca"), and a server certificate for `names` (host names, or
    IP addresses) signed by it ("certificate", "key"), written to `paths`."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, authority)])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(days=1))
          .not_valid_after(now + datetime.timedelta(days=3650))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False,
                                       False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    leaf = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=395))
            .add_extension(x509.SubjectAlternativeName([_alternative(name) for name in names]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths["ca"].parent.mkdir(parents=True, exist_ok=True)
    pem = serialization.Encoding.PEM
    _write(paths["key"], key.private_bytes(pem, serialization.PrivateFormat.TraditionalOpenSSL,
                                           serialization.NoEncryption()), 0o600)
    _write(paths["certificate"], leaf.public_bytes(pem), 0o644)
    _write(paths["ca"], ca.public_bytes(pem), 0o644)


def _alternative(name: str):
    """A certificate's alternative name: an IP address's entry, else a host name's."""
    from cryptography import x509

    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def _write(path: Path, data: bytes, mode: int) -> None:
    temporary = path.with_suffix(".tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(data)
    os.replace(temporary, path)


def overlay(settings, box) -> None:
    """Name the sandbox's certificate in kiln.deploy.listener.certificate when none is set (or
    when the one this process named is gone after a reset), importing it into ACM in the deploy
    account and region; then likewise for each app and stack whose deploy account or region is
    another (a load balancer serves certificates of its own account and region only)."""
    deploy = settings.get("deploy")
    if deploy is None or "listener" not in deploy:
        return
    current = deploy.listener.get("certificate")
    if not current or current in _IMPORTED:
        acm = _acm(settings, box, _place(settings, deploy))
        if not (current and _exists(acm, current)):
            deploy.listener["certificate"] = import_into(acm, box.state_dir)
    for entry in (settings.get("apps") or {}).values():
        own = _own(settings, box, deploy, entry)
        for stack in entry.get("stacks") or []:
            _own(settings, box, merge(deploy, own), stack)


def _own(settings, box, base: dict, holder: dict) -> dict:
    """`holder`'s deploy settings (an app entry's or a stack's), given the sandbox's certificate
    of their account and region when they deploy elsewhere than `base` and name none."""
    own = holder.get("deploy") or {}
    merged = merge(base, own)
    place = _place(settings, merged)
    certificate = merged["listener"].get("certificate")
    if place == _place(settings, base) or (certificate and certificate not in _IMPORTED):
        return own
    own = merge(own, {"listener": {"certificate": import_into(_acm(settings, box, place),
                                                              box.state_dir)}})
    holder["deploy"] = own
    return own


def _place(settings, deploy: dict) -> tuple[str, str]:
    """(account name, region) a deploy tree runs in."""
    return deploy["account"], deploy.get("region") or settings.aws.region


def import_into(acm, state_dir) -> str:
    """The ARN of the sandbox certificate in this ACM client's account and region."""
    for summary in acm.list_certificates()["CertificateSummaryList"]:
        if summary.get("DomainName") == DOMAIN:
            _IMPORTED.add(summary["CertificateArn"])
            return summary["CertificateArn"]
    paths = ensure(state_dir)
    arn = acm.import_certificate(
        Certificate=paths["certificate"].read_bytes(), PrivateKey=paths["key"].read_bytes(),
        CertificateChain=paths["ca"].read_bytes(),
        Tags=[{"Key": "kiln:managed-by", "Value": "kiln"},
              {"Key": "kiln:role", "Value": "sandbox-listener-certificate"}])["CertificateArn"]
    _IMPORTED.add(arn)
    return arn


def _exists(acm, arn: str) -> bool:
    return any(s["CertificateArn"] == arn
               for s in acm.list_certificates()["CertificateSummaryList"])


def _acm(settings, box, place: tuple[str, str]):
    """ACM in an account and region, as the sandbox's administrator."""
    name, region = place
    keys = box.credentials("admin")
    session = new_session(aws_access_key_id=keys["AWS_ACCESS_KEY_ID"],
                          aws_secret_access_key=keys["AWS_SECRET_ACCESS_KEY"])
    account = settings.accounts[name]
    if account.id != identities.BUILD_ACCOUNT:
        admin_role = account.get("admin_role") or identities.ORGANIZATION_ROLE
        role = f"arn:aws:iam::{account.id}:role/{admin_role}"
        found = session.client("sts", region_name=region, endpoint_url=box.endpoint).assume_role(
            RoleArn=role, RoleSessionName="kiln-sandbox-certificate")["Credentials"]
        session = new_session(aws_access_key_id=found["AccessKeyId"],
                              aws_secret_access_key=found["SecretAccessKey"],
                              aws_session_token=found["SessionToken"])
    return session.client("acm", region_name=region, endpoint_url=box.endpoint)
