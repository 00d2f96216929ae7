"""sandbox/aws/persistence.py without a server: which requests the snapshot waits for, what
`sandbox.up` says of a restore, and a snapshot that cannot be read (kept aside, never loaded).
tests/test_sandbox_crash.py kills real servers."""

from __future__ import annotations

from sandbox.aws import persistence


def test_reads_do_not_wait_for_a_snapshot_and_changes_do():
    assert not persistence.changing("GET", b"", {})
    assert not persistence.changing("POST", b"Action=DescribeInstances&Version=2016-11-15", {})
    assert not persistence.changing("POST", b"{}", {"HTTP_X_AMZ_TARGET":
                                                    "DynamoDB_20120810.GetItem"})
    assert persistence.changing("POST", b"Action=RunInstances&Version=2016-11-15", {})
    assert persistence.changing("POST", b"{}", {"HTTP_X_AMZ_TARGET":
                                                "DynamoDB_20120810.PutItem"})
    assert persistence.changing("PUT", b"rpm bytes", {})  # an S3 upload
    assert persistence.changing("POST", b"", {})  # /moto-api/reset


def test_a_restore_is_one_line_naming_what_did_not_come_back():
    line = persistence.summary({
        "snapshot": True, "saved": 0, "services": ["ec2", "iam", "s3"], "accounts": ["1", "2"],
        "stopped_instances": ["i-1", "i-2"], "layers_freed_of": ["ami-1"],
        "left_out": {"acm": "cannot pickle"}})
    assert "\n" not in line
    assert line.startswith("restored 3 services of 2 accounts saved ")
    assert "2 instances whose machines ended with the server are stopped" in line
    assert "1 images made after the snapshot are gone" in line
    assert line.endswith("not kept: acm")
    assert persistence.summary({"snapshot": False}) == "no snapshot: a new sandbox"


def test_an_unreadable_snapshot_is_kept_aside_and_said(tmp_path):
    (tmp_path / persistence.SNAPSHOT).write_bytes(b"not a pickle")
    report = persistence.restore(tmp_path)
    assert report["unreadable"] and report["kept_as"] == "aws-state.unreadable"
    assert not (tmp_path / persistence.SNAPSHOT).exists()
    assert (tmp_path / "aws-state.unreadable").read_bytes() == b"not a pickle"
    assert "could not be read" in persistence.summary(report)
