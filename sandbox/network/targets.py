"""Where a target is: target id → an Endpoint to connect to, and where the sandbox may connect.

`ip` targets are their own address and must be on loopback. Instance targets are found by the
resolvers that the instance machinery adds (`add_resolver`): an instance's app listens inside its
own network namespace, so its Endpoint carries the way to open a connection there. An instance
no resolver knows runs nothing the load balancer can reach, and its health stays as the
`elb_health` patch reports it. Nothing but loopback and the sandbox's own namespaces is ever
contacted.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass

_LOOPBACK = ipaddress.ip_network("127.0.0.0/8")


@dataclass(frozen=True)
class Endpoint:
    """A target's address; `opener(timeout)` opens a connection to it when plain connect can't
    (an address inside a network namespace of the sandbox's)."""

    host: str
    port: int
    opener: Callable[[float], socket.socket] | None = None

    def connect(self, timeout: float) -> socket.socket:
        if self.opener is not None:
            return self.opener(timeout)
        return socket.create_connection((self.host, self.port), timeout=timeout)


# resolver(target_type, target_id, port, origin) -> Endpoint | None; `origin`: (target group
# ARN, the ARNs of the load balancers sending), which security groups judge (empty: no traffic).
Resolver = Callable[[str, str, int, tuple], "Endpoint | None"]
_lock = threading.Lock()
_resolvers: list[Resolver] = []
_listeners: frozenset[tuple[str, int]] = frozenset()  # the load balancers' own addresses


def add_resolver(resolver: Resolver) -> None:
    """Add a Resolver (namespaced openers)."""
    with _lock:
        _resolvers.append(resolver)


def set_listeners(addresses) -> None:
    """The proxies' own addresses: never a target, so no request can loop through a proxy."""
    global _listeners
    _listeners = frozenset(addresses)


def is_listener(host: str, port: int) -> bool:
    return (host, int(port)) in _listeners


def loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host) in _LOOPBACK
    except ValueError:
        return False


def endpoint(target_type: str, target_id: str, port: int, origin: tuple = ()) -> Endpoint | None:
    """Where to send a target's traffic, or None when it has nowhere the sandbox may send it.
    `origin`: (target group ARN, load balancer ARNs) the traffic comes from."""
    if target_type == "ip":
        usable = loopback(target_id) and (target_id, int(port)) not in _listeners
        return Endpoint(target_id, int(port)) if usable else None
    with _lock:
        resolvers = list(_resolvers)
    for resolver in resolvers:
        found = resolver(target_type, target_id, int(port), origin)
        if found and (found.opener is not None or loopback(found.host)):
            return found
    return None


class Connection(http.client.HTTPConnection):
    """An HTTP connection that opens its socket through an Endpoint."""

    def __init__(self, where: Endpoint, timeout: float):
        super().__init__(where.host, where.port, timeout=timeout)
        self.where = where

    def connect(self) -> None:
        self.sock = self.where.connect(self.timeout)
