"""Kill -9 `invoke bake` and `invoke publish` at random points; check the next command works.

    .venv/bin/python bench/chaos.py [--trials 10] [--kinds bake,publish] [--seed 1]

Starts a private sandbox (its own moto server and sshd under a temporary state directory),
bootstraps it and measures one clean run of each kind. Each trial then starts a run, kills its
whole process group with SIGKILL after a random share of that clean run's time, and records:

- leaks right after: the run's temporary resources still there (bake instances not terminated,
  key pairs, security groups, available volumes, by their kiln:role tag);
- leaks after `invoke janitor`, run at once;
- repo consistent: a real dnf (`makecache` with gpgcheck=1 and repo_gpgcheck=1) reads the
  repository after the follow-up command;
- locks left: lock-table items whose holder is not a live process, after one lease;
- follow-up: the same command again succeeds.

Goal: 0 leaks after the janitor, 0 broken repos, 0 locks left past one lease, 100 % follow-ups.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import boto3
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cloud import locks  # noqa: E402
from cloud import tags as kiln_tags  # noqa: E402
from sandbox.control import Sandbox  # noqa: E402

INVOKE = str(Path(sys.executable).with_name("invoke"))
PROBE = "kiln-chaos"
TEMPORARY = ["bake-instance", "bake-key", "bake-sg", "bake-volume"]
DNF_CONF = """[main]
gpgcheck=1
repo_gpgcheck=1
plugins=0
reposdir={work}/repos.d
cachedir={work}/cache
logdir={work}/log
persistdir={work}/persist
"""


class Chaos:
    def __init__(self, folder: Path, box: Sandbox):
        self.folder, self.box = folder, box
        self.runtime = folder / "chaos.yaml"
        self.runtime.write_text(yaml.safe_dump({"kiln": {
            "sandbox": {"state_dir": str(box.state_dir)}, "dist": str(folder / "dist"),
            "bake": {"smoke_commands": []}}}))
        self.manifest = probe_manifest(folder)
        self.versions = (f"1.0.{n}" for n in range(1000))

    def command(self, kind: str, version: str) -> list[str]:
        if kind == "bake":
            return ["bake", "--version", version, "--share", "", "--manifest", self.manifest]
        return ["publish", "--manifest", self.manifest, "--version", version]

    def start(self, args: list[str]) -> subprocess.Popen:
        return subprocess.Popen([INVOKE, "-f", str(self.runtime), *args], cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)

    def run(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([INVOKE, "-f", str(self.runtime), *args], cwd=ROOT,
                              capture_output=True, text=True, timeout=1800)

    def clean_time(self, kind: str) -> float:
        started = time.monotonic()
        result = self.run(*self.command(kind, next(self.versions)))
        if result.returncode != 0:
            sys.exit(f"a clean {kind} failed:\n{result.stderr}")
        return time.monotonic() - started

    def trial(self, kind: str, seconds: float, rng: random.Random) -> dict:
        version = next(self.versions)
        args = self.command(kind, version)
        delay = rng.uniform(0.05, 0.7) * seconds  # warm runs are faster than the clean one
        process = self.start(args)
        time.sleep(delay)
        finished_first = process.poll() is not None
        if not finished_first:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        result = {"kind": kind, "at": round(delay, 1), "finished": finished_first,
                  "leaks": leaks()}
        self.run("janitor")
        result["leaks_after_janitor"] = leaks()
        follow = self.run(*args)
        result["follow_up"] = follow.returncode == 0
        if not result["follow_up"]:
            result["error"] = (follow.stderr.strip().splitlines() or ["?"])[-1]
        result["repo_ok"] = self.repo_consistent()
        result["locks_left"] = dead_locks(self.lock_table())
        return result

    def lock_table(self) -> str:
        stacks = boto3.client("cloudformation").describe_stacks(StackName="kiln-build")["Stacks"]
        return {o["OutputKey"]: o["OutputValue"] for o in stacks[0]["Outputs"]}["LockTableName"]

    def repo_consistent(self) -> bool:
        """A real dnf reads the repository, checking the signatures of repomd.xml and packages."""
        work = Path(tempfile.mkdtemp(prefix="dnf-", dir=self.folder))
        (work / "repos.d").mkdir()
        (work / "home").mkdir()
        listing = self.run("repo.list")
        url = next((w for line in listing.stderr.splitlines() for w in line.split()
                    if w.endswith("/kiln.repo")), None)
        if url is None:
            return False
        with urllib.request.urlopen(url, timeout=10) as answer:
            (work / "repos.d" / "kiln.repo").write_bytes(answer.read())
        (work / "dnf.conf").write_text(DNF_CONF.format(work=work))
        done = subprocess.run(
            ["dnf", "-q", "-y", "-c", str(work / "dnf.conf"), "--installroot",
             str(work / "root"), "--releasever", "9", "--refresh", "makecache"],
            capture_output=True, text=True, timeout=300,
            env={"HOME": str(work / "home"), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
        return done.returncode == 0


def probe_manifest(folder: Path) -> str:
    app = folder / "probe"
    app.mkdir(parents=True, exist_ok=True)
    (app / "probe.txt").write_text("baked by kiln's chaos bench\n")
    manifest = folder / f"{PROBE}.yaml"
    manifest.write_text(f"""\
