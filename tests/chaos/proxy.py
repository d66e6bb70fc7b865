"""A fault proxy: a loopback HTTP proxy in front of an S3 server that injects faults chosen per request.

Each request is classified as an S3 operation (``GetObject``, ``UploadPart``,
``CompleteMultipartUpload``...) and checked against the proxy's :class:`Rule` list; a rule that
fires injects its fault. Faults:

``flip``           flip one bit of a 2xx response body (at ``at`` of its length)
``flip_request``   flip one bit of the request body before forwarding it (a PUT or UploadPart)
``reset``          send the headers and ``at`` of the body, then reset the connection (RST); for a
                   PUT or POST: reset it before forwarding (the upload is cut off)
``truncate``       send the headers (the full Content-Length) and ``at`` of the body, then close
``stall``          wait ``seconds`` before forwarding (a slow server)
``slow``           send the response body at ``rate`` bytes a second
``status``         answer ``status``/``code`` (503 SlowDown by default) without forwarding
``error200``       answer 200 with an S3 error body without forwarding (CompleteMultipartUpload style)
``drop_answer``    forward the request (the server acts), then close the connection unanswered
``hold``           keep the request until :meth:`FaultProxy.release` (or the client goes away:
                   then it is never forwarded); :attr:`FaultProxy.holding` is set meanwhile

Selection: ``op`` / ``method`` / ``key`` (a regular expression searched in the object key) /
``ranged`` narrow what a rule matches; among the matching requests it fires on the ``nth``
ones (1-based), on ``every`` k-th one, with ``probability`` (seeded: ``seed``), for ``burst``
seconds after its first firing (every matching request in that window), at most ``times``
times. :attr:`FaultProxy.injected` counts what was injected (by fault and by rule), so a test
can assert its fault really happened; :attr:`FaultProxy.seen` counts requests by operation.
"""
from __future__ import annotations

import collections
import http.client
import random
import re
import select
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Counter, Dict, Iterable, List, Optional, Tuple
from urllib.parse import parse_qs, unquote, urlsplit

FAULTS = ("flip", "flip_request", "reset", "truncate", "stall", "slow", "status", "error200",
          "drop_answer", "hold")
_BEFORE = ("hold", "stall", "status", "error200", "flip_request")  # act before forwarding
_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "proxy-connection", "te", "trailer",
        "upgrade"}

ERROR_CODES = {500: "InternalError", 503: "SlowDown", 502: "BadGateway", 504: "GatewayTimeout"}


def error_xml(code: str, message: str = "injected by the fault proxy") -> bytes:
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}</Message>'
            f"<RequestId>chaos</RequestId></Error>").encode()


@dataclass
class Request:
    """One request as the proxy saw it."""

    method: str
    path: str  # decoded, without the query
    query: Dict[str, str]
    headers: Dict[str, str]  # lower-case names
    body: bytes
    raw: str = ""  # the request target as sent (the path and query the client signed)
    bucket: str = ""
    key: str = ""
    op: str = ""


def classify(method: str, path: str, query: Dict[str, str], headers: Dict[str, str]) -> Tuple[str, str, str]:
    """``(bucket, key, operation)`` of a path-style S3 request."""
    parts = path.lstrip("/").split("/", 1)
    bucket = parts[0]
    key = parts[1] if len(parts) > 1 else ""
    if not bucket:
        return "", "", "ListBuckets"
    if not key:
        if method == "GET":
            if "uploads" in query:
                return bucket, "", "ListMultipartUploads"
            if "location" in query:
                return bucket, "", "GetBucketLocation"
            return bucket, "", "ListObjectsV2" if query.get("list-type") == "2" else "ListObjects"
        if method == "POST" and "delete" in query:
            return bucket, "", "DeleteObjects"
        return bucket, "", {"HEAD": "HeadBucket", "PUT": "CreateBucket", "DELETE": "DeleteBucket"}.get(method, method)
    if method == "GET":
        return bucket, key, "ListParts" if "uploadId" in query else "GetObject"
    if method == "HEAD":
        return bucket, key, "HeadObject"
    if method == "PUT":
        copy = "x-amz-copy-source" in headers
        if "partNumber" in query:
            return bucket, key, "UploadPartCopy" if copy else "UploadPart"
        return bucket, key, "CopyObject" if copy else "PutObject"
    if method == "POST":
        if "uploads" in query:
            return bucket, key, "CreateMultipartUpload"
        if "uploadId" in query:
            return bucket, key, "CompleteMultipartUpload"
    if method == "DELETE":
        return bucket, key, "AbortMultipartUpload" if "uploadId" in query else "DeleteObject"
    return bucket, key, method


