"""The repository's memory of itself, in the lock table: a lost, shrunken or older index is an
error every reader names (never an empty repository), `invoke repo.verify --repair` puts it
back from the bucket's versions or the package objects, and nothing in the bucket (a ledger
there, an older repomd.xml) makes Kiln delete what the current metadata lists."""

from __future__ import annotations

import base64
import json

import pytest

from cloud.errors import KilnError
from cloud.target import connect
from packager import repo, repodata
from packager.memory import Written
from tests.deploy_helpers import deployer
from tests.repo_helpers import fresh_repo, three_rpms

# One worker runs the module (an xdist group): its module-scoped `rpms` is made once.
pytestmark = pytest.mark.xdist_group("repo-memory")

ALPHA, BETA, GAMMA = (f"Packages/{n}-1.0.0-1.noarch.rpm" for n in ("alpha", "beta", "gamma"))


@pytest.fixture(scope="module")
def rpms(tmp_path_factory):
    return three_rpms(tmp_path_factory.mktemp("rpms"))


@pytest.fixture
def repo_config(admin_aws):
    return fresh_repo(admin_aws, "m")


@pytest.fixture
def repo_aws(kiln_settings, repo_config):
    return connect(kiln_settings(**repo_config))


@pytest.fixture
def two(repo_aws, rpms):
    """alpha and beta published: revisions 1 and 2."""
    repo.publish(repo_aws, rpms["alpha"])
    repo.publish(repo_aws, rpms["beta"])
    return repo_aws


@pytest.fixture
def writer(admin_aws, repo_config):
    """Whoever can write the repo bucket (and not the lock table)."""
    s3 = admin_aws.client("s3")
    bucket = repo_config["repo"]["bucket"]
    return lambda: (s3, bucket, "el9/x86_64/")


def names(aws) -> list[str]:
    return [p["name"] for p in repo.list_packages(aws)]


def kiln_lines(result) -> list[str]:
    assert "Traceback" not in result.stderr, result.stderr
    return [line for line in result.stderr.splitlines() if line.startswith("kiln: ")]


def delete_index(writer) -> None:
    s3, bucket, prefix = writer()
    for href in (repo.REPOMD, f"{repo.REPOMD}.asc"):
        s3.delete_object(Bucket=bucket, Key=prefix + href)


def put_back_version(writer, revision: int) -> None:
    """An older repomd.xml (and its .asc) put back from the bucket's versions."""
    s3, bucket, prefix = writer()
    versions = s3.list_object_versions(Bucket=bucket, Prefix=prefix + repo.REPOMD)["Versions"]
    for version in versions:
        if version["Key"] != prefix + repo.REPOMD:
            continue
        body = s3.get_object(Bucket=bucket, Key=version["Key"],
                             VersionId=version["VersionId"])["Body"].read()
        if repodata.revision(body) == revision:
            s3.copy_object(Bucket=bucket, Key=version["Key"], CopySource={
                "Bucket": bucket, "Key": version["Key"], "VersionId": version["VersionId"]})
            signature = s3.head_object(Bucket=bucket, Key=version["Key"])["Metadata"][
                repo.SIGNATURE_META]
            s3.put_object(Bucket=bucket, Key=f"{version['Key']}.asc",
                          Body=base64.b64decode(signature))
            return
    raise AssertionError(f"no version of repomd.xml is revision {revision}")


def test_each_write_raises_the_revision_and_the_record_names_it(repo_aws, rpms):
    target = repo.Repo.of(repo_aws)
    for number, name in enumerate(("alpha", "beta", "gamma"), start=1):
        repo.publish(repo_aws, rpms[name])
        body = target.get(repo.REPOMD)[0]
        assert repodata.revision(body) == number
        recorded = target.memory.read()
        assert recorded.confirmed.revision == number and recorded.pending is None
        assert recorded.confirmed.packages == number
    repo.prune(repo_aws, keep=1)  # one version of each name: nothing to remove, nothing written
    assert repodata.revision(target.get(repo.REPOMD)[0]) == 3


def test_a_missing_index_is_an_error_not_an_empty_repository(two, rpms, writer, run_invoke,
                                                             repo_config):
    delete_index(writer)
    target = repo.Repo.of(two)
    published = run_invoke("publish", "--rpm", str(rpms["gamma"]), overrides=repo_config)
    assert published.returncode == 1
    errors = kiln_lines(published)
    assert len(errors) == 1, published.stderr
    assert "repodata/repomd.xml is missing, but Kiln last wrote revision 2, 2 package(s)" \
        in errors[0]
    assert "`invoke repo.verify --repair`" in errors[0]
    assert target.get(repo.REPOMD) is None, "publish wrote over a lost index"
    assert target.head(GAMMA) is None
    assert {ALPHA, BETA} <= set(target.listing("Packages"))
    listed = run_invoke("repo.list", overrides=repo_config)
    assert listed.returncode == 1 and listed.stdout == ""
    assert len(kiln_lines(listed)) == 1 and "is missing" in kiln_lines(listed)[0]
    with pytest.raises(KilnError, match="is missing"):
        repo.find_package(two, "alpha", "1.0.0", "1")  # what a bake asks first


