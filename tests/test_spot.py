"""Spot interruption notices: a fake instance metadata service on loopback (IMDSv2 and IMDSv1)."""
from __future__ import annotations

import json
import logging
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator, List, Optional, Tuple

import pytest

from genostage.errors import UsageError
from genostage.job import spot


class FakeIMDS(ThreadingHTTPServer):
    """Answers like EC2's metadata service: tokens (unless ``v1_only``), then 404 until ``announce()``."""

    daemon_threads = True

    def __init__(self, v1_only: bool = False, token_ttl_ok: bool = True) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.v1_only = v1_only
        self.requests: List[Tuple[str, str, dict]] = []
        self.tokens: List[str] = []
        self.notice: Optional[bytes] = None
        self.expire_tokens = False
        self.lock = threading.Lock()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def announce(self, action: str = "terminate", when: str = "2026-12-01T17:02:00Z") -> float:
        self.notice = json.dumps({"action": action, "time": when}).encode()
        return time.monotonic()

    def gets(self) -> List[Tuple[str, str, dict]]:
        with self.lock:
            return [r for r in self.requests if r[0] == "GET"]


class Handler(BaseHTTPRequestHandler):
    server: FakeIMDS

    def log_message(self, *args: object) -> None:
        pass

    def _answer(self, status: int, body: bytes = b"") -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_PUT(self) -> None:
        with self.server.lock:
            self.server.requests.append(("PUT", self.path, dict(self.headers)))
        if self.server.v1_only:
            return self._answer(405)
        if self.path != spot.TOKEN_PATH or not self.headers.get(spot.TOKEN_TTL_HEADER, "").isdigit():
            return self._answer(400)
        token = f"token-{len(self.server.tokens)}"
        self.server.tokens.append(token)
        self.server.expire_tokens = False
        self._answer(200, token.encode())

    def do_GET(self) -> None:
        with self.server.lock:
            self.server.requests.append(("GET", self.path, dict(self.headers)))
        if not self.server.v1_only:
            token = self.headers.get(spot.TOKEN_HEADER)
            if token not in self.server.tokens or self.server.expire_tokens:
                return self._answer(401)
        if self.path != spot.NOTICE_PATH or self.server.notice is None:
            return self._answer(404, b"<?xml version='1.0'?><title>404 - Not Found</title>")
        self._answer(200, self.server.notice)


