"""Small patches applied to moto inside the sandbox server before it serves.

Each one closes a gap between moto and documented AWS behaviour on a flow Kiln uses, has its own
test, and is listed in the README. Kiln's own code never bends around a moto gap.
"""

import importlib
from pathlib import Path

# Module names under sandbox.patches, applied in this order.
PATCHES: list[str] = [
    "shared_images",
    "image_snapshot_tags",
    "image_deprecation",
    "instances",
    "console_output",
    "instance_states",
    "base_images",
    "elb_health",
    "cfn_alarms",
    "quotas",
    "alarm_types",
    "timing",
    "launch_template_network",
    "cloudformation",
    "cloudwatch_metrics",
    "listener_ports",
    "security_groups",
    "load_balancers",
    "machine_images",
    "server_groups",
    "service_linked_roles",
    "launch_keys",
    "access_control",  # last: it seeds the sandbox's users with the other patches in place
]


def apply_all(state_dir: Path) -> list[str]:
    applied = []
    for name in PATCHES:
        importlib.import_module(f"sandbox.patches.{name}").apply(state_dir)
        applied.append(name)
    return applied
