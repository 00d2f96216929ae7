"""Reaching an app's cluster through its sandbox load balancer, as a browser reaches it on AWS.

On AWS a client asks for the app's domain (the name its certificate covers), DNS leads it to the
load balancer, and TLS is checked against the public CAs. In the sandbox the load balancer's DNS
name is its loopback address and its certificate (sandbox/listener_cert.py) covers
`*.kiln.sandbox.test`, signed by the sandbox's own CA: the request goes to that address, names
`<app>.kiln.sandbox.test` (TLS server name and Host) and trusts only that CA. The same request
with curl is `command(...)`.

    get(state_dir, url, app, path="/") -> (status, body)
    command(state_dir, url, app, path="/") -> str
"""

from __future__ import annotations

import http.client
import shlex
import socket
import ssl
from pathlib import Path
from urllib.parse import urlsplit

from sandbox import listener_cert
from sandbox.network import targets


def _where(url: str) -> tuple[str, str, int]:
    parts = urlsplit(url)
    scheme, host = parts.scheme, parts.hostname or ""
    if scheme not in ("http", "https") or not targets.loopback(host):
        raise ValueError(f"not a sandbox load balancer's URL: {url!r}")
    return scheme, host, parts.port or (443 if scheme == "https" else 80)


def name(app: str) -> str:
    return f"{app}.{listener_cert.DOMAIN}"


def get(state_dir: str | Path, url: str, app: str, path: str = "/",
        timeout: float = 10) -> tuple[int, str]:
    """GET `path` of the app through the load balancer at `url`; (status, body)."""
    scheme, host, port = _where(url)
    if scheme == "https":
        context = ssl.create_default_context(cafile=str(listener_cert.files(state_dir)["ca"]))
        connection = NamedHTTPS(host, port, name(app), context, timeout)
    else:
        connection = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        connection.request("GET", path, headers={"Host": name(app)})
        response = connection.getresponse()
        return response.status, response.read().decode(errors="replace")
    finally:
        connection.close()


def command(state_dir: str | Path, url: str, app: str, path: str = "/") -> str:
    """The curl command line that makes the same request."""
    scheme, host, port = _where(url)
    ca = trusted(state_dir)
    target = f"{scheme}://{name(app)}{'' if port in (80, 443) else f':{port}'}{path}"
    trust = ["--cacert", str(ca)] if scheme == "https" else []
    return shlex.join(["curl", *trust, "--resolve", f"{name(app)}:{port}:{host}", target])


def trusted(state_dir: str | Path) -> str:
    """The CA file that verifies a listener: on this host the state dir's; in a build of the
    sandbox's CodeBuild, whose machine does not see the state dir, the machine's system bundle,
    which holds that CA as an AMI's holds the public CAs (sandbox/machines/aws_names.py)."""
    from sandbox.control import in_build
    from sandbox.machines import aws_names

    if in_build() is not None:
        return aws_names.system_bundle()
    return str(listener_cert.files(state_dir)["ca"])


def environment(state_dir: str | Path, url: str, app: str) -> dict[str, str]:
    """The sandbox's side of an acceptance command's environment: KILN_URL by the app's name
    (what its certificate covers), KILN_RESOLVE (curl's --resolve: that name to the load
    balancer's loopback address) and KILN_CA_BUNDLE (the sandbox CA, also as SSL_CERT_FILE and
    REQUESTS_CA_BUNDLE for Python clients)."""
    scheme, host, port = _where(url)
    ca = trusted(state_dir)
    shown = "" if port in (80, 443) else f":{port}"
    return {"KILN_URL": f"{scheme}://{name(app)}{shown}/",
            "KILN_RESOLVE": f"{name(app)}:{port}:{host}", "KILN_CA_BUNDLE": ca,
            "SSL_CERT_FILE": ca, "REQUESTS_CA_BUNDLE": ca}


class NamedHTTPS(http.client.HTTPSConnection):
    """HTTPS to an address, presenting and verifying `server_name` (as a client that resolved
    the name to that address)."""

    def __init__(self, host: str, port: int, server_name: str, context: ssl.SSLContext,
                 timeout: float):
        super().__init__(host, port, context=context, timeout=timeout)
        self.server_name = server_name

    def connect(self) -> None:
        sock = socket.create_connection((self.host, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.server_name)