name: {PROBE}
version: 1.0.0
iteration: 1
arch: noarch
summary: A file to bake into an image
description: Installs one file; the chaos bench's package.
license: MIT
files:
  - src: probe/probe.txt
    dest: /opt/{PROBE}/probe.txt
""")
    return str(manifest)


def leaks() -> int:
    """Temporary bake resources of the probe app that exist now."""
    ec2 = boto3.client("ec2")
    role = [{"Name": "tag:kiln:role", "Values": TEMPORARY},
            {"Name": f"tag:{kiln_tags.APP}", "Values": [PROBE]}]
    running = [i for r in ec2.describe_instances(Filters=role)["Reservations"]
               for i in r["Instances"] if i["State"]["Name"] not in ("terminated",
                                                                      "shutting-down")]
    return (len(running) + len(ec2.describe_key_pairs(Filters=role)["KeyPairs"])
            + len(ec2.describe_security_groups(Filters=role)["SecurityGroups"])
            + len(ec2.describe_volumes(Filters=role + [
                {"Name": "status", "Values": ["available"]}])["Volumes"]))


def dead_locks(table: str) -> int:
    """Lock items whose holder is not alive (none should outlast one lease)."""
    items = boto3.client("dynamodb").scan(TableName=table, ConsistentRead=True)["Items"]
    return sum(1 for item in items if not locks.alive({
        "expires_at": int(item["ExpiresAt"]["N"]), "host": item.get("Host", {}).get("S"),
        "pid": int(item.get("Pid", {}).get("N", 0)),
        "pid_start": item.get("PidStart", {}).get("S")}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--kinds", default="bake,publish")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    kinds = args.kinds.split(",")
    with tempfile.TemporaryDirectory(prefix="kiln-bench-chaos-") as temp:
        box = Sandbox(Path(temp) / "sandbox")
        box.up()
        try:
            os.environ.update(box.env())
            chaos = Chaos(Path(temp), box)
            if chaos.run("bootstrap", "--yes").returncode != 0:
                sys.exit("bootstrap failed")
            clean = {kind: chaos.clean_time(kind) for kind in kinds}
            print("clean runs: " + ", ".join(f"{k} {s:.1f} s" for k, s in clean.items()))
            results = []
            for number in range(args.trials):
                kind = kinds[number % len(kinds)]
                result = chaos.trial(kind, clean[kind], rng)
                results.append(result)
                print(result, flush=True)
            summarize(results)
        finally:
            box.down()


def summarize(results: list[dict]) -> None:
    print(f"\n{'kind':<9}{'trials':>7}{'killed':>7}{'leaks after':>12}{'after janitor':>14}"
          f"{'repo ok':>9}{'locks left':>11}{'follow-up ok':>13}")
    for kind in sorted({r["kind"] for r in results}) + ["all"]:
        rows = [r for r in results if kind in ("all", r["kind"])]
        print(f"{kind:<9}{len(rows):>7}{sum(not r['finished'] for r in rows):>7}"
              f"{sum(r['leaks'] for r in rows):>12}"
              f"{sum(r['leaks_after_janitor'] for r in rows):>14}"
              f"{sum(r['repo_ok'] for r in rows) / len(rows):>9.0%}"
              f"{sum(r['locks_left'] for r in rows):>11}"
              f"{sum(r['follow_up'] for r in rows) / len(rows):>13.0%}")


if __name__ == "__main__":
    main()
