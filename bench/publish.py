"""Benchmark: publishing one RPM into a repository of N packages, and memory for a big RPM.

Runs against a private sandbox (its own moto server under a temp dir). Two repositories start
identical (N tiny RPMs and their metadata, uploaded once): Kiln's `publish` adds one RPM to the
first; the baseline adds it to the second the classic way, a full `createrepo_c` over a local
mirror then `aws s3 sync`. Prints wall times (each round and the median), the load average, S3
PUT requests and all AWS requests of a publish (counted with botocore hooks). Then publishes a
large RPM in a child process and prints its peak RSS and the peak RSS of the tools it ran
(rpmsign, createrepo_c, gpg); `--big-mb 0` skips that.

    .venv/bin/python bench/publish.py [--count 2000] [--rounds 5] [--big-mb 1024]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CACHE = Path(tempfile.gettempdir()) / "kiln-bench-rpms"
# Named as bootstrap names repo buckets, so the operator's policy covers them.
BUCKET = "kiln-repo-123456789012-bench"
BIG_BUCKET = "kiln-repo-123456789012-bench-big"
TINY_SPEC_HEAD = """\
Name: benchbase
Version: 1.0
Release: 1
Summary: bench
License: MIT
BuildArch: noarch
%global debug_package %{nil}
%global __os_install_post %{nil}
%description
bench
%install
for i in $(seq -w 0 {last}); do
  mkdir -p %{buildroot}/usr/share/bench$i && echo $i > %{buildroot}/usr/share/bench$i/f
done
"""
TINY_PACKAGE = """
%package -n bench{i}
Summary: bench package {i}
%description -n bench{i}
bench package {i}
%files -n bench{i}
/usr/share/bench{i}
"""


def rpmbuild(spec: str, work: Path, out: Path, *defines: str) -> None:
    work.mkdir(parents=True, exist_ok=True)
    (work / "bench.spec").write_text(spec)
    args = ["rpmbuild", "-bb", "--quiet", "--define", f"_topdir {work}",
            "--define", f"_rpmdir {out}",
            "--define", "_build_name_fmt %%{NAME}-%%{VERSION}-%%{RELEASE}.%%{ARCH}.rpm"]
    for define in defines:
        args += ["--define", define]
    subprocess.run([*args, str(work / "bench.spec")], check=True, capture_output=True,
                   env={**os.environ, "HOME": str(work)})
    shutil.rmtree(work)


def tiny_rpms(count: int, rounds: int) -> list[Path]:
    """`count`+`rounds` tiny RPMs from one rpmbuild of a spec of that many subpackages
    (cached)."""
    out = CACHE / f"tiny-{count}"
    if len(list(out.glob("bench*.rpm"))) != count + rounds:
        shutil.rmtree(out, ignore_errors=True)
        width = len(str(count + rounds))
        names = [str(i).zfill(width) for i in range(count + rounds)]
        spec = TINY_SPEC_HEAD.replace("{last}", names[-1]) + "".join(
            TINY_PACKAGE.format(i=i) for i in names)
        rpmbuild(spec, CACHE / "work-tiny", out)
    return sorted(out.glob("bench*.rpm"))


def big_rpm(megabytes: int) -> Path:
    out = CACHE / f"big-{megabytes}"
    found = list(out.glob("*.rpm"))
    if found:
        return found[0]
    spec = f"""Name: benchbig
