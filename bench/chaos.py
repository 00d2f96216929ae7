"""Kill -9 `invoke bake`, `publish`, `canary` and `promote` at random points, and break the
repository's index as a bucket writer could; check the next command works.

    .venv/bin/python bench/chaos.py [--trials 24] [--kinds bake,publish,promote,index] [--seed 1]
    .venv/bin/python bench/chaos.py --trials 4 --kinds server,restart

Starts a private sandbox (its own moto server and sshd under a temporary state directory),
bootstraps it, deploys a first version of the example app's cluster and measures one clean run
of each command (of bake and publish the faster of two: the first also fills caches and makes
the repository). Trials take the kinds in turn. Each starts a run, kills its whole process group
with SIGKILL after a random share of that clean run's time, and records:

- leaks right after: the run's temporary resources still there (bake instances not terminated,
  key pairs, security groups, available volumes, by their kiln:role tag);
- leaks after `invoke janitor`, run at once;
- follow-up: bake and publish run the same command again; a promote trial kills `invoke canary`
  or (after a clean canary) `invoke promote`, then does what an operator would: `promote` or
  `rollback` (at random) while a canary is there, the canary again if the kill came before it
  made one; it succeeds when every command exits 0 and the cluster is settled (one active group
  at 100 %, no canary);
- repo consistent (bake and publish): a real dnf (`makecache` with gpgcheck=1 and
  repo_gpgcheck=1) reads the repository after the follow-up;
- locks left: items of the build and cluster lock tables whose holder is not alive.

An index trial kills nothing: as whoever can write the bucket, it deletes `repomd.xml`, truncates
it or puts back an older version of it (faults taken in turn), then runs a publish (it must fail
with one `kiln:` line and write nothing), `invoke janitor` with no grace for unlisted packages
(it must delete none) and `invoke repo.verify --repair` (the follow-up, one command); `lost`
counts the packages `repo.list` shows no more, and the repository must then pass `repo.verify`
and dnf.

A server trial kills the sandbox's moto server (SIGKILL) at a random point of `invoke canary`,
records how the canary ended (one `kiln:` line, or not), brings the sandbox up again and does
what an operator would (`promote` or `rollback` of a canary left there, else the canary again);
a restart trial runs `sandbox.down` and `sandbox.up` and waits until every server group has its
instances in service again, then publishes. Both count what survived (packages, stacks, images,
server groups, instances in service: before → after; `lost` is what is missing) and time the
recovery: `up` (`invoke sandbox.up`: the new server answering, its snapshot restored; short when
the killed canary already brought the sandbox up itself) and `recovered` (from the kill or the
`sandbox.down` until the cluster is settled, or in service, again).

Goal: 0 leaks after the janitor, 0 broken repos, 0 locks left, 0 packages lost, 100 %
follow-ups.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cloud import locks  # noqa: E402
from cloud import settings as settings_module  # noqa: E402
from cloud import tags as kiln_tags  # noqa: E402
from cloud.target import connect  # noqa: E402
from packager import repo as repository  # noqa: E402
from packager import repodata  # noqa: E402
from sandbox.control import Sandbox  # noqa: E402
from tests.bake_helpers import PROBE, write_probe_manifest  # noqa: E402
from tests.conftest import deep_merge, project_config  # noqa: E402
from tests.deploy_helpers import make_image  # noqa: E402

INVOKE = str(Path(sys.executable).with_name("invoke"))
TEMPORARY = ["bake-instance", "bake-key", "bake-sg", "bake-volume"]
# The cluster's watch makes canary and promote take a few seconds, so kills land mid-rollout.
# No traffic reaches the canary here: it passes without a verdict (the bench is about faults).
DEPLOY = {"watch": "2s", "health_timeout": "60s", "steps": "25,50,100",
          "health_check": {"path": "/health", "grace_period": 0},
          "canary": {"judge": {"no_verdict": "pass"}}}
UNSETTLED = ("creating", "canary")
INDEX_FAULTS = ("delete", "truncate", "older")
RECOVERY = ("server", "restart")  # kinds that take the sandbox itself down
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
        overrides = {"sandbox": {"state_dir": str(box.state_dir)},
                     "dist": str(folder / "dist"), "bake": {"smoke_commands": []},
                     "deploy": DEPLOY}
        self.runtime = folder / "chaos.yaml"
        self.runtime.write_text(yaml.safe_dump({"kiln": overrides}))
        # The janitor of an index trial would sweep any package it took for unlisted at once.
        self.eager = folder / "chaos-eager.yaml"
        self.eager.write_text(yaml.safe_dump({"kiln": deep_merge(overrides, {
            "repo": {"unlisted_grace_seconds": 0}})}))
        self.settings = settings_module.validate(deep_merge(project_config(), overrides),
                                                 ["chaos bench"])
        self.manifest = write_probe_manifest(folder)
        self.versions = (f"1.0.{n}" for n in range(1000))
        self.releases = (f"2.0.{n}" for n in range(1000))
        self.clean: dict[str, float] = {}

    # -- commands --------------------------------------------------------------------------
    def command(self, kind: str, version: str) -> list[str]:
        if kind == "bake":
            return ["bake", "--version", version, "--share", "", "--manifest", self.manifest]
        return ["publish", "--manifest", self.manifest, "--version", version]

    def run(self, *args: str, config: Path | None = None) -> subprocess.CompletedProcess:
        return subprocess.run([INVOKE, "-f", str(config or self.runtime), *args], cwd=ROOT,
                              capture_output=True, text=True, timeout=1800)

    def must(self, *args: str) -> float:
        started = time.monotonic()
        result = self.run(*args)
        if result.returncode != 0:
            sys.exit(f"invoke {' '.join(args)} failed:\n{result.stderr}")
        return time.monotonic() - started

    def killed(self, args: list[str], delay: float) -> bool:
        """Run `invoke ARGS`, SIGKILL its process group after `delay` s; True if it finished
        first."""
        process = subprocess.Popen([INVOKE, "-f", str(self.runtime), *args], cwd=ROOT,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                   start_new_session=True)
        time.sleep(delay)
        finished = process.poll() is not None
        if not finished:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        return finished

    # -- set-up ------------------------------------------------------------------------------
    def prepare(self, kinds: list[str], trials: int) -> None:
        self.must("bootstrap", "--yes")
        for kind in [k for k in ("bake", "publish") if k in kinds] or ["publish"] * any(
                k in kinds for k in ("index", *RECOVERY)):
            # The first run also fills caches and makes the repository: time a second one too.
            self.clean[kind] = min(self.must(*self.command(kind, next(self.versions)))
                                   for _ in range(2))
        if any(k in kinds for k in ("promote", *RECOVERY)):
            prod = connect(self.settings).account(self.settings.deploy.account)
            for number in range(2 * trials + 3):
                make_image(prod, f"2.0.{number}")
            self.must("deploy", "--version", next(self.releases))
            self.clean["canary"] = self.must("canary", "--version", next(self.releases))
            self.clean["promote"] = self.must("promote")

    # -- trials ------------------------------------------------------------------------------
    def trial(self, kind: str, rng: random.Random) -> dict:
        if kind == "promote":
            return self.promote_trial(rng)
        if kind == "index":
            return self.index_trial()
        if kind == "server":
            return self.server_trial(rng)
        if kind == "restart":
            return self.restart_trial()
        args = self.command(kind, next(self.versions))
        delay = rng.uniform(0.05, 0.7) * self.clean[kind]  # warm runs beat the clean one
        result = {"kind": kind, "at": round(delay, 1), "finished": self.killed(args, delay),
                  "leaks": leaks()}
        self.run("janitor")
        result["leaks_after_janitor"] = leaks()
        follow = self.run(*args)
        result["follow_up"] = follow.returncode == 0
        if not result["follow_up"]:
            result["error"] = (follow.stderr.strip().splitlines() or ["?"])[-1]
        result["repo_ok"] = self.repo_consistent()
        result["locks_left"] = self.dead_locks()
        return result

    def promote_trial(self, rng: random.Random) -> dict:
        version = next(self.releases)
        step = rng.choice(["canary", "promote"])
        if step == "promote":
            self.must("canary", "--version", version)
        args = ["promote"] if step == "promote" else ["canary", "--version", version]
        delay = rng.uniform(0.1, 0.8) * self.clean[step]
        result = {"kind": "promote", "killed": step, "at": round(delay, 1),
                  "finished": self.killed(args, delay), "leaks": leaks()}
        self.run("janitor")
        result["leaks_after_janitor"] = leaks()
        follow_ups = []
        if not self.has_canary() and step == "canary":
            follow_ups.append(args)  # killed before the canary group existed
        if follow_ups or self.has_canary():
            follow_ups.append([rng.choice(["promote", "rollback"])])
        result["follow_ups"] = [" ".join(f) for f in follow_ups]
        result["follow_up"] = True
        for follow in follow_ups:
            done = self.run(*follow)
            if done.returncode != 0:
                result["follow_up"] = False
                result["error"] = (done.stderr.strip().splitlines() or ["?"])[-1]
                break
        if result["follow_up"] and not self.settled():
            result["follow_up"], result["error"] = False, "the cluster is not settled"
        result["repo_ok"] = None  # not touched by a rollout
        result["locks_left"] = self.dead_locks()
        return result

    def index_trial(self) -> dict:
        fault = INDEX_FAULTS[getattr(self, "index_trials", 0) % len(INDEX_FAULTS)]
        self.index_trials = getattr(self, "index_trials", 0) + 1
        before = self.packages()
        break_index(connect(self.settings, admin=True), fault)
        result = {"kind": "index", "fault": fault, "at": 0, "finished": True, "leaks": leaks()}
        refused = self.run(*self.command("publish", next(self.versions)))
        errors = [line for line in refused.stderr.splitlines() if line.startswith("kiln: ")]
        result["refused_in_one_line"] = (refused.returncode != 0 and len(errors) == 1
                                         and "Traceback" not in refused.stderr)
        self.run("janitor", config=self.eager)
        result["leaks_after_janitor"] = leaks()
        repaired = self.run("repo.verify", "--repair")
        result["follow_up"] = repaired.returncode == 0 and result["refused_in_one_line"]
        if not result["follow_up"]:
            result["error"] = ((errors or repaired.stderr.strip().splitlines() or ["?"])[-1])
        result["lost"] = len(before - self.packages())
        result["repo_ok"] = (self.run("repo.verify").returncode == 0
                             and self.repo_consistent())
        result["locks_left"] = self.dead_locks()
        return result

    def server_trial(self, rng: random.Random) -> dict:
        """Kill the sandbox's server mid-canary, bring it up, finish what the canary began."""
        before = self.census()
        delay = rng.uniform(0.1, 0.8) * self.clean["canary"]
        canary = subprocess.Popen([INVOKE, "-f", str(self.runtime), "canary", "--version",
                                   next(self.releases)], cwd=ROOT, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, text=True, start_new_session=True)
        time.sleep(delay)
        finished = canary.poll() is not None
        os.kill(self.box.moto.pid, signal.SIGKILL)
        killed_at = time.monotonic()
        try:
            _out, err = canary.communicate(timeout=180)
        except subprocess.TimeoutExpired:
            os.killpg(canary.pid, signal.SIGKILL)
            _out, err = canary.communicate()
        lines = [line for line in err.splitlines() if line.startswith("kiln: ")]
        # The canary may bring the sandbox up again itself and finish; else one kiln: line.
        result = {"kind": "server", "at": round(delay, 1), "finished": finished,
                  "canary_exit": canary.returncode,
                  "canary_one_line": canary.returncode == 0 or (
                      len(lines) == 1 and "Traceback" not in err),
                  "canary_ended_after": round(time.monotonic() - killed_at, 1)}
        result.update(self.come_back())
        after = self.census()  # what came back, before the follow-ups change it
        follow_ups = [] if self.has_canary() else [["canary", "--version",
                                                     next(self.releases)]]
        follow_ups.append([rng.choice(["promote", "rollback"])])
        result["follow_ups"] = [" ".join(f) for f in follow_ups]
        result["follow_up"] = all(self.run(*f).returncode == 0 for f in follow_ups) and \
            self.settled()
        result["recovered"] = round(time.monotonic() - killed_at, 1)
        return self.survivors(result, before, after)

    def restart_trial(self) -> dict:
        """`sandbox.down`, `sandbox.up`: the groups in service again, then a publish."""
        before = self.census()
        down_at = time.monotonic()
        self.box.down()
        result = {"kind": "restart", "at": 0, "finished": True}
        result.update(self.come_back())
        after = self.census()
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not self.in_service():
            time.sleep(0.5)
        result["recovered"] = round(time.monotonic() - down_at, 1)
        result["follow_up"] = self.in_service() and self.run(
            *self.command("publish", next(self.versions))).returncode == 0
        return self.survivors(result, before, after)

    def come_back(self) -> dict:
        """`sandbox.up` as a task would run it; what it said, and how long it took."""
        self.up_started = time.monotonic()
        up = self.run("sandbox.up")
        os.environ.update(self.box.env("admin"))  # new keys at every start
        import boto3

        boto3.setup_default_session()  # the bench's own clients take them
        self.__dict__.pop("lock_tables", None)  # clients made with the old keys
        said = [line for line in up.stderr.splitlines() if "restored" in line
                or "saved no state" in line]
        return {"up": round(time.monotonic() - self.up_started, 1), "up_said": said[:1]}

    def survivors(self, result: dict, before: dict, after: dict) -> dict:
        result["survived"] = {k: f"{before[k]}->{after[k]}" for k in before}
        result["lost"] = sum(max(0, before[k] - after[k]) for k in before)
        result["leaks"] = result["leaks_after_janitor"] = leaks()
        result["repo_ok"] = self.repo_consistent()
        result["locks_left"] = self.dead_locks()
        return result

    def census(self) -> dict:
        """What the sandbox holds that Kiln made: packages, stacks, images, server groups and
        their instances in service."""
        admin = connect(self.settings, admin=True)
        deploy = admin.admin(self.settings.deploy.account)
        stacks = sum(len([s for s in aws.client("cloudformation").describe_stacks()["Stacks"]
                          if s["StackStatus"] != "DELETE_COMPLETE"]) for aws in (admin, deploy))
        images = len(deploy.client("ec2").describe_images(Owners=["self"])["Images"])
        groups = self.groups()
        return {"packages": len(self.packages()), "stacks": stacks, "images": images,
                "groups": len(groups), "in_service": sum(g["in_service"] for g in groups)}

    def in_service(self) -> bool:
        return all(g["in_service"] >= g["desired"] for g in self.groups())

    def packages(self) -> set[str]:
        listed = self.run("repo.list", "--json")
        if listed.returncode != 0:
            return set()
        return {p["path"] for p in json.loads(listed.stdout)["packages"]}

    # -- what is checked ---------------------------------------------------------------------
    def groups(self) -> list[dict]:
        return json.loads(self.must_output("status", "--json"))["server_groups"]

    def must_output(self, *args: str) -> str:
        result = self.run(*args)
        if result.returncode != 0:
            sys.exit(f"invoke {' '.join(args)} failed:\n{result.stderr}")
        return result.stdout

    def has_canary(self) -> bool:
        return any(g["state"] in UNSETTLED for g in self.groups())

    def settled(self) -> bool:
        groups = self.groups()
        serving = [g for g in groups if g["on_listener"] and g["weight"]]
        return (not any(g["state"] in UNSETTLED for g in groups) and len(serving) == 1
                and (serving[0]["state"], serving[0]["weight"]) == ("active", 100))

    def dead_locks(self) -> int:
        """Lock items, build and cluster tables, whose holder is not alive."""
        if not hasattr(self, "lock_tables"):
            self.lock_tables = lock_tables(self.settings, "promote" in self.clean)
        return sum(_dead_in(client, table) for client, table in self.lock_tables)

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


