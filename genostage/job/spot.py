"""Spot interruption notices: a thread that polls the EC2 instance metadata service (IMDS).

EC2 announces that it will reclaim a spot instance two minutes ahead, at
``/latest/meta-data/spot/instance-action`` (404 until then; then JSON such as
``{"action": "terminate", "time": "2026-12-01T17:00:00Z"}``). :class:`SpotWatcher` polls it
every few seconds, IMDSv2 first (``PUT /latest/api/token`` with a TTL header, the token sent with
each ``GET``), plain IMDSv1 GETs where the service does not issue tokens, and calls its callback
once with ``"ACTION at TIME"`` when a notice appears; then it stops polling.

It never slows a job: requests time out after a second, polling runs in a daemon thread, and
outside EC2 (the default endpoint unreachable) it gives up quietly after its first failures.
``GENOSTAGE_IMDS_ENDPOINT`` sets the endpoint (tests run a fake one on loopback; a watcher
pointed there explicitly keeps trying); ``GENOSTAGE_IMDS_ENDPOINT=off`` disables the watcher.
"""
from __future__ import annotations

import http.client
import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from types import TracebackType
from typing import Callable, Dict, Optional, Tuple, Type
from urllib.parse import urlsplit

from ..errors import UsageError

log = logging.getLogger("genostage.spot")

ENV_ENDPOINT = "GENOSTAGE_IMDS_ENDPOINT"
DEFAULT_ENDPOINT = "http://169.254.169.254"
TOKEN_PATH = "/latest/api/token"
NOTICE_PATH = "/latest/meta-data/spot/instance-action"
TOKEN_TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"
TOKEN_HEADER = "X-aws-ec2-metadata-token"
TOKEN_TTL = 21600  # seconds; renewed a minute before it lapses
DISABLED = ("off", "none", "disabled", "0")


@dataclass(frozen=True)
class SpotNotice:
    action: str  # terminate, stop or hibernate
    time: str    # when EC2 acts, UTC, as IMDS gives it

    def __str__(self) -> str:
        return f"{self.action} at {self.time}"


class Unreachable(Exception):
    """No answer from the endpoint (refused, timed out, dropped)."""


def parse_notice(body: bytes) -> SpotNotice:
    """The notice in an ``instance-action`` answer (a malformed one still counts as a notice)."""
    try:
        data = json.loads(body.decode("utf-8", "replace"))
    except ValueError:
        data = None
    if not isinstance(data, dict):
        return SpotNotice("unknown", body.decode("utf-8", "replace").strip()[:100] or "unknown")
    return SpotNotice(str(data.get("action", "unknown")), str(data.get("time", "unknown")))


def endpoint_setting(endpoint: Optional[str] = None) -> Tuple[Optional[str], bool]:
    """(endpoint or None when disabled, whether it was chosen explicitly)."""
    if endpoint is None:
        endpoint = os.environ.get(ENV_ENDPOINT) or None
    if endpoint is None:
        return DEFAULT_ENDPOINT, False
    if endpoint.strip().lower() in DISABLED:
        return None, True
    return endpoint.rstrip("/"), True


