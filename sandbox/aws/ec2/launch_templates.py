"""Instances launched from a launch template get its network interface settings.

AWS behaviour mirrored here (https://docs.aws.amazon.com/AWSEC2/latest/APIReference/
API_LaunchTemplateInstanceNetworkInterfaceSpecificationRequest.html): a template's
NetworkInterfaces[0] decides whether the instance gets a public IP (AssociatePublicIpAddress,
overriding the subnet's MapPublicIpOnLaunch) and which security groups it is in (Groups).
moto's RunInstances, and so Auto Scaling's launches, ignored both: every instance in a subnet
that maps public IPs got one. (RunInstances is sandbox.aws.ec2.run_instances's; this is the step
it takes first.)
"""

from __future__ import annotations


def network_settings(backend, kwargs: dict) -> None:
    """Fill RunInstances' `kwargs` with what its launch template's first interface says, where
    the request itself says nothing."""
    if kwargs.get("launch_template"):
        data = backend._get_template_from_args(kwargs["launch_template"]).data
        nic = (data.get("NetworkInterfaces") or [{}])[0]
        public = nic.get("AssociatePublicIpAddress")
        if public is not None and kwargs.get("associate_public_ip") is None:
            kwargs["associate_public_ip"] = str(public).lower() == "true"
        if nic.get("Groups") and not kwargs.get("security_group_ids"):
            kwargs["security_group_ids"] = list(nic["Groups"])
        if data.get("MetadataOptions") and not kwargs.get("metadata_options"):
            kwargs["metadata_options"] = dict(data["MetadataOptions"])


def instance_profile(backend, kwargs: dict, instance) -> None:
    """The launch template's IamInstanceProfile, associated with an instance launched from it
    (moto's RunInstances associates only a profile the request itself names)."""
    if not kwargs.get("launch_template") or instance.id in \
            backend.iam_instance_profile_associations:
        return
    data = backend._get_template_from_args(kwargs["launch_template"]).data
    profile = data.get("IamInstanceProfile") or {}
    if profile.get("Arn") or profile.get("Name"):
        backend.associate_iam_instance_profile(
            instance_id=instance.id, iam_instance_profile_arn=profile.get("Arn"),
            iam_instance_profile_name=profile.get("Name"))
