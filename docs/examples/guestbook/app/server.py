#!/usr/bin/python3
"""guestbook: a small JSON service. GET /entries lists the newest entries, POST /entries adds
one ({"name": …, "message": …}), GET /health reports the installed version."""

import argparse
import configparser
import json
import subprocess
import threading
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PACKAGE = "guestbook"
LONGEST = 280  # characters in a message


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
    parser.read_dict({"server": {"host": "0.0.0.0", "port": "8080", "keep": "100"}})
    parser.read(path)
    return parser["server"]


class Book:
    """The newest `keep` entries, in memory (each instance has its own)."""

    def __init__(self, keep):
        self.entries = deque(maxlen=keep)
        self.last = 0  # the id of the newest entry
        self.lock = threading.Lock()

    def add(self, data):
        """The entry made of `data`, or ValueError saying what is wrong with it."""
        if not isinstance(data, dict):
            raise ValueError("expected a JSON object")
        name, message = data.get("name"), data.get("message")
        if not isinstance(name, str) or not name.strip():
            raise ValueError("name: required")
        if not isinstance(message, str) or not message.strip():
            raise ValueError("message: required")
        if len(message) > LONGEST:
            raise ValueError(f"message: longer than {LONGEST} characters")
        with self.lock:
            self.last += 1
            entry = {"id": self.last, "name": name.strip(), "message": message.strip()}
            self.entries.append(entry)
        return entry

    def newest(self, count=20):
        with self.lock:
            return list(self.entries)[-count:][::-1]


def handler(book, version):
    class Handler(BaseHTTPRequestHandler):
        server_version = f"{PACKAGE}/{version}"

        def do_GET(self):  # noqa: N802 - the http.server API
            if self.path == "/health":
                self.reply(200, {"status": "ok", "name": PACKAGE, "version": version})
            elif self.path in ("/", "/entries"):
                self.reply(200, {"entries": book.newest()})
            else:
                self.reply(404, {"error": "not found"})

        def do_POST(self):  # noqa: N802
            if self.path != "/entries":
                return self.reply(404, {"error": "not found"})
            length = int(self.headers.get("Content-Length") or 0)
            try:
                entry = book.add(json.loads(self.rfile.read(length) or b"null"))
            except ValueError as error:  # json's errors are ValueErrors too
                return self.reply(400, {"error": str(error)})
            self.reply(201, entry)

        def reply(self, status, body):
            data = (json.dumps(body) + "\n").encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):  # one line a request is too many under load
            pass

    return Handler


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", default="/etc/guestbook/guestbook.conf")
    parser.add_argument("--port", type=int, help="overrides the config file's port")
    args = parser.parse_args()
    config = read_config(args.config)
    port = args.port if args.port is not None else config.getint("port")
    book = Book(config.getint("keep"))
    server = ThreadingHTTPServer((config["host"], port), handler(book, installed_version()))
    server.serve_forever()


if __name__ == "__main__":
    main()
