#!/usr/bin/python3
"""hello-web: answers GET / with a greeting and GET /health with a JSON health report."""

import argparse
import configparser
import json
import subprocess
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PACKAGE = "hello-web"


def installed_version():
    """The version of the installed package, as rpm knows it."""
    try:
        result = subprocess.run(["rpm", "-q", "--qf", "%{VERSION}-%{RELEASE}", PACKAGE],
                                capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return result.stdout.strip() if result.returncode == 0 else "unknown"


def read_config(path):
    parser = configparser.ConfigParser()
    parser.read_dict({"server": {"host": "0.0.0.0", "port": "8080", "greeting": "Hello"}})
    parser.read(path)
    return parser["server"]


def handler(greeting, version):
    class Handler(BaseHTTPRequestHandler):
        server_version = f"{PACKAGE}/{version}"

        def do_GET(self):  # noqa: N802 - the http.server API
            if self.path == "/":
                self.reply(200, "text/plain", f"{greeting} (version {version})\n")
            elif self.path == "/health":
                body = json.dumps({"status": "ok", "name": PACKAGE, "version": version})
                self.reply(200, "application/json", body + "\n")
            else:
                self.reply(404, "text/plain", "not found\n")

        def reply(self, status, kind, text):
            data = text.encode()
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Handler


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", default="/etc/hello-web/hello-web.conf")
    parser.add_argument("--port", type=int, help="overrides the config file's port")
    args = parser.parse_args()
    config = read_config(args.config)
    port = args.port if args.port is not None else config.getint("port")
    server = ThreadingHTTPServer((config["host"], port),
                                 handler(config["greeting"], installed_version()))
    server.serve_forever()


if __name__ == "__main__":
    main()
