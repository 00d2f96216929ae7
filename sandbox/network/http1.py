"""HTTP/1.x requests read as an ALB reads them: heads within its limits, each request
classified as AWS's desync mitigation classifies it, and bodies read a piece at a time.

Limits (an ALB's HTTP header quotas): a request line of 16 KiB, one header of 16 KiB, all
headers 64 KiB; past them the request is refused with 400.

Classification (http_desync_guardian's tiers, which `routing.http.desync_mitigation_mode`
acts on):
- compliant;
- acceptable: bare LF line ends, a space in the URI, HTTP/1.2-1.9, control or non-ASCII
  characters in a header value, `Content-Length: 0` on GET/HEAD;
- ambiguous: a folded or colon-less header line, a name that normalises to Content-Length or
  Transfer-Encoding (`Transfer-Encoding :`, `Content_Length`…), the same Content-Length twice,
  Content-Length with Transfer-Encoding, a body length on GET/HEAD, control characters in the
  URI;
- severe: NUL or CR inside a header or the URI, a malformed method or version, different
  Content-Lengths, a Content-Length that is not a plain decimal, chunked given twice, a transfer
  coding other than `chunked`.
A body's framing is then fixed by the balancer alone: Transfer-Encoding: chunked when given
(Content-Length dropped), else Content-Length, else none; the target receives that framing and
nothing else. A chunked body whose chunk sizes or CRLFs are wrong is refused with 400 when the
bad part arrives.
"""

from __future__ import annotations

import re
import socket

MAX_LINE = 16 * 1024
MAX_FIELD = 16 * 1024
MAX_HEAD = 64 * 1024
PIECE = 64 * 1024  # the most of a body held at once

COMPLIANT, ACCEPTABLE, AMBIGUOUS, SEVERE = range(4)
TIERS = ("Compliant", "Acceptable", "Ambiguous", "Severe")

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_VERSION = re.compile(rb"HTTP/1\.[0-9]")
_DECIMAL = re.compile(rb"[0-9]{1,18}")
_HEX = re.compile(rb"[0-9A-Fa-f]{1,15}")
_CTL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_NON_ASCII = re.compile(rb"[\x80-\xff]")
_FRAMING = {b"contentlength": b"content-length", b"transferencoding": b"transfer-encoding"}


class Refused(Exception):
    """A request the balancer answers with `status` and closes the connection on."""

    def __init__(self, reason: str, status: int = 400):
        super().__init__(reason)
        self.reason, self.status = reason, status


class ClientGone(Exception):
    """The client closed its connection in the middle of a request."""


class Headers:
    """A request's header fields in order; names compared without case."""

    def __init__(self, pairs: list[tuple[str, str]]):
        self.pairs = pairs

    def get(self, name: str, default=None):
        name = name.lower()
        return next((v for k, v in self.pairs if k.lower() == name), default)

    def get_all(self, name: str) -> list[str]:
        name = name.lower()
        return [v for k, v in self.pairs if k.lower() == name]

    def items(self) -> list[tuple[str, str]]:
        return list(self.pairs)

    def keys(self) -> list[str]:
        return [k for k, _v in self.pairs]


class Head:
    """A request line and headers, with the request's tier and body framing."""

    def __init__(self, method: str, target: str, version: str, headers: Headers):
        self.method, self.target, self.version, self.headers = method, target, version, headers
        self.tier, self.reason = COMPLIANT, "Compliant"
        self.length: int | None = None  # the body's length when not chunked
        self.chunked = False
        self.dropped: set[str] = set()  # lower-case names never forwarded (masquerading framing)

    def mark(self, tier: int, reason: str) -> None:
        if tier > self.tier:
            self.tier, self.reason = tier, reason

    @property
    def has_body(self) -> bool:
        return self.chunked or bool(self.length)

    @property
    def keep_alive(self) -> bool:
        tokens = {t.strip().lower() for v in self.headers.get_all("Connection")
                  for t in v.split(",")}
        return self.version == "HTTP/1.1" and "close" not in tokens


