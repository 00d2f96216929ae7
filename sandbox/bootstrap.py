"""The sandbox's side of `invoke bootstrap`: dnf clients read the repository from loopback.

On AWS dnf reads the repo bucket through the bake VPC's S3 endpoint; in the sandbox every client is
on this host, so the repo bucket policy lets the sandbox host's /32 read (`aws:SourceIp`).
"""


def overlay(settings):
    """Add the sandbox host to kiln.bootstrap.repo_read_cidrs; return the same settings."""
    boot = settings.get("bootstrap")
    if boot is not None and not boot.get("repo_read_cidrs"):
        boot["repo_read_cidrs"] = [f"{settings.sandbox.host}/32"]
    return settings
