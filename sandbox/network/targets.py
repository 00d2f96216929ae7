"""Where a target is: target id → (host, port), and where the sandbox may send traffic.

`ip` targets are their own address and must be on loopback. Instance targets are found by the
resolvers that the instance machinery adds (`add_resolver`); an instance no resolver knows runs
nothing the load balancer can reach, and its health stays as the `elb_health` patch reports it.
Every address is checked before use: loopback, or a network namespace the sandbox made
(`allow_network`). Nothing else is ever contacted.
"""

from __future__ import annotations

import ipaddress
import threading
from collections.abc import Callable

Resolver = Callable[[str, str, int], "tuple[str, int] | None"]

_LOOPBACK = ipaddress.ip_network("127.0.0.0/8")
_lock = threading.Lock()
_resolvers: list[Resolver] = []
_networks: list[ipaddress.IPv4Network] = []


def add_resolver(resolver: Resolver) -> None:
    """Add `resolver(target_type, target_id, port) -> (host, port) | None`."""
    with _lock:
        _resolvers.append(resolver)


def allow_network(cidr: str) -> None:
    """Let traffic reach `cidr`: only for the sandbox's own network namespaces."""
    with _lock:
        _networks.append(ipaddress.ip_network(cidr))


def allowed(host: str) -> bool:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address in _LOOPBACK or any(address in net for net in _networks)


def address(target_type: str, target_id: str, port: int) -> tuple[str, int] | None:
    """The address to send a target's traffic to, or None when it has none the sandbox may use."""
    if target_type == "ip":
        found = (target_id, int(port))
    else:
        with _lock:
            resolvers = list(_resolvers)
        found = next((hit for r in resolvers if (hit := r(target_type, target_id, int(port)))),
                     None)
    if found and allowed(found[0]):
        return found
    return None
