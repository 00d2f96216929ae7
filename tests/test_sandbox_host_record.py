"""What the sandbox records of this host for its instances (sandbox/machines/ssh_access.py):
a task run from a shell without chef-solo on PATH never forgets the chef-solo found before."""

import json

from sandbox.machines import ssh_access


def test_a_shell_without_chef_solo_keeps_the_recorded_one(tmp_path, monkeypatch):
    tool = tmp_path / "bin" / "chef-solo"
    tool.parent.mkdir()
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", str(tool.parent))
    ssh_access.configure(tmp_path / "state", 1234)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    host = ssh_access.configure(tmp_path / "state", 1235)
    recorded = json.loads(ssh_access.host_file(tmp_path / "state").read_text())
    assert host["chef_solo"] == recorded["chef_solo"] == str(tool)
    assert recorded["sandbox_ports"] == [1234, 1235]


def test_a_new_chef_solo_replaces_the_recorded_one(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    ssh_access.configure(tmp_path / "state", 1, chef_solo="/opt/chef/bin/chef-solo")
    host = ssh_access.configure(tmp_path / "state", 1, chef_solo="/opt/cinc/bin/cinc-solo")
    assert host["chef_solo"] == "/opt/cinc/bin/cinc-solo"
