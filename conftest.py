"""Shared test setup: one working folder for the end-to-end runs and the notebooks.

The notebooks read `RADCAP_WORKDIR`, so under pytest they write into a
temporary folder instead of the repository; the end-to-end tests use the same
folder, so the notebooks find the demo's features already cached.
"""

import os
import shutil
import tempfile
from pathlib import Path

import pytest

_created = []


def pytest_configure(config):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if "RADCAP_WORKDIR" not in os.environ:
        path = tempfile.mkdtemp(prefix="radcap-tests-")
        os.environ["RADCAP_WORKDIR"] = path
        _created.append(path)


def pytest_unconfigure(config):
    for path in _created:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def workdir() -> Path:
    """The session's working folder (data/, features/, checkpoints/)."""
    return Path(os.environ["RADCAP_WORKDIR"])