class IMDSClient:
    """The two requests the watcher needs, with short timeouts and no proxy (IMDS is local)."""

    def __init__(self, endpoint: str, timeout: float = 1.0) -> None:
        parts = urlsplit(endpoint if "://" in endpoint else f"http://{endpoint}")
        if parts.scheme != "http" or not parts.hostname:
            raise UsageError(f"IMDS endpoint {endpoint!r} ({ENV_ENDPOINT}): expected http://HOST[:PORT]")
        self.host, self.port = parts.hostname, parts.port or 80
        self.timeout = timeout
        self.token: Optional[str] = None
        self.token_expires = 0.0
        self.v1_only = False

    def _request(self, method: str, path: str, headers: Dict[str, str]) -> Tuple[int, bytes]:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            conn.request(method, path, headers=headers)
            response = conn.getresponse()
            return response.status, response.read(64 * 1024)
        except (OSError, http.client.HTTPException) as exc:
            raise Unreachable(f"{method} {path}: {exc or type(exc).__name__}") from None
        finally:
            conn.close()

    def _token(self) -> Optional[str]:
        if self.v1_only:
            return None
        if self.token is None or time.monotonic() >= self.token_expires:
            status, body = self._request("PUT", TOKEN_PATH, {TOKEN_TTL_HEADER: str(TOKEN_TTL)})
            if status == 200 and body.strip():
                self.token = body.decode("ascii", "replace").strip()
                self.token_expires = time.monotonic() + TOKEN_TTL - 60
            else:  # 403 (IMDSv2 refused here), 404/405 (a service without tokens): IMDSv1 GETs
                log.debug("IMDS gives no session token (HTTP %s): polling with IMDSv1 requests", status)
                self.v1_only, self.token = True, None
        return self.token

    def notice(self) -> Optional[SpotNotice]:
        """The interruption notice, or None while there is none (404)."""
        for _ in range(2):
            token = self._token()
            status, body = self._request("GET", NOTICE_PATH, {TOKEN_HEADER: token} if token else {})
            if status == 401 and token is not None:  # the token lapsed (or the service restarted)
                self.token = None
                continue
            if status == 200:
                return parse_notice(body)
            if status != 404:
                log.debug("IMDS answered HTTP %s for %s", status, NOTICE_PATH)
            return None
        return None


class SpotWatcher:
    """Calls ``on_notice("ACTION at TIME")`` once when EC2 announces this spot instance's reclaim.

    ``start()``/``stop()``, or use it as a context manager. ``endpoint`` defaults to
    ``$GENOSTAGE_IMDS_ENDPOINT``, else the instance metadata service; ``off`` disables it.
    ``give_up_after`` failed polls in a row end the watch quietly, unless the endpoint was given
    (argument or environment): outside EC2 there is nothing to wait for.
    """

    def __init__(self, on_notice: Callable[[str], None], endpoint: Optional[str] = None, interval: float = 5.0,
                 timeout: float = 1.0, give_up_after: int = 2) -> None:
        self.on_notice = on_notice
        self.endpoint, self.explicit = endpoint_setting(endpoint)
        self.interval = interval
        self.give_up_after = give_up_after
        self.client = IMDSClient(self.endpoint, timeout) if self.endpoint else None
        self.notice: Optional[SpotNotice] = None
        self.polls = 0
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    @property
    def enabled(self) -> bool:
        return self.client is not None and self.interval > 0

    def start(self) -> "SpotWatcher":
        if not self.enabled or self._thread is not None:
            return self
        self._thread = threading.Thread(target=self._run, name="genostage-spot-watch", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop polling and wait for the thread (at most one request timeout)."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def __enter__(self) -> "SpotWatcher":
        return self.start()

    def __exit__(self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException],
                 tb: Optional[TracebackType]) -> None:
        self.stop()

    def _run(self) -> None:
        assert self.client is not None
        failures = 0
        while not self._stop.is_set():
            self.polls += 1
            try:
                notice = self.client.notice()
                failures = 0
            except Unreachable as exc:
                failures += 1
                if not self.explicit and failures >= self.give_up_after:
                    log.debug("no instance metadata service (%s): not watching for spot notices", exc)
                    return
                if failures == self.give_up_after:
                    log.warning("instance metadata service at %s does not answer (%s); still trying",
                                self.endpoint, exc)
                notice = None
            if notice is not None and not self._stop.is_set():
                self.notice = notice
                log.warning("spot interruption notice: %s", notice)
                try:
                    self.on_notice(str(notice))
                except Exception:  # the callback's failure must not go unseen, nor kill anything else
                    log.exception("spot notice callback failed")
                return
            self._stop.wait(self.interval)


__all__ = ["SpotWatcher", "SpotNotice", "IMDSClient", "parse_notice", "endpoint_setting", "ENV_ENDPOINT",
           "DEFAULT_ENDPOINT", "NOTICE_PATH", "TOKEN_PATH"]
