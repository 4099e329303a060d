"""The web server of `radcap app`: a child process that ends when radcap does.

A Streamlit server runs as a child process of `radcap app`. Whatever ends
`radcap app`, the server ends too: a stop signal is passed on to it, and a
SIGKILL (which no process can catch: an out-of-memory kill, a restarted
notebook kernel) reaches it through the kernel (Linux), so no server is left
serving the port.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading

# What stops `radcap app`: Ctrl-C, `kill`, a notebook's stop button, a closed
# terminal. The server is a child process: without being told, it would outlive
# `radcap app` and keep serving the port.
STOPS = {signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", signal.SIGINT)}


def run_until_stopped(argv: list[str], env: dict) -> int:
    """Run the server `argv` until it ends; 0 if stopped by a signal (twice: killed).

    Args:
        argv: The server's command line.
        env: Its environment.

    Returns:
        The exit status: 0 when a signal in `STOPS` stopped it, else the
        server's own.
    """
    server, stops = None, []

    def stop(signum, frame):
        stops.append(signum)
        if server is not None:
            server.terminate() if len(stops) == 1 else server.kill()

    main = threading.current_thread() is threading.main_thread()
    previous = {s: signal.signal(s, stop) for s in STOPS} if main else {}
    try:
        server = subprocess.Popen(argv, env=env, preexec_fn=_end_with(os.getpid()))
        if stops:  # came before `server` was set
            server.terminate()
        status = server.wait()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if server is not None and server.poll() is None:
            server.kill()
            server.wait()
    return 0 if stops else status


def _end_with(parent: int):
    """What the server's process runs before it starts: end when `parent` ends.

    Linux sends the server SIGTERM when `radcap app` ends, however it ends
    (`prctl(PR_SET_PDEATHSIG)`); elsewhere there is no such call, and
    Windows runs nothing in a child before it starts (None: no such step).
    """
    if os.name == "nt":
        return None

    def end_with_parent() -> None:
        if sys.platform.startswith("linux"):
            import ctypes

            ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG
            if os.getppid() != parent:  # it ended before the call
                os.kill(os.getpid(), signal.SIGTERM)

    return end_with_parent