Version: 1.0
Release: 1
Summary: big
License: MIT
BuildArch: noarch
%global debug_package %{{nil}}
%global __os_install_post %{{nil}}
%description
big
%install
mkdir -p %{{buildroot}}/opt/big
head -c {megabytes}M /dev/urandom > %{{buildroot}}/opt/big/blob
%files
/opt/big/blob
"""
    # Random bytes do not compress: store the payload uncompressed.
    rpmbuild(spec, CACHE / "work-big", out, "_binary_payload w.ufdio")
    return next(out.glob("*.rpm"))


class PutCounter:
    """Counts requests sent (register on "before-send"), and of those the PUTs."""

    def __init__(self):
        self.puts = 0
        self.requests = 0

    def __call__(self, request, **_ignored):
        self.requests += 1
        if request.method == "PUT":
            self.puts += 1


def aws_cli(args: list[str], counter: PutCounter) -> None:
    from awscli.clidriver import create_clidriver

    driver = create_clidriver()
    driver.session.register("before-send.s3", counter)
    if driver.main(args) != 0:
        raise SystemExit(f"aws {' '.join(args)} failed")


def seed(mirror: Path, rpms: list[Path], bucket: str, prefixes: list[str], signer) -> None:
    """A repository of `rpms` under each prefix, its repomd.xml signed as Kiln signs it (Kiln
    refuses unsigned metadata)."""
    (mirror / "Packages").mkdir(parents=True)
    for rpm in rpms:
        os.link(rpm, mirror / "Packages" / rpm.name)
    subprocess.run(["createrepo_c", "--quiet", "--no-database", str(mirror)], check=True)
    signer.sign_detached(mirror / "repodata" / "repomd.xml")
    for prefix in prefixes:
        aws_cli(["s3", "sync", "--quiet", str(mirror), f"s3://{bucket}/{prefix}/"], PutCounter())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--big-mb", type=int, default=1024)
    parser.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        return memory_child(args.memory_child)

    from sandbox.control import Sandbox

    with tempfile.TemporaryDirectory(prefix="kiln-bench-publish-") as tmp:
        work = Path(tmp)
        box = Sandbox(work / "sandbox")
        box.up()
        os.environ.update(box.env())
        try:
            run(work, box, args)
        finally:
            box.down()


def bench_settings(box, work: Path, bucket: str, table: str, prefix: str):
    import yaml

    from cloud.settings import validate
    from tests.conftest import deep_merge

    raw = yaml.safe_load((ROOT / "invoke.yaml").read_text())["kiln"]
    raw = deep_merge(raw, {"sandbox": {"state_dir": str(box.state_dir)}, "dist": str(work),
                           "repo": {"bucket": bucket, "lock_table": table, "prefix": prefix}})
    return validate(raw, ["bench"])


def run(work: Path, box, args) -> None:
    from cloud.target import connect
    from packager import repo, signing
    from tests.repo_helpers import make_lock_table, make_repo_bucket

    started = time.perf_counter()
    rpms = tiny_rpms(args.count, args.rounds)
    print(f"{args.count} tiny RPMs ready in {time.perf_counter() - started:.1f} s "
          f"(cache {CACHE})", flush=True)
    existing, new = rpms[:-args.rounds], rpms[-args.rounds:]
    settings = bench_settings(box, work, BUCKET, "kiln-locks-bench", "kiln")
    aws = connect(settings)
    admin = connect(settings, admin=True)  # the bucket and table as bootstrap makes them
    make_repo_bucket(admin, BUCKET)
    make_lock_table(admin, "kiln-locks-bench")
    started = time.perf_counter()
    mirror = work / "mirror"
    seed(mirror, existing, BUCKET, ["kiln", "full"], signing.from_settings(settings))
    print(f"seeded two repositories of {len(existing)} in {time.perf_counter() - started:.1f} s",
          flush=True)

    # The repository exists already: it serves its .repo file and key before the timed publish.
    repo.Repo.of(aws).ensure_client_files(signing.from_settings(aws.settings))
    kiln_times, full_times = [], []
    for rpm in new:  # one more package each round; medians of the rounds
        counter = PutCounter()
        for service in ("s3", "dynamodb"):
            aws.client(service).meta.events.register(f"before-send.{service}", counter)
        started = time.perf_counter()
        assert repo.publish(aws, rpm)["status"] == "published"
        kiln_times.append(time.perf_counter() - started)
        for service in ("s3", "dynamodb"):
            aws.client(service).meta.events.unregister(f"before-send.{service}", counter)

        baseline = PutCounter()
        started = time.perf_counter()
        os.link(rpm, mirror / "Packages" / rpm.name)
        subprocess.run(["createrepo_c", "--quiet", "--no-database", str(mirror)], check=True)
        aws_cli(["s3", "sync", "--quiet", "--delete", str(mirror), f"s3://{BUCKET}/full/"],
                baseline)
        full_times.append(time.perf_counter() - started)
    assert len(repo.list_packages(aws)) == len(rpms)
    kiln_time, full_time = statistics.median(kiln_times), statistics.median(full_times)
    print(f"rounds: kiln {' '.join(f'{t:.3f}' for t in kiln_times)} s | full "
          f"{' '.join(f'{t:.2f}' for t in full_times)} s | load average "
          f"{' '.join(f'{load:.1f}' for load in os.getloadavg())}")
    print(f"publish one RPM into {len(existing)} (median of {args.rounds}): kiln "
          f"{kiln_time:.3f} s, {counter.puts} S3 PUTs, {counter.requests} AWS requests | full "
          f"createrepo_c + aws s3 sync {full_time:.2f} s, {baseline.puts} S3 PUTs | ratio "
          f"{kiln_time / full_time:.2f}x", flush=True)
    if args.big_mb:
        memory(work, box, args.big_mb)


def memory(work: Path, box, megabytes: int) -> None:
    started = time.perf_counter()
    big = big_rpm(megabytes)
    print(f"{big.stat().st_size / 2**20:.0f} MB RPM ready in {time.perf_counter() - started:.1f} s",
          flush=True)
    config = {"state_dir": str(box.state_dir), "work": str(work), "rpm": str(big)}
    started = time.perf_counter()
    out = subprocess.run([sys.executable, __file__, "--memory-child", json.dumps(config)],
                         check=True, capture_output=True, text=True, env=os.environ)
    figures = json.loads(out.stdout)
    print(f"publish a {big.stat().st_size / 2**20:.0f} MB RPM: "
          f"{time.perf_counter() - started:.1f} s, peak RSS {figures['self_mb']:.0f} MB "
          f"(kiln), {figures['children_mb']:.0f} MB (largest tool: rpmsign/createrepo_c/gpg)",
          flush=True)


def memory_child(raw: str) -> None:
    import resource

    from cloud.target import connect
    from packager import repo
    from sandbox.control import Sandbox
    from tests.repo_helpers import make_lock_table, make_repo_bucket

    config = json.loads(raw)
    box = Sandbox(config["state_dir"])
    settings = bench_settings(box, Path(config["work"]), BIG_BUCKET, "kiln-locks-bench-big",
                              "el9/x86_64")
    aws = connect(settings)
    admin = connect(settings, admin=True)
    make_repo_bucket(admin, BIG_BUCKET)
    make_lock_table(admin, "kiln-locks-bench-big")
    assert repo.publish(aws, config["rpm"])["status"] == "published"
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(json.dumps({"self_mb": own, "children_mb": children}))


if __name__ == "__main__":
    main()
