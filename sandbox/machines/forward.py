"""The one way out of a sandbox instance's network namespace: to the sandbox's own endpoint.

    python -m sandbox.machines.forward [--routes=FILE] [--endpoints=CERT,KEY,PORT,CA]
        [--balancers=FILE,SOURCE] INIT_PID PORT [PORT…]

Listens on 127.0.0.1:PORT inside the namespace of process INIT_PID (the instance's init) and
copies each connection to 127.0.0.1:PORT outside it, where the sandbox's moto server (its S3, the
Kiln repository) listens, or a proxy in front of it that the sandbox was told of. Nothing else
leaves the instance: its namespace has no other route.

With `--routes`, a JSON file the sandbox's EC2 wrote (sandbox.aws.ec2.routes: {"internet": bool,
"services": [...]}), a request goes through only when the instance's VPC gives it a route to its
service (the signing name in its credential scope; an unsigned request is S3's, and so is one
over TLS to the endpoint's port, which only the endpoint reads: the repository's, for dnf);
any other is closed unanswered, as a connection with no route fails, and logged. The file is
read for each connection: the sandbox rewrites it when the instance's routes change.

With `--endpoints`, it also answers where AWS's service names lead inside the instance
(aws_names.ADDRESS:443) with TLS (the certificate and key for those names), and relays each
request, as the client sent it, to 127.0.0.1:PORT outside over TLS (verified against CA): the
sandbox's endpoint, which reads the service from the Host header, checks the SigV4 signature
made over it, and sees the request arrive over TLS (aws:SecureTransport), as AWS does. The same
route check applies.

With `--balancers`, it also listens inside on each load balancer listener the machine reaches
(FILE, written by the sandbox: sandbox.network.reach; {"seq", "listeners": [[address, port]…]}),
on the balancer's own address (its DNS name) and port, and copies each connection to that
listener outside from SOURCE, the machine's loopback address on the host, which the balancers
take for the machine's. It follows the file as it changes, and says in FILE's `balancers.bound`
the `seq` it listens as.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import re
import select
import socket
import ssl
import sys
import threading
import time

CLONE_NEWNET = 0x40000000
HEADER_WAIT = 5  # seconds a client may take to send its request line and headers
TLS_HANDSHAKE = 0x16  # the first byte of a TLS client's hello: no request head to read
READY = "forward: listening"
# The service a SigV4 request is for: its credential scope's, in the header or the query.
_SCOPE = re.compile(rb"Credential=[^/\s]+/\d{8}/[^/\s]*/([a-z0-9-]+)/aws4_request", re.I)
_QUERY_SCOPE = re.compile(rb"X-Amz-Credential=[^&\s]+?(?:/|%2F)\d{8}(?:/|%2F)[^/%\s]*"
                          rb"(?:/|%2F)([a-z0-9-]+)(?:/|%2F)aws4_request", re.I)
_libc = ctypes.CDLL(None, use_errno=True)


def setns(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            error = ctypes.get_errno()
            raise OSError(error, f"setns {path}: {os.strerror(error)}")
    finally:
        os.close(fd)


def in_namespace(pid: int, make):
    """`make()` run on a thread of its own inside the network namespace of `pid`. The thread
    ends there rather than switching back: without root (sandbox/userns.py) this process may
    enter an instance's namespace but not return to the host's."""
    result: dict = {}

    def enter():
        try:
            setns(f"/proc/{pid}/ns/net")
            result["value"] = make()
        except BaseException as error:  # noqa: BLE001 - handed to the caller below
            result["error"] = error

    thread = threading.Thread(target=enter, name=f"netns {pid}", daemon=True)
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"]
    return result["value"]


def listener(pid: int, port: int, address: str = "127.0.0.1") -> socket.socket:
    def make():
        server = socket.socket()
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind((address, port))
        server.listen(64)
        return server

    return in_namespace(pid, make)


def pipe(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        for end in (sink, source):
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)


def service_of(head: bytes) -> str:
    """The AWS service a request's head is for: its SigV4 scope's, else S3 (unsigned)."""
    found = _SCOPE.search(head) or _QUERY_SCOPE.search(head)
    return found.group(1).decode().lower() if found else "s3"


def peek_head(inside: socket.socket) -> bytes:
    """The request's line and headers, left unread for the connection's copy."""
    inside.settimeout(HEADER_WAIT)
    deadline = time.monotonic() + HEADER_WAIT
    head = b""
    while time.monotonic() < deadline:
        head = inside.recv(65536, socket.MSG_PEEK)
        if not head or b"\r\n\r\n" in head or len(head) >= 65536 or head[0] == TLS_HANDSHAKE:
            break
        time.sleep(0.01)
    inside.settimeout(None)
    return head


def reach_of(routes: str | None) -> dict | None:
    """What the instance reaches (sandbox.aws.ec2.routes); None: everything."""
    if not routes:
        return None
    try:
        with open(routes) as file:
            reach = json.load(file)
    except (OSError, ValueError):
        return None  # not an EC2 instance's (a build's machine): AWS's network, open
    return None if reach.get("internet") else reach


def refused(reach: dict | None, inside: socket.socket) -> str | None:
    """The service of the connection's first request when the instance has no route to it.
    (A client keeps one connection per service's endpoint, so the first request decides.)"""
    if reach is None:
        return None
    return unrouted(reach, peek_head(inside))


def unrouted(reach: dict | None, head: bytes) -> str | None:
    """The service of a request's head when the instance has no route to it."""
    if reach is None:
        return None
    service = service_of(head)
    return None if service in reach.get("services", []) else service


def say_unrouted(service: str) -> None:
    print(f"forward: no route to {service}'s endpoint: no public address with an internet "
          f"gateway, no NAT gateway, no VPC endpoint of it", flush=True)


def connection(inside: socket.socket, port: int, routes: str | None) -> None:
    try:
        service = refused(reach_of(routes), inside)
        if service:
            say_unrouted(service)
            inside.close()
            return
        outside = socket.create_connection(("127.0.0.1", port), timeout=10)
    except OSError:
        inside.close()
        return
    join(inside, outside)


def join(inside: socket.socket, outside: socket.socket) -> None:
    """Carry bytes both ways between the two connections until either side closes."""
    outside.settimeout(None)
    for source, sink in ((inside, outside), (outside, inside)):
        threading.Thread(target=pipe, args=(source, sink), daemon=True).start()


def serve(server: socket.socket, port: int, routes: str | None = None) -> None:
    while True:
        inside, _ = server.accept()
        threading.Thread(target=connection, args=(inside, port, routes), daemon=True).start()


def read_head(inside: ssl.SSLSocket) -> bytes:
    """What the client sent up to the end of its first request's headers (or 64 KiB)."""
    inside.settimeout(HEADER_WAIT)
    head = b""
    while b"\r\n\r\n" not in head and len(head) < 65536:
        data = inside.recv(65536)
        if not data:
            break
        head += data
    inside.settimeout(None)
    return head


def relay(inside: ssl.SSLSocket, outside: socket.socket) -> None:
    """Copy both ways on one thread: an SSL connection is not for two threads at once."""
    ends = (inside, outside)
    try:
        while True:
            ready = [end for end in ends if isinstance(end, ssl.SSLSocket) and end.pending()] \
                or select.select(ends, [], [])[0]
            for source in ready:
                data = source.recv(65536)
                if not data:
                    return
                (outside if source is inside else inside).sendall(data)
    except OSError:
        pass
    finally:
        for end in ends:
            with contextlib.suppress(OSError):
                end.close()


def tls_connection(raw: socket.socket, context: ssl.SSLContext, port: int,
                   routes: str | None, onward: ssl.SSLContext | None = None) -> None:
    """One connection to AWS's names: TLS ended here, its requests relayed to the endpoint."""
    inside = outside = None
    try:
        raw.settimeout(HEADER_WAIT)
        inside = context.wrap_socket(raw, server_side=True)
        head = read_head(inside)
        service = unrouted(reach_of(routes), head)
        if service:
            say_unrouted(service)
        if service or not head:
            inside.close()
            return
        outside = socket.create_connection(("127.0.0.1", port), timeout=10)
        if onward:  # over TLS to the endpoint, as the client's request came
            outside = onward.wrap_socket(outside, server_hostname="127.0.0.1")
        outside.settimeout(None)
        outside.sendall(head)
    except OSError:  # a failed handshake, a client gone, the endpoint down
        for end in (inside or raw, outside):
            with contextlib.suppress(OSError, AttributeError):
                end.close()
        return
    relay(inside, outside)


def serve_tls(server: socket.socket, context: ssl.SSLContext, port: int,
              routes: str | None, onward: ssl.SSLContext | None = None) -> None:
    while True:
        raw, _ = server.accept()
        threading.Thread(target=tls_connection, args=(raw, context, port, routes, onward),
                         daemon=True).start()


def endpoints(init_pid: int, option: str, routes: str | None) -> None:
    """Serve AWS's names in the instance (`option`: CERT,KEY,PORT[,CA]) on a thread; with CA,
    relay to the endpoint over TLS, verified against it."""
    from sandbox.machines import aws_names

    certificate, key, port, *authority = option.split(",")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certificate, key)
    onward = ssl.create_default_context(cafile=authority[0]) if authority else None
    server = listener(init_pid, aws_names.PORT, aws_names.ADDRESS)
    threading.Thread(target=serve_tls, args=(server, context, int(port), routes, onward),
                     daemon=True).start()


