"""A listener's front door: its connections wait in one thread, requests run in a bounded pool.

One thread per listener accepts connections, finishes TLS handshakes and reads request heads
from every connection at once (a connection that is still sending its head, or idle between
requests, holds no thread). A complete head goes to the network's worker pool (WORKERS threads
for all listeners), which serves the request and hands the connection back. Limits, so that no
client can take the sandbox down:
- a connection is closed when idle for the idle timeout, and when its request head has not
  arrived within HEADER_TIMEOUT real seconds (never more than the idle timeout) of its first
  byte (408 when part of it came);
- one client address holds at most PER_CLIENT connections per listener (more are closed at
  once) and has at most PER_CLIENT_BUSY requests served at a time (the rest wait their turn);
- requests whose body is still to come (the part that came with the head is not all of it)
  take at most UPLOAD_WORKERS of the workers at once, so that clients sending bodies slowly
  never hold every worker: requests without a body always find one;
- all listeners together hold at most MAX_CONNECTIONS connections (and never more than half
  the process's file descriptors); at that budget, a client already holding SHARE connections
  on the listener has its new ones closed at once, and another client's new connection gets in,
  the listener making room by closing its connection that has waited longest for a head. The
  budget also bounds the loop's work: a slowloris client trickling a header line a second into
  each of its connections costs a read per connection per second;
- a listener listens on SOCKETS sockets sharing its port, each with a listen queue of its own,
  so that a flood arriving faster than the loop accepts does not fill the queue and drop a new
  client's SYN (which it would retry only a second later).
"""

from __future__ import annotations

import collections
import contextlib
import heapq
import itertools
import queue
import resource
import selectors
import socket
import ssl
import sys
import threading
import time
import traceback
from collections.abc import Callable

from sandbox.network import http1

HEADER_TIMEOUT = 10.0  # real seconds for a request head (capped by the idle timeout)
PER_CLIENT = 256
PER_CLIENT_BUSY = 8
WORKERS = 32
UPLOAD_WORKERS = WORKERS // 2
MAX_CONNECTIONS = 4096
ACCEPTS = 1024  # connections taken per wake-up of the loop
SHARE = 16  # connections a client keeps getting once all listeners are at their budget
# Listening sockets per listener (SO_REUSEPORT: the kernel spreads new connections over them),
# each with its own listen queue of up to net.core.somaxconn (4,096 by default), so that a
# flood faster than the loop fills none of them and a new client's SYN is never dropped.
SOCKETS = 8


