"""Signature Version 4, checked as AWS checks it: the sandbox's own code, from the SigV4 spec.

The canonical request is built from the request as it arrived on the wire (the raw request line
and body the server kept, see sandbox.server), never from a framework's decoded view of it: a
query value `el9%2F` must be signed as `el9%2F`, not as the `el9/` a WSGI framework hands on.

- Canonical URI: the raw path; for every service but S3 each segment is normalized (`.` and `..`
  removed) and URI-encoded once more, as the spec says ("encoded twice"); S3's is used as sent.
- Canonical query string: each `name=value` pair percent-decoded, then encoded with only
  `A-Z a-z 0-9 - _ . ~` left bare (so a space is `%20`, `+` is `%2B`, `/` is `%2F`), sorted by
  name and then value, repeated names kept.
- Canonical headers: the signed headers, lower-cased, values trimmed with inner runs of spaces
  folded to one, sorted; the payload hash is `x-amz-content-sha256` when sent, else the SHA-256
  of the raw body.
- Time: X-Amz-Date within 15 minutes of the server's clock, and the scope's date its day.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import quote, unquote

ALGORITHM = "AWS4-HMAC-SHA256"
MAX_SKEW = 15 * 60  # seconds between the request's time and AWS's, either way
_AUTH = re.compile(r"AWS4-HMAC-SHA256\s+Credential=(?P<credential>[^,\s]+),\s*"
                   r"SignedHeaders=(?P<signed>[^,\s]+),\s*Signature=(?P<signature>[0-9a-f]{64})\s*$")


class Malformed(ValueError):
    """The Authorization header is not a SigV4 one (AWS: IncompleteSignature)."""


@dataclass(frozen=True)
class Authorization:
    access_key: str
    date: str  # YYYYMMDD
    region: str
    service: str
    signed_headers: tuple[str, ...]
    signature: str

    @property
    def scope(self) -> str:
        return f"{self.date}/{self.region}/{self.service}/aws4_request"


@dataclass(frozen=True)
class WireRequest:
    """A request as it arrived: method, raw target (path and query, still encoded), headers
    (case-insensitive lookup of each name's values) and the raw body."""

    method: str
    target: str
    headers: dict[str, list[str]]
    body: bytes

    @classmethod
    def build(cls, method: str, target: str, headers, body: bytes) -> WireRequest:
        found: dict[str, list[str]] = {}
        for name, value in headers:
            found.setdefault(name.lower(), []).append(value)
        return cls(method.upper(), target, found, body or b"")

    def header(self, name: str) -> str | None:
        values = self.headers.get(name.lower())
        return ",".join(values) if values else None

    @property
    def path(self) -> str:
        return self.target.partition("?")[0] or "/"

    @property
    def query(self) -> str:
        return self.target.partition("?")[2]


def parse_authorization(header: str) -> Authorization:
    match = _AUTH.match(header.strip())
    if match is None:
        raise Malformed("the Authorization header is not AWS4-HMAC-SHA256 "
                        "Credential=…, SignedHeaders=…, Signature=…")
    parts = match["credential"].split("/")
    if len(parts) != 5 or parts[4] != "aws4_request" or not re.fullmatch(r"\d{8}", parts[1]):
        raise Malformed(f"the credential scope {match['credential']!r} is not "
                        "KEY/YYYYMMDD/REGION/SERVICE/aws4_request")
    signed = tuple(match["signed"].split(";"))
    if "host" not in signed:
        raise Malformed("the signed headers must include host")
    return Authorization(parts[0], parts[1], parts[2], parts[3], signed, match["signature"])


def _encode(text: str) -> str:
    return quote(text, safe="-_.~")


def canonical_uri(path: str, service: str) -> str:
    if service == "s3":
        return path or "/"
    return quote(_remove_dot_segments(path or "/"), safe="/~")


def _remove_dot_segments(path: str) -> str:
    """RFC 3986's dot-segment removal; AWS also folds runs of slashes."""
    kept: list[str] = []
    for segment in path.split("/"):
        if segment == "..":
            if kept:
                kept.pop()
        elif segment and segment != ".":
            kept.append(segment)
    tail = "/" if path.endswith("/") and kept else ""
    return ("/" if path.startswith("/") else "") + "/".join(kept) + tail


def canonical_query(query: str) -> str:
    pairs = []
    for item in query.split("&") if query else []:
        if not item:
            continue
        name, _, value = item.partition("=")
        pairs.append((_encode(unquote(name)), _encode(unquote(value))))
    return "&".join(f"{name}={value}" for name, value in sorted(pairs))


def canonical_headers(request: WireRequest, signed: tuple[str, ...]) -> str:
    lines = []
    for name in sorted(set(signed)):
        values = request.headers.get(name, [])
        lines.append(f"{name}:{','.join(' '.join(v.split()) for v in values)}\n")
    return "".join(lines)


def payload_hash(request: WireRequest) -> str:
    return request.header("x-amz-content-sha256") or hashlib.sha256(request.body).hexdigest()


def canonical_request(request: WireRequest, auth: Authorization) -> str:
    return "\n".join([
        request.method,
        canonical_uri(request.path, auth.service),
        canonical_query(request.query),
        canonical_headers(request, auth.signed_headers),
        ";".join(sorted(set(auth.signed_headers))),
        payload_hash(request),
    ])


def string_to_sign(request: WireRequest, auth: Authorization) -> str:
    timestamp = request.header("x-amz-date") or ""
    digest = hashlib.sha256(canonical_request(request, auth).encode("utf-8")).hexdigest()
    return "\n".join([ALGORITHM, timestamp, auth.scope, digest])


def signature(secret: str, auth: Authorization, text: str) -> str:
    key = f"AWS4{secret}".encode()
    for part in (auth.date, auth.region, auth.service, "aws4_request"):
        key = hmac.new(key, part.encode("utf-8"), hashlib.sha256).digest()
    return hmac.new(key, text.encode("utf-8"), hashlib.sha256).hexdigest()


def skew(request: WireRequest, auth: Authorization, now: float | None = None) -> str | None:
    """Why the request's time is not acceptable, or None: AWS refuses a signature more than
    MAX_SKEW seconds from its own clock, and a scope dated another day than X-Amz-Date."""
    stamp = request.header("x-amz-date") or ""
    try:
        signed = datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    except ValueError:
        return f"X-Amz-Date {stamp!r} is not YYYYMMDD'T'HHMMSS'Z'"
    if stamp[:8] != auth.date:
        return f"the credential scope's date {auth.date} is not X-Amz-Date's {stamp[:8]}"
    current = datetime.fromtimestamp(time.time() if now is None else now, UTC)
    if (current - signed).total_seconds() > MAX_SKEW:
        return (f"Signature expired: {stamp} is now earlier than "
                f"{(current - timedelta(seconds=MAX_SKEW)):%Y%m%dT%H%M%SZ}")
    if (signed - current).total_seconds() > MAX_SKEW:
        return (f"Signature not yet current: {stamp} is still later than "
                f"{(current + timedelta(seconds=MAX_SKEW)):%Y%m%dT%H%M%SZ}")
    return None


def matches(request: WireRequest, auth: Authorization, secret: str) -> bool:
    expected = signature(secret, auth, string_to_sign(request, auth))
    return hmac.compare_digest(expected, auth.signature)