@pytest.fixture
def imds(request: pytest.FixtureRequest) -> Iterator[FakeIMDS]:
    server = FakeIMDS(v1_only=getattr(request, "param", False))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: List[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def spot_log() -> Iterator[Records]:
    """The watcher's log records (whatever the CLI did to the genostage logger's propagation)."""
    logger = logging.getLogger("genostage.spot")
    handler, level = Records(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def _watch_threads() -> List[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "genostage-spot-watch"]


class Calls:
    def __init__(self) -> None:
        self.args: List[str] = []
        self.at: List[float] = []
        self.event = threading.Event()

    def __call__(self, text: str) -> None:
        self.args.append(text)
        self.at.append(time.monotonic())
        self.event.set()


@pytest.mark.parametrize("imds", [False, True], ids=["imdsv2", "imdsv1-only"], indirect=True)
def test_a_notice_fires_the_callback_once_within_5_s(imds: FakeIMDS) -> None:
    calls = Calls()
    with spot.SpotWatcher(calls, endpoint=imds.endpoint, interval=0.5) as watcher:
        time.sleep(1.2)
        assert calls.args == [] and len(imds.gets()) >= 2  # polled, no notice yet (404)
        announced = imds.announce("terminate", "2026-12-01T17:02:00Z")
        assert calls.event.wait(5)
        time.sleep(1.0)  # the watcher stops polling once it has seen the notice
        polls = len(imds.gets())
        time.sleep(1.0)
        assert len(imds.gets()) == polls
    assert calls.args == ["terminate at 2026-12-01T17:02:00Z"]
    assert calls.at[0] - announced < 5
    assert watcher.notice == spot.SpotNotice("terminate", "2026-12-01T17:02:00Z")
    assert _watch_threads() == []
    puts = [r for r in imds.requests if r[0] == "PUT"]
    if imds.v1_only:
        assert len(puts) == 1  # asked once for a token, then plain GETs
        assert all(spot.TOKEN_HEADER not in h for _, _, h in imds.gets())
    else:
        assert len(puts) == 1 and puts[0][2][spot.TOKEN_TTL_HEADER] == str(spot.TOKEN_TTL)
        assert all(h.get(spot.TOKEN_HEADER) == "token-0" for _, _, h in imds.gets())
    assert {path for _, path, _ in imds.gets()} == {spot.NOTICE_PATH}


def test_a_lapsed_token_is_renewed(imds: FakeIMDS) -> None:
    calls = Calls()
    with spot.SpotWatcher(calls, endpoint=imds.endpoint, interval=0.2):
        time.sleep(0.5)
        imds.expire_tokens = True  # the next GET gets 401: the watcher asks for a new token
        time.sleep(0.5)
        imds.announce("stop")
        assert calls.event.wait(5)
    assert imds.tokens == ["token-0", "token-1"]
    assert calls.args[0].startswith("stop at ")


def test_stop_leaves_no_thread_and_no_callback(imds: FakeIMDS) -> None:
    calls = Calls()
    watcher = spot.SpotWatcher(calls, endpoint=imds.endpoint, interval=0.1).start()
    assert [t.daemon for t in _watch_threads()] == [True]
    time.sleep(0.3)
    started = time.monotonic()
    watcher.stop()
    assert time.monotonic() - started < 1.5
    assert _watch_threads() == []
    before = len(imds.requests)
    imds.announce()
    time.sleep(0.5)
    assert len(imds.requests) == before and calls.args == []


def test_disabled_polls_nothing(imds: FakeIMDS, monkeypatch: pytest.MonkeyPatch) -> None:
    imds.announce()
    monkeypatch.setenv(spot.ENV_ENDPOINT, "off")
    calls = Calls()
    with spot.SpotWatcher(calls, interval=0.05) as watcher:
        assert not watcher.enabled and _watch_threads() == []
        time.sleep(0.3)
    assert imds.requests == [] and calls.args == []
    with spot.SpotWatcher(calls, endpoint=imds.endpoint, interval=0) as watcher:  # interval 0: disabled too
        time.sleep(0.2)
    assert imds.requests == [] and not watcher.enabled


def test_the_environment_names_the_endpoint(imds: FakeIMDS, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(spot.ENV_ENDPOINT, imds.endpoint)
    imds.announce("hibernate", "2026-12-01T18:00:00Z")
    calls = Calls()
    with spot.SpotWatcher(calls, interval=0.2):
        assert calls.event.wait(5)
    assert calls.args == ["hibernate at 2026-12-01T18:00:00Z"]


class Dropper:
    """A TCP listener on loopback that accepts and closes at once (or never answers): counts connections."""

    def __init__(self, answer: bool = False) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.connections = 0
        self.held: List[socket.socket] = []
        self.answer = answer
        self.closed = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def _serve(self) -> None:
        while not self.closed:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            if self.answer:
                self.held.append(conn)  # silent: the client's read times out
            else:
                conn.close()

    def close(self) -> None:
        self.closed = True
        self.sock.close()
        for c in self.held:
            c.close()


def test_outside_ec2_it_gives_up_quietly(monkeypatch: pytest.MonkeyPatch, spot_log: Records) -> None:
    """The default endpoint unreachable: two failed polls, then the thread ends by itself."""
    monkeypatch.delenv(spot.ENV_ENDPOINT, raising=False)
    dropper = Dropper()
    monkeypatch.setattr(spot, "DEFAULT_ENDPOINT", dropper.endpoint)
    try:
        calls = Calls()
        watcher = spot.SpotWatcher(calls, interval=0.1).start()
        assert not watcher.explicit
        deadline = time.monotonic() + 5
        while _watch_threads() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _watch_threads() == []
        assert dropper.connections == 2 and watcher.polls == 2 and calls.args == []
        assert not [r for r in spot_log.records if r.levelno >= logging.WARNING]
        assert any("not watching for spot notices" in r.getMessage() for r in spot_log.records)
        watcher.stop()
    finally:
        dropper.close()


def test_an_explicit_endpoint_keeps_trying(monkeypatch: pytest.MonkeyPatch) -> None:
    dropper = Dropper()
    monkeypatch.setenv(spot.ENV_ENDPOINT, dropper.endpoint)
    try:
        with spot.SpotWatcher(Calls(), interval=0.1) as watcher:
            time.sleep(1.0)
            assert watcher.explicit and _watch_threads()
        assert dropper.connections >= 5
    finally:
        dropper.close()


def test_a_silent_endpoint_does_not_slow_start_or_stop() -> None:
    """A service that accepts and never answers: start is instant, stop waits one request timeout at most."""
    silent = Dropper(answer=True)
    try:
        started = time.monotonic()
        watcher = spot.SpotWatcher(Calls(), endpoint=silent.endpoint, interval=0.1, timeout=0.5).start()
        assert time.monotonic() - started < 0.1
        time.sleep(0.2)
        stopping = time.monotonic()
        watcher.stop()
        assert time.monotonic() - stopping < 1.0
        assert _watch_threads() == []
    finally:
        silent.close()


def test_a_failing_callback_is_logged_and_contained(imds: FakeIMDS, spot_log: Records) -> None:
    def boom(text: str) -> None:
        raise RuntimeError("callback broke")
    imds.announce()
    with spot.SpotWatcher(boom, endpoint=imds.endpoint, interval=0.1) as watcher:
        deadline = time.monotonic() + 5
        while watcher.notice is None and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.1)
    assert watcher.notice is not None
    assert any("spot notice callback failed" in r.getMessage() for r in spot_log.records)
    assert _watch_threads() == []


@pytest.mark.parametrize("body, want", [
    (b'{"action": "terminate", "time": "2026-12-01T17:02:00Z"}', spot.SpotNotice("terminate", "2026-12-01T17:02:00Z")),
    (b'{"action": "stop"}', spot.SpotNotice("stop", "unknown")),
    (b"garbage", spot.SpotNotice("unknown", "garbage")),
])
def test_parse_notice(body: bytes, want: spot.SpotNotice) -> None:
    assert spot.parse_notice(body) == want


def test_endpoint_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(spot.ENV_ENDPOINT, raising=False)
    assert spot.endpoint_setting() == ("http://169.254.169.254", False)
    assert spot.endpoint_setting("http://127.0.0.1:9/") == ("http://127.0.0.1:9", True)
    monkeypatch.setenv(spot.ENV_ENDPOINT, "OFF")
    assert spot.endpoint_setting() == (None, True)
    with pytest.raises(UsageError, match="expected http://HOST"):
        spot.SpotWatcher(Calls(), endpoint="https://127.0.0.1:1")