def head_end(buffer: bytes | bytearray) -> int:
    """The index just past the blank line ending a head in `buffer` (-1: not there yet);
    Refused when the head would pass the limits."""
    end = buffer.find(b"\r\n\r\n")
    bare = buffer.find(b"\n\n")
    ends = [i + n for i, n in ((end, 4), (bare, 2)) if i >= 0]
    found = min(ends) if ends else -1
    if found < 0:
        first = buffer.find(b"\n")
        if (first < 0 and len(buffer) > MAX_LINE) or len(buffer) > MAX_LINE + MAX_HEAD:
            raise Refused("RequestHeaderTooLarge")
    return found


def parse(raw: bytes) -> Head:
    """The head in `raw` (a request line, header lines and the blank line), classified."""
    lines = raw.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    bare = any(not line.endswith(b"\r") for line in lines)
    lines = [line[:-1] if line.endswith(b"\r") else line for line in lines]
    while lines and lines[-1] == b"":
        lines.pop()
    if not lines:
        raise Refused("MissingRequestLine")
    head = _request_line(lines[0])
    if bare:
        head.mark(ACCEPTABLE, "NonCrLfLineTermination")
    _header_lines(head, lines[1:])
    _framing(head)
    return head


def _request_line(line: bytes) -> Head:
    if len(line) > MAX_LINE:
        raise Refused("RequestLineTooLarge")
    parts = line.split(b" ")
    if len(parts) < 3:
        raise Refused("MissingUri")
    method, target, version = parts[0], b" ".join(parts[1:-1]), parts[-1]
    if not _TOKEN.fullmatch(method):
        raise Refused("BadMethod")
    if not _VERSION.fullmatch(version):
        raise Refused("BadVersion")
    if b"\x00" in target or b"\r" in target or not target:
        raise Refused("BadUri")
    head = Head(method.decode(), target.decode("latin-1"), version.decode(), Headers([]))
    if version not in (b"HTTP/1.0", b"HTTP/1.1"):
        head.mark(ACCEPTABLE, "NonCompliantVersion")
        head.version = "HTTP/1.1"
    if b" " in target:
        head.mark(ACCEPTABLE, "SpaceInUri")
    if _CTL.search(target):
        head.mark(AMBIGUOUS, "AmbiguousUri")
    return head


def _header_lines(head: Head, lines: list[bytes]) -> None:
    total = 0
    pairs: list[list] = []
    for line in lines:
        total += len(line) + 2
        if len(line) > MAX_FIELD or total > MAX_HEAD:
            raise Refused("RequestHeaderTooLarge")
        if b"\x00" in line or b"\r" in line:
            raise Refused("BadHeader")
        if line[:1] in (b" ", b"\t"):  # obs-fold
            head.mark(AMBIGUOUS, "MultilineHeader")
            if pairs:
                pairs[-1][1] += b" " + line.strip()
            continue
        if not line.strip():
            head.mark(AMBIGUOUS, "EmptyHeader")
            continue
        name, colon, value = line.partition(b":")
        if not colon:
            head.mark(AMBIGUOUS, "MissingHeaderColon")
            continue
        pairs.append([name, value.strip(b" \t")])
    for name, value in pairs:
        _header(head, name, value)


def _header(head: Head, name: bytes, value: bytes) -> None:
    text = name.decode("latin-1")
    normal = re.sub(rb"[^a-z]", b"", name.lower().replace(b"\xc4\xb1", b"i"))
    if normal in _FRAMING and name.lower() != _FRAMING[normal]:
        head.mark(AMBIGUOUS, "SuspiciousHeader")
        head.dropped.add(text.lower())
    elif not _TOKEN.fullmatch(name):
        head.mark(ACCEPTABLE, "NonCompliantHeader")
    if _CTL.search(value.replace(b"\t", b"")) or _NON_ASCII.search(value):
        head.mark(ACCEPTABLE, "NonCompliantHeader")
    head.headers.pairs.append((text, value.decode("latin-1")))


