"""An ALB listener as an HTTP reverse proxy on the load balancer's loopback address.

Requests are routed as the listener routes them: rules by priority (host-header, path-pattern,
http-header, http-request-method and query-string conditions), then the default action. A
forward to several target groups splits requests by their weights (smooth weighted round robin,
so any window of requests follows the weights closely); inside a target group, requests go round
robin to the healthy targets, or to all of them when none is healthy (ALB fails open). The load
balancer answers itself as an ALB does: fixed responses and redirects, 503 when a target group
has no targets, 502 when a target cannot be reached, 504 when it does not answer within the idle
timeout. Each request is counted for the load balancer's metrics. An HTTPS listener terminates TLS
with its certificate's key as ACM holds it (TLS 1.2 and later). Listeners run in the load
balancers' own process (`fronts`), routing by what the server last sent of them. Requests arrive
through `front` (connections, timeouts, caps) and are read by `http1` (limits, desync
classification): the balancer's `routing.http.desync_mitigation_mode` decides what is refused
(400) and after what the client connection closes; bodies stream to the target and answers back
a piece at a time.
"""

from __future__ import annotations

import contextlib
import fnmatch
import http.client
import ipaddress
import os
import re
import ssl
import threading
import time
import uuid
from collections.abc import Callable
from urllib.parse import parse_qsl, urlsplit

from sandbox import clock
from sandbox.network import front, http1, targets

IDLE_TIMEOUT = 60  # seconds: the ALB's default idle timeout (idle_timeout.timeout_seconds)
# The least real time a target is given to answer (the idle timeout, time-scaled, can be one
# second): sandbox machines on a busy host answer more slowly than EC2 instances.
TARGET_WAIT = 10.0
TIMEOUTS_KEPT = 0.05  # real seconds a listener keeps its timeouts (under a flood of connections)
ADMITTED = 4096  # client addresses whose security-group decision a listener keeps
# With routing.http.drop_invalid_header_fields.enabled, an ALB drops header names that are not
# letters, digits and hyphens.
VALID_HEADER = re.compile(r"[A-Za-z0-9-]+")
HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
              "trailer", "transfer-encoding", "upgrade", "expect"}
FRAMING = {"content-length", "transfer-encoding"}  # set by the balancer alone
XFF = {"x-forwarded-for", "x-forwarded-proto", "x-forwarded-port"}


class Weighted:
    """Smooth weighted round robin (as nginx does it): exact shares over any full cycle."""

    def __init__(self):
        self._lock = threading.Lock()
        self._state: dict[str, tuple[tuple, dict[str, int]]] = {}

    def choose(self, key: str, weights: list[tuple[str, int]]) -> str | None:
        weights = tuple((arn, max(0, int(w))) for arn, w in weights)
        total = sum(w for _arn, w in weights)
        if total == 0:
            return None
        with self._lock:
            shape, current = self._state.get(key, ((), {}))
            if shape != weights:
                current = {arn: 0 for arn, _w in weights}
                self._state[key] = (weights, current)
            for arn, weight in weights:
                current[arn] += weight
            best = max(current, key=current.get)
            current[best] -= total
            return best


class Request:
    """A request as routing sees it (method, target, headers, client address), with its body
    still on the client connection."""

    def __init__(self, head: http1.Head, connection: front.Connection, stream: http1.Stream):
        self.head = head
        self.command, self.path, self.headers = head.method, head.target, head.headers
        self.client_address = (connection.client, 0)
        self.sock = connection.sock
        self.body = http1.Body(head, stream)
        self.answered = False  # the status line went out
        self.close = not head.keep_alive

    def write(self, data: bytes) -> None:
        self.answered = True
        self.sock.sendall(data)

    def expect_continue(self) -> None:
        """An interim 100 for a client waiting on Expect: 100-continue before its body."""
        if (self.head.has_body and self.head.version == "HTTP/1.1"
                and self.headers.get("Expect", "").lower() == "100-continue"):
            self.sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")