@dataclass
class Rule:
    """Which requests get ``fault`` (see the module docstring)."""

    fault: str
    op: "Optional[str | Tuple[str, ...]]" = None
    method: Optional[str] = None
    key: Optional[str] = None
    ranged: Optional[bool] = None
    nth: Optional[Iterable[int]] = None
    every: Optional[int] = None
    probability: float = 1.0
    seed: int = 0
    burst: Optional[float] = None
    times: Optional[int] = None
    at: float = 0.5
    status: int = 503
    code: str = ""
    seconds: float = 0.0
    rate: float = 1.0
    name: str = ""
    matched: int = 0
    fired: int = 0
    _rng: random.Random = field(default_factory=random.Random, repr=False)
    _burst_end: float = 0.0
    _nth: frozenset = frozenset()

    def __post_init__(self) -> None:
        if self.fault not in FAULTS:
            raise ValueError(f"unknown fault {self.fault!r}")
        self._rng = random.Random(self.seed)
        self._nth = frozenset(self.nth or ())
        self.name = self.name or self.fault
        if not self.code:
            self.code = "InternalError" if self.fault == "error200" else ERROR_CODES.get(self.status, "InternalError")

    def matches(self, req: Request) -> bool:
        ops = (self.op,) if isinstance(self.op, str) else self.op
        if ops is not None and req.op not in ops:
            return False
        if self.method is not None and req.method != self.method:
            return False
        if self.key is not None and not re.search(self.key, req.key):
            return False
        if self.ranged is not None and ("range" in req.headers) != self.ranged:
            return False
        return True

    def fires(self, req: Request, now: float) -> bool:
        """Whether this request gets the fault (call once per request, under the proxy's lock)."""
        if not self.matches(req):
            return False
        self.matched += 1
        if self.times is not None and self.fired >= self.times:
            return False
        if self.burst is not None and self._burst_end and now >= self._burst_end:
            return False
        if self.burst is not None and self._burst_end:
            hit = True  # inside the burst: every matching request
        elif self._nth:
            hit = self.matched in self._nth
        elif self.every:
            hit = self.matched % self.every == 0
        else:
            hit = True
        if hit and self.probability < 1.0:
            hit = self._rng.random() < self.probability
        if hit:
            self.fired += 1
            if self.burst is not None and not self._burst_end:
                self._burst_end = now + self.burst
        return hit


