"""What a sandbox instance's cloud-init wrote: its boot script's output, once it has ended."""

from __future__ import annotations

import time

from sandbox.machines import instances as machines


def console(box, instance_id: str) -> str:
    """The instance's cloud-init output once its boot script has ended."""
    log = machines.upper(box.state_dir, instance_id) / "var/log/cloud-init-output.log"
    deadline = time.monotonic() + 60
    text = ""
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace") if log.is_file() else ""
        if "Cloud-init finished" in text:
            return text
        time.sleep(0.2)
    raise AssertionError(f"the boot script did not end: {text[-500:]}")
