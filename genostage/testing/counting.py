"""A moto S3 server on loopback that counts the bytes it serves (for the cache tests and benchmark).

Separate ``genostage run`` processes each have their own store counters, so
"fetched once" is measured where it matters: on the server. Every GET response
body is counted per path (``/bucket/key``) as it is sent; ``delay`` slows each
1 MiB piece down, so a test can kill a downloader mid-way; ``rate`` (bytes per
second, shared by every connection) models a node's network link, so a
benchmark can be bound by bandwidth, as a real node is, rather than by this
machine's CPU.

moto answers a ranged GET by reading the whole object and slicing it (one
1 GiB read per 16 MiB part, serialised by a per-object lock), which would make
the server, not the clients, the subject of a benchmark. So ranged GETs of an
existing object are answered here from moto's stored object, reading only the
range (with moto's ETag, Last-Modified and If-Match semantics); everything
else (HEAD, listings, plain GETs, uploads) is moto's own answer.

:class:`CountingProxy` counts the same way in front of any S3 server (``rclone serve s3``
too): a loopback HTTP proxy that its clients take for the server.
"""
from __future__ import annotations

from . import require_extra

require_extra("genostage.testing.counting")  # before anything that needs the extra

import contextlib
import logging
import re
import threading
import time
from collections import Counter
from typing import Any, Callable, Iterable, Iterator, Optional, Tuple

from .s3server import LocalS3, wait_http, free_port

_PIECE = 1 << 20


class _Tally:
    """Bytes served per path and requests counted, under one lock."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.served: "Counter[str]" = Counter()  # object GET bytes per path
        self.requests: "Counter[str]" = Counter()

    def bytes_under(self, prefix: str) -> int:
        """Object bytes served for paths starting with ``prefix`` (e.g. ``/bucket/refs/``)."""
        with self.lock:
            return sum(n for p, n in self.served.items() if p.startswith(prefix))

    def reset(self) -> None:
        with self.lock:
            self.served.clear()
            self.requests.clear()
            self._reset_more()

    def _reset_more(self) -> None:
        """What a subclass counts besides (called under the lock)."""


class CountingApp(_Tally):
    """WSGI middleware: counts response bytes of GET requests per path."""

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        super().__init__()
        self.app = app
        self.delay = 0.0
        self.delay_from = 0  # only bytes at or beyond this offset of an object are delayed
        self.rate = 0.0
        self._next_slot = 0.0

    def _pace(self, n: int) -> None:
        """Wait for this piece's slot on the shared link of ``rate`` bytes per second."""
        with self.lock:
            now = time.monotonic()
            end = max(now, self._next_slot) + n / self.rate
            self._next_slot = end
        time.sleep(max(0.0, end - now))

    def __call__(self, environ: dict, start_response: Callable[..., Any]) -> Iterable[bytes]:
        ranged, offset = None, 0
        if environ.get("REQUEST_METHOD") == "GET" and not environ.get("QUERY_STRING") and environ.get("HTTP_RANGE"):
            ranged = _serve_range(environ, start_response)
            m = re.match(r"bytes=(\d+)-", environ["HTTP_RANGE"].strip())
            offset = int(m.group(1)) if m else 0
        body = ranged if ranged is not None else self.app(environ, start_response)
        if environ.get("REQUEST_METHOD") != "GET" or environ.get("QUERY_STRING"):
            return body  # listings, uploads, HEADs: not object bytes
        path = environ.get("PATH_INFO", "")
        with self.lock:
            self.requests[path] += 1
        return self._count(path, body, offset)

    def _count(self, path: str, body: Iterable[bytes], offset: int) -> Iterator[bytes]:
        try:
            for chunk in body:
                for i in range(0, len(chunk), _PIECE):
                    piece = chunk[i:i + _PIECE]
                    if self.delay and offset >= self.delay_from:
                        time.sleep(self.delay)
                    offset += len(piece)
                    if self.rate:
                        self._pace(len(piece))
                    with self.lock:
                        self.served[path] += len(piece)
                    yield piece
        finally:
            close = getattr(body, "close", None)
            if close is not None:
                close()


def _serve_range(environ: dict, start_response: Callable[..., Any]) -> Optional[Iterable[bytes]]:
    """A ``bytes=A-B`` GET of a stored object, reading only that range; None: let moto answer."""
    from urllib.parse import unquote

    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends

    m = re.fullmatch(r"bytes=(\d+)-(\d+)", environ["HTTP_RANGE"].strip())
    parts = unquote(environ.get("PATH_INFO", "")).lstrip("/").split("/", 1)
    if m is None or len(parts) != 2 or not parts[1]:
        return None
    try:
        key = s3_backends[DEFAULT_ACCOUNT_ID]["global"].get_object(parts[0], parts[1])
    except Exception:
        return None
    if key is None or getattr(key, "_value_buffer", None) is None:
        return None
    size = key.size
    start, end = int(m.group(1)), min(int(m.group(2)), key.size - 1)
    if start > end:
        return None
    if_match = environ.get("HTTP_IF_MATCH")
    if if_match and if_match.strip() not in (key.etag, "*"):
        start_response("412 Precondition Failed", [("Content-Type", "application/xml"), ("Content-Length", "0")])
        return [b""]
    with key.lock:
        key._value_buffer.seek(start)
        data = key._value_buffer.read(end - start + 1)
    start_response("206 Partial Content", [
        ("Content-Type", "binary/octet-stream"), ("Content-Length", str(len(data))),
        ("Content-Range", f"bytes {start}-{end}/{size}"), ("ETag", key.etag),
        ("Last-Modified", key.last_modified_RFC1123), ("Accept-Ranges", "bytes")])
    return [data]


