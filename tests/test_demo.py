"""The quick start's main job, `invoke demo`, end to end against a clean sandbox, twice: the
second run changes nothing (same RPM, same image, same promoted copy, same serving group)."""

import json

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("demo")]


def test_demo_bakes_promotes_and_deploys_then_reruns_as_a_no_op(clean_sandbox, run_invoke,
                                                               tmp_path):
    first = run_invoke("demo", check=True)
    assert "hello-web-v001  1.0.0" in first.stdout and "active" in first.stdout
    # The demo ends by asking the app itself, through its load balancer's HTTPS listener.
    assert "\n200 Hello from hello-web (version 1.0.0-1" in first.stdout
    assert "$ curl --cacert " in first.stderr and "https://hello-web.kiln.sandbox.test/" in (
        first.stderr)
    # Each server group machine ran the launch template's user data: Kiln's boot script wrote
    # the app's environment file (0600).
    written = list((clean_sandbox.state_dir / "machines/instances").glob(
        "*/upper/etc/kiln/environment"))
    assert len(written) == 2
    for path in written:
        assert path.stat().st_mode & 0o777 == 0o600
        assert "KILN_VERSION=1.0.0\n" in path.read_text()
    record = json.loads((tmp_path / "dist/release-hello-web-1.0.0-1.json").read_text())
    assert record["promotions"] and record["shares"]

    again = run_invoke("demo", check=True)
    assert "built from the same manifest and files" in again.stderr
    assert f"reusing image {record['image_id']}" in again.stderr
    assert "already serves all traffic from hello-web-v001" in again.stderr
    assert "hello-web-v002" not in again.stderr
