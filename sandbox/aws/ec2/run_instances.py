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
world; a sandbox reset forgets them all.
"""

from __future__ import annotations

import base64
import functools
from pathlib import Path

from sandbox.aws.ec2 import security_groups
from sandbox.machines import images, ssh_access

PUBLIC_IP = "127.0.0.1"
BAKE_KEY = ("kiln:role", "bake-key")


def apply(state_dir: Path) -> None:
    from moto.ec2.models import elastic_network_interfaces
    from moto.ec2.models.instances import Instance, InstanceBackend
    from moto.ec2.models.key_pairs import KeyPairBackend
    from moto.moto_api._internal.models import MotoAPIBackend

    elastic_network_interfaces.random_public_ip = lambda: PUBLIC_IP
    KeyPairBackend.create_key_pair = _after_create_key(KeyPairBackend.create_key_pair)
    InstanceBackend.run_instances = _after_run(InstanceBackend.run_instances, state_dir)
    Instance.terminate = _after_terminate(Instance.terminate, state_dir)
    MotoAPIBackend.reset = _after_reset(MotoAPIBackend.reset, state_dir)


def _after_run(run_instances, state_dir: Path):
    @functools.wraps(run_instances)
    def wrapper(backend, *args, **kwargs):
        reservation = run_instances(backend, *args, **kwargs)
        for instance in reservation.instances:
            layers = images.stack(state_dir, instance.image_id)
            user_data = _user_data(instance)
            if instance.key_name:
                key = backend.key_pairs.get(instance.key_name)
                admitted = key.public_key if key is not None and _baked(key) else None
                images.launched(state_dir, instance.id, instance.image_id)
                ssh_access.launch(state_dir, instance.id, instance.private_ip_address,
                                 public_key=admitted, layers=layers or (), user_data=user_data,
                                 ssh_from=security_groups.ssh_sources(state_dir, backend,
                                                                      instance))
            elif layers:
                # An image that holds a machine (a bake's), launched by Auto Scaling, say: it
                # boots while pending, and runs its enabled units and its user data.
                images.launched(state_dir, instance.id, instance.image_id)
                ssh_access.launch_later(state_dir, instance.id, instance.private_ip_address,
                                       layers=layers, user_data=user_data)
            # Any other instance nobody logs into, of an image with no machine in it (one
            # RegisterImage made), has nothing to run: no machine behind it.
        return reservation

    return wrapper


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
    @functools.wraps(create_key_pair)
    def wrapper(backend, name, key_type, tags, *args, **kwargs):
        key = create_key_pair(backend, name, key_type, tags, *args, **kwargs)
        key.made_by_bake = (tags or {}).get(BAKE_KEY[0]) == BAKE_KEY[1]
        return key

    return wrapper


def _after_terminate(terminate, state_dir: Path):
    @functools.wraps(terminate)
    def wrapper(instance, *args, **kwargs):
        previous = terminate(instance, *args, **kwargs)
        ssh_access.terminate(state_dir, instance.id)
        return previous

    return wrapper


def _after_reset(reset, state_dir: Path):
    @functools.wraps(reset)
    def wrapper(backend, *args, **kwargs):
        result = reset(backend, *args, **kwargs)
        ssh_access.forget_all(state_dir)
        return result

    return wrapper
