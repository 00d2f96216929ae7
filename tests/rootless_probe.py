"""Run by tests/test_sandbox_rootless.py as a user without root: a sandbox of its own, one
instance, a session into it. Prints what it saw as JSON on the last line.

    python tests/rootless_probe.py STATE_DIR
"""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import paramiko
from fabric import Config, Connection

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sandbox.control import Sandbox  # noqa: E402
from sandbox.sshd import Sshd, current_user  # noqa: E402
from tests.network_helpers import admin_session  # noqa: E402
from tests.test_sandbox_instances import BAKE_KEY_TAGS, base_image  # noqa: E402

COMMANDS = {
    "os": ". /etc/os-release && echo $ID $VERSION_ID",
    "user": "id -un; id -u",
    "root": "sudo -n id -u",
    "write": "echo kept | sudo -n tee /usr/local/bin/kiln-probe >/dev/null && "
             "sudo -n mkdir -p /opt/app && sudo -n chown ec2-user /opt/app && "
             "stat -c %U /opt/app && cat /usr/local/bin/kiln-probe",
    "repo": "curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:$KILN_PORT/",
    "chef": "sudo -n chef-solo --version",
    "host": "test -e /usr/bin/zcat && echo programs; ls /home",
}


def main(state_dir: str) -> None:
    box = Sandbox(state_dir)
    box.up()
    seen = {}
    try:
        ec2 = admin_session(box).client("ec2")
        pem = ec2.create_key_pair(KeyName="rootless", KeyType="ed25519",
                                  TagSpecifications=BAKE_KEY_TAGS)["KeyMaterial"]
        instance = ec2.run_instances(ImageId=base_image(ec2), MinCount=1, MaxCount=1,
                                     KeyName="rootless")["Instances"][0]
        key = paramiko.Ed25519Key.from_private_key(io.StringIO(pem))
        port = box.moto.port
        with Connection(instance["PublicIpAddress"], user=current_user(),
                        port=Sshd(box.state_dir).port, connect_timeout=10,
                        config=Config(overrides={"run": {"in_stream": False}}),
                        connect_kwargs={"pkey": key, "look_for_keys": False,
                                        "allow_agent": False}) as ssh:
            for name, command in COMMANDS.items():
                result = ssh.run(command.replace("$KILN_PORT", str(port)), warn=True, hide=True)
                seen[name] = [result.exited, result.stdout.strip(), result.stderr.strip()[-300:]]
    finally:
        box.down()
    print(json.dumps(seen))


if __name__ == "__main__":
    main(sys.argv[1])