class Listener:
    """One listener's proxy, in the load balancers' process (`fronts`): `spec` is what the
    server last said of the listener, `serve` is called for each request head that arrives."""

    def __init__(self, fronts, arn: str, spec: dict):
        self.fronts = fronts
        self.arn = arn
        self.spec = spec
        self.where = tuple(spec["where"])
        self.lb_arn = spec["lb"]
        self.address = (spec["host"], int(spec["port"]))
        self.key = [*self.address, spec.get("certificate"), spec.get("tls")]
        self.scheme = "https" if spec.get("certificate") else "http"
        self._timed: tuple = ((None, 0.0), (0.0, 0.0))
        self._decisions: tuple[dict | None, dict[str, bool]] = (None, {})
        tls = None
        if spec.get("certificate"):
            if not spec.get("tls"):
                raise ValueError(f"its certificate {spec['certificate']} cannot be read")
            tls = tls_context(*spec["tls"])
        self.front = front.Front(self.address, self.serve, fronts.pool, self._admits,
                                 self._timeouts, tls, self._client)

    def start(self) -> None:
        self.front.start()

    def stop(self) -> None:
        self.front.stop()

    # -- the balancer's attributes -----------------------------------------------------------
    def attributes(self) -> dict:
        return self.spec.get("attributes") or {}

    def idle_timeout(self) -> float:
        """The balancer's idle timeout in real seconds (an AWS setting: time-scaled)."""
        seconds = self.attributes().get("idle_timeout.timeout_seconds") or IDLE_TIMEOUT
        return clock.real(int(seconds))

    def _timeouts(self) -> tuple[float, float]:
        """(header, idle) timeouts, worked out again when the listener changed or TIMEOUTS_KEPT
        passed (the time scale may have): the accept loop asks for every connection."""
        (spec, until), timeouts = self._timed
        if spec is not self.spec or time.monotonic() >= until:
            idle = self.idle_timeout()
            timeouts = (min(front.HEADER_TIMEOUT, idle), idle)
            self._timed = ((self.spec, time.monotonic() + TIMEOUTS_KEPT), timeouts)
        return timeouts

    def _client(self, peer: str) -> str:
        """The address a connection from `peer` comes from, as the balancer sees it."""
        return self.fronts.client(self.spec, peer)

    def _admits(self, client: str) -> bool:
        """The security groups' decision for a client address (kept until the listener's
        state changes: the accept loop asks for every connection)."""
        spec, decisions = self._decisions
        if spec is not self.spec or len(decisions) > ADMITTED:
            spec, decisions = self._decisions = (self.spec, {})
        found = decisions.get(client)
        if found is None:
            found = decisions[client] = self.fronts.admits(spec, client)
        return found

    # -- a request ---------------------------------------------------------------------------
    def serve(self, connection: front.Connection) -> bool:
        """Serve the request whose head `connection` holds; whether the connection may carry
        another one."""
        stream = http1.Stream(connection.sock, connection.buffer)
        connection.sock.settimeout(self.idle_timeout())
        request = None
        try:
            head = http1.parse(connection.head)
            request = Request(head, connection, stream)
            self._judge(request)
            self.route(request)
        except http1.Refused as refused:
            self._refuse(request or connection, refused.status)
            return False
        except (http1.ClientGone, OSError, http.client.HTTPException):
            return False
        connection.buffer = stream.buffer
        return not request.close and request.body.done

    def _judge(self, request: Request) -> None:
        """Desync mitigation as the balancer's mode asks: severe requests are refused in every
        mode (the sandbox cannot frame them); strictest refuses all but compliant ones;
        defensive serves ambiguous ones, then closes the connection."""
        mode = self.attributes().get("routing.http.desync_mitigation_mode") or "defensive"
        tier = request.head.tier
        if tier == http1.SEVERE or (mode == "strictest" and tier >= http1.ACCEPTABLE):
            raise http1.Refused(request.head.reason)
        if tier == http1.AMBIGUOUS and mode != "monitor":
            request.close = True

    def _refuse(self, request, status: int) -> None:
        """The balancer's own 400 or 408, then the connection closes."""
        self.fronts.record(self.where, self.lb_arn, None, None, status, None)
        if isinstance(request, Request) and request.answered:
            return
        sock = request.sock
        reason = http.client.responses.get(status, "")
        body = f"{status} {reason}\n".encode()
        with contextlib.suppress(OSError):
            sock.sendall(_status_line(status) + _header_lines(
                [("Server", "awselb/2.0"), ("Content-Type", "text/plain"),
                 ("Content-Length", str(len(body))), ("Connection", "close")]) + body)

    def route(self, request: Request) -> None:
        spec = self.spec
        action = _first_action(_route(spec, request))
        if action is None:
            return self._elb_answer(request, 503, None)
        if action["type"] == "fixed-response":
            return self._fixed(request, action["data"].get("FixedResponseConfig", {}))
        if action["type"] == "redirect":
            return self._redirect(request, action["data"].get("RedirectConfig", {}))
        if action["type"] != "forward":
            return self._elb_answer(request, 503, None)
        group_arn = self.fronts.weighted.choose(
            f"{self.arn} {action['id']}", _forward_weights(action["data"]))
        group = self.fronts.groups.get(group_arn) if group_arn else None
        if group is None:
            return self._elb_answer(request, 503, group_arn)
        drop = self.attributes().get("routing.http.drop_invalid_header_fields.enabled") == "true"
        self._forward(request, group_arn, group, drop)

    def _forward(self, request: Request, group_arn: str, group: dict,
                 drop_invalid: bool = False) -> None:
        registered = group["targets"]
        if not registered:
            return self._elb_answer(request, 503, group_arn)
        addressed = [(t, where) for t in registered
                     if (where := self.fronts.endpoint(t, self.lb_arn))]
        if not addressed:
            return self._elb_answer(request, 502, group_arn)
        healthy = [pair for pair in addressed if pair[0].get("healthy")]
        pool = healthy or addressed  # all unhealthy: an ALB routes to all of them
        _target, where = pool[next(self.fronts.round_robin(group_arn)) % len(pool)]
        started = time.monotonic()
        connection = targets.Connection(where, max(self.idle_timeout(), TARGET_WAIT))
        try:
            try:
                response = _send(request, connection, self.address[1], self.scheme,
                                 drop_invalid)
            except TimeoutError:
                return self._elb_answer(request, 504, group_arn)
            except (OSError, http.client.HTTPException):
                return self._elb_answer(request, 502, group_arn)
            seconds = time.monotonic() - started
            self.fronts.record(self.where, self.lb_arn, group_arn, response.status, None,
                               seconds)
            _relay(request, response)
        finally:
            connection.close()

    def _elb_answer(self, request: Request, status: int, group_arn: str | None) -> None:
        self.fronts.record(self.where, self.lb_arn, group_arn, None, status, None)
        reason = http.client.responses.get(status, "")
        _answer(request, status, f"{status} {reason}\n".encode(),
                [("Content-Type", "text/plain"), ("Server", "awselb/2.0")])

    def _fixed(self, request: Request, config: dict) -> None:
        status = int(config.get("StatusCode", 200))
        self.fronts.record(self.where, self.lb_arn, None, None, status, None)
        _answer(request, status, (config.get("MessageBody") or "").encode(),
                [("Content-Type", config.get("ContentType") or "text/plain")])

    def _redirect(self, request: Request, config: dict) -> None:
        parts = urlsplit(request.path)
        host = config.get("Host", "#{host}").replace("#{host}", request.headers.get("Host", ""))
        path = config.get("Path", "/#{path}").replace("/#{path}", parts.path)
        query = config.get("Query", "#{query}").replace("#{query}", parts.query)
        protocol = config.get("Protocol", "#{protocol}").replace(
            "#{protocol}", self.scheme).lower()
        port = str(config.get("Port", "#{port}")).replace("#{port}", str(self.address[1]))
        host = host.rsplit(":", 1)[0] if host.rsplit(":", 1)[-1].isdigit() else host
        if port != {"http": "80", "https": "443"}.get(protocol):
            host = f"{host}:{port}"
        location = f"{protocol}://{host}{path}" + (f"?{query}" if query else "")
        status = 301 if config.get("StatusCode") == "HTTP_301" else 302
        self.fronts.record(self.where, self.lb_arn, None, None, status, None)
        _answer(request, status, b"", [("Location", location)])


