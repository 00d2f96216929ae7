"""A sandbox load balancer attacked as a hostile client would: slow heads, slow bodies, a big
upload; a normal client's and the AWS API's answer times meanwhile, beside a quiet baseline.

    .venv/bin/python bench/abuse.py [--slow 2000] [--hold 5] [--slow-bodies 64]
                                    [--upload-mb 128] [--requests 40]

Starts a private sandbox (its own moto server under a temporary state directory) at real AWS
time (time scale 1: the idle timeout is 60 s, the header timeout 10 s), two plain HTTP apps on
loopback behind a load balancer, then measures:
- baseline: a normal client's answer time (a new connection per request) and DescribeLoadBalancers'
  answer time, nothing else running;
- slow heads: `--slow` connections that each send part of a request head and then one more
  header line a second (slowloris), from many loopback source addresses (so that the per-client
  cap does not stop them), held `--hold` seconds; the same answer times meanwhile, and how many
  of the connections the balancers' process held once all were opened and at the end (its
  sockets: the header timeout closes those still sending their heads after 10 s);
- slow bodies: `--slow-bodies` requests whose head is whole and whose body comes a byte a second,
  from many addresses; the same answer times meanwhile;
- a `--upload-mb` MiB POST: how much the load balancers' process's memory grew while it
  streamed.
Only loopback is contacted; the sandbox is stopped at the end. The slow connections are held by
child processes of at most 5,000 each (fewer when the hard file descriptor limit is lower), so
20,000 need no limit raised.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import boto3

RLIMIT = resource.RLIMIT_NOFILE

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.traffic import load_balancer  # noqa: E402
from sandbox.control import Sandbox  # noqa: E402
from sandbox.network import front  # noqa: E402
from tests.network_helpers import App, get  # noqa: E402

HEAD = b"GET / HTTP/1.1\r\nHost: bench\r\nUser-Agent: slow\r\n"


def answer_times(host: str, count: int) -> list[float]:
    """Seconds per request of a normal client (a new connection each; 10 s: no answer)."""
    times = []
    for _ in range(count):
        started = time.monotonic()
        try:
            status, _body = get(host, 80, timeout=10)
            times.append(time.monotonic() - started if status == 200 else 10.0)
        except OSError:
            times.append(10.0)
    return times


def api_times(count: int) -> list[float]:
    elbv2 = boto3.client("elbv2")
    times = []
    for _ in range(count):
        started = time.monotonic()
        elbv2.describe_load_balancers()
        times.append(time.monotonic() - started)
    return times


def sources(count: int) -> list[str]:
    """Loopback source addresses enough for `count` connections under the per-client cap."""
    per = front.PER_CLIENT - 12
    return [f"127.0.{2 + n // 250}.{1 + n % 250}" for n in range(-(-count // per))]


class Slow:
    """Connections held open by sending a little now and then (slow heads or slow bodies):
    `first`..`first + count` of an attack of `total` connections."""

    def __init__(self, host: str, count: int, body: bool, first: int = 0,
                 total: int | None = None):
        self.host, self.count, self.body, self.first = host, count, body, first
        self.total = total or count
        self.socks: list[socket.socket] = []
        self.refused = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._trickle, daemon=True)

    def open(self) -> None:
        addresses = sources(self.total)
        for n in range(self.first, self.first + self.count):
            try:
                sock = socket.create_connection((self.host, 80), timeout=5,
                                                source_address=(addresses[n % len(addresses)], 0))
                sock.sendall(HEAD + (b"Content-Length: 1000000\r\n\r\n" if self.body else b""))
                sock.setblocking(False)
                self.socks.append(sock)
            except OSError:
                self.refused += 1
        self._thread.start()

    def _trickle(self) -> None:
        while not self._stop.wait(1):
            for sock in self.socks:
                with contextlib.suppress(OSError):
                    sock.send(b"x" if self.body else b"X-Slow: 1\r\n")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for sock in self.socks:
            sock.close()


class Flood:
    """`count` slow connections held by child processes of PER_PROCESS each (one process holds
    no more connections than its file descriptor limit allows), opened one process after the
    other as one attacker would."""

    PER_PROCESS = 5000

    def __init__(self, host: str, count: int, body: bool):
        self.host, self.count, self.body = host, count, body
        self.children: list[subprocess.Popen] = []
        self.refused = 0

    def open(self) -> None:
        for first in range(0, self.count, self.PER_PROCESS):
            child = subprocess.Popen(
                [sys.executable, __file__, "--hold-for-parent", self.host, str(first),
                 str(min(self.PER_PROCESS, self.count - first)), str(self.count),
                 "body" if self.body else "head"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
            self.children.append(child)
            self.refused += int(child.stdout.readline())  # once all of its are open

    def close(self) -> None:
        for child in self.children:
            child.stdin.close()
        for child in self.children:
            child.wait(30)


def hold_for_parent(host: str, first: str, count: str, total: str, kind: str) -> None:
    """A child of Flood: open its connections, say how many were refused, then hold them
    until the parent closes stdin."""
    descriptors()
    slow = Slow(host, int(count), kind == "body", int(first), int(total))
    slow.open()
    print(slow.refused, flush=True)
    sys.stdin.read()
    slow.close()


def under(host: str, slow: Flood, hold: float, requests: int, pid: int) -> dict:
    before = sockets(pid)
    started = time.monotonic()
    slow.open()
    opened = time.monotonic()
    try:
        held = sockets(pid) - before
        normal = answer_times(host, requests)
        api = api_times(max(5, requests // 4))
        time.sleep(max(0.0, hold - (time.monotonic() - opened)))
        return {"normal": normal, "api": api, "held": held, "left": sockets(pid) - before,
                "opening": opened - started, "refused": slow.refused}
    finally:
        slow.close()


def sockets(pid: int) -> int:
    """The sockets a process holds."""
    return sum(1 for fd in Path(f"/proc/{pid}/fd").iterdir()
               if os.readlink(fd).startswith("socket:"))


def rss(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(status.split("VmRSS:")[1].split()[0]) * 1024


def upload(host: str, megabytes: int, pid: int) -> tuple[int, float]:
    """Bytes the server grew by (at most, sampled) while streaming a POST; seconds it took."""
    before, peak = rss(pid), 0
    block = b"x" * (1 << 20)
    started = time.monotonic()
    with socket.create_connection((host, 80), timeout=60) as sock:
        sock.sendall(b"POST /upload HTTP/1.1\r\nHost: bench\r\nContent-Length: "
                     + str(megabytes << 20).encode() + b"\r\n\r\n")
        for n in range(megabytes):
            sock.sendall(block)
            if n % 8 == 0:
                peak = max(peak, rss(pid) - before)
        answer = sock.recv(65536)
    if not answer.startswith(b"HTTP/1.1 200"):
        sys.exit(f"the upload was not answered 200: {answer[:80]!r}")
    return peak, time.monotonic() - started


def descriptors() -> int:
    """Raise this process's file descriptor limit to its hard limit (the sandbox it starts, and
    the flood's processes, inherit it); the limit."""
    _soft, hard = resource.getrlimit(RLIMIT)
    resource.setrlimit(RLIMIT, (hard, hard))
    return hard


