"""A loopback HTTP proxy in front of an S3 server that injects transient faults.

Every ``error_every``-th request gets a 503 SlowDown; every ``cut_every``-th
ranged GET sends half its body and then drops the connection; each ranged GET
waits ``delay`` seconds first (a slow network).
"""
from __future__ import annotations

import http.client
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Tuple
from urllib.parse import urlsplit

SLOWDOWN = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code>'
            b"<Message>Please reduce your request rate.</Message></Error>")


class FaultProxy:
    def __init__(self, upstream: str, error_every: int = 4, cut_every: int = 3, delay: float = 0.0) -> None:
        self.upstream = urlsplit(upstream)
        self.delay = delay
        self.error_every = error_every
        self.cut_every = cut_every
        self.lock = threading.Lock()
        self.requests = 0
        self.ranged = 0
        self.errors = 0
        self.cuts = 0
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _handle(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with proxy.lock:
                    proxy.requests += 1
                    n = proxy.requests
                    ranged = self.command == "GET" and "Range" in self.headers
                    if ranged:
                        proxy.ranged += 1
                    cut = ranged and proxy.ranged % proxy.cut_every == 0
                    fail = not cut and n % proxy.error_every == 0
                if ranged and proxy.delay:
                    time.sleep(proxy.delay)
                if fail:
                    with proxy.lock:
                        proxy.errors += 1
                    self.send_response(503)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(SLOWDOWN)))
                    self.end_headers()
                    self.wfile.write(SLOWDOWN)
                    return
                conn = http.client.HTTPConnection(proxy.upstream.hostname, proxy.upstream.port, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "connection"}
                conn.request(self.command, self.path, body=body or None, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                conn.close()
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(k, v)
                length = resp.getheader("Content-Length") if self.command == "HEAD" else None
                self.send_header("Content-Length", length or str(len(data)))
                if cut and len(data) > 1:
                    with proxy.lock:
                        proxy.cuts += 1
                    self.send_header("Connection", "close")
                    self.end_headers()
                    self.wfile.write(data[: len(data) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def address(self) -> Tuple[str, int]:
        return self.server.server_address  # type: ignore[return-value]

    @property
    def url(self) -> str:
        host, port = self.address
        return f"http://{host}:{port}"

    def __enter__(self) -> "FaultProxy":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
