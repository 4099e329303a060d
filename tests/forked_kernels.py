"""Jupyter kernels for the notebook tests, forked from one warm interpreter.

Every notebook test runs its notebook in a kernel of its own (nbval, or
papermill in test_notebook_sessions.py), and each fresh kernel spends 4-5
CPU-seconds importing TensorFlow and Keras before its first cell runs. Under
pytest, `start` puts a kernel spec named `python3` first on `JUPYTER_PATH`:
its command is `kernel_proxy.py` (in an interpreter that reads no site nor
PYTHONPATH: it needs the standard library only), which asks this pytest
process (over a Unix socket) for a kernel forked from an interpreter that
has imported TensorFlow, Keras and ipykernel, but not radcap (the server of
tests/forked.py).

The forked kernel is a process of its own with the proxy's environment and
working folder. It starts as `python -m ipykernel_launcher` would: the
`PYTHONPATH` of its environment first on `sys.path`, and a `sitecustomize`
there imported before anything of radcap, so a test's `sitecustomize` sees
radcap as a fresh kernel does. The proxy stands for it towards Jupyter: it
passes the stop and interrupt signals on and ends with it; a proxy that is
killed takes its kernel with it. Without the socket (a kernel started
outside pytest) the proxy becomes an ordinary `ipykernel_launcher`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import sys
import tempfile
import threading
from pathlib import Path

SOCKET_ENV = "RADCAP_TEST_KERNELS"  # the socket's path, for kernel_proxy.py
PRELOAD = ("tensorflow", "keras", "ipykernel.kernelapp")

# What the forked child runs as `python -c KERNEL -f <connection file>`.
KERNEL = """
import importlib.machinery
import importlib.util
import os
import sys

# As a fresh `python -m ipykernel_launcher`: no working folder on the path,
# the environment's PYTHONPATH first and its sitecustomize imported.
del sys.path[0]
first = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
sys.path[:0] = first
spec = importlib.machinery.PathFinder.find_spec("sitecustomize", first)
if spec is not None:
    sys.modules["sitecustomize"] = module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
from ipykernel import kernelapp

kernelapp.launch_new_instance()
"""


class KernelForks:
    """The socket `kernel_proxy.py` asks for kernels; forks them on request.

    Args:
        folder: Where the socket and the kernel spec go (removed by `close`).
    """

    def __init__(self, folder: Path):
        self.folder = folder
        self.path = folder / "kernels.sock"
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(str(self.path))
        self._listener.listen()
        self._server = None
        self._lock = threading.Lock()
        # The server starts later, perhaps while a test has changed the
        # environment (a PYTHONPATH of its own): it gets this one.
        self._env = dict(os.environ)
        threading.Thread(target=self._accept, daemon=True).start()

    def _forks(self):
        """The fork server, started on the first kernel asked for."""
        from forked import ForkServer

        with self._lock:
            if self._server is None:
                self._server = ForkServer(PRELOAD, env=self._env)
            return self._server

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:  # closed
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        """Fork the kernel a proxy asks for; tell it the pid, then the exit status.

        The kernel is killed when the proxy's end of the socket closes first.
        """

        def send(message: dict) -> None:
            with contextlib.suppress(OSError):  # the proxy is gone
                conn.sendall((json.dumps(message) + "\n").encode())

        with conn, conn.makefile("r") as lines:
            request = json.loads(lines.readline())
            kernel = self._forks().popen(
                request["argv"], env=request["env"], cwd=request["cwd"], code=KERNEL
            )
            send({"pid": kernel.pid})
            reporter = threading.Thread(
                target=lambda: send({"returncode": kernel.wait()}), daemon=True
            )
            reporter.start()
            conn.recv(1)  # the proxy ended (or was killed)
            kernel.kill()
            reporter.join(timeout=10)

    def close(self) -> None:
        self._listener.close()
        if self._server is not None:
            self._server.close()
        shutil.rmtree(self.folder, ignore_errors=True)


def start() -> KernelForks:
    """Serve forked kernels to every kernel this process (and its children) starts.

    Sets `JUPYTER_PATH` (the `python3` kernel spec) and `SOCKET_ENV`.
    """
    folder = Path(tempfile.mkdtemp(prefix="radcap-kernels-"))
    forks = KernelForks(folder)
    spec = folder / "kernels" / "python3"
    spec.mkdir(parents=True)
    proxy = Path(__file__).with_name("kernel_proxy.py")
    kernel = {
        "argv": [sys.executable, "-I", "-S", str(proxy), "-f", "{connection_file}"],
        "display_name": "Python 3 (ipykernel)",
        "language": "python",
        "metadata": {"debugger": True},
        "kernel_protocol_version": "5.5",
    }
    (spec / "kernel.json").write_text(json.dumps(kernel, indent=1))
    before = os.environ.get("JUPYTER_PATH")
    os.environ["JUPYTER_PATH"] = os.pathsep.join(filter(None, [str(folder), before]))
    os.environ[SOCKET_ENV] = str(forks.path)
    return forks
