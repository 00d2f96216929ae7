"""The sandbox's side of `invoke bootstrap`: dnf clients read the repository from loopback, and
the sandbox's operator user is the identity the deployer roles trust.

On AWS dnf reads the repo bucket through the bake VPC's S3 endpoint; in the sandbox every client is
on this host, so the repo bucket policy lets the sandbox host's /32 read (`aws:SourceIp`).
"""

from sandbox.aws.iam import identities


def overlay(settings):
    """Fill kiln.bootstrap.repo_read_cidrs, operator_principals and
    kiln.deploy.self_service.source_cidrs when empty; return the same settings."""
    service = (settings.get("deploy") or {}).get("self_service")
    if service is not None and not service.get("source_cidrs"):
        service["source_cidrs"] = [f"{settings.sandbox.host}/32"]  # every client is this host
    boot = settings.get("bootstrap")
    if boot is None:
        return settings
    if not boot.get("repo_read_cidrs"):
        boot["repo_read_cidrs"] = [f"{settings.sandbox.host}/32"]
    if not boot.get("operator_principals"):
        boot["operator_principals"] = [
            f"arn:aws:iam::{identities.BUILD_ACCOUNT}:user/{identities.USERS['operator']}"]
    return settings
