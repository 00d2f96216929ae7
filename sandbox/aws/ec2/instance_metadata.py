"""The sandbox's EC2 side of an instance's metadata service (sandbox.machines.metadata).

Once an instance's machine has booted, its IMDS answers inside it from the instance as EC2 now
holds it: its metadata options (HttpTokens, HttpEndpoint; a launch template's too), its instance
profile's role, whose temporary credentials (STS AssumeRole by EC2, as the role's trust policy
lets ec2.amazonaws.com) are renewed five minutes before they expire, as EC2 renews them.
The service ends with the instance.
"""

from __future__ import annotations

import json
import threading
from datetime import timedelta
from pathlib import Path

from sandbox.machines import instances as machines
from sandbox.machines import metadata

DURATION = 6 * 3600  # seconds EC2's role credentials last
RENEW = timedelta(minutes=5)
_services: dict[str, metadata.Service] = {}
_lock = threading.Lock()


def start(state_dir: Path, backend, instance_id: str) -> None:
    """Serve the instance's metadata inside it, unless its HttpEndpoint is disabled."""
    instance = backend.get_instance(instance_id)
    if instance.metadata_options.http_endpoint == "disabled":
        return
    pid = machines.init_pid(state_dir, instance_id)
    sessions: dict = {}
    service = metadata.serve(pid, lambda: view(backend, instance_id, sessions))
    with _lock:
        _services[instance_id] = service


def stop(instance_id: str) -> None:
    with _lock:
        service = _services.pop(instance_id, None)
    if service:
        service.close()


def stop_all() -> None:
    for instance_id in list(_services):
        stop(instance_id)


def view(backend, instance_id: str, sessions: dict) -> dict:
    """What the instance's IMDS answers now."""
    instance = backend.get_instance(instance_id)
    zone = instance.placement.zone
    role = _role(backend, instance_id)
    meta = {"instance-id": instance.id, "ami-id": instance.image_id,
            "instance-type": instance.instance_type, "local-ipv4": instance.private_ip_address,
            "hostname": instance.private_dns_name,
            "local-hostname": instance.private_dns_name,
            "placement/availability-zone": zone, "placement/region": backend.region_name}
    if instance.public_ip:
        meta["public-ipv4"] = instance.public_ip
    if role:
        meta["iam/info"] = _info(backend, instance_id)
    identity = {"accountId": backend.account_id, "availabilityZone": zone,
                "region": backend.region_name, "instanceId": instance.id,
                "imageId": instance.image_id, "instanceType": instance.instance_type,
                "privateIp": instance.private_ip_address}
    return {"tokens_required": instance.metadata_options.http_tokens == "required",
            "meta": meta, "identity": identity, "role": role.name if role else None,
            "user_data": _user_data(instance),
            "credentials": lambda: _credentials(backend, instance_id, role, sessions)}


def _profile(backend, instance_id: str):
    association = backend.iam_instance_profile_associations.get(instance_id)
    return association.iam_instance_profile if association else None


def _role(backend, instance_id: str):
    profile = _profile(backend, instance_id)
    return profile.roles[0] if profile and profile.roles else None


def _info(backend, instance_id: str) -> str:
    profile = _profile(backend, instance_id)
    return json.dumps({"Code": "Success", "InstanceProfileArn": profile.arn,
                       "InstanceProfileId": profile.id}, indent=2)


def _credentials(backend, instance_id: str, role, sessions: dict) -> dict:
    from moto.core.utils import utcnow
    from moto.sts.models import sts_backends

    from sandbox.aws.codepipeline.service_role import trusts

    if not trusts(role.arn, "ec2.amazonaws.com"):
        return {"Code": "AssumeRoleUnauthorizedAccess",
                "Message": f"EC2 cannot assume the role {role.name}. Please see "
                           "documentation at https://docs.aws.amazon.com/IAM/latest/UserGuide/"
                           "id_roles_use_switch-role-ec2.html#troubleshoot_roles_ec2",
                "LastUpdated": utcnow().strftime("%Y-%m-%dT%H:%M:%SZ")}
    session = sessions.get(role.arn)
    if session is None or session.expiration - RENEW <= utcnow():
        account = role.arn.split(":")[4]
        session = sts_backends[account]["aws"].assume_role(
            region_name=backend.region_name, role_session_name=instance_id,
            role_arn=role.arn, policy="", duration=DURATION, external_id="")
        sessions.clear()
        sessions[role.arn] = session
    return {"AccessKeyId": session.access_key_id, "SecretAccessKey": session.secret_access_key,
            "Token": session.session_token,
            "Expiration": session.expiration.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "LastUpdated": utcnow().strftime("%Y-%m-%dT%H:%M:%SZ")}


def _user_data(instance) -> bytes | None:
    from sandbox.aws.ec2.run_instances import _user_data

    return _user_data(instance)
