"""A fault-injecting HTTP proxy between boto3 and the sandbox's moto server, for tests.

Point a process's AWS_ENDPOINT_URL at `FaultProxy.url` and every AWS request goes through it:

- `every=N`: every Nth signed AWS request is answered with a fault instead of being forwarded,
  in turn a throttling error in the service's own format (EC2 RequestLimitExceeded, Throttling,
  ThrottlingException, S3 SlowDown), a 503 ServiceUnavailable and a 500 InternalError.
- `not_found_after_create_image=True`: the first DescribeImages after each CreateImage gets
  InvalidAMIID.NotFound, as EC2's eventual consistency does.
- `hold(action)`: requests for that action wait at the proxy until released; the test learns
  when one has arrived. This stops a client at a precise step without touching its code.
  `hold(action).drop()` then closes the held request's connection unanswered and unforwarded
  (the request never reached AWS, as when its sender was killed).
- `lose(action)`: the next request for that action is forwarded and applied, and its response
  is lost (the connection closes unanswered): the client's retry meets what its first attempt
  did.

Unsigned requests (dnf reading the repo over HTTP, moto's own API) pass through untouched.
"""

from __future__ import annotations

import http.client
import itertools
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
              "proxy-authorization", "proxy-authenticate", "content-length"}
SERVICE = re.compile(r"Credential=[^/]+/[^/]+/[^/]+/([^/]+)/")


@dataclass
class Hold:
    action: str
    arrived: threading.Event = field(default_factory=threading.Event)
    released: threading.Event = field(default_factory=threading.Event)
    dropped: bool = False

    def release(self) -> None:
        self.released.set()

    def drop(self) -> None:
        self.dropped = True
        self.released.set()


class FaultProxy:
    def __init__(self, upstream: str, every: int = 0, not_found_after_create_image: bool = False):
        target = urlsplit(upstream)
        self.upstream = (target.hostname, target.port)
        self.every = every
        self.not_found_after_create_image = not_found_after_create_image
        self.actions: list[str] = []
        self.faults: list[tuple[str, str]] = []
        self.holds: dict[str, Hold] = {}
        self.losses: dict[str, int] = {}
        self.lost: list[str] = []
        self._lock = threading.Lock()
        self._signed = itertools.count(1)
        self._kinds = itertools.cycle(("throttle", "unavailable", "internal"))
        self._image_created = False
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> FaultProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        for hold in self.holds.values():
            hold.release()
        self.server.shutdown()
        self.server.server_close()

    def hold(self, action: str) -> Hold:
        self.holds[action] = Hold(action)
        return self.holds[action]

    def lose(self, action: str, times: int = 1) -> None:
        self.losses[action] = times

    def _take_loss(self, action: str) -> bool:
        with self._lock:
            if self.losses.get(action, 0) <= 0:
                return False
            self.losses[action] -= 1
            self.lost.append(action)
            return True

    # -- deciding ------------------------------------------------------------------------------
    def decide(self, service: str | None, action: str) -> str | None:
        """The fault to answer with, or None to forward."""
        with self._lock:
            self.actions.append(action)
            if service is None:
                return None
            if action == "CreateImage":
                self._image_created = True
            elif action == "DescribeImages" and self._image_created and \
                    self.not_found_after_create_image:
                self._image_created = False
                self.faults.append((action, "not-found"))
                return "not-found"
            if self.every and next(self._signed) % self.every == 0:
                kind = next(self._kinds)
                self.faults.append((action, kind))
                return kind
        return None

    def _handler(self):
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # quiet
                pass

            def do_GET(self):
                self.relay()

            do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = do_GET

            def relay(self):
                body = self.read_body()
                service = _service(self.headers.get("Authorization", ""))
                action = _action(self.command, self.path, self.headers, body)
                hold = proxy.holds.get(action)
                if hold and service:
                    hold.arrived.set()
                    hold.released.wait(120)
                    if hold.dropped:
                        self.close_connection = True
                        return
                fault = proxy.decide(service, action)
                if fault:
                    self.answer(*_fault(fault, service, self.headers))
                    return
                if service and proxy._take_loss(action):
                    self.forward(body, answer=False)
                    self.close_connection = True
                    return
                self.forward(body)

            def read_body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    chunks = []
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                        if size == 0:
                            self.rfile.readline()
                            return b"".join(chunks)
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def forward(self, body: bytes, answer: bool = True) -> None:
                connection = http.client.HTTPConnection(*proxy.upstream, timeout=300)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                if body or self.command in ("POST", "PUT"):
                    headers["Content-Length"] = str(len(body))
                connection.request(self.command, self.path, body=body, headers=headers)
                response = connection.getresponse()
                data = response.read()
                connection.close()
                if not answer:
                    return
                self.send_response(response.status)
                for key, value in response.getheaders():
                    if key.lower() not in HOP_BY_HOP:
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            def answer(self, status: int, content_type: str, data: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

        return Handler


def _service(authorization: str) -> str | None:
    match = SERVICE.search(authorization)
    return match.group(1) if match else None


def _action(method: str, path: str, headers, body: bytes) -> str:
    target = headers.get("X-Amz-Target")
    if target:
        return target.rsplit(".", 1)[-1]
    if body and b"Action=" in body:
        return parse_qs(body.decode(errors="replace")).get("Action", ["?"])[0]
    return f"{method} {urlsplit(path).path}"


def _fault(kind: str, service: str | None, headers) -> tuple[int, str, bytes]:
    json_protocol = bool(headers.get("X-Amz-Target"))
    if kind == "not-found":
        return _ec2_error(400, "InvalidAMIID.NotFound", "The image id does not exist")
    code, status, message = {
        "throttle": ("Throttling", 400, "Rate exceeded"),
        "unavailable": ("ServiceUnavailable", 503, "Service is unavailable, try again"),
        "internal": ("InternalError", 500, "An internal error has occurred"),
    }[kind]
    if json_protocol:
        name = "ThrottlingException" if kind == "throttle" else code
        return status, "application/x-amz-json-1.1", (
            f'{{"__type": "{name}", "message": "{message}"}}').encode()
    if service == "ec2":
        return _ec2_error(503 if kind == "throttle" else status,
                          "RequestLimitExceeded" if kind == "throttle" else code, message)
    if service == "s3":
        s3_code = "SlowDown" if kind == "throttle" else code
        return 503 if kind == "throttle" else status, "application/xml", (
            f"<Error><Code>{s3_code}</Code><Message>{message}</Message></Error>").encode()
    return status, "text/xml", (
        f"<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code><Message>{message}"
        f"</Message></Error><RequestId>fault</RequestId></ErrorResponse>").encode()


def _ec2_error(status: int, code: str, message: str) -> tuple[int, str, bytes]:
    return status, "text/xml", (
        f"<Response><Errors><Error><Code>{code}</Code><Message>{message}</Message></Error>"
        f"</Errors><RequestID>fault</RequestID></Response>").encode()
