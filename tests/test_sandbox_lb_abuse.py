"""The sandbox's load balancers under abuse: framing an ALB refuses, slow and idle clients,
per-client caps, a bounded worker pool and bodies streamed, not held (raw sockets against the
listener of the `lb` fixture)."""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path

import boto3

from sandbox import listener_cert
from tests.network_helpers import closed, forward, fronts_pid, get, https_get

NAME = f"web.{listener_cert.DOMAIN}"


def _head(*lines: str) -> bytes:
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _open(lb, source: str = "127.0.0.1", timeout: float = 5) -> socket.socket:
    return socket.create_connection((lb["dns"], 80), timeout=timeout,
                                    source_address=(source, 0))


def _exchange(lb, data: bytes, timeout: float = 5) -> tuple[bytes, bool]:
    """Send `data` on a new connection; (all that came back, whether the balancer closed)."""
    with _open(lb, timeout=timeout) as sock:
        sock.sendall(data)
        return _drain(sock)


def _drain(sock: socket.socket) -> tuple[bytes, bool]:
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except TimeoutError:
        return received, False
    except ConnectionResetError:
        pass
    return received, True


def _response(sock: socket.socket) -> bytes:
    """One response with a Content-Length, read whole."""
    data = b""
    while b"\r\n\r\n" not in data or len(data) < _response_size(data):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def _response_size(data: bytes) -> int:
    head, _blank, _body = data.partition(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
    return len(head) + 4 + length


def _posts(lb) -> list[bytes]:
    return [body for app in lb["apps"].values() for body in app.bodies]


def _hits(lb, path: str) -> int:
    return sum(app.hits[path] for app in lb["apps"].values())


def _mode(lb, mode: str) -> None:
    boto3.client("elbv2").modify_load_balancer_attributes(
        LoadBalancerArn=lb["arn"],
        Attributes=[{"Key": "routing.http.desync_mitigation_mode", "Value": mode}])


SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: web\r\n\r\n"
SEVERE = {  # what an ALB blocks in every mode but monitor: 400, the connection closed
    "different Content-Lengths": _head(
        "POST /upload HTTP/1.1", "Host: web", "Content-Length: 5", "Content-Length: 42")
        + b"hello" + SMUGGLED,
    "a Content-Length list": _head(
        "POST /upload HTTP/1.1", "Host: web", "Content-Length: 5, 42") + b"hello" + SMUGGLED,
    "a signed Content-Length": _head(
        "POST /upload HTTP/1.1", "Host: web", "Content-Length: +5") + b"hello" + SMUGGLED,
    "a hex Content-Length": _head(
        "POST /upload HTTP/1.1", "Host: web", "Content-Length: 0x5") + b"hello" + SMUGGLED,
    "a transfer coding besides chunked": _head(
        "POST /upload HTTP/1.1", "Host: web", "Transfer-Encoding: gzip, chunked")
        + b"5\r\nhello\r\n0\r\n\r\n" + SMUGGLED,
    "chunked twice": _head(
        "POST /upload HTTP/1.1", "Host: web", "Transfer-Encoding: chunked",
        "Transfer-Encoding: chunked") + b"5\r\nhello\r\n0\r\n\r\n" + SMUGGLED,
    "a carriage return inside a header": _head(
        "POST /upload HTTP/1.1", "Host: web", "X-Note: a\rContent-Length: 5")
        + b"hello" + SMUGGLED,
    "a request line of 17 KiB": _head(
        f"GET /{'a' * 17 * 1024} HTTP/1.1", "Host: web"),
    "a header of 17 KiB": _head("GET / HTTP/1.1", "Host: web", f"X-Big: {'a' * 17 * 1024}"),
    "headers of 65 KiB": _head("GET / HTTP/1.1", "Host: web",
                               *(f"X-Part-{n}: {'a' * 8000}" for n in range(9))),
}


BAD_CHUNKS = {  # found only once the body streams: the target's request is cut off
    "a chunk size that is not hex": _head(
        "POST /upload HTTP/1.1", "Host: web", "Transfer-Encoding: chunked")
        + b"zz\r\nhello\r\n0\r\n\r\n" + SMUGGLED,
    "a negative chunk size": _head(
        "POST /upload HTTP/1.1", "Host: web", "Transfer-Encoding: chunked")
        + b"-5\r\nhello\r\n0\r\n\r\n" + SMUGGLED,
    "a chunk longer than its size": _head(
        "POST /upload HTTP/1.1", "Host: web", "Transfer-Encoding: chunked")
        + b"5\r\nhello, world\r\n0\r\n\r\n" + SMUGGLED,
}


def test_severe_framing_is_refused_with_400_and_reaches_no_target(lb):
    for name, request in SEVERE.items():
        answer, closed = _exchange(lb, request)
        assert answer.startswith(b"HTTP/1.1 400 "), (name, answer[:200])
        assert answer.count(b"HTTP/1.1 ") == 1 and closed, name
    assert _posts(lb) == [] and _hits(lb, "/upload") == 0 and _hits(lb, "/smuggled") == 0
    assert _hits(lb, "/") == 0


def test_bad_chunks_end_the_request_with_400_and_no_target_gets_a_whole_one(lb):
    for name, request in BAD_CHUNKS.items():
        answer, closed = _exchange(lb, request)
        assert answer.startswith(b"HTTP/1.1 400 "), (name, answer[:200])
        assert answer.count(b"HTTP/1.1 ") == 1 and closed, name
    assert _posts(lb) == [] and _hits(lb, "/smuggled") == 0


def test_ambiguous_framing_is_forwarded_as_chunked_then_both_connections_close(lb):
    """Content-Length with Transfer-Encoding (defensive mode, the default): Transfer-Encoding
    decides, Content-Length is dropped, and the client connection closes after the answer, so
    what followed the body is never read as a request."""
    request = _head("POST /upload HTTP/1.1", "Host: web", "Content-Length: 4",
                    "Transfer-Encoding: chunked") + b"5\r\nhello\r\n0\r\n\r\n" + SMUGGLED
    answer, closed = _exchange(lb, request)
    assert answer.startswith(b"HTTP/1.1 200 ") and answer.count(b"HTTP/1.1 ") == 1, answer
    assert closed and _posts(lb) == [b"hello"] and _hits(lb, "/smuggled") == 0


def test_strictest_mode_refuses_ambiguous_framing(lb):
    _mode(lb, "strictest")
    for request in (
            _head("POST /upload HTTP/1.1", "Host: web", "Content-Length: 4",
                  "Transfer-Encoding: chunked") + b"5\r\nhello\r\n0\r\n\r\n" + SMUGGLED,
            _head("POST /upload HTTP/1.1", "Host: web", "Content-Length: 5",
                  "Content-Length: 5") + b"hello" + SMUGGLED):
        answer, closed = _exchange(lb, request)
        assert answer.startswith(b"HTTP/1.1 400 ") and closed, answer[:200]
    assert _posts(lb) == [] and _hits(lb, "/smuggled") == 0


def test_chunked_bodies_reach_the_target_and_the_connection_is_reused(lb):
    request = _head("POST /upload HTTP/1.1", "Host: web", "Transfer-Encoding: chunked") \
        + b"5;note=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n"
    with _open(lb) as sock:
        sock.sendall(request + _head("GET / HTTP/1.1", "Host: web", "Connection: close"))
        answer, closed = _drain(sock)
    assert answer.count(b"HTTP/1.1 200 ") == 2 and closed, answer
    assert _posts(lb) == [b"hello world"] and _hits(lb, "/") == 1


def test_a_head_sent_slowly_is_cut_at_the_header_timeout(lb):
    """The whole head must arrive within the idle timeout (1 s at the default time scale):
    a byte now and then does not keep a connection."""
    started = time.monotonic()
    with _open(lb) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: web\r\n")
        answer = b""
        try:
            while time.monotonic() - started < 4:
                sock.sendall(b"X-Slow: 1\r\n")
                time.sleep(0.1)
        except OSError:
            answer, _closed = _drain(sock)
    assert time.monotonic() - started < 3
    assert answer == b"" or answer.startswith(b"HTTP/1.1 408 "), answer


def test_an_idle_connection_closes_after_the_idle_timeout_attribute(lb):
    boto3.client("elbv2").modify_load_balancer_attributes(
        LoadBalancerArn=lb["arn"],
        Attributes=[{"Key": "idle_timeout.timeout_seconds", "Value": "30"}])  # 0.5 s here
    with _open(lb) as sock:
        sock.sendall(_head("GET / HTTP/1.1", "Host: web"))
        answer = _response(sock)
        answered = time.monotonic()
        rest, closed = _drain(sock)
    assert answer.startswith(b"HTTP/1.1 200 ") and rest == b"" and closed
    assert 0.3 < time.monotonic() - answered < 2


def _threads(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(status.split("Threads:")[1].split()[0])


def _rss(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(status.split("VmRSS:")[1].split()[0]) * 1024


def test_slow_clients_hold_no_threads_and_one_client_is_capped(lb, clean_sandbox):
    """Connections still sending their heads cost no thread; one client address holds at most
    PER_CLIENT of them (the rest are closed at once), and others are answered meanwhile."""
    clean_sandbox.set_time_scale(1)  # the header timeout at its real 10 s while this runs
    slow = []
    try:
        pid = fronts_pid(clean_sandbox)
        threads = _threads(pid)
        for n in range(300):
            sock = _open(lb, source="127.0.0.2", timeout=2)
            if n % 10 == 0:  # some send part of a head, the rest nothing yet
                sock.sendall(b"GET / HTTP/1.1\r\nHost: web\r\n")
            slow.append(sock)
        started = time.monotonic()
        assert get(lb["dns"], 80, timeout=5)[0] == 200
        assert time.monotonic() - started < 1
        assert _threads(pid) < threads + 40
        cut = sum(1 for sock in slow if closed(sock))
        assert 40 <= cut <= 50, cut
    finally:
        clean_sandbox.set_time_scale(None)
        for sock in slow:
            sock.close()


def _sockets(pid: int) -> int:
    return sum(1 for fd in Path(f"/proc/{pid}/fd").iterdir()
               if os.readlink(fd).startswith("socket:"))


def test_a_flood_of_slow_clients_never_reaches_the_aws_api(lb, clean_sandbox):
    """The listeners live in a process of their own: 1,500 connections trickling their heads
    from six addresses cost the moto server no socket, and the AWS API answers at once
    meanwhile."""
    clean_sandbox.set_time_scale(1)  # the header timeout at its real 10 s while this runs
    server, elbv2 = clean_sandbox.moto.pid, boto3.client("elbv2")
    elbv2.describe_load_balancers()
    sockets = _sockets(server)
    slow = []
    try:
        for n in range(1500):
            sock = _open(lb, source=f"127.0.4.{1 + n % 6}", timeout=2)
            sock.sendall(b"GET / HTTP/1.1\r\nHost: web\r\n")
            slow.append(sock)
        times = []
        for _ in range(5):
            started = time.monotonic()
            elbv2.describe_load_balancers()
            times.append(time.monotonic() - started)
        held = sum(1 for sock in slow if not closed(sock))
        assert held == 1500 and _sockets(server) < sockets + 20
        assert max(times) < 0.5, times
    finally:
        clean_sandbox.set_time_scale(None)
        for sock in slow:
            sock.close()


def test_bodies_stream_to_the_target_without_being_held(lb, clean_sandbox):
    """A 64 MiB upload: the balancers' process does not grow by the body's size while the
    target holds its answer."""
    pid = fronts_pid(clean_sandbox)
    app_list = list(lb["apps"].values())
    for app in app_list:
        app.release.clear()
    size = 64 << 20
    before = _rss(pid)
    sock = _open(lb, timeout=30)
    try:
        sock.sendall(_head("POST /upload HTTP/1.1", "Host: web", f"Content-Length: {size}"))
        block = b"x" * (1 << 20)
        sender = threading.Thread(target=lambda: [sock.sendall(block) for _ in range(64)])
        sender.start()
        assert any(app.received.wait(20) for app in app_list)
        grown = _rss(pid) - before
        for app in app_list:
            app.release.set()
        sender.join(20)
        answer = _response(sock)
    finally:
        sock.close()
        for app in app_list:
            app.release.set()
    assert answer.startswith(b"HTTP/1.1 200 ") and f" {size}\n".encode() in answer, answer
    assert grown < 24 << 20, grown


def test_get_with_a_body_length_is_served_then_closed(lb):
    """GET with Content-Length (undefined semantics: ambiguous) is served, then the client
    connection closes."""
    answer, closed = _exchange(lb, _head("GET / HTTP/1.1", "Host: web", "Content-Length: 3")
                               + b"abc" + SMUGGLED)
    assert answer.startswith(b"HTTP/1.1 200 ") and answer.count(b"HTTP/1.1 ") == 1, answer
    assert closed and _hits(lb, "/smuggled") == 0


def test_slow_bodies_never_hold_every_worker(lb, clean_sandbox):
    """Forty uploads trickling their bodies from five addresses: a GET is still answered at
    once (uploads waiting on their bodies take at most half the workers)."""
    clean_sandbox.set_time_scale(1)  # the idle timeout at its real 60 s while this runs
    slow = []
    try:
        for n in range(40):
            sock = _open(lb, source=f"127.0.3.{1 + n % 5}", timeout=2)
            sock.sendall(_head("POST /upload HTTP/1.1", "Host: web", "Content-Length: 1000")
                         + b"x")
            slow.append(sock)
        time.sleep(0.3)  # all of them in the balancer's hands
        started = time.monotonic()
        assert get(lb["dns"], 80, timeout=5)[0] == 200
        assert time.monotonic() - started < 1
    finally:
        clean_sandbox.set_time_scale(None)
        for sock in slow:
            sock.close()


def test_a_body_that_stops_coming_ends_in_408_after_the_idle_timeout(lb):
    started = time.monotonic()
    answer, closed = _exchange(lb, _head("POST /upload HTTP/1.1", "Host: web",
                                         "Content-Length: 10") + b"abc")
    assert answer.startswith(b"HTTP/1.1 408 ") and closed, answer
    assert time.monotonic() - started < 4 and _posts(lb) == []


def test_an_https_listener_cuts_a_client_that_never_finishes_its_handshake(lb, sandbox_box):
    """A TLS handshake is waited for in the listener's loop, for the idle timeout at most
    (1 s at the default time scale); a client that never finishes it holds nothing after."""
    arn = listener_cert.import_into(boto3.client("acm"), sandbox_box.state_dir)
    boto3.client("elbv2").create_listener(
        LoadBalancerArn=lb["arn"], Protocol="HTTPS", Port=443,
        Certificates=[{"CertificateArn": arn}], DefaultActions=[forward(lb["groups"], green=1)])
    ca = listener_cert.files(sandbox_box.state_dir)["ca"]
    assert https_get(lb["dns"], 443, NAME, ca)[0] == 200
    started = time.monotonic()
    with socket.create_connection((lb["dns"], 443), timeout=5) as sock:
        sock.sendall(b"\x16\x03\x01\x00")  # the start of a ClientHello, and no more
        rest, closed = _drain(sock)
    assert closed and rest == b"" and time.monotonic() - started < 4
    assert https_get(lb["dns"], 443, NAME, ca)[0] == 200
