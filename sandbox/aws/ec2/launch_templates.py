"""Instances launched from a launch template get its network interface settings.

AWS behaviour mirrored here (https://docs.aws.amazon.com/AWSEC2/latest/APIReference/
API_LaunchTemplateInstanceNetworkInterfaceSpecificationRequest.html): a template's
NetworkInterfaces[0] decides whether the instance gets a public IP (AssociatePublicIpAddress,
overriding the subnet's MapPublicIpOnLaunch) and which security groups it is in (Groups).
moto's RunInstances, and so Auto Scaling's launches, ignored both: every instance in a subnet
that maps public IPs got one.
"""

from __future__ import annotations

from pathlib import Path


def apply(state_dir: Path) -> None:
    from moto.ec2.models.instances import InstanceBackend

    original = InstanceBackend.run_instances
    if getattr(original, "sandbox_network", False):
        return

    def run_instances(self, image_id, count, user_data, security_group_names, **kwargs):
        if kwargs.get("launch_template"):
            data = self._get_template_from_args(kwargs["launch_template"]).data
            nic = (data.get("NetworkInterfaces") or [{}])[0]
            public = nic.get("AssociatePublicIpAddress")
            if public is not None and kwargs.get("associate_public_ip") is None:
                kwargs["associate_public_ip"] = str(public).lower() == "true"
            if nic.get("Groups") and not kwargs.get("security_group_ids"):
                kwargs["security_group_ids"] = list(nic["Groups"])
        return original(self, image_id, count, user_data, security_group_names, **kwargs)

    run_instances.__wrapped__ = original
    run_instances.sandbox_network = True
    InstanceBackend.run_instances = run_instances