def test_verify_fails_on_a_lost_index_and_repair_puts_it_back(two, rpms, writer, run_invoke,
                                                              repo_config):
    delete_index(writer)
    s3, bucket, prefix = writer()
    s3.delete_object(Bucket=bucket, Key=prefix + BETA)  # and the janitor had swept a package
    target = repo.Repo.of(two)

    checked = run_invoke("repo.verify", overrides=repo_config)
    assert checked.returncode == 1 and "is missing" in kiln_lines(checked)[0]

    planned = run_invoke("repo.verify", "--repair", "--dry-run", "--json",
                         overrides=repo_config, check=True)
    plan = json.loads(planned.stdout)
    assert plan["how"] == "restore" and not plan["repaired"]
    assert any(step.startswith(f"copy back {BETA} from its version") for step in plan["plan"])
    assert "nothing is changed (--dry-run)" in planned.stderr
    assert target.get(repo.REPOMD) is None and target.head(BETA) is None

    repaired = run_invoke("repo.verify", "--repair", "--json", overrides=repo_config,
                          check=True)
    result = json.loads(repaired.stdout)
    assert (result["repaired"], result["revision"], result["packages"]) == (True, 2, 2)
    lines = repaired.stderr.splitlines()
    plan_at = next(i for i, line in enumerate(lines) if "repair plan (restore)" in line)
    done_at = next(i for i, line in enumerate(lines) if "repo.verify: repaired" in line)
    assert plan_at < done_at, "the plan is printed before the repair"
    assert names(two) == ["alpha", "beta"]
    assert json.loads(run_invoke("repo.verify", "--json", overrides=repo_config,
                                 check=True).stdout) == {"packages": 2, "signed": True,
                                                         "repaired": False}
    assert repo.publish(two, rpms["gamma"])["status"] == "published"
    assert repodata.revision(target.get(repo.REPOMD)[0]) == 3
    assert names(two) == ["alpha", "beta", "gamma"]


