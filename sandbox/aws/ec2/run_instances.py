"""EC2 instances reachable over SSH, as on AWS: the sandbox sshd stands in for the instance.

On AWS, an instance launched with a KeyName gets that key pair's public key in the login user's
authorized_keys (cloud-init does it at first boot), and is reached at its public IP. In the
sandbox, RunInstances starts a sandbox machine (sandbox.machines.ssh_access.launch), and its KeyName
authorizes the key pair's public key in the sandbox sshd, tied to that instance by a forced
command, only when the key pair is one Kiln's bake created in this sandbox (CreateKeyPair with
the tag kiln:role=bake-key): an imported key, or anyone else's, opens no session. Every public IP
assigns to an instance is 127.0.0.1, where that sshd listens (private IPs are kept). An instance
with no key whose image holds a machine (sandbox.machines.images: a bake's image, launched by
Auto Scaling, say) boots in the background while it is pending, as on EC2. Every machine runs
its user data as cloud-init does (sandbox.machines.cloudinit). Terminating
an instance (TerminateInstances, or any other way moto terminates one) removes its key and its
world; a sandbox reset forgets them all (sandbox.aws.reset).
"""

from __future__ import annotations

import base64
from pathlib import Path

from sandbox.aws import seams
from sandbox.aws.ec2 import instance_metadata, launch_templates, routes, security_groups
from sandbox.machines import images, ssh_access

PUBLIC_IP = "127.0.0.1"
BAKE_KEY = ("kiln:role", "bake-key")


def apply(state_dir: Path) -> None:
    from moto.ec2.models import elastic_network_interfaces
    from moto.ec2.models.instances import Instance, InstanceBackend
    from moto.ec2.models.key_pairs import KeyPairBackend

    seams.replace(elastic_network_interfaces, "random_public_ip", lambda: PUBLIC_IP,
                  signature="() -> str", owner=__name__)
    seams.wrap(KeyPairBackend, "create_key_pair", _after_create_key,
               signature="(self, name: str, key_type: str, tags: dict[str, str]) -> "
                         "moto.ec2.models.key_pairs.KeyPair", owner=__name__)
    seams.wrap(InstanceBackend, "run_instances", lambda moto: _run(moto, state_dir),
               signature="(self, image_id: 'str', count: 'int', user_data: 'Base64EncodedString "
                         "| None', security_group_names: 'list[str]', **kwargs: 'Any') -> "
                         "'Reservation'", owner=__name__)
    seams.wrap(Instance, "terminate", lambda moto: _after_terminate(moto, state_dir),
               signature="(self) -> 'InstanceState'", owner=__name__)


def _run(run_instances, state_dir: Path):
    def wrapper(backend, image_id, count, user_data, security_group_names, **kwargs):
        # First the launch template's network settings, which the instances are launched with;
        # then moto's launch; then the machines behind the instances.
        launch_templates.network_settings(backend, kwargs)
        reservation = run_instances(backend, image_id, count, user_data, security_group_names,
                                    **kwargs)
        for instance in reservation.instances:
            launch_templates.instance_profile(backend, kwargs, instance)
            layers = images.stack(state_dir, instance.image_id)
            script = _user_data(instance)
            # What of AWS it reaches, and its metadata service once it has booted.
            network = {"routes": routes.reach(backend, instance),
                       "on_boot": _serve_metadata(state_dir, backend, instance.id)}
            if instance.key_name:
                key = backend.key_pairs.get(instance.key_name)
                admitted = key.public_key if key is not None and _baked(key) else None
                images.launched(state_dir, instance.id, instance.image_id)
                ssh_access.launch(state_dir, instance.id, instance.private_ip_address,
                                 public_key=admitted, layers=layers or (), user_data=script,
                                 ssh_from=security_groups.ssh_sources(state_dir, backend,
                                                                      instance), **network)
            elif layers:
                # An image that holds a machine (a bake's), launched by Auto Scaling, say: it
                # boots while pending, and runs its enabled units and its user data.
                images.launched(state_dir, instance.id, instance.image_id)
                ssh_access.launch_later(state_dir, instance.id, instance.private_ip_address,
                                       layers=layers, user_data=script, **network)
            # Any other instance nobody logs into, of an image with no machine in it (one
            # RegisterImage made), has nothing to run: no machine behind it.
        return reservation

    return wrapper


def _serve_metadata(state_dir: Path, backend, instance_id: str):
    return lambda: instance_metadata.start(state_dir, backend, instance_id)


def _user_data(instance) -> bytes | None:
    """The instance's user data as its cloud-init reads it (moto keeps it base64-encoded)."""
    encoded = getattr(instance, "user_data", None)
    if isinstance(encoded, list):
        encoded = encoded[0] if encoded else None
    if encoded is None:
        return None
    raw = encoded.as_bytes() if hasattr(encoded, "as_bytes") else str(encoded).encode()
    return base64.b64decode(raw) or None


def _baked(key) -> bool:
    """A key pair that Kiln's bake created here: CreateKeyPair tagged as a bake key."""
    return getattr(key, "made_by_bake", False)


def _after_create_key(create_key_pair):
    def wrapper(backend, name, key_type, tags, *args, **kwargs):
        key = create_key_pair(backend, name, key_type, tags, *args, **kwargs)
        key.made_by_bake = (tags or {}).get(BAKE_KEY[0]) == BAKE_KEY[1]
        return key

    return wrapper


def _after_terminate(terminate, state_dir: Path):
    def wrapper(instance, *args, **kwargs):
        previous = terminate(instance, *args, **kwargs)
        ssh_access.terminate(state_dir, instance.id)
        instance_metadata.stop(instance.id)
        return previous

    return wrapper
