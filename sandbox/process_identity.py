"""Which process a recorded pid named: the boot it ran in and its start time.

A pid the sandbox wrote down (its server's, an instance's init) names another process after a
reboot, and may after a long run: signalling or entering it then would hit somebody else's
process (a user's own `systemd --user` has the same name as an instance's init). So the
sandbox records this identity beside each pid and acts on the pid only while it still matches.
"""

from __future__ import annotations

from pathlib import Path

BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


def of(pid: int | None) -> str | None:
    """`<boot id>:<start time in clock ticks>` of a live process, else None."""
    if not pid:
        return None
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        boot = BOOT_ID.read_text().strip()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return f"{boot}:{fields[19]}"  # field 22 of stat: starttime (fields[0] is field 3)


def same(pid: int | None, recorded: str | None) -> bool:
    """Whether `pid` is still the process recorded; True when nothing was recorded (a record
    from before identities were kept), so the caller's own checks decide."""
    if recorded is None:
        return True
    return of(pid) == recorded