def figures(times: list[float]) -> str:
    ordered = sorted(times)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    late = [n for n, seconds in enumerate(times, 1) if seconds > 1]
    return (f"median {statistics.median(ordered) * 1000:7.1f} ms  p99 {p99 * 1000:7.1f} ms  "
            f"max {ordered[-1] * 1000:7.1f} ms  over 1 s: {len(late)} of {len(times)}"
            + (f" (request {', '.join(map(str, late[:5]))})" if late else ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slow", type=int, default=2000)
    parser.add_argument("--hold", type=float, default=5)
    parser.add_argument("--slow-bodies", type=int, default=64)
    parser.add_argument("--upload-mb", type=int, default=128)
    parser.add_argument("--requests", type=int, default=40)
    args = parser.parse_args()
    Flood.PER_PROCESS = max(100, min(Flood.PER_PROCESS, descriptors() - 256))
    slow_count = args.slow
    apps = {"baseline": App("baseline"), "canary": App("canary")}
    with tempfile.TemporaryDirectory(prefix="kiln-bench-abuse-") as state:
        box = Sandbox(Path(state))
        box.up()
        try:
            os.environ.update(box.env("admin"))
            host = load_balancer(apps, {"baseline": 1, "canary": 1})
            box.set_time_scale(1)  # once the targets are healthy: AWS's own timeouts from here
            fronts = int((box.state_dir / "fronts.pid").read_text().split()[0])
            report(args, host, slow_count, fronts)
        finally:
            box.down()
            for app in apps.values():
                app.close()


def report(args, host: str, slow_count: int, pid: int) -> None:
    print(f"load balancer at http://{host}/, time scale 1 (idle timeout 60 s, header timeout "
          f"{front.HEADER_TIMEOUT:.0f} s); per client {front.PER_CLIENT} connections, "
          f"{front.PER_CLIENT_BUSY} requests at once; {front.WORKERS} workers")
    base = {"normal": answer_times(host, args.requests), "api": api_times(args.requests // 4)}
    heads = under(host, Flood(host, slow_count, body=False), args.hold, args.requests, pid)
    bodies = under(host, Flood(host, args.slow_bodies, body=True), args.hold, args.requests,
                   pid)
    rows = [("baseline (nothing else)", base),
            (f"{slow_count:,} slow heads held {args.hold:.0f} s", heads),
            (f"{args.slow_bodies} slow bodies held {args.hold:.0f} s", bodies)]
    for name, found in rows:
        print(f"{name:32} normal client: {figures(found['normal'])}")
        print(f"{'':32} AWS API:       {figures(found['api'])}")
        if "held" in found:
            print(f"{'':32} all opened in {found['opening']:.1f} s; the balancers held "
                  f"{found['held']:,} of them then, {found['left']:,} at the end (refused at "
                  f"connect: {found['refused']:,})")
    grown, seconds = upload(host, args.upload_mb, pid)
    print(f"{args.upload_mb} MiB upload streamed in {seconds:.1f} s; the balancers' process "
          f"grew by at most {grown / (1 << 20):.1f} MiB while it ran")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--hold-for-parent"]:
        hold_for_parent(*sys.argv[2:])
    else:
        main()