def leaks() -> int:
    """Temporary bake resources of the probe app that exist now."""
    import boto3

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


def break_index(admin, fault: str) -> None:
    """As a bucket writer: delete repomd.xml, truncate it, or put back its previous version
    (with the signature written with it)."""
    target = repository.Repo.of(admin)
    key = target.key(repository.REPOMD)
    if fault == "delete":
        target.delete([repository.REPOMD, f"{repository.REPOMD}.asc"])
    elif fault == "truncate":
        body = target.get(repository.REPOMD)[0]
        target.put(repository.REPOMD, body[:len(body) // 2], "application/xml")
    else:
        current = repodata.revision(target.get(repository.REPOMD)[0]) or 0
        for version in target.versions(repository.REPOMD):
            found = target.s3.get_object(Bucket=target.bucket, Key=key,
                                         VersionId=version["VersionId"])
            signature = found.get("Metadata", {}).get(repository.SIGNATURE_META)
            if signature and (repodata.revision(found["Body"].read()) or current) < current:
                break
        else:
            raise SystemExit("chaos: no older signed version of repomd.xml to put back")
        source = {"Bucket": target.bucket, "Key": key, "VersionId": version["VersionId"]}
        target.s3.copy_object(Bucket=target.bucket, Key=key, CopySource=source)
        target.put(f"{repository.REPOMD}.asc", base64.b64decode(signature), "text/plain")


def lock_tables(settings, cluster: bool) -> list[tuple[object, str]]:
    """(DynamoDB client as the administrator, table): the build account's lock table, and the
    cluster's (in the deploy account and region) when there is a cluster."""
    admin = connect(settings, admin=True)
    found = [(admin.client("dynamodb"), locks.build_table(admin))]
    if cluster:
        from orchestrator import environment

        env = environment.load(connect(settings))
        found.append((admin.admin(env.aws.account_name).client("dynamodb", env.region),
                      env.lock_table))
    return [(client, table) for client, table in found if table]


def _dead_in(dynamodb, table: str) -> int:
    items = dynamodb.scan(TableName=table, ConsistentRead=True)["Items"]
    leases = [item for item in items if "ExpiresAt" in item]  # not the repository's record
    return sum(1 for item in leases if not locks.alive({
        "expires_at": int(item["ExpiresAt"]["N"]), "host": item.get("Host", {}).get("S"),
        "pid": int(item.get("Pid", {}).get("N", 0)),
        "pid_start": item.get("PidStart", {}).get("S")}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=24)
    parser.add_argument("--kinds", default="bake,publish,promote,index")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    kinds = args.kinds.split(",")
    with tempfile.TemporaryDirectory(prefix="kiln-bench-chaos-") as temp:
        box = Sandbox(Path(temp) / "sandbox")
        box.up()
        try:
            os.environ.update(box.env("admin"))  # the bench's own reads; tasks pick their own
            chaos = Chaos(Path(temp), box)
            chaos.prepare(kinds, args.trials)
            print("clean runs: " + ", ".join(f"{k} {s:.1f} s" for k, s in chaos.clean.items()),
                  flush=True)
            results = []
            for number in range(args.trials):
                result = chaos.trial(kinds[number % len(kinds)], rng)
                results.append(result)
                print(result, flush=True)
            summarize(results)
            summarize_recovery(results)
        finally:
            box.down()


def summarize(results: list[dict]) -> None:
    print(f"\n{'kind':<9}{'trials':>7}{'killed':>7}{'leaks after':>12}{'after janitor':>14}"
          f"{'repo ok':>9}{'locks left':>11}{'lost':>6}{'follow-up ok':>13}")
    for kind in sorted({r["kind"] for r in results}) + ["all"]:
        rows = [r for r in results if kind in ("all", r["kind"])]
        checked = [r["repo_ok"] for r in rows if r["repo_ok"] is not None]
        repo_ok = f"{sum(checked) / len(checked):.0%}" if checked else "-"
        print(f"{kind:<9}{len(rows):>7}{sum(not r['finished'] for r in rows):>7}"
              f"{sum(r['leaks'] for r in rows):>12}"
              f"{sum(r['leaks_after_janitor'] for r in rows):>14}"
              f"{repo_ok:>9}{sum(r['locks_left'] for r in rows):>11}"
              f"{sum(r.get('lost', 0) for r in rows):>6}"
              f"{sum(r['follow_up'] for r in rows) / len(rows):>13.0%}")


def summarize_recovery(results: list[dict]) -> None:
    rows = [r for r in results if r["kind"] in RECOVERY]
    if not rows:
        return
    print(f"\n{'kind':<9}{'trials':>7}{'lost':>6}{'up s (median)':>15}{'recovered s':>13}"
          f"{'canary ok/1 line':>18}")
    for kind in RECOVERY:
        mine = [r for r in rows if r["kind"] == kind]
        if not mine:
            continue
        one_line = [r["canary_one_line"] for r in mine if "canary_one_line" in r]
        print(f"{kind:<9}{len(mine):>7}{sum(r['lost'] for r in mine):>6}"
              f"{_median([r['up'] for r in mine]):>15.1f}"
              f"{_median([r['recovered'] for r in mine]):>13.1f}"
              f"{(f'{sum(one_line)}/{len(one_line)}' if one_line else '-'):>18}")


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2] if ordered else 0.0


if __name__ == "__main__":
    main()
