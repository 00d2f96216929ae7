"""An ALB listener as an HTTP reverse proxy on the load balancer's loopback address.

Requests are routed as the listener routes them: rules by priority (host-header, path-pattern,
http-header, http-request-method and query-string conditions), then the default action. A
forward to several target groups splits requests by their weights (smooth weighted round robin,
so any window of requests follows the weights closely); inside a target group, requests go round
robin to the healthy targets, or to all of them when none is healthy (ALB fails open). The load
balancer answers itself as an ALB does: fixed responses and redirects, 503 when a target group
has no targets, 502 when a target cannot be reached, 504 when it does not answer within the idle
timeout. Each request is counted for the load balancer's metrics. An HTTPS listener terminates TLS
with its certificate's key as ACM holds it (TLS 1.2 and later).
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
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

from sandbox.network import targets

IDLE_TIMEOUT = 60  # seconds: the ALB's default idle timeout (not time-scaled: a real wait)
# With routing.http.drop_invalid_header_fields.enabled, an ALB drops header names that are not
# letters, digits and hyphens.
VALID_HEADER = re.compile(r"[A-Za-z0-9-]+")
HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
              "trailer", "transfer-encoding", "upgrade"}


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


class Listener:
    """One listener's server. `handle` is shared state: routing, health, metrics."""

    def __init__(self, network, where: tuple[str, str], lb_arn: str, listener_arn: str,
                 host: str, port: int, certificate: str | None = None):
        self.network = network
        self.where = where
        self.lb_arn = lb_arn
        self.arn = listener_arn
        self.address = (host, port)
        self.certificate = certificate
        self.server = _Server((host, port), _Handler)
        self.server.listener = self
        self.server.tls = tls_context(where, certificate) if certificate else None
        self.scheme = "https" if certificate else "http"
        # A short poll so that stopping a listener (DeleteListener, reset) returns at once.
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,),
                                       daemon=True, name=f"listener {host}:{port}")

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # -- a request ---------------------------------------------------------------------------
    def serve(self, request: _Handler) -> None:
        body = request.rfile.read(int(request.headers.get("Content-Length") or 0))
        backend = self.network.elbv2(*self.where)
        balancer = backend.load_balancers.get(self.lb_arn)
        listener = balancer.listeners.get(self.arn) if balancer else None
        if listener is None:
            return _answer(request, 503, b"listener gone\n")
        action = _first_action(_route(listener, request))
        if action is None:
            return self._elb_answer(request, 503, None)
        if action.type == "fixed-response":
            return self._fixed(request, action.data.get("FixedResponseConfig", {}))
        if action.type == "redirect":
            return self._redirect(request, action.data.get("RedirectConfig", {}))
        if action.type != "forward":
            return self._elb_answer(request, 503, None)
        group_arn = self.network.weighted.choose(
            f"{self.arn} {id(action)}", _forward_weights(action.data))
        group = backend.target_groups.get(group_arn) if group_arn else None
        if group is None:
            return self._elb_answer(request, 503, group_arn)
        drop = balancer.attrs.get("routing.http.drop_invalid_header_fields.enabled") == "true"
        self._forward(request, body, group, drop)

    def _forward(self, request: _Handler, body: bytes, group, drop_invalid: bool = False) -> None:
        registered = list(group.targets.values())
        if not registered:
            return self._elb_answer(request, 503, group.arn)
        addressed = [(t, where) for t in registered
                     if (where := targets.endpoint(group.target_type, t["Id"], t["Port"],
                                                   (group.arn, (self.lb_arn,))))]
        if not addressed:
            return self._elb_answer(request, 502, group.arn)
        healthy = [pair for pair in addressed
                   if self.network.health.healthy(group.arn, pair[0]["Id"])]
        pool = healthy or addressed  # all unhealthy: an ALB routes to all of them
        _target, where = pool[next(self.network.round_robin(group.arn)) % len(pool)]
        started = time.monotonic()
        try:
            status, headers, payload = _send(request, body, where, self.address[1], self.scheme,
                                             drop_invalid)
        except TimeoutError:
            return self._elb_answer(request, 504, group.arn)
        except OSError:
            return self._elb_answer(request, 502, group.arn)
        seconds = time.monotonic() - started
        self.network.metrics.record(self.where, self.lb_arn, group.arn, status, None, seconds)
        _answer(request, status, payload, headers)

    def _elb_answer(self, request: _Handler, status: int, group_arn: str | None) -> None:
        self.network.metrics.record(self.where, self.lb_arn, group_arn, None, status, None)
        reason = http.client.responses.get(status, "")
        _answer(request, status, f"{status} {reason}\n".encode(),
                [("Content-Type", "text/plain"), ("Server", "awselb/2.0")])

    def _fixed(self, request: _Handler, config: dict) -> None:
        status = int(config.get("StatusCode", 200))
        self.network.metrics.record(self.where, self.lb_arn, None, None, status, None)
        _answer(request, status, (config.get("MessageBody") or "").encode(),
                [("Content-Type", config.get("ContentType") or "text/plain")])

    def _redirect(self, request: _Handler, config: dict) -> None:
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
        self.network.metrics.record(self.where, self.lb_arn, None, None, status, None)
        _answer(request, status, b"", [("Location", location)])


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128
    listener: Listener
    tls: ssl.SSLContext | None = None

    def finish_request(self, request, client_address) -> None:
        from sandbox.aws.ec2 import security_groups

        listener = self.listener
        if not security_groups.admits_client(listener.where, listener.lb_arn,
                                             listener.address[1], client_address[0]):
            return  # dropped by the balancer's security groups: no answer at all
        if self.tls is not None:  # the handshake in the request's thread, not the accept loop
            try:
                request.settimeout(IDLE_TIMEOUT)
                request = self.tls.wrap_socket(request, server_side=True)
            except (ssl.SSLError, OSError):
                return
        super().finish_request(request, client_address)


