"""The sandbox's AWS: moto's server, with the behaviour AWS documents where moto differs.

Laid out by the AWS service each part stands in for (as moto lays out its own): iam/ (SigV4,
the action table, policy evaluation, identities, resource naming), ec2/, elbv2/, autoscaling/,
cloudformation/, cloudwatch/, codepipeline/, codebuild/, and the cross-service quotas and
pending-state timing. Each module closes a gap between moto and AWS on a flow Kiln uses, has
its own test, and is listed in docs/sandbox.md. Kiln's own code never bends around a moto gap.
"""

import importlib
from pathlib import Path

# Modules under sandbox.aws, applied in this order.
PATCHES: list[str] = [
    "ec2.image_sharing",
    "ec2.image_deprecation",
    "ec2.run_instances",
    "ec2.routes",  # what an instance reaches of AWS follows its VPC's routes
    "ec2.console_output",
    "ec2.instance_states",
    "ec2.base_images",
    "elbv2.target_health",
    "cloudformation.alarm_resources",
    "quotas",
    "cloudwatch.alarm_types",
    "timing",
    "cloudformation.stacks",
    "cloudformation.rollback",
    "cloudformation.conditions",  # !Condition inside !And, !Or, !Not
    "cloudformation.listener_actions",
    "cloudformation.retain",
    "cloudwatch.statistics",
    "elbv2.listeners",
    "ec2.security_groups",
    "elbv2.load_balancers",
    "ec2.images",  # CreateImage, CopyImage, DescribeImages, DeregisterImage
    "ec2.image_pages",
    "reset",
    "autoscaling.server_groups",
    "iam.service_linked_roles",
    "autoscaling.launch_keys",
    "autoscaling.template_propagation",
    "autoscaling.lifecycle_hooks",  # launching instances wait in Pending:Wait for their hooks
    "kms.alias_pages",
    "elbv2.rule_limits",
    "lived_in",
    "iam.simulation",
    "codebuild.builds",  # builds run on sandbox machines
    "codepipeline.executions",  # executions run stage by stage
    "cloudformation.pipeline_resources",
    "cloudformation.secret_resources",
    "persistence",  # restores the last snapshot before the users are seeded
    "iam.access_control",  # last: it seeds the sandbox's users with the other patches in place
]


def apply_all(state_dir: Path) -> list[str]:
    applied = []
    for name in PATCHES:
        importlib.import_module(f"sandbox.aws.{name}").apply(state_dir)
        applied.append(name)
    return applied
