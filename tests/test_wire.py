"""genostage.store.wire, the event-loop HTTP client: framing, keep-alive, timeouts, TLS, signing."""
from __future__ import annotations

import datetime
import os
import socket
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Iterator, List

import pytest

from genostage.config import TransferConfig
from genostage.errors import Interrupted
from genostage.store import Stores
from genostage.retry import RetryPolicy
from genostage.store.wire import Signer, Wire, WireError
from genostage.transfer import copy

from .helpers import get, keys, put

CREDS = ("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", None)


class _Server:
    """A loopback HTTP/1.1 server whose GET answers come from ``answer(handler)``."""

    def __init__(self, answer: Callable[[BaseHTTPRequestHandler], None]) -> None:
        self.requests: List[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                server.requests.append(self.path)
                answer(self)

            do_HEAD = do_PUT = do_GET

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[Callable[[Callable[[BaseHTTPRequestHandler], None]], _Server]]:
    made: List[_Server] = []

    def make(answer: Callable[[BaseHTTPRequestHandler], None]) -> _Server:
        made.append(_Server(answer))
        return made[-1]
    yield make
    for s in made:
        s.close()


def _reply(h: BaseHTTPRequestHandler, code: int, body: bytes) -> None:
    h.send_response(code)
    h.send_header("Content-Length", str(len(body)))
    h.end_headers()
    h.wfile.write(body)


def _wire(url: str, **kw: object) -> Wire:
    return Wire(url, "us-east-1", lambda: CREDS, **kw)  # type: ignore[arg-type]


def test_chunked_answers_are_decoded(server) -> None:  # type: ignore[no-untyped-def]
    def answer(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()
        for piece in (b"hello ", b"chunked ", b"world"):
            h.wfile.write(b"%x;ext=1\r\n%s\r\n" % (len(piece), piece))
        h.wfile.write(b"0\r\nX-Trailer: 1\r\n\r\n")
    s = server(answer)
    w = _wire(s.url)
    try:
        assert w.call("GET", "b", "k").body == b"hello chunked world"
        pieces: List[bytes] = []
        w.call("GET", "b", "k", on_piece=lambda p: pieces.append(bytes(p)))
        assert b"".join(pieces) == b"hello chunked world"
        assert len(s.requests) == 2
    finally:
        w.close()


def test_error_answers_carry_code_and_message(server) -> None:  # type: ignore[no-untyped-def]
    body = b"<?xml version='1.0'?><Error><Code>NoSuchKey</Code><Message>gone</Message></Error>"

    s = server(lambda h: _reply(h, 404, body))
    w = _wire(s.url, retry=RetryPolicy(max_attempts=3))
    try:
        with pytest.raises(WireError) as err:
            w.call("GET", "b", "k")
        assert (err.value.status, err.value.code, err.value.message) == (404, "NoSuchKey", "gone")
        assert len(s.requests) == 1  # not retried
    finally:
        w.close()


def test_slowdown_is_retried_then_succeeds(server) -> None:  # type: ignore[no-untyped-def]
    calls = {"n": 0}
    slow = b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>"

    def answer(h: BaseHTTPRequestHandler) -> None:
        calls["n"] += 1
        _reply(h, *((503, slow) if calls["n"] < 3 else (200, b"ok")))
    s = server(answer)
    w = _wire(s.url, retry=RetryPolicy(max_attempts=3))
    try:
        assert w.call("GET", "b", "k").body == b"ok"
        assert calls["n"] == 3
    finally:
        w.close()


def test_keep_alive_connection_closed_by_the_server_is_replaced(server) -> None:  # type: ignore[no-untyped-def]
    s = server(lambda h: _reply(h, 200, b"ok"))
    w = _wire(s.url, retry=RetryPolicy(max_attempts=1))  # a stale connection must not cost the only attempt
    try:
        assert w.call("GET", "b", "1").body == b"ok"
        s.httpd.shutdown()  # close every connection the server holds, then serve again
        s.httpd.server_close()
        port = int(s.url.rsplit(":", 1)[1])
        s.httpd = ThreadingHTTPServer(("127.0.0.1", port), s.httpd.RequestHandlerClass)
        s.httpd.daemon_threads = True
        threading.Thread(target=s.httpd.serve_forever, daemon=True).start()
        for i in range(3):
            assert w.call("GET", "b", str(i)).body == b"ok"
    finally:
        w.close()


def test_silent_server_times_out_and_is_reported(server) -> None:  # type: ignore[no-untyped-def]
    s = server(lambda h: time.sleep(5))
    w = _wire(s.url, read_timeout=0.3, retry=RetryPolicy(max_attempts=2))
    try:
        t0 = time.monotonic()
        with pytest.raises(WireError, match="no answer for"):
            w.call("GET", "b", "k")
        assert time.monotonic() - t0 < 4
        assert len(s.requests) == 2  # retried once
    finally:
        w.close()


def test_connection_refused_is_reported() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    w = _wire(f"http://127.0.0.1:{port}", retry=RetryPolicy(max_attempts=2))
    try:
        with pytest.raises(WireError, match="refused|cannot connect"):
            w.call("GET", "b", "k")
    finally:
        w.close()


def test_cancel_stops_a_request_in_flight(server) -> None:  # type: ignore[no-untyped-def]
    s = server(lambda h: time.sleep(5))
    w = _wire(s.url)
    cancel = threading.Event()
    threading.Timer(0.3, cancel.set).start()
    try:
        t0 = time.monotonic()
        with pytest.raises(Interrupted):
            w.call("GET", "b", "k", cancel=cancel)
        assert time.monotonic() - t0 < 2
    finally:
        w.close()


def test_signature_matches_botocore() -> None:
    """The same request signed by botocore and by the wire's signer gives the same Authorization."""
    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    url = "https://s3.eu-west-1.amazonaws.com/bucket/dir/a%20b%2Bc~%C3%A9.fq?partNumber=3&uploadId=a%2Fb%3D"
    req = AWSRequest(method="PUT", url=url, headers={"x-amz-content-sha256": "UNSIGNED-PAYLOAD",
                                                    "Content-MD5": "1B2M2Y8AsgTpgAmY7PhCfg=="})
    from botocore.config import Config

    req.context["client_config"] = Config(s3={"payload_signing_enabled": False})  # UNSIGNED-PAYLOAD, as genostage
    S3SigV4Auth(Credentials(CREDS[0], CREDS[1], "tok"), "s3", "eu-west-1").add_auth(req)
    when = time.strptime(req.headers["X-Amz-Date"], "%Y%m%dT%H%M%SZ")  # sign at botocore's instant
    headers = {"host": "s3.eu-west-1.amazonaws.com", "content-md5": "1B2M2Y8AsgTpgAmY7PhCfg=="}
    import unittest.mock as mock

    with mock.patch("genostage.store.wire.time.gmtime", return_value=when):
        Signer(lambda: (CREDS[0], CREDS[1], "tok")).sign(
            "PUT", "/bucket/dir/a%20b%2Bc~%C3%A9.fq", "partNumber=3&uploadId=a%2Fb%3D", headers, "eu-west-1")
    assert headers["x-amz-date"] == req.headers["X-Amz-Date"]
    assert headers["authorization"] == req.headers["Authorization"]


@pytest.mark.parametrize("s3", ["rclone"], indirect=True)
def test_awkward_keys_round_trip(s3, s3_client, bucket, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """rclone serve s3 checks signatures: keys needing escapes sign and list correctly."""
    names = ["a b.txt", "plus+sign.txt", "pct%41.txt", "tilde~.txt", "eq=amp&.txt", "caf\u00e9.txt"]
    for n in names:
        put(s3_client, bucket, f"odd/{n}", n.encode())
    stores = Stores(TransferConfig(endpoint_url=s3.endpoint_url), s3_client)
    copy(f"s3://{bucket}/odd/", str(tmp_path / "down") + "/", stores=stores)
    assert sorted(os.listdir(tmp_path / "down")) == sorted(names)
    copy(str(tmp_path / "down") + "/", f"s3://{bucket}/back/", stores=stores)
    assert keys(s3_client, bucket, "back/") == sorted(f"back/{n}" for n in names)
    assert get(s3_client, bucket, "back/caf\u00e9.txt") == "caf\u00e9.txt".encode()


class _TlsProxy:
    """TLS in front of a plain HTTP server (a self-signed certificate for 127.0.0.1)."""

    def __init__(self, upstream: str, cert: str, key: str) -> None:
        host, port = upstream.split("//")[1].split(":")
        self.upstream = (host, int(port))
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        self.sock = ctx.wrap_socket(socket.create_server(("127.0.0.1", 0)), server_side=True)
        self.url = f"https://127.0.0.1:{self.sock.getsockname()[1]}"
        self.stopped = False
        self.socks: List[socket.socket] = []
        self.threads: List[threading.Thread] = []
        self.acceptor = threading.Thread(target=self._accept, daemon=True)
        self.acceptor.start()

    def _accept(self) -> None:
        while not self.stopped:
            try:
                client, _ = self.sock.accept()
            except (OSError, ssl.SSLError):
                continue
            up = socket.create_connection(self.upstream)
            self.socks += [client, up]
            for a, b in ((client, up), (up, client)):
                t = threading.Thread(target=self._pipe, args=(a, b), daemon=True)
                self.threads.append(t)
                t.start()

    @staticmethod
    def _pipe(a: socket.socket, b: socket.socket) -> None:
        try:
            while True:
                data = a.recv(1 << 16)
                if not data:
                    break
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.stopped = True
        self.sock.close()
        for s in self.socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for t in self.threads:
            t.join(5)
        for s in self.socks:
            s.close()


def _self_signed(tmp_path) -> tuple:  # type: ignore[no-untyped-def]
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    import ipaddress

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_path), str(key_path)


def test_https_endpoint_with_a_ca_bundle(s3, s3_client, bucket, tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    cert, key = _self_signed(tmp_path)
    proxy = _TlsProxy(s3.endpoint_url, cert, key)
    try:
        data = os.urandom(9 << 20)
        (tmp_path / "x.bin").write_bytes(data)
        cfg = TransferConfig(endpoint_url=proxy.url, part_size="5MiB", multipart_threshold="5MiB",
                             download_part_size="5MiB", max_attempts=2)
        monkeypatch.setenv("AWS_CA_BUNDLE", cert)
        stores = Stores(cfg)
        copy(str(tmp_path / "x.bin"), f"s3://{bucket}/tls/x.bin", stores=stores)
        copy(f"s3://{bucket}/tls/x.bin", str(tmp_path / "back.bin"), stores=stores)
        assert (tmp_path / "back.bin").read_bytes() == data
        # without the CA the certificate is refused, once, with a clear message
        monkeypatch.delenv("AWS_CA_BUNDLE")
        from genostage.errors import TransferFailed

        with pytest.raises(TransferFailed, match="TLS error.*certificate"):
            copy(f"s3://{bucket}/tls/x.bin", str(tmp_path / "again.bin"), stores=Stores(cfg))
        assert not (tmp_path / "again.bin").exists()
    finally:
        proxy.close()
