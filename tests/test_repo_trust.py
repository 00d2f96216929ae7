"""Repository metadata is trusted only when repomd.xml carries a good signature by the pinned key,
every data file matches its checksum there, and every href stays inside repodata/. Whoever can
write the bucket (and nothing else) gets refused in one line, with nothing written. Against the
sandbox's moto server, the real createrepo_c, rpm and gpg."""

from __future__ import annotations

import gzip
import subprocess
import time

import pytest

from cloud.errors import KilnError
from cloud.target import connect
from packager import repo, repodata
from tests.repo_helpers import build_rpm, make_lock_table, make_repo_bucket

# One worker runs the module (an xdist group): its module-scoped `rpms` is made once.
pytestmark = pytest.mark.xdist_group("repo-trust")

REPOMD = repo.REPOMD


@pytest.fixture(scope="module")
def rpms(tmp_path_factory):
    folder = tmp_path_factory.mktemp("rpms")
    return {"alpha": build_rpm(folder, "alpha", "1.0.0"),
            "beta": build_rpm(folder, "beta", "0.1.0")}


@pytest.fixture
def repo_config(admin_aws):
    """A bucket and lock table of their own, made as `invoke bootstrap` (the administrator)
    makes them; the tasks then run as the operator."""
    suffix = time.time_ns()
    bucket, table = f"kiln-repo-123456789012-s{suffix}", f"kiln-locks-trust-{suffix}"
    make_repo_bucket(admin_aws, bucket)
    make_lock_table(admin_aws, table)
    return {"repo": {"bucket": bucket, "lock_table": table, "metadata_grace_seconds": 0}}


@pytest.fixture
def published(kiln_settings, repo_config, rpms):
    aws = connect(kiln_settings(**repo_config))
    repo.publish(aws, rpms["alpha"])
    return aws


@pytest.fixture
def attacker(tmp_path):
    """A GnuPG home holding a key of the attacker's own (no passphrase)."""
    home = tmp_path / "attacker-gnupg"
    home.mkdir(mode=0o700)
    gpg(home, "--passphrase", "", "--quick-gen-key", "Mallory <m@example.invalid>",
        "ed25519", "sign", "never")
    yield home
    subprocess.run(["gpgconf", "--kill", "gpg-agent"], env={"GNUPGHOME": str(home)},
                   check=False, capture_output=True)


def gpg(home, *args: str) -> bytes:
    return subprocess.run(["gpg", "--batch", "--homedir", str(home), *args], check=True,
                          capture_output=True).stdout


def every_reader(aws, rpm):
    """The commands that read repodata/: list, prune (dry run and real), publish, bake's lookup."""
    return [lambda: repo.list_packages(aws),
            lambda: repo.prune(aws, keep=1, dry_run=True),
            lambda: repo.prune(aws, keep=1),
            lambda: repo.find_package(aws, "alpha", "1.0.0", "1"),
            lambda: repo.publish(aws, rpm)]


@pytest.mark.parametrize("escape", ["absolute", "dotdot"])
def test_repomd_href_outside_repodata_writes_nothing(published, rpms, tmp_path, escape):
    target = repo.Repo.of(published)
    victim = tmp_path / "victim" / "planted.txt"
    victim.parent.mkdir()
    href = str(victim) if escape == "absolute" else "repodata/" + "../" * 40 + str(victim)[1:]
    target.put(href, b"written by whoever can write the bucket\n", "text/plain")
    body, _ = target.get(REPOMD)
    primary = repodata.data_files(body)["primary"]
    target.put(REPOMD, body.replace(primary.encode(), href.encode()), "application/xml")
    before = target.get(REPOMD)[0]
    for read in every_reader(published, rpms["beta"]):
        with pytest.raises(KilnError, match="repodata/repomd.xml") as error:
            read()
        assert "\n" not in str(error.value)
        assert not victim.exists()
    assert target.get(REPOMD)[0] == before
    assert target.head("Packages/beta-0.1.0-1.noarch.rpm") is None


