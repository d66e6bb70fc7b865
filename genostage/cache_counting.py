"""A moto S3 server on loopback that counts the bytes it serves (for the cache tests and benchmark).

Separate ``genostage run`` processes each have their own store counters, so
"fetched once" is measured where it matters: on the server. Every GET response
body is counted per path (``/bucket/key``) as it is sent; ``delay`` slows each
1 MiB piece down, so a test can kill a downloader mid-way.
"""
from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import Counter
from typing import Any, Callable, Iterable, Iterator, Optional, Tuple

from .s3server import LocalS3, _wait_http, free_port

_PIECE = 1 << 20


class CountingApp:
    """WSGI middleware: counts response bytes of GET requests per path."""

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self.app = app
        self.lock = threading.Lock()
        self.served: "Counter[str]" = Counter()
        self.requests: "Counter[str]" = Counter()
        self.delay = 0.0

    def __call__(self, environ: dict, start_response: Callable[..., Any]) -> Iterable[bytes]:
        body = self.app(environ, start_response)
        if environ.get("REQUEST_METHOD") != "GET" or environ.get("QUERY_STRING"):
            return body  # listings, uploads, HEADs: not object bytes
        path = environ.get("PATH_INFO", "")
        with self.lock:
            self.requests[path] += 1
        return self._count(path, body)

    def _count(self, path: str, body: Iterable[bytes]) -> Iterator[bytes]:
        try:
            for chunk in body:
                for i in range(0, len(chunk), _PIECE):
                    piece = chunk[i:i + _PIECE]
                    if self.delay:
                        time.sleep(self.delay)
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
        _wait_http(url)
        yield LocalS3(url, "moto"), app
    finally:
        server.shutdown()
        thread.join()