def tls_context(chain: str, key: str) -> ssl.SSLContext:
    """A server context with the certificate, its chain and key as ACM holds them (the server
    sends them over the channel: they never touch a disk)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    with _in_memory(chain.encode()) as cert_path, _in_memory(key.encode()) as key_path:
        context.load_cert_chain(cert_path, key_path)
    return context


def certificate(where: tuple[str, str], certificate_arn: str) -> list[str]:
    """[chain, key] of an ACM certificate, as PEM text (read in the moto server)."""
    from moto.acm.models import acm_backends

    bundle = acm_backends[where[0]][where[1]].get_certificate(certificate_arn)
    chain = bundle.cert.rstrip(b"\n") + b"\n" + (bundle.chain or b"")
    return [chain.decode(), bundle.key.decode()]


@contextlib.contextmanager
def _in_memory(data: bytes):
    """A path to `data` that never touches a disk (ssl loads keys only from files)."""
    descriptor = os.memfd_create("kiln-listener-tls")
    try:
        os.write(descriptor, data)
        yield f"/proc/self/fd/{descriptor}"
    finally:
        os.close(descriptor)


def _send(request: Request, connection: targets.Connection, listener_port: int,
          scheme: str = "http", drop_invalid: bool = False) -> http.client.HTTPResponse:
    """The request to the target, its body streamed with the framing the balancer decided
    (chunked, a length, or none); the target's response, its body not yet read."""
    connection.putrequest(request.command, request.path, skip_host=True,
                          skip_accept_encoding=True)
    for key, value in _forwarded_headers(request, listener_port, scheme, drop_invalid):
        try:
            connection.putheader(key, value)
        except ValueError:  # a name or value HTTP/1.1 cannot carry: never sent on
            continue
    connection.endheaders()
    request.expect_continue()
    chunked = request.head.chunked
    for piece in request.body:
        connection.send(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
    if chunked:
        connection.send(b"0\r\n\r\n")
    return connection.getresponse()


def _forwarded_headers(request: Request, listener_port: int, scheme: str,
                       drop_invalid: bool) -> list[tuple[str, str]]:
    head = request.head
    dropped = HOP_BY_HOP | FRAMING | head.dropped
    headers = [(k, v) for k, v in request.headers.items() if k.lower() not in dropped
               and not (drop_invalid and not VALID_HEADER.fullmatch(k))]
    if head.chunked:
        headers.append(("Transfer-Encoding", "chunked"))
    elif head.length is not None or request.command in ("POST", "PUT", "PATCH"):
        headers.append(("Content-Length", str(head.length or 0)))
    client = request.client_address[0]
    forwarded = request.headers.get("X-Forwarded-For")
    headers = [(k, v) for k, v in headers if k.lower() not in XFF]
    headers += [("X-Forwarded-For", f"{forwarded}, {client}" if forwarded else client),
                ("X-Forwarded-Proto", scheme), ("X-Forwarded-Port", str(listener_port))]
    if request.headers.get("X-Amzn-Trace-Id") is None:
        headers.append(("X-Amzn-Trace-Id",
                        f"Root=1-{int(time.time()):08x}-{uuid.uuid4().hex[:24]}"))
    return headers


def _relay(request: Request, response: http.client.HTTPResponse) -> None:
    """The target's response to the client, its body a piece at a time: with its length when
    the target gave one, else chunked (HTTP/1.1) or up to the connection's close."""
    headers = [(k, v) for k, v in response.getheaders()
               if k.lower() not in HOP_BY_HOP and k.lower() != "content-length"]
    bodiless = request.command == "HEAD" or response.status in (204, 304)
    length = response.length
    if request.head.version != "HTTP/1.1" and length is None and not bodiless:
        request.close = True
    if bodiless:
        length = response.getheader("Content-Length")
        headers += [("Content-Length", length)] if length is not None else []
    elif length is not None:
        headers.append(("Content-Length", str(length)))
    elif not request.close:
        headers.append(("Transfer-Encoding", "chunked"))
    if request.close or not request.body.done:
        request.close = True
        headers.append(("Connection", "close"))
    pending = _status_line(response.status, response.reason) + _header_lines(headers)
    chunked = length is None and not request.close and not bodiless
    while not bodiless and (piece := response.read(http1.PIECE)):
        request.write(pending + (b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece))
        pending = b""  # the head goes out with the first piece
    request.write(pending + (b"0\r\n\r\n" if chunked else b""))


def _status_line(status: int, reason: str | None = None) -> bytes:
    reason = reason if reason is not None else http.client.responses.get(status, "")
    return f"HTTP/1.1 {status} {reason}\r\n".encode("latin-1")


def _header_lines(headers: list[tuple[str, str]]) -> bytes:
    lines = "".join(f"{k}: {v}\r\n" for k, v in headers) + "\r\n"
    return lines.encode("latin-1", errors="replace")


def _answer(request: Request, status: int, payload: bytes,
            headers: list[tuple[str, str]] | None = None) -> None:
    """The balancer's own answer (fixed responses, redirects, errors)."""
    headers = [*(headers or []), ("Content-Length", str(len(payload)))]
    if request.close or not request.body.done and request.head.has_body:
        request.close = True
        headers.append(("Connection", "close"))
    request.write(_status_line(status) + _header_lines(headers)
                  + (payload if request.command != "HEAD" else b""))


# -- routing ---------------------------------------------------------------------------------
def _route(spec: dict, request: Request) -> list:
    """The actions of the first rule (by priority) whose conditions all match, else the
    listener's default actions."""
    for rule in spec.get("rules", ()):
        if all(_matches(condition, request) for condition in rule["conditions"] or []):
            return rule["actions"]
    return spec.get("default", [])


def _first_action(actions: list) -> dict | None:
    terminal = [a for a in actions if a["type"] in ("forward", "fixed-response", "redirect")]
    return min(terminal, key=lambda a: int(a["data"].get("Order") or 0)) if terminal else None


def _forward_weights(data: dict) -> list[tuple[str, int]]:
    if data.get("TargetGroupArn"):
        return [(data["TargetGroupArn"], 1)]
    groups = (data.get("ForwardConfig") or {}).get("TargetGroups") or []
    return [(g["TargetGroupArn"], int(g.get("Weight", 1))) for g in groups]


def _values(condition: dict, config: str) -> list[str]:
    return list((condition.get(config) or {}).get("Values") or condition.get("Values") or [])


def _matches(condition: dict, request: Request) -> bool:
    field = condition.get("Field")
    parts = urlsplit(request.path)
    tests: dict[str, Callable[[], bool]] = {
        "host-header": lambda: _glob(request.headers.get("Host", "").split(":")[0],
                                     _values(condition, "HostHeaderConfig"), fold=True),
        "path-pattern": lambda: _glob(parts.path, _values(condition, "PathPatternConfig")),
        "http-request-method": lambda: request.command in _values(
            condition, "HttpRequestMethodConfig"),
        "http-header": lambda: _glob(
            request.headers.get((condition.get("HttpHeaderConfig") or {})
                                .get("HttpHeaderName", ""), None),
            _values(condition, "HttpHeaderConfig"), fold=True),
        "query-string": lambda: _query(parts.query, condition),
        "source-ip": lambda: _source(request.client_address[0], condition),
    }
    test = tests.get(field)
    return bool(test and test())


def _glob(value: str | None, patterns: list[str], fold: bool = False) -> bool:
    if value is None:
        return False
    if fold:
        value, patterns = value.lower(), [p.lower() for p in patterns]
    return any(fnmatch.fnmatchcase(value, p) for p in patterns)


def _source(client: str, condition: dict) -> bool:
    """The client's address in one of the rule's CIDRs (an ALB sees the TCP peer)."""
    address = ipaddress.ip_address(client)
    return any(address in ipaddress.ip_network(cidr, strict=False)
               for cidr in _values(condition, "SourceIpConfig"))


def _query(query: str, condition: dict) -> bool:
    pairs = parse_qsl(query, keep_blank_values=True)
    wanted = (condition.get("QueryStringConfig") or {}).get("Values") or []
    return any(any((not w.get("Key") or fnmatch.fnmatchcase(k, w["Key"]))
                   and fnmatch.fnmatchcase(v, w.get("Value", "*")) for k, v in pairs)
               for w in wanted)
