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


class CountingApp:
    """WSGI middleware: counts response bytes of GET requests per path."""

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self.app = app
        self.lock = threading.Lock()
        self.served: "Counter[str]" = Counter()
        self.requests: "Counter[str]" = Counter()
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

    def bytes_under(self, prefix: str) -> int:
        """Bytes served for paths starting with ``prefix`` (e.g. ``/bucket/refs/``)."""
        with self.lock:
            return sum(n for p, n in self.served.items() if p.startswith(prefix))

    def reset(self) -> None:
        with self.lock:
            self.served.clear()
            self.requests.clear()


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
