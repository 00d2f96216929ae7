"""The yum repository on S3, against the sandbox's moto server and the real createrepo_c, rpm
and gpg."""

from __future__ import annotations

import json
import subprocess
import threading

import pytest

from cloud.errors import KilnError
from cloud.target import connect
from packager import repo, repodata
from tests.repo_helpers import S3Log, build_rpm, fresh_repo

# One worker runs the module (an xdist group): its module-scoped `rpms` is made once.
pytestmark = pytest.mark.xdist_group("repo")


@pytest.fixture(scope="module")
def rpms(tmp_path_factory):
    """A few tiny RPMs built once for the module."""
    folder = tmp_path_factory.mktemp("rpms")
    built = {}
    for name, version in [("alpha", "1.0.0"), ("alpha", "1.1.0"), ("alpha", "1.10.0"),
                          ("alpha", "2.0.0~rc.1"), ("beta", "0.1.0"), ("gamma", "3.0.0")]:
        built[(name, version)] = build_rpm(folder, name, version)
    built["alpha-other"] = build_rpm(folder, "alpha", "1.0.0", description="other bytes")
    return built


@pytest.fixture
def repo_config(admin_aws, tmp_path):
    """Overrides naming a fresh repo bucket and lock table in the sandbox (named so the
    operator's policy covers them, made by the administrator as bootstrap would)."""
    return fresh_repo(admin_aws, "t")


@pytest.fixture
def repo_aws(kiln_settings, repo_config):
    return connect(kiln_settings(**repo_config))


def repomd(aws) -> tuple[bytes, str]:
    target = repo.Repo.of(aws)
    return target.get(repo.REPOMD)


def test_publish_then_list_reads_primary(repo_aws, rpms):
    first = repo.publish(repo_aws, rpms[("alpha", "1.0.0")])
    assert first["status"] == "published"
    assert first["nevra"] == "alpha-1.0.0-1.noarch"
    assert first["sha256"] != first["source_sha256"]  # the published copy is signed
    listed = repo.list_packages(repo_aws)
    assert [(p["name"], p["version"], p["sha256"]) for p in listed] == [
        ("alpha", "1.0.0", first["sha256"])]
    assert listed[0]["path"] == "Packages/alpha-1.0.0-1.noarch.rpm"
    found = repo.find_package(repo_aws, "alpha", "1.0.0", "1")
    assert found["sha256"] == first["sha256"]
    assert repo.find_package(repo_aws, "alpha", "9.9.9", "1") is None


def test_publish_is_incremental_and_ordered(repo_aws, rpms):
    repo.publish(repo_aws, rpms[("alpha", "1.0.0")])
    log = S3Log(repo_aws.client("s3"))
    repo.publish(repo_aws, rpms[("beta", "0.1.0")])
    gets = log.keys("GetObject", "HeadObject")
    assert not [k for k in gets if "/Packages/alpha" in k], "another package was downloaded"
    puts = log.keys("PutObject", "CreateMultipartUpload")
    assert len(puts) <= 8, puts
    assert puts[0].endswith("Packages/beta-0.1.0-1.noarch.rpm")
    assert all("-primary" in k or "-filelists" in k or "-other" in k for k in puts[1:4])
    assert puts[4:6] == ["el9/x86_64/repodata/repomd.xml", "el9/x86_64/repodata/repomd.xml.asc"]
    assert {p["name"] for p in repo.list_packages(repo_aws)} == {"alpha", "beta"}


def test_same_bytes_is_a_no_op_and_other_bytes_are_refused(repo_aws, rpms):
    repo.publish(repo_aws, rpms[("alpha", "1.0.0")])
    before = repomd(repo_aws)
    again = repo.publish(repo_aws, rpms[("alpha", "1.0.0")])
    assert again["status"] == "unchanged"
    assert repomd(repo_aws) == before
    package = repo.Repo.of(repo_aws).head("Packages/alpha-1.0.0-1.noarch.rpm")
    with pytest.raises(KilnError, match="already published with other content.*immutable"):
        repo.publish(repo_aws, rpms["alpha-other"])
    assert repomd(repo_aws) == before
    after = repo.Repo.of(repo_aws).head("Packages/alpha-1.0.0-1.noarch.rpm")
    assert after["ETag"] == package["ETag"]


