"""`python -m radcap ...` as real processes, forked from one warm interpreter.

A fresh `python -m radcap train` spends 7-8 CPU-seconds importing TensorFlow,
Keras and radcap before it does anything. The tests whose fault is a process
dying (a SIGKILL at a kill point, a full disk, a lock held by another
process) need a real process per command, but not a fresh interpreter per
command: this module starts one server interpreter that imports all of that
once and then forks a child per command. Each child is a real process with
its own pid, environment, working folder, stdout and stderr; it runs
`radcap`'s `__main__` (or a script) exactly as `python -m radcap` would, and
exits or dies on its own: a SIGKILL kills the child only, and its exit
status comes back as `subprocess` reports it (`-9`).

The server never runs a TensorFlow op itself, so no TensorFlow thread pool
or device exists when it forks (TensorFlow is not fork-safe once its
runtime has started); every child starts the runtime for itself, and may
still set up devices first (tests/two_cpus.py).

TensorFlow fixes its C++ log level (`TF_CPP_MIN_LOG_LEVEL`) when the server
imports it, so a child's own setting of it is not read: the server runs at
level 3 (whatever its environment says), as the tests ask of their fresh
processes, and a child's stderr holds no line of TensorFlow's C++ logging
(such as the `E0000 ... cuInit` of a machine without a GPU), only what the
command prints.

Use the session fixture `radcap_processes` (conftest.py), or `shared()`
(the same server) where a fixture cannot be asked for::

    result = radcap_processes.run(["train", "--root", str(root)], env=env)
    proc = radcap_processes.popen(["extract", ...])  # .pid .wait() .kill()

`run` mirrors `subprocess.run(..., capture_output=True, text=True)`, `popen`
a `subprocess.Popen` with both streams piped (`communicate`, `wait`,
`poll`, `kill`, `returncode`, `pid`).
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

# What `radcap train`, `extract`, `evaluate` and the copy of a run import.
PRELOAD = (
    "tensorflow",
    "keras",
    "radcap.cli",
    "radcap.training.train",
    "radcap.evaluation",
    "radcap.features.cache",
    "radcap.training.resume",
)


class Forked:
    """A forked `radcap` process, with the parts of `subprocess.Popen` tests use."""

    def __init__(self, args, pid: int, out: Path, err: Path):
        self.args, self.pid = args, pid
        self.returncode: int | None = None
        self._out, self._err = out, err
        self._done = threading.Event()
        self._started = threading.Event()

    def _ended(self, code: int) -> None:
        self.returncode = code
        self._done.set()

    def poll(self) -> int | None:
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if not self._done.wait(timeout):
            raise subprocess.TimeoutExpired(self.args, timeout)
        return self.returncode

    def kill(self) -> None:
        if self.returncode is None:
            try:
                os.kill(self.pid, 9)
            except ProcessLookupError:
                pass

    def communicate(self, timeout: float | None = None) -> tuple[str, str]:
        """Wait for the end; `(stdout, stderr)` as text."""
        self.wait(timeout)
        return self.stdout_text(), self.stderr_text()

    def stdout_text(self) -> str:
        return self._out.read_text(errors="replace")

    def stderr_text(self) -> str:
        return self._err.read_text(errors="replace")


class ForkServer:
    """The client of one server interpreter that forks `radcap` commands.

    Thread-safe: several commands may run at once (each is its own process).

    Args:
        preload: Modules the server imports before its first fork.
        env: The server's environment; default this process's.
    """

    def __init__(self, preload=PRELOAD, env=None):
        self._dir = Path(tempfile.mkdtemp(prefix="radcap-forked-"))
        self._log = self._dir / "server.log"
        env = {**(os.environ if env is None else env), "TF_CPP_MIN_LOG_LEVEL": "3"}
        with open(self._log, "w") as log:
            self._server = subprocess.Popen(
                [sys.executable, __file__, *preload],
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
            )
        self._lock = threading.Lock()
        self._running: dict[int, Forked] = {}
        self._count = 0
        ready = self._server.stdout.readline()
        if ready.strip() != "ready":
            raise RuntimeError(f"the fork server did not start:\n{self.log()}")
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def log(self) -> str:
        return self._log.read_text(errors="replace")[-3000:]

    def _read(self) -> None:
        for line in self._server.stdout:
            message = json.loads(line)
            with self._lock:
                proc = self._running[message["id"]]
                if "pid" in message:
                    proc.pid = message["pid"]
                    proc._started.set()
                else:
                    del self._running[message["id"]]
                    proc._ended(message["returncode"])
        with self._lock:  # the server is gone: nothing more will start or end
            for proc in self._running.values():
                proc._started.set()
                proc._ended(-1)
            self._running.clear()

    def popen(self, argv, env=None, cwd=None, script=None, code=None) -> Forked:
        """Start `python -m radcap *argv`, forked (or `python script *argv`, or
        `python -c code *argv`).

        Args:
            argv: The command's arguments; or a whole command line as
                `subprocess` takes it, `[sys.executable, "-m", "radcap", ...]`,
                `[sys.executable, "-c", code, ...]` or `[sys.executable,
                script, ...]`.
            env: Its environment; default this process's.
            cwd: Its working folder; default this process's.
            script: A Python file to run as `__main__` instead of `radcap`.
            code: Python source to run as `__main__` instead of `radcap`.
        """
        argv = [str(a) for a in argv]
        if argv and argv[0] == sys.executable:
            argv, script, code = _parse(argv)
        env = dict(os.environ if env is None else env)
        head = [sys.executable, "-m", "radcap"]
        if script is not None:
            head = [sys.executable, str(script)]
        elif code is not None:
            head = [sys.executable, "-c", code]
        with self._lock:
            self._count += 1
            number = self._count
            out, err = self._dir / f"{number}.out", self._dir / f"{number}.err"
            proc = Forked([*head, *map(str, argv)], None, out, err)
            self._running[number] = proc
            request = {
                "id": number,
                "argv": [str(a) for a in argv],
                "script": None if script is None else str(script),
                "code": code,
                "env": env,
                "cwd": str(cwd or os.getcwd()),
                "stdout": str(out),
                "stderr": str(err),
            }
            self._server.stdin.write(json.dumps(request) + "\n")
            self._server.stdin.flush()
        if not proc._started.wait(60) or proc.pid is None:
            raise RuntimeError(f"the fork server did not fork:\n{self.log()}")
        return proc

    def run(self, argv, env=None, timeout=None, cwd=None, script=None, code=None):
        """As `subprocess.run(..., capture_output=True, text=True)`; see `popen`."""
        proc = self.popen(argv, env=env, cwd=cwd, script=script, code=code)
        try:
            out, err = proc.communicate(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)

    def close(self) -> None:
        """Stop the server (after its running children end)."""
        with self._lock:
            running = list(self._running.values())
        for proc in running:
            proc.kill()
        self._server.stdin.close()
        self._server.wait(timeout=60)
        self._reader.join(timeout=10)


def _parse(command: list[str]) -> tuple[list[str], str | None, str | None]:
    """`(argv, script, code)` of a `python ...` command line."""
    if command[1:3] == ["-m", "radcap"]:
        return command[3:], None, None
    if command[1] == "-c":
        return command[3:], None, command[2]
    if command[1].startswith("-"):
        raise ValueError(f"only -m radcap, -c or a script can be forked: {command}")
    return command[2:], command[1], None


_shared: list[ForkServer] = []
_shared_lock = threading.Lock()


def shared() -> ForkServer:
    """This process's `ForkServer`, started on first use, stopped at exit."""
    import atexit

    with _shared_lock:
        if not _shared:
            _shared.append(ForkServer())
            atexit.register(_shared[0].close)
        return _shared[0]


