"""The sandbox sshd: a real OpenSSH sshd on loopback, its state under <state_dir>/sshd/."""

import socket
import subprocess

from sandbox.sshd import Sshd, current_user


def test_sandbox_up_starts_sshd_and_a_second_up_reuses_it(sandbox_box):
    sshd = Sshd(sandbox_box.state_dir)
    assert sshd.running()
    port = sshd.port
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        assert sock.recv(64).startswith(b"SSH-2.0-OpenSSH")
    sandbox_box.up()
    assert Sshd(sandbox_box.state_dir).port == port


def test_config_allows_keys_only_for_the_current_user_and_keeps_state_in_its_dir(tmp_path):
    sshd = Sshd(tmp_path)
    try:
        sshd.up()
        config = sshd.config.read_text()
        for line in ("PasswordAuthentication no", "KbdInteractiveAuthentication no",
                     "UsePAM no", "StrictModes no", "PermitRootLogin prohibit-password",
                     f"AllowUsers {current_user()}", f"AuthorizedKeysFile {sshd.authorized_keys}",
                     "ListenAddress 127.0.0.1"):
            assert line in config.splitlines()
        made = {p.name for p in (tmp_path / "sshd").iterdir()}
        assert {"sshd_config", "ssh_host_ed25519_key", "sshd.pid", "sshd.port", "sshd.log",
                "authorized_keys"} <= made
        assert {p.name for p in tmp_path.iterdir()} == {"sshd"}
    finally:
        assert sshd.down()
    assert not sshd.running()
    assert not sshd.down()


def test_a_key_that_is_not_authorized_is_refused(sandbox_box, tmp_path):
    key = tmp_path / "stranger"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    result = subprocess.run(
        ["ssh", "-i", str(key), "-p", str(Sshd(sandbox_box.state_dir).port),
         "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "StrictHostKeyChecking=no",
         "-o", "UserKnownHostsFile=/dev/null", f"{current_user()}@127.0.0.1", "true"],
        capture_output=True, text=True, timeout=30)
    assert result.returncode == 255
    assert "Permission denied (publickey)" in result.stderr