@pytest.mark.parametrize("href", ["/etc/passwd", "repodata/../../x", "../repodata/x",
                                  "repodata/sub/x.xml.gz", "repodata/", "Packages/x.xml.gz",
                                  "repodata/.."])
def test_only_repodata_file_hrefs_are_accepted(href):
    body = (f'<repomd xmlns="http://linux.duke.edu/metadata/repo"><data type="primary">'
            f'<location href="{href}"/></data></repomd>').encode()
    with pytest.raises(KilnError, match="repodata/repomd.xml: data primary"):
        repodata.data_files(body)


def test_good_hrefs_are_accepted():
    body = (b'<repomd xmlns="http://linux.duke.edu/metadata/repo"><data type="primary">'
            b'<location href="repodata/0a1b-primary.xml.gz"/></data></repomd>')
    assert repodata.data_files(body) == {"primary": "repodata/0a1b-primary.xml.gz"}


def test_metadata_signed_by_another_key_is_refused(published, rpms, attacker, tmp_path):
    """The bucket writer swaps repomd.xml, its signature and the served key for their own set."""
    target = repo.Repo.of(published)
    body, _ = target.get(REPOMD)
    forged = body.replace(b"<revision>", b"<revision>1")
    (tmp_path / "repomd.xml").write_bytes(forged)
    gpg(attacker, "--armor", "--detach-sign", "--output", str(tmp_path / "repomd.xml.asc"),
        str(tmp_path / "repomd.xml"))
    target.put(REPOMD, forged, "application/xml")
    target.put(f"{REPOMD}.asc", (tmp_path / "repomd.xml.asc").read_bytes(), "text/plain")
    target.put(repo.KEY_FILE, gpg(attacker, "--armor", "--export"), "text/plain")
    for read in every_reader(published, rpms["beta"]):
        with pytest.raises(KilnError, match=r"repodata/repomd.xml.asc: .*not signed by the "
                                            r"pinned key"):
            read()
    assert target.head("Packages/beta-0.1.0-1.noarch.rpm") is None


def strip_signatures(target) -> None:
    """repomd.xml put again without the signature written with it, and no .asc."""
    target.put(REPOMD, target.get(REPOMD)[0], "application/xml")
    target.delete([f"{REPOMD}.asc"])


def test_missing_signature_is_refused(published, rpms):
    target = repo.Repo.of(published)
    strip_signatures(target)
    with pytest.raises(KilnError, match="repodata/repomd.xml.asc: missing"):
        repo.list_packages(published)


def test_data_file_other_than_repomd_says_is_refused(published, rpms):
    target = repo.Repo.of(published)
    body, _ = target.get(REPOMD)
    primary = repodata.data_files(body)["primary"]
    original = gzip.decompress(target.get(primary)[0])
    target.put(primary, gzip.compress(original.replace(b"alpha", b"evil!")), "text/plain")
    for read in every_reader(published, rpms["beta"]):
        with pytest.raises(KilnError, match=f"{primary}: sha256 .* not the one "
                                            f"repodata/repomd.xml lists"):
            read()


def test_tampered_metadata_fails_the_tasks_in_one_line(run_invoke, published, repo_config,
                                                        rpms):
    target = repo.Repo.of(published)
    strip_signatures(target)
    for args in (["repo.list"], ["repo.prune", "--keep", "1", "--dry-run"],
                 ["publish", "--rpm", str(rpms["beta"])]):
        result = run_invoke(*args, overrides=repo_config)
        assert result.returncode != 0
        assert "repodata/repomd.xml.asc: missing" in result.stderr.strip().splitlines()[-1]


def test_percent_in_the_key_name_never_reaches_a_shell(rpms, tmp_path):
    """rpm expands `%(…)` in macro values: a key name from config must stay text."""
    from packager.signing import Signer

    planted = tmp_path / "planted"
    copy = tmp_path / "alpha.rpm"
    copy.write_bytes(rpms["alpha"].read_bytes())
    home = tmp_path / "gnupg"
    home.mkdir(mode=0o700)
    with pytest.raises(KilnError, match="cannot sign alpha.rpm"):
        Signer(f"%(touch {planted})", str(home)).sign_rpm(copy)
    assert not planted.exists()
