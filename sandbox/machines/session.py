"""The forced command of a sandbox instance's key: the SSH session lands inside the instance.

    python -m sandbox.machines.session STATE_DIR INSTANCE_ID

sshd runs this for every session opened with a key that sandbox.machines.ssh_access authorized
for the instance. It enters the instance's namespaces and runs, as ec2-user in its home, the
command in $SSH_ORIGINAL_COMMAND with `sh -c`, a login shell when there is none, or the SFTP
server (the command configured for sshd's sftp subsystem arrives the same way), as on the
instance itself.
"""

from __future__ import annotations

import os
import sys
import time

from sandbox.machines import instances

SFTP = ("/usr/lib/openssh/sftp-server", "internal-sftp")


def main(state_dir: str, instance_id: str) -> None:
    command = os.environ.get("SSH_ORIGINAL_COMMAND", "")
    try:
        enter = instances.enter_command(state_dir, instance_id)
    except (RuntimeError, ValueError, KeyError) as error:
        sys.exit(f"sandbox: {error}")
    with open(instances.instance_dir(state_dir, instance_id) / "sessions.log", "a") as log:
        log.write(f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} "
                  f"{command or '(login shell)'}\n")
    if not command:
        argv = ["/bin/bash", "-l"]
    elif command in SFTP:
        argv = ["/bin/sh", "-c", 'cd && exec /usr/lib/openssh/sftp-server']
    else:
        argv = ["/bin/sh", "-c", 'cd && exec /bin/sh -c "$0"', command]
    os.execvp(enter[0], [*enter, *argv])


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
