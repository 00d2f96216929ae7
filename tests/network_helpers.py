"""Plain loopback HTTP servers standing in for targets, a load balancer in front of two of them
(fixtures `apps` and `lb`), and bounded ways to wait on the sandbox."""

from __future__ import annotations

import functools
import http.client
import ssl
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import boto3
import pytest
from tenacity import retry, retry_if_exception_type, stop_after_delay, wait_fixed

from sandbox.network.client import NamedHTTPS


class App:
    """An app on 127.0.0.1: `/` answers `status` with its name, `/health` answers `health`."""

    def __init__(self, name: str, status: int = 200, health: int = 200, delay: float = 0):
        self.name, self.status, self.health, self.delay = name, status, health, delay
        self.hits: Counter = Counter()
        app = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):  # noqa: N802 - the base class's name
                path = self.path.split("?")[0]
                app.hits[path] += 1
                code = app.health if path == "/health" else app.status
                if path != "/health" and app.delay:
                    time.sleep(app.delay)
                body = f"{app.name}\n".encode()
                self.send_response(code)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("X-Seen-Forwarded-For", self.headers.get("X-Forwarded-For", ""))
                self.send_header("X-Seen-Header-Names", ",".join(self.headers.keys()))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):  # noqa: N802 - the base class's name
                # Each request's body, as the target read it (its own framing).
                app.hits[self.path] += 1
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    body = _dechunk(self.rfile)
                else:
                    body = _counted(self.rfile, int(self.headers.get("Content-Length") or 0))
                app.bodies.append(body if isinstance(body, bytes) else b"")
                app.sizes.append(len(body) if isinstance(body, bytes) else body)
                app.received.set()
                app.release.wait(30)
                answer = f"{app.name} {app.sizes[-1]}\n".encode()
                self.send_response(app.status)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args):
                pass

        class Server(ThreadingHTTPServer):
            def handle_error(self, request, client_address):  # a connection reset, say
                app.errors += 1

        self.errors = 0
        self.bodies: list[bytes] = []  # bodies up to BIG; a bigger one is counted only
        self.sizes: list[int] = []
        self.received = threading.Event()  # a POST's body was read
        self.release = threading.Event()  # ...and may be answered
        self.release.set()
        self.server = Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


BIG = 1 << 20


def _counted(stream, length: int) -> bytes | int:
    """The body (or, past BIG bytes, its length only: a test's memory stays small)."""
    if length <= BIG:
        body = stream.read(length)
        if len(body) < length:
            raise ConnectionError("the request was cut off")  # not a request the app takes
        return body
    left = length
    while left:
        left -= len(stream.read(min(left, 1 << 16)) or b"x" * left)
    return length


def _dechunk(stream) -> bytes:
    parts = []
    while size := int(stream.readline().split(b";")[0].strip(), 16):
        parts.append(stream.read(size))
        stream.readline()
    while stream.readline() not in (b"\r\n", b"\n", b""):  # trailers
        pass
    return b"".join(parts)


def get(host: str, port: int, path: str = "/", headers: dict | None = None,
        timeout: float = 10) -> tuple[int, str]:
    connection = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        connection.request("GET", path, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.read().decode()
    finally:
        connection.close()


def https_get(address: str, port: int, name: str, cafile=None, path: str = "/",
              headers: dict | None = None, timeout: float = 10) -> tuple[int, str]:
    """GET over TLS, the certificate verified against `cafile` (None: the system's CAs)."""
    context = ssl.create_default_context(cafile=str(cafile) if cafile else None)
    connection = NamedHTTPS(address, port, name, context, timeout)
    try:
        connection.request("GET", path, headers={"Host": name, **(headers or {})})
        response = connection.getresponse()
        return response.status, response.read().decode()
    finally:
        connection.close()


def until(check, timeout: float = 20):
    """Call `check` until it stops raising AssertionError (at most `timeout` seconds)."""
    return retry(stop=stop_after_delay(timeout), wait=wait_fixed(0.1), reraise=True,
                 retry=retry_if_exception_type(AssertionError))(check)()


@pytest.fixture
def apps():
    made = {name: App(name) for name in ("blue", "green")}
    yield made
    for app in made.values():
        app.close()


def balancer_groups(ec2, vpc: str, *ports: int) -> list[str]:
    """Security groups for a public load balancer: one admitting anyone on `ports` (clients
    come from 127.0.0.1), and the VPC's default group, whose members (instances launched with
    no group) admit it."""
    public = ec2.create_security_group(GroupName=f"public-{'-'.join(map(str, ports))}",
                                       Description="public listeners", VpcId=vpc)["GroupId"]
    ec2.authorize_security_group_ingress(GroupId=public, IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": port, "ToPort": port,
         "IpRanges": [{"CidrIp": "0.0.0.0/0"}]} for port in ports])
    return [public, default_group(ec2, vpc)]


