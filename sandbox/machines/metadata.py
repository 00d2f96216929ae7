"""An instance metadata service (IMDSv2) at 169.254.169.254:80 inside a sandbox instance.

As on EC2 (https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/configuring-instance-metadata-
service.html): `PUT /latest/api/token` with `X-aws-ec2-metadata-token-ttl-seconds` (1-21600)
gives a session token; a GET with it in `X-aws-ec2-metadata-token` reads `/latest/meta-data/…`
(instance-id, ami-id, instance-type, local-ipv4, hostname, placement/availability-zone,
placement/region, iam/info, iam/security-credentials/<role>), `/latest/dynamic/instance-
identity/document` and `/latest/user-data`. With HttpTokens=required a GET without a valid token
is answered 401; a token request carrying X-Forwarded-For is refused (403), as EC2 does; with
HttpEndpoint=disabled nothing listens. The role's credentials are temporary ones of the instance
profile's role, which the sandbox's IAM accepts like any assumed role's.

    serve(pid, source) -> Service      # listens inside the network namespace of `pid`
    Service.close()

`source()` gives the instance's live view: {"enabled", "tokens_required", "meta": {path: text},
"user_data": bytes | None, "role": str | None, "credentials": callable -> dict}. The service
runs on threads of the process that calls `serve` (the sandbox's server), and its socket is the
instance's: nothing listens outside the instance.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from sandbox.machines import forward

ADDRESS, PORT = "169.254.169.254", 80
MAX_TTL = 21600


class Service:
    def __init__(self, server: ThreadingHTTPServer):
        self.server = server
        # A short poll: ending the service (with its instance) waits for the loop to notice.
        self.thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True,
                                       name="instance-metadata")
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def serve(pid: int, source) -> Service:
    """The metadata service of the instance whose init is `pid`."""
    def make():
        # boot.py put the link-local address on the instance's loopback.
        server = ThreadingHTTPServer((ADDRESS, PORT), _handler(source, {}))
        server.daemon_threads = True
        return server

    return Service(forward.in_namespace(pid, make))


def _handler(source, tokens: dict[str, float]):
    class Handler(BaseHTTPRequestHandler):
        server_version = "EC2ws"
        sys_version = ""

        def log_message(self, *_args) -> None:  # the instance's requests are not the server's
            pass

        def do_PUT(self) -> None:  # noqa: N802 - http.server's name
            if self.path != "/latest/api/token":
                return self._answer(404, "Not Found")
            if self.headers.get("X-Forwarded-For"):
                return self._answer(403, "Forbidden")
            ttl = self.headers.get("X-aws-ec2-metadata-token-ttl-seconds", "")
            if not ttl.isdigit() or not 1 <= int(ttl) <= MAX_TTL:
                return self._answer(400, "Bad Request")
            token = secrets.token_urlsafe(40)
            tokens[token] = time.monotonic() + int(ttl)
            self._answer(200, token, {"X-aws-ec2-metadata-token-ttl-seconds": ttl})

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            try:
                view = source()
            except Exception as error:  # noqa: BLE001 - the instance is gone meanwhile, say
                return self._answer(500, f"Internal Server Error: {error}")
            token = self.headers.get("X-aws-ec2-metadata-token")
            if token is not None and tokens.get(token, 0) < time.monotonic():
                return self._answer(401, "Unauthorized")
            if token is None and view["tokens_required"]:
                return self._answer(401, "Unauthorized")
            found = _lookup(view, self.path.split("?", 1)[0])
            if found is None:
                return self._answer(404, "Not Found")
            self._answer(200, found)

        def _answer(self, status: int, body: str | bytes, headers: dict | None = None) -> None:
            data = body if isinstance(body, bytes) else body.encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            with contextlib.suppress(OSError):
                self.wfile.write(data)

    return Handler


def _lookup(view: dict, path: str) -> str | bytes | None:
    meta = dict(view["meta"])
    if view.get("role"):
        meta["iam/security-credentials/"] = view["role"]
        meta[f"iam/security-credentials/{view['role']}"] = json.dumps(
            {"Code": "Success", "Type": "AWS-HMAC", **view["credentials"]()}, indent=2)
    if path == "/latest/user-data":
        return view.get("user_data")
    if path == "/latest/dynamic/instance-identity/document":
        return json.dumps(view["identity"], indent=2)
    if not path.startswith("/latest/meta-data/"):
        return None
    key = path[len("/latest/meta-data/"):]
    if key in meta:
        return meta[key]
    # A folder lists what lies under it, sub-folders ending in /.
    prefix = key if key.endswith("/") or not key else key + "/"
    names = sorted({k[len(prefix):].split("/", 1)[0] + ("/" if "/" in k[len(prefix):] else "")
                    for k in meta if k.startswith(prefix) and k != prefix})
    return "\n".join(names) if names else None