class FaultProxy:
    """``with FaultProxy(upstream_url, [Rule(...), ...]) as proxy:`` then point clients at ``proxy.url``."""

    def __init__(self, upstream: str, rules: Iterable[Rule] = (), timeout: float = 120.0) -> None:
        self.upstream = urlsplit(upstream)
        self.rules: List[Rule] = list(rules)
        self.timeout = timeout
        self.lock = threading.Lock()
        self.injected: Counter[str] = collections.Counter()  # fault name and rule name -> count
        self.seen: Counter[str] = collections.Counter()  # S3 operation -> requests
        self.events: List[Tuple[str, str, str]] = []  # (operation, key, fault) of every injection
        self.requests = 0
        self.holding = threading.Event()
        self._release = threading.Event()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def handle_one_request(self) -> None:
                try:
                    super().handle_one_request()
                except (ConnectionError, socket.timeout, OSError):
                    self.close_connection = True

            def finish(self) -> None:
                try:
                    super().finish()
                except OSError:
                    pass

            def _serve(self) -> None:
                proxy._serve(self)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _serve

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 256  # the default 5 drops SYNs of a burst of connections (a 1 s wait)

            def handle_error(self, request: object, client_address: object) -> None:
                pass  # a client that went away mid-answer is what these tests are about

        self.server = Server(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, name="fault-proxy", daemon=True)

    # -- control -----------------------------------------------------------------
    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def add(self, *rules: Rule) -> None:
        with self.lock:
            self.rules.extend(rules)

    def clear(self) -> None:
        with self.lock:
            self.rules = []

    def release(self) -> None:
        """Let held requests go on (to the server)."""
        self._release.set()

    def count(self, fault: str) -> int:
        with self.lock:
            return self.injected[fault]

    def __enter__(self) -> "FaultProxy":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._release.set()
        self.server.shutdown()
        self.server.server_close()

    # -- serving -----------------------------------------------------------------
    def choose(self, req: Request) -> List[Rule]:
        """The rules that fire on ``req`` (each rule is asked once per request)."""
        now = time.monotonic()
        return [r for r in self.rules if r.fires(req, now)]

    def _note(self, req: Request, rule: Rule) -> None:
        with self.lock:
            self.injected[rule.fault] += 1
            if rule.name != rule.fault:
                self.injected[rule.name] += 1
            self.events.append((req.op, req.key, rule.fault))

    def _read_request(self, h: BaseHTTPRequestHandler) -> Request:
        headers = {k.lower(): v for k, v in h.headers.items()}
        if "chunked" in headers.get("transfer-encoding", "").lower():
            chunks = []
            while True:
                size = int(h.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while h.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(h.rfile.read(size))
                h.rfile.readline()
            body = b"".join(chunks)
            headers.pop("transfer-encoding", None)
        else:
            body = h.rfile.read(int(headers.get("content-length") or 0))
        parts = urlsplit(h.path)
        query = {k: v[0] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        path = unquote(parts.path)
        bucket, key, op = classify(h.command, path, query, headers)
        return Request(h.command, path, query, headers, body, h.path, bucket, key, op)

    def _serve(self, h: BaseHTTPRequestHandler) -> None:
        req = self._read_request(h)
        with self.lock:
            self.requests += 1
            self.seen[req.op] += 1
            fired = self.choose(req)
        before = [r for r in fired if r.fault in _BEFORE]
        after = [r for r in fired if r.fault not in _BEFORE and not (r.fault == "reset" and req.method in ("PUT", "POST"))]
        body = req.body
        for rule in before:
            self._note(req, rule)
            if rule.fault == "hold":
                self.holding.set()
                if not self._wait_or_gone(h, None):
                    h.close_connection = True
                    return  # the client went away: the request is never forwarded
            elif rule.fault == "stall":
                if not self._wait_or_gone(h, rule.seconds):
                    h.close_connection = True
                    return
            elif rule.fault in ("status", "error200"):
                status = rule.status if rule.fault == "status" else 200
                self._answer(h, status, {"Content-Type": "application/xml"}, error_xml(rule.code))
                return
            elif rule.fault == "flip_request" and body:
                body = _flip(body, rule.at)
        for rule in [r for r in fired if r.fault == "reset" and req.method in ("PUT", "POST")]:
            self._note(req, rule)  # an upload cut off: the connection drops before the server has it
            _reset(h)
            return
        try:
            status, headers, data = self._forward(req, body)
        except OSError:
            self._answer(h, 502, {"Content-Type": "application/xml"}, error_xml("BadGateway", "upstream failed"))
            return
        for rule in after:
            ok = 200 <= status < 300 and req.method != "HEAD"
            if rule.fault == "drop_answer":
                self._note(req, rule)
                _reset(h)
                return
            if rule.fault == "flip" and ok and data:
                self._note(req, rule)
                data = _flip(data, rule.at)
            elif rule.fault in ("reset", "truncate") and ok and len(data) > 1:
                self._note(req, rule)
                cut = max(1, min(len(data) - 1, int(len(data) * rule.at)))
                self._head(h, status, headers, len(data))
                _send(h, data[:cut])
                if rule.fault == "reset":
                    _reset(h)
                else:
                    h.close_connection = True
                    h.wfile.flush()
                    try:
                        h.connection.shutdown(socket.SHUT_WR)
                    except OSError:
                        pass
                return
            elif rule.fault == "slow" and ok and data:
                self._note(req, rule)
                self._head(h, status, headers, len(data))
                self._trickle(h, data, rule.rate)
                return
        self._answer(h, status, headers, data, head=req.method == "HEAD")

    def _forward(self, req: Request, body: bytes) -> Tuple[int, List[Tuple[str, str]], bytes]:
        conn = http.client.HTTPConnection(self.upstream.hostname, self.upstream.port, timeout=self.timeout)
        try:
            headers = {k: v for k, v in req.headers.items() if k not in _HOP and k != "expect"}
            headers["content-length"] = str(len(body))
            try:
                conn.request(req.method, req.raw, body=body if body else None, headers=headers)
            except (BrokenPipeError, ConnectionResetError):
                # the server answered before it had the whole body (rclone's NoSuchUpload) and
                # closed: its answer is still there to read, as a client reading while it sends sees it
                pass
            resp = conn.getresponse()
            data = resp.read()
            out = [(k, v) for k, v in resp.getheaders() if k.lower() not in _HOP]
            if req.method == "HEAD":
                length = resp.getheader("Content-Length")
                if length is not None:
                    out.append(("Content-Length", length))
            return resp.status, out, data
        finally:
            conn.close()

    def _head(self, h: BaseHTTPRequestHandler, status: int, headers: List[Tuple[str, str]], length: int,
              head: bool = False) -> None:
        """Status line and headers; ``length`` is the Content-Length sent (a HEAD answer keeps the
        server's own, which is among ``headers``)."""
        h.send_response_only(status)
        for k, v in headers:
            if not head and k.lower() == "content-length":
                continue
            h.send_header(k, v)
        if not head:
            h.send_header("Content-Length", str(length))
        h.end_headers()

    def _answer(self, h: BaseHTTPRequestHandler, status: int, headers: "Dict[str, str] | List[Tuple[str, str]]",
                data: bytes, head: bool = False) -> None:
        items = list(headers.items()) if isinstance(headers, dict) else headers
        self._head(h, status, items, len(data), head=head)
        if not head:
            _send(h, data)

    def _trickle(self, h: BaseHTTPRequestHandler, data: bytes, rate: float) -> None:
        step = max(1, int(rate)) if rate >= 1 else 1
        pause = step / rate
        for i in range(0, len(data), step):
            if not _send(h, data[i:i + step]):
                return
            if i + step < len(data):
                if not self._wait_or_gone(h, pause, release=False):
                    return

    def _wait_or_gone(self, h: BaseHTTPRequestHandler, seconds: Optional[float], release: bool = True) -> bool:
        """Wait ``seconds`` (None: until released); False as soon as the client closes its end."""
        deadline = None if seconds is None else time.monotonic() + seconds
        while True:
            if release and seconds is None and self._release.is_set():
                return True
            left = 0.05 if deadline is None else min(0.05, deadline - time.monotonic())
            if left <= 0:
                return True
            try:
                ready, _, _ = select.select([h.connection], [], [], left)
            except (OSError, ValueError):
                return False
            if ready:
                try:
                    if not h.connection.recv(1, socket.MSG_PEEK):
                        return False
                except OSError:
                    return False


def _flip(data: bytes, at: float) -> bytes:
    pos = max(0, min(len(data) - 1, int(len(data) * at)))
    out = bytearray(data)
    out[pos] ^= 0x10
    return bytes(out)


def _send(h: BaseHTTPRequestHandler, data: bytes) -> bool:
    try:
        h.wfile.write(data)
        h.wfile.flush()
        return True
    except OSError:
        h.close_connection = True
        return False


def _reset(h: BaseHTTPRequestHandler) -> None:
    """Close the client connection with a TCP reset."""
    h.close_connection = True
    try:
        h.wfile.flush()
    except OSError:
        pass
    try:
        h.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        h.rfile.close()  # the socket closes (with RST) only once its file objects are closed
        h.connection.close()
    except OSError:
        pass