def _framing(head: Head) -> None:
    lengths = [v.strip().encode("latin-1") for value in head.headers.get_all("Content-Length")
               for v in value.split(",")]
    codings = [v.strip().lower() for value in head.headers.get_all("Transfer-Encoding")
               for v in value.split(",")]
    if any(not _DECIMAL.fullmatch(v) for v in lengths):
        raise Refused("BadContentLength")
    if len(set(lengths)) > 1:
        raise Refused("MultipleContentLength")
    if codings.count("chunked") > 1:
        raise Refused("MultipleTransferEncodingChunked")
    if codings and codings != ["chunked"]:
        raise Refused("BadTransferEncoding")
    if len(lengths) > 1:
        head.mark(AMBIGUOUS, "DuplicateContentLength")
    if lengths and codings:
        head.mark(AMBIGUOUS, "BothTeClPresent")
    head.chunked = bool(codings)
    head.length = None if head.chunked or not lengths else int(lengths[0])
    if head.method in ("GET", "HEAD"):
        if head.chunked:
            head.mark(AMBIGUOUS, "UndefinedTransferEncodingSemantics")
        elif head.length:
            head.mark(AMBIGUOUS, "UndefinedContentLengthSemantics")
        elif lengths:
            head.mark(ACCEPTABLE, "GetHeadZeroContentLength")


class Stream:
    """A client connection read through a buffer (what came after the head first)."""

    def __init__(self, sock: socket.socket, buffer: bytes | bytearray = b""):
        self.sock = sock
        self.buffer = bytearray(buffer)

    def _fill(self) -> None:
        """More of the request; the client's silence for the idle timeout is its 408, not the
        target's 504."""
        try:
            data = self.sock.recv(PIECE)
        except TimeoutError:
            raise Refused("ClientIdleTimeout", 408) from None
        except OSError as error:
            raise ClientGone(str(error)) from None
        if not data:
            raise ClientGone("the client closed the connection mid-request")
        self.buffer += data

    def read_some(self, most: int) -> bytes:
        if not self.buffer:
            self._fill()
        piece = bytes(self.buffer[:most])
        del self.buffer[:most]
        return piece

    def read_exactly(self, count: int) -> bytes:
        while len(self.buffer) < count:
            self._fill()
        piece = bytes(self.buffer[:count])
        del self.buffer[:count]
        return piece

    def readline(self, limit: int) -> bytes:
        while (end := self.buffer.find(b"\n")) < 0:
            if len(self.buffer) > limit:
                raise Refused("BadChunk")
            self._fill()
        if end + 1 > limit:
            raise Refused("BadChunk")
        return self.read_exactly(end + 1)


class Body:
    """A request's body as the head frames it, a piece (at most PIECE bytes) at a time."""

    def __init__(self, head: Head, stream: Stream):
        self.head, self.stream = head, stream
        self.done = not head.has_body

    def __iter__(self):
        pieces = self._chunks() if self.head.chunked else self._counted(self.head.length or 0)
        yield from pieces
        self.done = True

    def _counted(self, left: int):
        while left:
            piece = self.stream.read_some(min(left, PIECE))
            left -= len(piece)
            yield piece

    def _chunks(self):
        while size := self._chunk_size():
            yield from self._counted(size)
            if self.stream.read_exactly(2) != b"\r\n":
                raise Refused("BadChunk")
        total = 0
        while (line := self.stream.readline(MAX_FIELD)) not in (b"\r\n", b"\n"):  # trailers
            total += len(line)
            if total > MAX_HEAD or b"\x00" in line:
                raise Refused("BadChunk")

    def _chunk_size(self) -> int:
        line = self.stream.readline(4096)
        if not line.endswith(b"\r\n"):
            raise Refused("BadChunk")
        size, _semicolon, extension = line[:-2].partition(b";")
        if not _HEX.fullmatch(size.strip(b" \t")) or _CTL.search(extension.replace(b"\t", b"")):
            raise Refused("BadChunk")
        return int(size.strip(b" \t"), 16)
