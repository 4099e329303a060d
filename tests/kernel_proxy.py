"""A Jupyter kernel forked from a warm interpreter: see tests/forked_kernels.py.

`python kernel_proxy.py -f <connection file>` asks the socket named by
`RADCAP_TEST_KERNELS` for a kernel with this process's arguments,
environment and working folder, passes the signals Jupyter sends on to it,
and ends with its exit status. With no such socket it becomes
`python -m ipykernel_launcher` itself.
"""

import json
import os
import signal
import socket
import sys

SOCKET_ENV = "RADCAP_TEST_KERNELS"


def main() -> int:
    path = os.environ.get(SOCKET_ENV, "")
    if not os.path.exists(path):
        command = [sys.executable, "-m", "ipykernel_launcher", *sys.argv[1:]]
        os.execv(sys.executable, command)
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.connect(path)
    stream = conn.makefile("rw")
    request = {"argv": sys.argv[1:], "env": dict(os.environ), "cwd": os.getcwd()}
    stream.write(json.dumps(request) + "\n")
    stream.flush()
    pid = json.loads(stream.readline())["pid"]
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(signum, lambda signum, frame: os.kill(pid, signum))
    reply = stream.readline()  # its exit status; "" if the socket's end is gone
    code = json.loads(reply)["returncode"] if reply else 1
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main())
