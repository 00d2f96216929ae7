"""Loaded beside a capacity stage's locustfile in the sandbox only: KILN_URL names the app as
its certificate does (sandbox/network/client.py), KILN_RESOLVE (`name:port:address`, curl's
--resolve) says which loopback address answers for that name, and KILN_CA_BUNDLE is the CA
that signed its certificate. Locust's HTTP users (HttpUser) then reach the sandbox's load
balancer by that name and trust that CA, as curl does with --resolve and --cacert."""

import os
import socket

from locust.clients import HttpSession

_NAME, _PORT, _ADDRESS = (os.environ.get("KILN_RESOLVE", "") + "::").split(":")[:3]
_CA = os.environ.get("KILN_CA_BUNDLE")
_getaddrinfo = socket.getaddrinfo
_session_init = HttpSession.__init__


def _resolve(host, port, *args, **kwargs):
    if _NAME and host == _NAME:
        host = _ADDRESS
    return _getaddrinfo(host, port, *args, **kwargs)


def _trusting_session(self, *args, **kwargs):
    _session_init(self, *args, **kwargs)
    if _CA:
        self.verify = _CA


socket.getaddrinfo = _resolve
HttpSession.__init__ = _trusting_session