class Budget:
    """Connections all listeners may hold at once."""

    def __init__(self, limit: int | None = None):
        soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        self.limit = limit or max(256, min(MAX_CONNECTIONS, soft // 2))
        self.used = 0
        self._lock = threading.Lock()

    def take(self) -> bool:
        with self._lock:
            if self.used >= self.limit:
                return False
            self.used += 1
            return True

    def give(self) -> None:
        with self._lock:
            self.used -= 1

    def full(self) -> bool:
        return self.used >= self.limit


class Pool:
    """The worker threads every listener's requests run in (daemon threads, started with the
    first request: a server stopping never waits on a slow client)."""

    def __init__(self, workers: int = WORKERS):
        self.workers = workers
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self.budget = Budget()
        self._uploads = 0
        self._lock = threading.Lock()
        self.wakers: set[Callable[[], None]] = set()  # each listener's loop, told of a free slot

    def submit(self, work: Callable, *args) -> None:
        with self._lock:
            while len(self._threads) < self.workers:
                thread = threading.Thread(target=self._run, daemon=True,
                                          name=f"lb-worker-{len(self._threads)}")
                thread.start()
                self._threads.append(thread)
        self._queue.put((work, args))

    def _run(self) -> None:
        while True:
            work, args = self._queue.get()
            work(*args)  # Front._work: its own failures are caught there

    def take_upload(self) -> bool:
        with self._lock:
            if self._uploads >= UPLOAD_WORKERS:
                return False
            self._uploads += 1
            return True

    def give_upload(self) -> None:
        with self._lock:
            self._uploads -= 1
        for wake in list(self.wakers):
            wake()


class Connection:
    """A client connection: its socket, the bytes read past the last head, its deadline."""

    def __init__(self, sock: socket.socket, client: str, tls: bool):
        self.sock, self.client = sock, client
        self.buffer = bytearray()
        self.head: bytes = b""
        self.handshaking = tls
        self.upload = False  # its body is still to come (it holds an upload slot when served)
        self.idle = True  # no byte of the next request yet
        self.deadline = 0.0
        self.generation = 0

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


# serve(connection) -> whether the connection may carry another request; runs in the pool.
Serve = Callable[[Connection], bool]


class Front:
    def __init__(self, address: tuple[str, int], serve: Serve, pool: Pool,
                 admits: Callable[[str], bool], timeouts: Callable[[], tuple[float, float]],
                 tls: ssl.SSLContext | None = None,
                 client: Callable[[str], str] = str):
        # `client`: the address a peer stands for (a sandbox machine's relayed connection).
        self.serve, self.pool, self.admits, self.timeouts, self.tls, self.client = (
            serve, pool, admits, timeouts, tls, client)
        self.servers = _listening(address)
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._selector = selectors.DefaultSelector()
        for server in self.servers:
            self._selector.register(server, selectors.EVENT_READ, "accept")
        self._selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._waiting: collections.OrderedDict[int, Connection] = collections.OrderedDict()
        self._deadlines: list[tuple[float, int, int, Connection]] = []
        self._order = itertools.count()
        self._open: collections.Counter = collections.Counter()  # per client address
        self._busy: collections.Counter = collections.Counter()
        self._parked: dict[str, collections.deque] = collections.defaultdict(collections.deque)
        self._uploads: collections.deque[Connection] = collections.deque()  # for a slot
        self._returned: queue.SimpleQueue = queue.SimpleQueue()
        pool.wakers.add(self._wake)
        self._stopped = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True,
                                       name=f"listener {address[0]}:{address[1]}")

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self._stopped.set()
        self.pool.wakers.discard(self._wake)
        self._wake()
        if self.thread.is_alive() and self.thread is not threading.current_thread():
            self.thread.join(5)
        for server in self.servers:
            server.close()
        for connection in list(self._waiting.values()):
            self._close(connection)
        for parked in [*self._parked.values(), self._uploads]:
            for connection in parked:
                self._close(connection)
        self._parked.clear()
        self._selector.close()
        self._wake_r.close()
        self._wake_w.close()

    def _wake(self) -> None:
        with contextlib.suppress(OSError):  # full (a wake-up is pending anyway) or closed
            self._wake_w.send(b"x")

    # -- the loop ----------------------------------------------------------------------------
    def _loop(self) -> None:
        while not self._stopped.is_set():
            try:
                self._round()
            except Exception:  # noqa: BLE001 - one bad round must not end the listener
                traceback.print_exc(file=sys.stderr)

    def _round(self) -> None:
        wait = 0.5
        if self._deadlines:
            wait = min(wait, max(0.005, self._deadlines[0][0] - time.monotonic()))
        events = self._selector.select(wait)
        events.sort(key=lambda event: event[0].data != "accept")  # new clients first
        for key, _mask in events:
            if key.data == "accept":
                self._accept(key.fileobj)
            elif key.data == "wake":
                self._drain_wake()
            elif key.fileobj.fileno() in self._waiting:
                self._read(key.data)
        self._take_back()
        while self._uploads and self.pool.take_upload():
            self._submit(self._uploads.popleft())
        self._expire(time.monotonic())

    def _drain_wake(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except BlockingIOError:
            pass

    def _accept(self, server: socket.socket) -> None:
        for _ in range(ACCEPTS):
            try:
                sock, address = server.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # out of descriptors for a moment: the next round tries again
                return
            self._admit(sock, self.client(address[0]))

    def _admit(self, sock: socket.socket, client: str) -> None:
        if (self._open[client] >= PER_CLIENT or self._over_share(client)
                or not self.admits(client) or not self._room()):
            sock.close()  # over the caps, or dropped by the balancer's security groups
            return
        self._open[client] += 1
        sock.setblocking(False)
        if self.tls is not None:
            try:
                sock = self.tls.wrap_socket(sock, server_side=True,
                                            do_handshake_on_connect=False)
            except (ssl.SSLError, OSError):
                self.pool.budget.give()
                self._forget(client)
                sock.close()
                return
        connection = Connection(sock, client, self.tls is not None)
        self._listen(connection)

    def _over_share(self, client: str) -> bool:
        """At the budget, a client already holding SHARE connections here gets no more (closed
        at once: the cheapest answer to a flood, so that the loop keeps up with it and a new
        client's connection is soon taken from the listen queue)."""
        return self._open[client] >= SHARE and self.pool.budget.full()

    def _room(self) -> bool:
        """A connection's worth of the budget, closing the one waiting longest if need be."""
        if self.pool.budget.take():
            return True
        if not self._waiting:
            return False
        _fd, oldest = self._waiting.popitem(last=False)
        self._unwatch(oldest)
        self._close(oldest)
        return self.pool.budget.take()

    def _listen(self, connection: Connection) -> None:
        """Wait for the connection's next head (it may already be in its buffer)."""
        if self._ready(connection):
            return
        header, idle = self.timeouts()
        connection.idle = not connection.buffer
        self._deadline(connection, idle if connection.idle else header)
        self._waiting[connection.sock.fileno()] = connection
        self._selector.register(connection.sock, selectors.EVENT_READ, connection)

    def _deadline(self, connection: Connection, seconds: float) -> None:
        connection.generation += 1
        connection.deadline = time.monotonic() + seconds
        heapq.heappush(self._deadlines, (connection.deadline, next(self._order),
                                         connection.generation, connection))

    def _read(self, connection: Connection) -> None:
        sock = connection.sock
        try:
            if connection.handshaking:
                sock.do_handshake()
                connection.handshaking = False
            data = sock.recv(65536)
            while data and isinstance(sock, ssl.SSLSocket) and sock.pending():
                data += sock.recv(65536)
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
            return
        except (ssl.SSLError, OSError):
            data = b""
        if not data:
            self._drop(connection)
            return
        if connection.idle:
            connection.idle = False
            self._deadline(connection, self.timeouts()[0])
        connection.buffer += data
        try:
            if http1.head_end(connection.buffer) >= 0:
                self._unwatch(connection)
                self._ready(connection)
        except http1.Refused:
            self._refuse(connection, 400, "Bad Request")

    def _ready(self, connection: Connection) -> bool:
        """Hand a complete head to the pool (or park it behind the client's other requests)."""
        try:
            end = http1.head_end(connection.buffer)
        except http1.Refused:
            end = -1
        if end < 0:
            return False
        connection.head = bytes(connection.buffer[:end])
        del connection.buffer[:end]
        connection.upload = _body_to_come(connection)
        if self._busy[connection.client] >= PER_CLIENT_BUSY:
            self._parked[connection.client].append(connection)
        else:
            self._dispatch(connection)
        return True

    def _dispatch(self, connection: Connection) -> None:
        if connection.upload and not self.pool.take_upload():
            self._uploads.append(connection)
        else:
            self._submit(connection)

    def _submit(self, connection: Connection) -> None:
        self._busy[connection.client] += 1
        self.pool.submit(self._work, connection)

    def _work(self, connection: Connection) -> None:
        keep = False
        try:
            connection.sock.setblocking(True)
            keep = self.serve(connection)
        except Exception:  # noqa: BLE001 - a request's failure ends its connection only
            traceback.print_exc(file=sys.stderr)
        if connection.upload:
            self.pool.give_upload()
        if self._stopped.is_set():
            self._close(connection)
            return
        self._returned.put((connection, keep))
        self._wake()

    def _take_back(self) -> None:
        while True:
            try:
                connection, keep = self._returned.get_nowait()
            except queue.Empty:
                return
            client = connection.client
            self._busy[client] -= 1
            if self._parked.get(client):
                self._dispatch(self._parked[client].popleft())
            if not self._parked.get(client):
                self._parked.pop(client, None)
            if keep and not self._stopped.is_set():
                try:
                    connection.sock.setblocking(False)
                    self._listen(connection)
                    continue
                except OSError:
                    pass
            self._close(connection)

    def _expire(self, now: float) -> None:
        while self._deadlines and self._deadlines[0][0] <= now:
            _when, _n, generation, connection = heapq.heappop(self._deadlines)
            if (generation != connection.generation
                    or self._waiting.get(connection.sock.fileno()) is not connection):
                continue
            if connection.idle or connection.handshaking:
                self._drop(connection)
            else:
                self._refuse(connection, 408, "Request Timeout")

    # -- ending connections -------------------------------------------------------------------
    def _refuse(self, connection: Connection, status: int, reason: str) -> None:
        """Answer the balancer's own error, as well as a non-blocking send allows, and close."""
        body = f"{status} {reason}\n".encode()
        answer = (f"HTTP/1.1 {status} {reason}\r\nServer: awselb/2.0\r\n"
                  f"Content-Type: text/plain\r\nContent-Length: {len(body)}\r\n"
                  "Connection: close\r\n\r\n").encode() + body
        with contextlib.suppress(OSError, ssl.SSLError):
            connection.sock.send(answer)
        self._drop(connection)

    def _drop(self, connection: Connection) -> None:
        self._unwatch(connection)
        self._close(connection)

    def _unwatch(self, connection: Connection) -> None:
        try:
            fileno = connection.sock.fileno()
        except OSError:
            return
        if self._waiting.get(fileno) is connection:
            del self._waiting[fileno]
        with contextlib.suppress(KeyError, ValueError, OSError):
            self._selector.unregister(connection.sock)

    def _close(self, connection: Connection) -> None:
        if connection.sock.fileno() >= 0:
            self.pool.budget.give()
            self._forget(connection.client)
        connection.close()

    def _forget(self, client: str) -> None:
        self._open[client] -= 1
        if self._open[client] <= 0:
            del self._open[client]


def _listening(address: tuple[str, int]) -> list[socket.socket]:
    """SOCKETS listening sockets sharing `address`, once nothing else listens there (a port
    in use fails as a single socket would)."""
    socket.create_server(address).close()
    servers = []
    try:
        for _ in range(SOCKETS):
            server = socket.create_server(address, backlog=4096, reuse_port=True)
            server.setblocking(False)
            servers.append(server)
    except OSError:
        for server in servers:
            server.close()
        raise
    return servers


def _body_to_come(connection: Connection) -> bool:
    """Whether the request's body has more to come than arrived with its head."""
    try:
        head = http1.parse(connection.head)
    except http1.Refused:
        return False  # refused at once by its worker
    if head.chunked:
        return not connection.buffer.endswith(b"0\r\n\r\n")
    return len(connection.buffer) < (head.length or 0)
