"""sandbox/machines/cloudinit.py: user data turned into cloud-init's stages for an instance.

The stages themselves run inside instances (tests/test_sandbox_server_groups.py); here, what
`prepare` leaves in a fresh writable layer, and that the scripts it makes never read user data
as shell.
"""

from __future__ import annotations

import gzip
import subprocess

import yaml

from sandbox.machines import cloudinit

ID = "i-0123456789abcdef0"


def prepared(tmp_path, user_data: bytes):
    upper = tmp_path / "upper"
    upper.mkdir()
    cloudinit.prepare(upper, ID, user_data)
    return upper, upper / "var/lib/cloud/instances" / ID


def test_a_gzip_compressed_script_is_the_instances_first_part(tmp_path):
    script = b"#!/bin/bash\necho hi\n"
    upper, here = prepared(tmp_path, gzip.compress(script))
    assert (upper / "var/lib/cloud/data/instance-id").read_text() == ID + "\n"
    assert (here / "scripts/part-001").read_bytes() == script
    assert (here / "scripts/part-001").stat().st_mode & 0o777 == 0o700
    assert (here / "user-data.txt").stat().st_mode & 0o777 == 0o600


def test_write_files_content_is_never_shell(tmp_path):
    target = tmp_path / "out" / "file"
    content = "$(touch pwned) `touch pwned2` 'quoted' \"double\"\n"
    config = {"write_files": [
        {"path": str(target), "permissions": "0600", "content": content},
        {"path": str(target), "content": "more", "append": True}]}
    _upper, here = prepared(tmp_path, b"#cloud-config\n" + yaml.safe_dump(config).encode())
    subprocess.run(["/bin/sh", str(here / "write-files")], check=True, cwd=tmp_path)
    assert target.read_text() == content + "more"
    assert target.stat().st_mode & 0o777 == 0o644  # the last entry's mode, as cloud-init does
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "pwned2").exists()


def test_runcmd_lists_are_argv_and_strings_are_shell_lines(tmp_path):
    config = b"#cloud-config\nruncmd:\n  - [echo, 'a b; touch pwned']\n  - echo $HOME\n"
    _upper, here = prepared(tmp_path, config)
    assert (here / "scripts/runcmd").read_text() == (
        "#!/bin/sh\necho 'a b; touch pwned'\necho $HOME\n")


def test_user_data_cloud_init_would_refuse_is_logged_and_runs_nothing(tmp_path):
    config = (b"#cloud-config\nwrite_files:\n  - path: etc/relative\n    content: x\n"
              b"runcmd: [true]\n")
    upper, here = prepared(tmp_path, config)
    log = (upper / "var/log/cloud-init-output.log").read_text()
    assert log == ("cloud-init: user data: write_files[0].path: must be an absolute path on one "
                   "line, got 'etc/relative'\n")
    assert list((here / "scripts").iterdir()) == [] and not (here / "write-files").exists()


def test_an_instance_without_user_data_gets_only_its_id(tmp_path):
    upper, here = prepared(tmp_path, b"")
    assert (upper / "var/lib/cloud/data/instance-id").is_file() and not here.exists()