def test_a_truncated_index_is_refused_and_repaired(two, writer, run_invoke, repo_config):
    s3, bucket, prefix = writer()
    body = s3.get_object(Bucket=bucket, Key=prefix + repo.REPOMD)["Body"].read()
    s3.put_object(Bucket=bucket, Key=prefix + repo.REPOMD, Body=body[:len(body) // 2])
    listed = run_invoke("repo.list", overrides=repo_config)
    assert listed.returncode == 1 and len(kiln_lines(listed)) == 1
    run_invoke("repo.verify", "--repair", overrides=repo_config, check=True)
    assert names(two) == ["alpha", "beta"]
    run_invoke("repo.verify", overrides=repo_config, check=True)


def test_an_older_signed_index_is_refused_by_every_reader(two, rpms, writer, run_invoke,
                                                          repo_config):
    put_back_version(writer, 1)
    target = repo.Repo.of(two)
    readers = [lambda: repo.list_packages(two), lambda: repo.find_package(two, "beta", "1.0.0",
                                                                          "1"),
               lambda: repo.prune(two, keep=1), lambda: repo.publish(two, rpms["gamma"])]
    for read in readers:
        with pytest.raises(KilnError, match="is revision 1, older than revision 2 that Kiln "
                                            "last wrote") as error:
            read()
        assert "\n" not in str(error.value)
    assert target.head(GAMMA) is None
    checked = run_invoke("repo.verify", overrides=repo_config)
    assert checked.returncode == 1
    assert "is revision 1, older than revision 2" in kiln_lines(checked)[0]
    run_invoke("repo.verify", "--repair", overrides=repo_config, check=True)
    assert names(two) == ["alpha", "beta"]


def test_the_janitor_deletes_no_package_while_the_index_is_lost(two, writer, run_invoke,
                                                                repo_config):
    deployer(two.settings)  # the janitor sweeps prod too
    delete_index(writer)
    aged = {"repo": {**repo_config["repo"], "unlisted_grace_seconds": 0}}
    swept = run_invoke("janitor", "--json", overrides=aged)
    assert swept.returncode == 1
    assert "repodata/repomd.xml is missing" in swept.stderr
    target = repo.Repo.of(two)
    assert {ALPHA, BETA} <= set(target.listing("Packages"))


def test_a_lost_index_of_a_repository_without_a_record_is_rebuilt_from_its_packages(
        two, writer, admin_aws, repo_config, run_invoke):
    """A repository older than its record (or a record lost): the bucket's versions tell that
    an index existed; the repair lists the package objects whose bytes match their digest."""
    table = repo_config["repo"]["lock_table"]
    target = repo.Repo.of(two)
    admin_aws.client("dynamodb").delete_item(TableName=table,
                                             Key={"LockKey": {"S": target.memory.key}})
    delete_index(writer)
    s3, bucket, prefix = writer()
    s3.put_object(Bucket=bucket, Key=prefix + GAMMA, Body=b"not what was uploaded",
                  Metadata={"sha256": "0" * 64})
    refused = run_invoke("repo.list", overrides=repo_config)
    assert "the bucket keeps earlier versions of it" in kiln_lines(refused)[0]
    repaired = run_invoke("repo.verify", "--repair", overrides=repo_config, check=True)
    assert "repair plan (rebuild)" in repaired.stderr
    assert f"leave out {GAMMA}" in repaired.stderr
    assert names(two) == ["alpha", "beta"]
    run_invoke("repo.verify", overrides=repo_config, check=True)


def test_a_ledger_in_the_bucket_deletes_nothing(two, rpms, writer):
    """The old, unsigned ledger: entries dated 1970 for a live package, live metadata and the
    repo's key."""
    target = repo.Repo.of(two)
    primary = repodata.data_files(target.get(repo.REPOMD)[0])["primary"]
    s3, bucket, prefix = writer()
    planted = {ALPHA: 0, repo.KEY_FILE: 0, primary: 0}
    s3.put_object(Bucket=bucket, Key=prefix + ".kiln/superseded.json",
                  Body=json.dumps(planted).encode())
    repo.publish(two, rpms["gamma"])
    assert target.head(ALPHA) is not None and target.head(repo.KEY_FILE) is not None
    assert names(two) == ["alpha", "beta", "gamma"]


def test_the_ledger_never_deletes_what_the_metadata_lists_or_the_key(two, rpms, admin_aws,
                                                                      repo_config):
    target = repo.Repo.of(two)
    admin_aws.client("dynamodb").update_item(
        TableName=repo_config["repo"]["lock_table"], Key={"LockKey": {"S": target.memory.key}},
        UpdateExpression="SET Ledger = :l", ExpressionAttributeValues={":l": {"M": {
            href: {"N": "0"} for href in (ALPHA, repo.KEY_FILE, repo.REPO_FILE,
                                          "other/file")}}})
    repo.publish(two, rpms["gamma"])
    for href in (ALPHA, repo.KEY_FILE, repo.REPO_FILE):
        assert target.head(href) is not None, href
    assert target.memory.read().ledger == {}


def test_an_index_stripped_of_its_signature_is_put_back_signed(two, writer, run_invoke,
                                                               repo_config):
    s3, bucket, prefix = writer()
    body = s3.get_object(Bucket=bucket, Key=prefix + repo.REPOMD)["Body"].read()
    s3.put_object(Bucket=bucket, Key=prefix + repo.REPOMD, Body=body)  # same bytes, unsigned
    s3.delete_object(Bucket=bucket, Key=f"{prefix}{repo.REPOMD}.asc")
    refused = run_invoke("repo.list", overrides=repo_config)
    assert "repodata/repomd.xml.asc: missing" in kiln_lines(refused)[0]
    repaired = run_invoke("repo.verify", "--repair", overrides=repo_config, check=True)
    assert "repair plan (restore)" in repaired.stderr
    assert names(two) == ["alpha", "beta"]
    run_invoke("repo.verify", overrides=repo_config, check=True)


def test_verify_records_a_repository_older_than_its_record(two, admin_aws, writer,
                                                           repo_config):
    """A repository Kiln wrote before it kept a record: the first verify records its index,
    from then on an older one is refused."""
    target = repo.Repo.of(two)
    admin_aws.client("dynamodb").delete_item(TableName=repo_config["repo"]["lock_table"],
                                             Key={"LockKey": {"S": target.memory.key}})
    assert repo.verify(two)["packages"] == 2
    recorded = target.memory.read().confirmed
    assert (recorded.revision, recorded.packages) == (2, 2)
    put_back_version(writer, 1)
    with pytest.raises(KilnError, match="is revision 1, older than revision 2"):
        repo.list_packages(two)


def test_a_writer_whose_lease_ran_out_cannot_replace_a_newer_writers_record(two, rpms):
    """Writer A read revision 2, then stalled past its lease; B staged revision 3 and put its
    repomd.xml, then died before confirming. A's stage of its own revision 3 must not replace
    B's entry: B's repomd.xml would then match neither entry and read as a lost index."""
    memory = repo.Repo.of(two).memory
    ours = memory.read()
    theirs = Written(ours.revision + 1, "b" * 64, 3)
    memory.stage(theirs)
    with pytest.raises(KilnError, match=r"another writer recorded revision 3 in item "
                                        r"repo-state/.* \(a lease that expired\?\)"):
        memory.stage(Written(ours.revision + 1, "a" * 64, 3))
    assert memory.read().pending == theirs
    memory.stage(theirs)  # the same writer's retried request is its own entry


def test_a_stale_writer_cannot_record_below_a_confirmed_revision(two):
    memory = repo.Repo.of(two).memory
    confirmed = memory.read().confirmed
    with pytest.raises(KilnError, match="another writer recorded revision 2"):
        memory.stage(Written(confirmed.revision, "c" * 64, 1))
    assert memory.read().pending is None
