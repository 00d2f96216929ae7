"""The one way out of a sandbox instance's network namespace: to the sandbox's own endpoint.

    python -m sandbox.machines.forward INIT_PID PORT [PORT…]

Listens on 127.0.0.1:PORT inside the namespace of process INIT_PID (the instance's init) and
copies each connection to 127.0.0.1:PORT outside it, where the sandbox's moto server (its S3, the
Kiln repository) listens, or a proxy in front of it that the sandbox was told of. Nothing else
leaves the instance: its namespace has no other route.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import socket
import sys
import threading

CLONE_NEWNET = 0x40000000
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


def listener(pid: int, port: int) -> socket.socket:
    def make():
        server = socket.socket()
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", port))
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


def serve(server: socket.socket, port: int) -> None:
    while True:
        inside, _ = server.accept()
        try:
            outside = socket.create_connection(("127.0.0.1", port), timeout=10)
        except OSError:
            inside.close()
            continue
        outside.settimeout(None)
        for source, sink in ((inside, outside), (outside, inside)):
            threading.Thread(target=pipe, args=(source, sink), daemon=True).start()


if __name__ == "__main__":
    init_pid, ports = int(sys.argv[1]), [int(port) for port in sys.argv[2:]]
    servers = [(listener(init_pid, port), port) for port in ports]
    for server, port in servers[1:]:
        threading.Thread(target=serve, args=(server, port), daemon=True).start()
    serve(*servers[0])