@contextlib.contextmanager
def counting_moto_server(port: Optional[int] = None) -> Iterator[Tuple[LocalS3, CountingApp]]:
    """moto's S3 server (threaded, in this process) behind :class:`CountingApp`."""
    from moto.server import DomainDispatcherApplication, create_backend_app
    from werkzeug.serving import make_server

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    port = port or free_port()
    app = CountingApp(DomainDispatcherApplication(create_backend_app))
    server = make_server("127.0.0.1", port, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url)
        yield LocalS3(url, "moto"), app
    finally:
        server.shutdown()
        thread.join()


class CountingProxy(_Tally):
    """A loopback HTTP proxy in front of any S3 server (moto, ``rclone serve s3``) that counts
    what its clients fetch: the body bytes of object GETs per path (``/bucket/key``), of
    listings (GETs with a query string) and of uploads, and the requests by method.

    Clients sign for the proxy's address; the ``Host`` header goes upstream as they sent it,
    so signatures hold. Each client connection keeps one upstream connection (keep-alive);
    bodies with a ``Content-Length`` are streamed in 256 KiB pieces, others (chunked XML)
    read whole and sent with their length::

        with rclone_server() as s3, CountingProxy(s3.endpoint_url) as proxy:
            ... AWS_ENDPOINT_URL=proxy.url ...
            proxy.bytes_under("/bucket/refs/")
    """

    PIECE = 256 << 10

    def __init__(self, upstream: str) -> None:
        from http.server import ThreadingHTTPServer
        from urllib.parse import urlsplit

        super().__init__()
        self.upstream = urlsplit(upstream)
        self.listed = 0  # bytes of GETs with a query string (listings)
        self.uploaded: "Counter[str]" = Counter()  # request body bytes of PUT/POST per path
        class Server(ThreadingHTTPServer):
            # the default backlog of 5 drops the SYNs of a burst of connections (a job opens
            # up to --concurrency at once), and each such client waits 1 s to send it again
            request_queue_size = 256
            daemon_threads = True

        self.server = Server(("127.0.0.1", 0), _proxy_handler(self))
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"

    def _reset_more(self) -> None:
        self.uploaded.clear()
        self.listed = 0

    def record(self, method: str, path: str, query: str, status: int, sent: int, body: int) -> None:
        with self.lock:
            self.requests[method] += 1
            if method in ("PUT", "POST"):
                self.uploaded[path] += body
            elif method == "GET" and 200 <= status < 300:
                if query:
                    self.listed += sent
                else:
                    self.served[path] += sent

    def __enter__(self) -> "CountingProxy":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


def _read_chunked(rfile: Any) -> bytes:
    """A request body sent with ``Transfer-Encoding: chunked``."""
    out = bytearray()
    while True:
        size = int(rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
        if size == 0:
            while rfile.readline() not in (b"\r\n", b"\n", b""):
                pass  # trailers
            return bytes(out)
        out += rfile.read(size)
        rfile.readline()


def _proxy_handler(proxy: CountingProxy) -> Any:
    import http.client
    from http.server import BaseHTTPRequestHandler
    from urllib.parse import unquote

    skip = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "expect", "te", "upgrade"}

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        upstream: Optional[http.client.HTTPConnection] = None

        def log_message(self, *args: object) -> None:
            pass

        def _send_upstream(self, body: Optional[bytes]) -> http.client.HTTPResponse:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in skip}
            if body is not None and "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                headers["Content-Length"] = str(len(body))
            for attempt in (1, 2):  # a kept-alive upstream connection may have been closed meanwhile
                if self.upstream is None:
                    self.upstream = http.client.HTTPConnection(proxy.upstream.hostname or "127.0.0.1",
                                                               proxy.upstream.port, timeout=300)
                try:
                    self.upstream.request(self.command, self.path, body=body, headers=headers)
                    return self.upstream.getresponse()
                except (ConnectionError, http.client.HTTPException):
                    self.upstream.close()
                    self.upstream = None
                    if attempt == 2:
                        raise
            raise AssertionError("unreachable")

        def _handle(self) -> None:
            if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                body: Optional[bytes] = _read_chunked(self.rfile)
            else:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
            resp = self._send_upstream(body)
            path, _, query = self.path.partition("?")
            length_header = resp.getheader("Content-Length")
            no_body = self.command == "HEAD" or resp.status in (204, 304) or 100 <= resp.status < 200
            self.send_response_only(resp.status, resp.reason)
            for k, v in resp.getheaders():
                if k.lower() not in skip and k.lower() != "content-length":
                    self.send_header(k, v)
            try:
                sent = self._relay(resp, no_body, length_header)
            except BaseException:  # the client went away mid-body: the upstream connection is unusable
                if self.upstream is not None:
                    self.upstream.close()
                    self.upstream = None
                raise
            if resp.will_close and self.upstream is not None:
                self.upstream.close()
                self.upstream = None
            proxy.record(self.command, unquote(path), query, resp.status, sent, len(body or b""))

        def _relay(self, resp: http.client.HTTPResponse, no_body: bool, length_header: Optional[str]) -> int:
            sent = 0
            if no_body:
                if length_header is not None:
                    self.send_header("Content-Length", length_header)
                self.end_headers()
                resp.read()
            elif length_header is not None:
                self.send_header("Content-Length", length_header)
                self.end_headers()
                while True:
                    piece = resp.read(CountingProxy.PIECE)
                    if not piece:
                        break
                    self.wfile.write(piece)
                    sent += len(piece)
            else:  # chunked or close-delimited upstream: read it whole, send it with its length
                data = resp.read()
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                sent = len(data)
            return sent

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

    return Handler
