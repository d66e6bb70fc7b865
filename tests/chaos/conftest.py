"""Fixtures of the chaos suite, and the tally behind docs/chaos.md.

``lab``: moto or rclone (parametrised indirectly) behind a fresh fault proxy, with a fresh
bucket. ``chaos``: records the fault class of each case a test tries; at the end of the
session, ``GENOSTAGE_CHAOS_REPORT=docs/chaos.md`` writes the table of classes, cases and
outcomes (see ``tests/chaos/report.py``).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest

from .harness import Lab, new_bucket, small_fs
from .proxy import FaultProxy
from .report import Tally

_TALLY = Tally()


@pytest.fixture
def lab(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Lab]:
    kind = getattr(request, "param", "moto")
    server = request.getfixturevalue(f"{kind}_s3")
    client = server.client()
    with FaultProxy(server.endpoint_url) as proxy:
        yield Lab(kind, server, client, proxy, new_bucket(client), tmp_path)


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """An 8 MiB tmpfs (a full disk is reached quickly); skipped where mounting is not permitted."""
    try:
        with small_fs(tmp_path / "small", "8m") as where:
            yield where
    except PermissionError as exc:
        pytest.skip(f"{exc} (the full-disk cases need root or CAP_SYS_ADMIN)")


class Recorder:
    """What one test tried: ``chaos.tried(CLASS, "what")`` once per case."""

    def __init__(self, nodeid: str) -> None:
        self.nodeid = nodeid
        self.cases: List[Dict[str, str]] = []

    def tried(self, cls: str, what: str = "") -> None:
        self.cases.append({"class": cls, "case": what})


@pytest.fixture
def chaos(request: pytest.FixtureRequest) -> Recorder:
    return Recorder(request.node.nodeid)


def pytest_collection_modifyitems(config: pytest.Config, items: List[pytest.Item]) -> None:
    """The chaos cases are `slow` (the suite takes minutes): `make test` runs them, `make test-fast` not."""
    here = os.path.dirname(os.path.abspath(__file__))
    for item in items:
        if str(item.fspath).startswith(here + os.sep):
            item.add_marker(pytest.mark.slow)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: Any) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    recorder = getattr(item, "funcargs", {}).get("chaos")
    if report.when == "setup" and report.skipped and "tmpfs" in getattr(item, "fixturenames", ()):
        recorder = recorder or Recorder(item.nodeid)
        recorder.tried("full-disk", "(not run: no tmpfs could be mounted)")
    if recorder is None:
        return
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
        marker = item.get_closest_marker("finding")
        _TALLY.add(recorder, report, marker.args[0] if marker else "")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    target = os.environ.get("GENOSTAGE_CHAOS_REPORT")
    if target and _TALLY.results:
        _TALLY.write(target)