def test_package_left_by_an_interrupted_publish_is_listed_as_stored(repo_aws, rpms):
    repo.publish(repo_aws, rpms[("alpha", "1.0.0")])
    # An earlier publish of beta put its object (signed otherwise, here: not at all) and stopped
    # before the metadata: publish lists the bytes that are stored, not its own new signature.
    source = rpms[("beta", "0.1.0")]
    digest = repo.sha256_file(source)
    target = repo.Repo.of(repo_aws)
    target.s3.put_object(Bucket=target.bucket, Key=target.key("Packages/beta-0.1.0-1.noarch.rpm"),
                         Body=source.read_bytes(),
                         Metadata={"sha256": digest, "source-sha256": digest})
    result = repo.publish(repo_aws, source)
    assert (result["status"], result["sha256"]) == ("published", digest)
    listed = {p["name"]: p["sha256"] for p in repo.list_packages(repo_aws)}
    assert listed["beta"] == digest
    assert target.head("Packages/beta-0.1.0-1.noarch.rpm")["Metadata"]["sha256"] == digest


def test_two_publishes_at_once_lose_nothing(kiln_settings, repo_config, rpms):
    errors = []

    def publish(key):
        try:
            repo.publish(connect(kiln_settings(**repo_config)), rpms[key])
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=publish, args=(key,))
               for key in [("alpha", "1.0.0"), ("beta", "0.1.0"), ("gamma", "3.0.0")]]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    aws = connect(kiln_settings(**repo_config))
    assert {p["name"] for p in repo.list_packages(aws)} == {"alpha", "beta", "gamma"}


def test_failed_metadata_update_leaves_the_repo_as_it_was(repo_aws, rpms, monkeypatch):
    repo.publish(repo_aws, rpms[("alpha", "1.0.0")])
    before = repomd(repo_aws)

    def broken(tree, alone, old_repomd):
        raise KilnError("createrepo_c failed on purpose")

    monkeypatch.setattr(repodata, "append", broken)
    with pytest.raises(KilnError, match="on purpose"):
        repo.publish(repo_aws, rpms[("beta", "0.1.0")])
    assert repomd(repo_aws) == before
    assert repo.Repo.of(repo_aws).head("Packages/beta-0.1.0-1.noarch.rpm") is None


def test_upload_failing_midway_leaves_repomd_unchanged(repo_aws, rpms, monkeypatch):
    repo.publish(repo_aws, rpms[("alpha", "1.0.0")])
    before = repomd(repo_aws)
    real_put = repo.Repo.put

    def failing_put(self, href, body, content_type, **conditions):
        if href == repo.REPOMD:
            raise KilnError("cannot write repomd.xml: connection reset")
        return real_put(self, href, body, content_type, **conditions)

    monkeypatch.setattr(repo.Repo, "put", failing_put)
    with pytest.raises(KilnError, match="connection reset"):
        repo.publish(repo_aws, rpms[("beta", "0.1.0")])
    monkeypatch.undo()
    assert repomd(repo_aws) == before
    assert [p["name"] for p in repo.list_packages(repo_aws)] == ["alpha"]
    assert repo.Repo.of(repo_aws).head("Packages/beta-0.1.0-1.noarch.rpm") is None
    # The half-uploaded metadata is unreferenced: the next publish retires it.
    assert repo.publish(repo_aws, rpms[("beta", "0.1.0")])["status"] == "published"