def default_group(ec2, vpc: str) -> str:
    """The VPC's default security group (its members admit each other)."""
    return ec2.describe_security_groups(Filters=[
        {"Name": "vpc-id", "Values": [vpc]}, {"Name": "group-name", "Values": ["default"]}])[
        "SecurityGroups"][0]["GroupId"]


@pytest.fixture
def lb(clean_sandbox, apps):
    ec2, elbv2 = boto3.client("ec2"), boto3.client("elbv2")
    vpc = ec2.create_vpc(CidrBlock="10.8.0.0/16")["Vpc"]["VpcId"]
    subnets = [ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.8.{n}.0/24",
                                 AvailabilityZone=f"us-east-1{z}")["Subnet"]["SubnetId"]
               for n, z in ((1, "a"), (2, "b"))]
    balancer = elbv2.create_load_balancer(
        Name="web", Subnets=subnets,
        SecurityGroups=balancer_groups(ec2, vpc, 80, 443, 8080, 8081))["LoadBalancers"][0]
    groups = {}
    for name, app in apps.items():
        groups[name] = elbv2.create_target_group(
            Name=name, Protocol="HTTP", Port=app.port, VpcId=vpc, TargetType="ip",
            HealthCheckPath="/health", HealthCheckIntervalSeconds=5, HealthyThresholdCount=2,
            UnhealthyThresholdCount=2, Matcher={"HttpCode": "200-299"},
        )["TargetGroups"][0]["TargetGroupArn"]
        elbv2.register_targets(TargetGroupArn=groups[name],
                               Targets=[{"Id": "127.0.0.1", "Port": app.port}])
    listener = elbv2.create_listener(
        LoadBalancerArn=balancer["LoadBalancerArn"], Protocol="HTTP", Port=80,
        DefaultActions=[forward(groups, blue=90, green=10)])["Listeners"][0]["ListenerArn"]
    return {"dns": balancer["DNSName"], "arn": balancer["LoadBalancerArn"], "groups": groups,
            "listener": listener, "apps": apps}


def fronts_pid(box) -> int:
    """The pid of the sandbox's load balancers' process (sandbox/network/channel.py)."""
    return int((box.state_dir / "fronts.pid").read_text().split()[0])


def forward(groups: dict, **weights: int) -> dict:
    return {"Type": "forward", "ForwardConfig": {"TargetGroups": [
        {"TargetGroupArn": groups[name], "Weight": weight} for name, weight in weights.items()]}}


def health(group: str) -> list[dict]:
    found = boto3.client("elbv2").describe_target_health(TargetGroupArn=group)
    return [d["TargetHealth"] for d in found["TargetHealthDescriptions"]]


def all_healthy(lb) -> None:
    def check():
        for group in lb["groups"].values():
            assert [h["State"] for h in health(group)] == ["healthy"]

    until(check)


def admin_session(box) -> boto3.Session:
    """A boto3 session as the administrator of `box`, a sandbox a test started of its own."""
    env = box.env("admin")
    session = boto3.Session(aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
                            region_name="us-east-1")
    session.client = functools.partial(session.client, endpoint_url=env["AWS_ENDPOINT_URL"],
                                       verify=env["AWS_CA_BUNDLE"])
    return session


def closed(sock) -> bool:
    """The peer has closed this connection (read without waiting)."""
    sock.setblocking(False)
    try:
        return sock.recv(1) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True