def tls_context(where: tuple[str, str], certificate_arn: str) -> ssl.SSLContext:
    """A server context with the certificate, its chain and key as ACM holds them."""
    from moto.acm.models import acm_backends

    bundle = acm_backends[where[0]][where[1]].get_certificate(certificate_arn)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    chain = bundle.cert.rstrip(b"\n") + b"\n" + (bundle.chain or b"")
    with _in_memory(chain) as cert_path, _in_memory(bundle.key) as key_path:
        context.load_cert_chain(cert_path, key_path)
    return context


@contextlib.contextmanager
def _in_memory(data: bytes):
    """A path to `data` that never touches a disk (ssl loads keys only from files)."""
    descriptor = os.memfd_create("kiln-listener-tls")
    try:
        os.write(descriptor, data)
        yield f"/proc/self/fd/{descriptor}"
    finally:
        os.close(descriptor)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "awselb/2.0"
    sys_version = ""

    def _serve(self) -> None:
        self.server.listener.serve(self)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _serve

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class's name
        pass


def _send(request: _Handler, body: bytes, where: targets.Endpoint, listener_port: int,
          scheme: str = "http", drop_invalid: bool = False):
    headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP
               and not (drop_invalid and not VALID_HEADER.fullmatch(k))}
    client = request.client_address[0]
    forwarded = request.headers.get("X-Forwarded-For")
    headers["X-Forwarded-For"] = f"{forwarded}, {client}" if forwarded else client
    headers["X-Forwarded-Proto"] = scheme
    headers["X-Forwarded-Port"] = str(listener_port)
    headers.setdefault("X-Amzn-Trace-Id", f"Root=1-{int(time.time()):08x}-{uuid.uuid4().hex[:24]}")
    connection = targets.Connection(where, IDLE_TIMEOUT)
    try:
        connection.request(request.command, request.path, body=body or None, headers=headers)
        response = connection.getresponse()
        payload = response.read()
        kept = [(k, v) for k, v in response.getheaders()
                if k.lower() not in HOP_BY_HOP and k.lower() != "content-length"]
        return response.status, kept, payload
    finally:
        connection.close()


def _answer(request: _Handler, status: int, payload: bytes,
            headers: list[tuple[str, str]] | None = None) -> None:
    request.send_response(status)
    for key, value in headers or []:
        request.send_header(key, value)
    request.send_header("Content-Length", str(len(payload)))
    request.end_headers()
    if request.command != "HEAD":
        request.wfile.write(payload)


# -- routing ---------------------------------------------------------------------------------
def _route(listener, request: _Handler) -> list:
    rules = [r for r in listener.rules.values() if not getattr(r, "is_default", False)]
    rules.sort(key=lambda r: int(r.priority))
    for rule in rules:
        if all(_matches(condition, request) for condition in rule.conditions or []):
            return rule.actions
    return listener.default_actions


def _first_action(actions: list):
    terminal = [a for a in actions if a.type in ("forward", "fixed-response", "redirect")]
    return min(terminal, key=lambda a: int(a.data.get("Order") or 0)) if terminal else None


def _forward_weights(data: dict) -> list[tuple[str, int]]:
    if data.get("TargetGroupArn"):
        return [(data["TargetGroupArn"], 1)]
    groups = (data.get("ForwardConfig") or {}).get("TargetGroups") or []
    return [(g["TargetGroupArn"], int(g.get("Weight", 1))) for g in groups]


def _values(condition: dict, config: str) -> list[str]:
    return list((condition.get(config) or {}).get("Values") or condition.get("Values") or [])


def _matches(condition: dict, request: _Handler) -> bool:
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
