"""Requests through the sandbox's load balancer: throughput, a 10 % canary's measured share, and
how fast a broken canary is rolled back.

    .venv/bin/python bench/traffic.py [--requests 4000] [--clients 8] [--share-requests 1000]
                                      [--rollbacks 3]

Starts a private sandbox (its own moto server under a temporary state directory), two plain
HTTP apps on loopback as targets (`ip` target groups), and a load balancer whose listener
forwards 90 / 10 to them. Then: requests per second through the load balancer (each client one
keep-alive connection, a bounded number of requests in all), and how 1,000 requests split.

Then, in a second private sandbox bootstrapped as `invoke bootstrap` does: server groups of
machine images (a web app; the broken version's `/` answers 500, its `/health` 200), a first
deploy, and `--rollbacks` canaries of the broken version at 10 % (default watch and judgement
settings) while four clients request the cluster's HTTPS URL without pause; for each, the
seconds from the first 5xx a client saw to the listener's change that took the canary off.
Only loopback is contacted; the sandboxes are stopped at the end.
"""

from __future__ import annotations

import argparse
import http.client
import os
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import boto3

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sandbox.control import Sandbox  # noqa: E402
from tests.network_helpers import App, balancer_groups  # noqa: E402


def load_balancer(apps: dict[str, App], weights: dict[str, int]) -> str:
    ec2, elbv2 = boto3.client("ec2"), boto3.client("elbv2")
    vpc = ec2.create_vpc(CidrBlock="10.7.0.0/16")["Vpc"]["VpcId"]
    subnets = [ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.7.{n}.0/24",
                                 AvailabilityZone=f"us-east-1{z}")["Subnet"]["SubnetId"]
               for n, z in ((1, "a"), (2, "b"))]
    balancer = elbv2.create_load_balancer(
        Name="bench", Subnets=subnets,
        SecurityGroups=balancer_groups(ec2, vpc, 80))["LoadBalancers"][0]
    groups = []
    for name, app in apps.items():
        arn = elbv2.create_target_group(
            Name=name, Protocol="HTTP", Port=app.port, VpcId=vpc, TargetType="ip",
            HealthCheckPath="/health")["TargetGroups"][0]["TargetGroupArn"]
        elbv2.register_targets(TargetGroupArn=arn, Targets=[{"Id": "127.0.0.1"}])
        groups.append({"TargetGroupArn": arn, "Weight": weights[name]})
    elbv2.create_listener(LoadBalancerArn=balancer["LoadBalancerArn"], Protocol="HTTP", Port=80,
                          DefaultActions=[{"Type": "forward",
                                           "ForwardConfig": {"TargetGroups": groups}}])
    healthy(elbv2, [g["TargetGroupArn"] for g in groups])
    return balancer["DNSName"]


def healthy(elbv2, arns: list[str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = {d["TargetHealth"]["State"] for arn in arns for d in
                  elbv2.describe_target_health(TargetGroupArn=arn)["TargetHealthDescriptions"]}
        if states == {"healthy"}:
            return
        time.sleep(0.2)
    sys.exit("targets did not become healthy")


def client(host: str, count: int, answers: Counter, lock: threading.Lock) -> None:
    connection = http.client.HTTPConnection(host, 80, timeout=30)
    seen = Counter()
    for _ in range(count):
        connection.request("GET", "/")
        response = connection.getresponse()
        seen[(response.status, response.read().decode().strip())] += 1
    connection.close()
    with lock:
        answers.update(seen)


def throughput(host: str, total: int, clients: int) -> tuple[float, Counter]:
    answers, lock = Counter(), threading.Lock()
    threads = [threading.Thread(target=client, args=(host, total // clients, answers, lock))
               for _ in range(clients)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(answers.values()) / (time.monotonic() - started), answers


def rollbacks(trials: int) -> list[dict]:
    """Broken canaries rolled back with traffic flowing: per trial, first 5xx → rollback."""
    from accounts import bootstrap
    from cloud import settings as settings_module
    from cloud.target import connect
    from orchestrator import operations
    from tests.conftest import deep_merge, project_config
    from tests.machine_helpers import Traffic, promoted_web_image

    with tempfile.TemporaryDirectory(prefix="kiln-bench-rollback-") as state:
        box = Sandbox(Path(state))
        box.up()
        try:
            raw = deep_merge(project_config(), {"sandbox": {"state_dir": state},
                                                "deploy": {"health_timeout": "2m"}})
            settings = settings_module.validate(raw, ["bench"])
            admin = connect(settings, admin=True)
            bootstrap.run(admin.settings, admin, yes=True)
            aws = connect(settings)
            prod = aws.account(settings.deploy.account)
            promoted_web_image(box, prod, "1.0.0", status=200)
            promoted_web_image(box, prod, "1.1.0", status=500)
            operations.deploy(aws, version="1.0.0", watch="0")
            host = operations.status(aws)["url"].split("/")[2].split(":")[0]
            return [_rollback(aws, host, box, Traffic) for _ in range(trials)]
        finally:
            box.down()


def _rollback(aws, host: str, box, traffic_class) -> dict:
    from orchestrator import operations
    from sandbox import listener_cert

    off = []

    def observe(step, runner):
        if runner.plan.operation == "rollback" and step.action == "weights":
            off.append(time.monotonic())

    traffic = traffic_class(host, listener_cert.files(box.state_dir)["ca"], clients=4)
    traffic.start()
    try:
        operations.canary(aws, 10, version="1.1.0", observer=observe)
        sys.exit("the broken canary was not rolled back")
    except operations.RolledBack as failure:
        reason = failure.result.get("error", "")
    finally:
        seen = traffic.stop()
    first = min(started for started, status, _body in seen if status >= 500)
    return {"seconds": off[0] - first, "reason": reason,
            "errors": sum(1 for _s, status, _b in seen if status >= 500), "requests": len(seen),
            "late": sum(1 for started, status, _b in seen if status >= 500 and started > off[0])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--share-requests", type=int, default=1000)
    parser.add_argument("--rollbacks", type=int, default=3)
    args = parser.parse_args()
    throughput_and_share(args)
    for number, trial in enumerate(rollbacks(args.rollbacks), 1):
        print(f"broken canary {number}: first 5xx → rolled back in {trial['seconds']:.1f} s "
              f"({trial['errors']} 5xx of {trial['requests']} requests, {trial['late']} after "
              f"the rollback; {trial['reason']})")


def throughput_and_share(args) -> None:
    apps = {"baseline": App("baseline"), "canary": App("canary")}
    with tempfile.TemporaryDirectory(prefix="kiln-bench-traffic-") as state:
        box = Sandbox(Path(state))
        box.up()
        try:
            os.environ.update(box.env("admin"))  # setting up, as the administrator
            host = load_balancer(apps, {"baseline": 90, "canary": 10})
            print(f"load balancer at http://{host}/ (listener 90 % baseline, 10 % canary)")
            rate, answers = throughput(host, args.requests, args.clients)
            print(f"throughput: {rate:,.0f} requests/s ({sum(answers.values())} requests, "
                  f"{args.clients} keep-alive clients; answers {dict(answers)})")
            _rate, split = throughput(host, args.share_requests, 1)
            canary = split[(200, "canary")] / args.share_requests
            print(f"canary share over {args.share_requests} requests: {canary:.1%} (weight 10 %)")
        finally:
            box.down()
            for app in apps.values():
                app.close()


if __name__ == "__main__":
    main()