# --- the server -------------------------------------------------------------


def _serve(preload) -> dict:
    """Fork a child per request; report its pid, then its exit status.

    Returns (in a child only) the request the child is to run.
    """
    import importlib

    for name in preload:
        importlib.import_module(name)
    reply = os.fdopen(os.dup(1), "w", buffering=1)
    reply.write("ready\n")
    children: dict[int, tuple[int, int]] = {}  # pidfd -> (id, pid)
    buffer = b""
    while True:
        ready, _, _ = select.select([0, *children], [], [])
        for fd in ready:
            if fd != 0:
                number, pid = children.pop(fd)
                os.close(fd)
                _, status = os.waitpid(pid, 0)
                code = os.waitstatus_to_exitcode(status)
                reply.write(json.dumps({"id": number, "returncode": code}) + "\n")
                continue
            data = os.read(0, 1 << 20)
            if not data:  # the client is gone: wait for the children, then end
                for _, pid in children.values():
                    os.waitpid(pid, 0)
                sys.exit(0)
            buffer += data
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                request = json.loads(line)
                pid = os.fork()
                if pid == 0:
                    for other in children:
                        os.close(other)
                    reply.close()
                    return request
                children[os.pidfd_open(pid)] = (request["id"], pid)
                reply.write(json.dumps({"id": request["id"], "pid": pid}) + "\n")


def _child(request: dict) -> None:
    """Become `python -m radcap *argv` (or `python script *argv`): never returns."""
    import io
    import runpy

    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    for fd, path in ((1, request["stdout"]), (2, request["stderr"])):
        target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(target, fd)
        os.close(target)
    sys.stdin = io.TextIOWrapper(io.FileIO(0, "r", closefd=False))
    sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), write_through=True)
    sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), write_through=True)
    os.environ.clear()
    os.environ.update(request["env"])
    os.chdir(request["cwd"])
    script, code = request["script"], request["code"]
    if code is not None:
        sys.argv = ["-c", *request["argv"]]
        sys.path[0] = ""
        exec(compile(code, "<string>", "exec"), {"__name__": "__main__"})
    elif script is None:
        sys.argv = ["radcap", *request["argv"]]
        sys.path[0] = ""  # as `python -m` puts the working folder first
        runpy.run_module("radcap", run_name="__main__", alter_sys=True)
    else:
        sys.argv = [script, *request["argv"]]
        sys.path[0] = str(Path(script).resolve().parent)
        runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    sys.path[0] = ""  # radcap from the working folder, as `python -m radcap`
    _child(_serve(sys.argv[1:]))
