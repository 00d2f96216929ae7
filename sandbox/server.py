"""Entry point of the sandbox's moto server: apply the sandbox patches, then serve.

Run as `python -m sandbox.server --port N --state-dir DIR`; `sandbox.control` starts it. It
first makes a mount namespace of its own, where every process it starts lives and image layers
are frozen (sandbox.machines.frozen).

The server keeps each request as it arrived (the raw request line's target and the body's bytes)
in the WSGI environ before moto sees it, because SigV4 is computed over those and a framework's
decoded view of them differs (sandbox.aws.iam.sigv4).

One port answers both HTTP and HTTPS, as AWS's endpoints answer TLS: a connection whose first
byte opens a TLS handshake is served over TLS with the certificate of the sandbox's AWS names
(sandbox.machines.aws_names, the `tls/aws/` CA), any other as plain HTTP. The sandbox's IAM
evaluates a request that came over TLS with aws:SecureTransport true, a plain one false
(`wsgi.url_scheme`). Kiln's sandbox target uses the TLS endpoint; the plain one stays for the
repository's readers that were told its URL before and for the sandbox's own control calls.
"""

import argparse
import contextlib
import io
import json
import os
import signal
import socket
import ssl
import sys
from pathlib import Path

from sandbox.aws import apply_all, persistence, seams
from sandbox.aws.elbv2 import load_balancers
from sandbox.aws.iam.access_control import RAW_BODY, RAW_TARGET
from sandbox.aws.seams import SeamChanged
from sandbox.machines import frozen, image, images


class KeepRaw:
    """WSGI middleware: the raw target and body, kept beside the request for authentication."""

    def __init__(self, app):
        self.app = app

    def __call__(self, environ, start_response):
        if not _control_allowed(environ):
            body = json.dumps({"Error": "refused by the sandbox"}).encode()
            start_response("403 Forbidden", [("Content-Type", "application/json"),
                                             ("Content-Length", str(len(body)))])
            return [body]
        environ[RAW_TARGET] = environ.get("RAW_URI") or environ.get("REQUEST_URI") or ""
        body = _read_body(environ)
        environ[RAW_BODY] = body
        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))
        # A request that may change state is one the next snapshot waits for (persistence).
        changing = persistence.changing(environ.get("REQUEST_METHOD", "GET"), body, environ)
        with persistence.GATE.request(changing):
            answer = self.app(environ, start_response)
        if changing:
            load_balancers.follow()
        return answer


# moto's own control API (/moto-api/…) changes what the sandbox enforces or reveals, and needs
# no credentials: only these pass, the readiness probe and the reset (which checks the sandbox's
# reset token itself); the dashboard, seeding, config changes, recordings and the static
# results of other services are refused.
CONTROL_ALLOWED = {("GET", "/moto-api/config"), ("POST", "/moto-api/reset")}


def _control_allowed(environ) -> bool:
    path = environ.get("PATH_INFO", "")
    if not (path == "/moto-api" or path.startswith("/moto-api/")):
        return True
    return (environ.get("REQUEST_METHOD", "GET"), path.rstrip("/")) in CONTROL_ALLOWED


def _read_body(environ) -> bytes:
    stream = environ.get("wsgi.input")
    if stream is None:
        return b""
    if environ.get("wsgi.input_terminated"):  # chunked: read to its end
        return stream.read()
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    return stream.read(length) if length > 0 else b""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--state-dir", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        frozen.own_namespace()  # first, while this is the only thread
    except OSError as error:
        _refuse(f"it cannot make a mount namespace of its own: {error.strerror}")
    # As on AWS: RunInstances refuses an AMI id that does not exist.
    os.environ.setdefault("MOTO_ENABLE_AMI_VALIDATION", "true")
    os.environ.setdefault("MOTO_PORT", str(args.port))
    try:
        applied = apply_all(args.state_dir.resolve())
        print(f"sandbox patches: {', '.join(applied) or 'none'}", file=sys.stderr, flush=True)
        _freeze(args.state_dir.resolve())
        serve(args.host, args.port, args.state_dir.resolve())
    except SeamChanged as error:  # a moto upgrade moved what the sandbox stands on
        _refuse(str(error))


def _freeze(state_dir: Path) -> None:
    """The layers a last server built and registered, frozen again: a new namespace has none
    of its mounts."""
    try:
        image.freeze_built(state_dir)
        images.freeze_all(state_dir)
    except OSError as error:
        _refuse(f"the image layers cannot be frozen: {error.strerror}")


def _refuse(reason: str) -> None:
    print(f"sandbox: refusing to start: {reason}", file=sys.stderr, flush=True)
    sys.exit(3)


def serve(host: str, port: int, state_dir: Path) -> None:
    parts = "moto.moto_server.werkzeug_app"
    app = seams.uses(parts, "DomainDispatcherApplication", "sandbox.server")
    make = seams.uses(parts, "create_backend_app", "sandbox.server")
    handler = seams.uses(parts, "MotoRequestHandler", "sandbox.server")
    # As moto's own server: SIGTERM and SIGINT exit through Python, so cleanups run.
    for number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(number, _exit)
    try:
        server = either_server(host, port, KeepRaw(app(make)), handler, tls_context(state_dir))
        server.serve_forever()
    finally:
        persistence.save_at_exit()  # a clean stop keeps the last changes too


HANDSHAKE_WAIT = 30  # seconds a connection may take to send its first byte, then its handshake
TLS_HANDSHAKE = 0x16  # a TLS record's first byte: a handshake (the client's hello)


def tls_context(state_dir: Path) -> ssl.SSLContext:
    from sandbox.machines import aws_names

    paths = aws_names.ensure(state_dir)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2  # as AWS's endpoints
    context.load_cert_chain(paths["certificate"], paths["key"])
    return context


def either_server(host: str, port: int, app, handler, context: ssl.SSLContext):
    """werkzeug's threaded server, its connections sorted into TLS and plain ones by their
    first byte, each on its own thread (a silent client holds up no other)."""
    from werkzeug.serving import ThreadedWSGIServer

    class Handler(handler):
        disable_nagle_algorithm = True  # a TLS response's records go out at once

        def make_environ(self):
            environ = super().make_environ()
            environ["wsgi.url_scheme"] = "https" if isinstance(self.connection,
                                                               ssl.SSLSocket) else "http"
            return environ

        def handle(self):
            with contextlib.suppress(ssl.SSLError):  # a client gone mid-record, as werkzeug
                super().handle()  # drops a plain one

    class EitherServer(ThreadedWSGIServer):
        def finish_request(self, request, client_address):
            if not _opens_tls(request):
                super().finish_request(request, client_address)
                return
            secure = context.wrap_socket(request, server_side=True,
                                         do_handshake_on_connect=False)
            try:
                secure.do_handshake()
                secure.settimeout(None)
                super().finish_request(secure, client_address)
            except OSError:  # a failed handshake (ssl.SSLError is one), a client gone
                pass
            finally:
                with contextlib.suppress(OSError):
                    secure.close()

    return EitherServer(host, port, app, Handler)


def _opens_tls(connection: socket.socket) -> bool:
    connection.settimeout(HANDSHAKE_WAIT)
    try:
        first = connection.recv(1, socket.MSG_PEEK)
    except OSError:
        return False  # werkzeug's handler then reads nothing and closes it
    if first and first[0] == TLS_HANDSHAKE:
        return True  # the handshake's own wait applies until it is done
    connection.settimeout(None)
    return False


def _exit(signum, frame) -> None:
    sys.exit(0)


if __name__ == "__main__":
    main()