def test_failed_signature_upload_restores_repomd(repo_aws, rpms, monkeypatch):
    repo.publish(repo_aws, rpms[("alpha", "1.0.0")])
    before = repomd(repo_aws)
    real_put = repo.Repo.put

    def failing_put(self, href, body, content_type, **conditions):
        if href.endswith(".asc"):
            raise KilnError("cannot write repomd.xml.asc: throttled")
        return real_put(self, href, body, content_type, **conditions)

    monkeypatch.setattr(repo.Repo, "put", failing_put)
    with pytest.raises(KilnError, match="throttled"):
        repo.publish(repo_aws, rpms[("beta", "0.1.0")])
    assert repomd(repo_aws)[0] == before[0]


def test_superseded_metadata_waits_out_the_grace_period(kiln_settings, repo_config, rpms):
    config = {"repo": {**repo_config["repo"], "metadata_grace_seconds": 3600}}
    aws = connect(kiln_settings(**config))
    target = repo.Repo.of(aws)
    repo.publish(aws, rpms[("alpha", "1.0.0")])
    first = set(repodata.data_files(repomd(aws)[0]).values())
    repo.publish(aws, rpms[("beta", "0.1.0")])
    present = set(target.listing("repodata"))
    assert first <= present, "superseded metadata deleted before the grace period"
    ledger = target.memory.read().ledger  # in the lock table, out of a bucket writer's reach
    assert first <= set(ledger)
    # With no grace left, the next run deletes what was superseded.
    aws = connect(kiln_settings(**repo_config))
    repo.publish(aws, rpms[("gamma", "3.0.0")])
    present = set(repo.Repo.of(aws).listing("repodata"))
    live = set(repodata.data_files(repomd(aws)[0]).values())
    assert present == live | {repo.REPOMD, f"{repo.REPOMD}.asc"}


def test_list_orders_versions_the_rpm_way(repo_aws, rpms):
    for key in [("alpha", "1.10.0"), ("alpha", "2.0.0~rc.1"), ("alpha", "1.0.0"),
                ("alpha", "1.1.0"), ("beta", "0.1.0")]:
        repo.publish(repo_aws, rpms[key])
    versions = [p["version"] for p in repo.list_packages(repo_aws, app="alpha")]
    assert versions == ["1.0.0", "1.1.0", "1.10.0", "2.0.0~rc.1"]


def test_prune_keeps_newest_per_name(repo_aws, rpms):
    for key in [("alpha", "1.0.0"), ("alpha", "1.1.0"), ("alpha", "1.10.0"), ("beta", "0.1.0")]:
        repo.publish(repo_aws, rpms[key])
    before = repomd(repo_aws)
    plan = repo.prune(repo_aws, keep=2, dry_run=True)
    assert [p["version"] for p in plan["remove"]] == ["1.0.0"]
    assert repomd(repo_aws) == before
    plan = repo.prune(repo_aws, keep=1)
    assert [(p["name"], p["version"]) for p in plan["remove"]] == [("alpha", "1.0.0"),
                                                                    ("alpha", "1.1.0")]
    listed = [(p["name"], p["version"]) for p in repo.list_packages(repo_aws)]
    assert listed == [("alpha", "1.10.0"), ("beta", "0.1.0")]
    target = repo.Repo.of(repo_aws)
    assert target.head("Packages/alpha-1.0.0-1.noarch.rpm") is None
    assert target.head("Packages/alpha-1.10.0-1.noarch.rpm") is not None
    assert repo.prune(repo_aws, keep=1)["remove"] == []


def test_repomd_signature_verifies_with_the_served_key(repo_aws, rpms, tmp_path):
    repo.publish(repo_aws, rpms[("alpha", "1.0.0")])
    target = repo.Repo.of(repo_aws)
    files = {"repomd.xml": target.get(repo.REPOMD)[0],
             "repomd.xml.asc": target.get(f"{repo.REPOMD}.asc")[0],
             "key": target.get(repo.KEY_FILE)[0]}
    for name, body in files.items():
        (tmp_path / name).write_bytes(body)
    home = tmp_path / "gnupg"
    home.mkdir(mode=0o700)
    gpg = ["gpg", "--batch", "--homedir", str(home)]
    subprocess.run([*gpg, "--import", str(tmp_path / "key")], check=True, capture_output=True)
    verified = subprocess.run([*gpg, "--verify", str(tmp_path / "repomd.xml.asc"),
                               str(tmp_path / "repomd.xml")], capture_output=True, text=True)
    assert verified.returncode == 0, verified.stderr
    assert "Good signature" in verified.stderr
    subprocess.run(["gpgconf", "--kill", "gpg-agent"], env={"GNUPGHOME": str(home)},
                   check=False, capture_output=True)


