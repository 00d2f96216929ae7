"""Entry point of the sandbox's moto server: apply the sandbox patches, then serve.

Run as `python -m sandbox.server --port N --state-dir DIR`; `sandbox.control` starts it. It
first makes a mount namespace of its own, where every process it starts lives and image layers
are frozen (sandbox.machines.frozen).

The server keeps each request as it arrived (the raw request line's target and the body's bytes)
in the WSGI environ before moto sees it, because SigV4 is computed over those and a framework's
decoded view of them differs (sandbox.aws.iam.sigv4).
"""

import argparse
import io
import json
import os
import signal
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
        serve(args.host, args.port)
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


def serve(host: str, port: int) -> None:
    from werkzeug.serving import run_simple

    parts = "moto.moto_server.werkzeug_app"
    app = seams.uses(parts, "DomainDispatcherApplication", "sandbox.server")
    make = seams.uses(parts, "create_backend_app", "sandbox.server")
    handler = seams.uses(parts, "MotoRequestHandler", "sandbox.server")
    # As moto's own server: SIGTERM and SIGINT exit through Python, so cleanups run.
    for number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(number, _exit)
    try:
        run_simple(host, port, KeepRaw(app(make)), threaded=True, request_handler=handler)
    finally:
        persistence.save_at_exit()  # a clean stop keeps the last changes too


def _exit(signum, frame) -> None:
    sys.exit(0)


if __name__ == "__main__":
    main()