BALANCERS_POLL = 0.02  # seconds between looks at the balancers' file


class Balancers:
    """The listeners of load balancers the machine reaches, inside it, following FILE."""

    def __init__(self, init_pid: int, option: str):
        path, _, self.source = option.rpartition(",")
        self.path, self.pid = path, init_pid
        self.servers: dict[tuple[str, int], socket.socket] = {}
        self.seen: tuple | None = None

    def follow(self) -> None:
        """Listen as the file says now (called once before the machine is said ready)."""
        try:
            stat = os.stat(self.path)
        except OSError:
            return
        if self.seen == (stat.st_mtime_ns, stat.st_size, stat.st_ino):
            return
        try:
            with open(self.path) as file:
                wanted = json.load(file)
        except (OSError, ValueError):
            return  # being replaced: the next look reads it whole
        self.seen = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
        self._apply({(host, int(port)) for host, port in wanted.get("listeners", [])})
        bound = os.path.join(os.path.dirname(self.path), "balancers.bound")
        with open(bound + ".tmp", "w") as file:
            file.write(str(wanted.get("seq", 0)))
        os.replace(bound + ".tmp", bound)

    def _apply(self, wanted: set[tuple[str, int]]) -> None:
        for where in set(self.servers) - wanted:
            server = self.servers.pop(where)
            with contextlib.suppress(OSError):
                server.shutdown(socket.SHUT_RDWR)  # wakes its accept loop; a close would not
            server.close()
        for where in wanted - set(self.servers):
            try:
                server = listener(self.pid, where[1], where[0])
            except OSError as error:  # the address and port taken inside: a build's own server
                print(f"forward: cannot listen for {where[0]}:{where[1]}: {error}", flush=True)
                continue
            self.servers[where] = server
            threading.Thread(target=self._serve, args=(server, where), daemon=True).start()

    def _serve(self, server: socket.socket, where: tuple[str, int]) -> None:
        while True:
            try:
                inside, _ = server.accept()
            except OSError:
                return  # closed: the machine no longer reaches that listener
            threading.Thread(target=self._connection, args=(inside, where), daemon=True).start()

    def _connection(self, inside: socket.socket, where: tuple[str, int]) -> None:
        try:
            outside = socket.create_connection(where, timeout=10,
                                               source_address=(self.source, 0))
        except OSError:
            inside.close()
            return
        join(inside, outside)

    def run(self) -> None:
        while True:
            time.sleep(BALANCERS_POLL)
            self.follow()


def main(args: list[str]) -> None:
    options = {}
    while args[0].startswith("--"):
        name, _, value = args.pop(0)[2:].partition("=")
        options[name] = value
    routes_file = options.get("routes")
    init_pid, ports = int(args[0]), [int(port) for port in args[1:]]
    servers = [(listener(init_pid, port), port) for port in ports]
    if options.get("endpoints"):
        endpoints(init_pid, options["endpoints"], routes_file)
    if options.get("balancers"):
        balancers = Balancers(init_pid, options["balancers"])
        balancers.follow()
        threading.Thread(target=balancers.run, daemon=True).start()
    print(READY, flush=True)  # every listener is bound: the instance's way out is open
    for server, port in servers[1:]:
        threading.Thread(target=serve, args=(server, port, routes_file), daemon=True).start()
    serve(*servers[0], routes_file)


if __name__ == "__main__":
    main(sys.argv[1:])