def test_repo_file_points_at_the_bucket(repo_aws, rpms):
    repo.publish(repo_aws, rpms[("alpha", "1.0.0")])
    text = repo.Repo.of(repo_aws).get(repo.REPO_FILE)[0].decode()
    base = repo.baseurl(repo_aws)
    bucket = repo_aws.settings.repo.bucket
    assert base == f"{repo_aws.client('s3').meta.endpoint_url}/{bucket}/el9/x86_64"
    assert f"baseurl={base}\n" in text
    assert "gpgcheck=1\n" in text and "repo_gpgcheck=1\n" in text
    assert f"gpgkey={repo.gpgkey_url(repo_aws)}\n" in text


def test_urls_are_virtual_hosted_on_aws(kiln_settings, monkeypatch):
    import boto3

    from cloud.aws import Aws

    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    settings = kiln_settings(target="aws", aws={"region": "eu-west-1"},
                             repo={"bucket": "acme-kiln-repo"})
    aws = Aws(settings, boto3.Session(region_name="eu-west-1"), "build", "123456789012")
    assert repo.baseurl(aws) == "https://acme-kiln-repo.s3.eu-west-1.amazonaws.com/el9/x86_64"
    assert repo.gpgkey_url(aws).endswith("/el9/x86_64/RPM-GPG-KEY-kiln")


def test_bad_input_is_one_clear_line(repo_aws, tmp_path):
    with pytest.raises(KilnError, match="no such RPM file"):
        repo.publish(repo_aws, tmp_path / "missing.rpm")
    junk = tmp_path / "junk.rpm"
    junk.write_text("not an rpm")
    with pytest.raises(KilnError, match="junk.rpm: not a readable RPM"):
        repo.publish(repo_aws, junk)


def test_missing_bucket_is_named(kiln_settings, repo_config, rpms):
    missing = "kiln-repo-123456789012-missing"  # the operator may read it, were it there
    aws = connect(kiln_settings(repo={**repo_config["repo"], "bucket": missing}))
    with pytest.raises(KilnError, match=f"repo bucket {missing} does not exist"):
        repo.publish(aws, rpms[("alpha", "1.0.0")])


def test_tasks_publish_list_prune(run_invoke, repo_config, rpms):
    published = run_invoke("publish", "--rpm", str(rpms[("alpha", "1.0.0")]), "--json",
                           overrides=repo_config, check=True)
    result = json.loads(published.stdout)
    assert result["status"] == "published" and result["name"] == "alpha"
    assert "target: sandbox" in published.stderr
    run_invoke("publish", "--rpm", str(rpms[("alpha", "1.1.0")]), overrides=repo_config,
               check=True)
    listed = json.loads(run_invoke("repo.list", "--json", "--app", "alpha",
                                   overrides=repo_config, check=True).stdout)
    assert listed["baseurl"].endswith(f"/{repo_config['repo']['bucket']}/el9/x86_64")
    assert [(p["version"], p["release"], p["arch"]) for p in listed["packages"]] == [
        ("1.0.0", "1", "noarch"), ("1.1.0", "1", "noarch")]
    assert all(len(p["sha256"]) == 64 for p in listed["packages"])
    dry = run_invoke("repo.prune", "--keep", "1", "--dry-run", overrides=repo_config,
                     check=True)
    assert "alpha-1.0.0-1.noarch" in dry.stderr
    refused = run_invoke("publish", "--rpm", str(rpms["alpha-other"]), overrides=repo_config)
    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines()[-1].startswith("kiln: s3://")
