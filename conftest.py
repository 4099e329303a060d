"""Shared test setup: one working folder for the end-to-end runs and the notebooks.

The notebooks read `RADCAP_WORKDIR`, so under pytest they write into a
temporary folder instead of the repository; the end-to-end tests use the same
folder, so the notebooks find the demo's features already cached.

The suite runs on three pytest-xdist workers (`-n 3` in pyproject.toml; on
2 cores the end-to-end group is the longest, and the other two share the
rest), with the scheduling below. Tests that need a real `radcap` process
get it forked from one warm interpreter (`radcap_processes`, tests/forked.py),
and so do the notebooks' Jupyter kernels (tests/forked_kernels.py).
"""

import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

_created = []
_kernels = []


def pytest_configure(config):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if "RADCAP_WORKDIR" not in os.environ:
        path = tempfile.mkdtemp(prefix="radcap-tests-")
        os.environ["RADCAP_WORKDIR"] = path
        _created.append(path)
    sys.path.insert(0, str(Path(__file__).with_name("tests")))
    import forked_kernels

    _kernels.append(forked_kernels.start())  # this process's own, on every worker


def pytest_unconfigure(config):
    for path in _created:
        shutil.rmtree(path, ignore_errors=True)
    for kernels in _kernels:
        kernels.close()


# The end-to-end tests and the notebooks share the working folder.
SHARED = ("tests/test_e2e.py", "notebooks/")
GROUP = "working folder"
# What the costliest groups took (seconds of wall time, summed over their
# tests, in one full run on 2 busy cores): the scheduler starts them first;
# any other module counts 1 s per test.
COST = {
    GROUP: 376,  # the e2e tests and the notebooks; notebook 05 trains a dual encoder
    "tests/test_crash.py": 212,
    "tests/test_notebook_sessions.py": 124,
    "tests/test_export.py": 85,
    "tests/test_app.py": 97,
    "tests/test_devices.py": 71,
    "tests/test_train.py": 62,
    "tests/test_disk_full.py": 49,
    "tests/test_evaluate.py": 47,
    "tests/test_decoders.py": 31,
    "tests/test_roco_rehearsal.py": 27,
    "tests/test_features.py": 21,
    "tests/test_device_check.py": 21,
    "tests/test_resume.py": 16,
    "tests/test_dicom_phi.py": 13,
    "tests/test_planted_files.py": 13,
    "tests/test_install.py": 11,
    "tests/test_dual.py": 11,
}


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """Each test module on one worker; the end-to-end tests and notebooks together.

    Module fixtures are then made once, and the tests that share the working
    folder run in order on one worker. The costliest groups start first
    (`COST`), so that no long one starts late; the worker of the working
    folder, the longest, is only given cheap modules beside it.
    """
    from xdist.scheduler import LoadScopeScheduling

    class ModuleScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            if nodeid.startswith(SHARED):
                return GROUP
            return nodeid.split("::", 1)[0]

        def _assign_work_unit(self, node) -> None:
            def cost(scope):
                return COST.get(scope, len(self.workqueue[scope]))

            group = self.assigned_work.get(node, {}).get(GROUP, {})
            cheap = not all(group.values())  # this worker runs the working folder
            order = sorted(self.workqueue, key=cost, reverse=not cheap)
            self.workqueue.move_to_end(order[0], last=False)
            super()._assign_work_unit(node)

    return ModuleScheduling(config, log)


@pytest.fixture(scope="session")
def workdir() -> Path:
    """The session's working folder (data/, features/, checkpoints/)."""
    return Path(os.environ["RADCAP_WORKDIR"])


@pytest.fixture(scope="session")
def radcap_processes():
    """`python -m radcap ...` as real processes, without 7 s of imports each.

    A `tests/forked.py` `ForkServer`: one interpreter imports TensorFlow,
    Keras and radcap once and forks a child per command. Use it wherever a
    test needs a real process (a kill, a signal, a full disk, a lock held by
    another process) and would otherwise start `python -m radcap`:

        done = radcap_processes.run(["train", "--root", str(root)], env=env)
        proc = radcap_processes.popen(["extract", ...])  # pid, wait, kill
        radcap_processes.run([...], script="tests/two_cpus.py")  # a script
        radcap_processes.run([...], code="import radcap; ...")  # `python -c`

    `run` returns a `subprocess.CompletedProcess` (text stdout and stderr);
    a SIGKILL shows as returncode -9, as with `subprocess`.
    """
    from forked import shared

    return shared()
