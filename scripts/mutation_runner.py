"""A fork server for mutation testing: mutmut 2 runs one test command per mutant, and most of
that command's time is the interpreter start and `import torch`. The server imports the heavy
third-party libraries once; each request forks a child that imports primus fresh from disk (so it
sees the mutant mutmut just wrote), runs pytest on the given arguments and reports its exit code.

    python scripts/mutation_runner.py serve SOCKET      # started by scripts/mutation.sh
    python scripts/mutation_runner.py run SOCKET ARGS   # mutmut's --runner; exit code = pytest's
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
import tempfile

HEAVY = ("numpy", "scipy.signal", "torch", "pydantic", "pluggy", "yaml", "pytest", "hypothesis")


def serve(path: str) -> None:
    import importlib

    for name in HEAVY:
        importlib.import_module(name)
    if os.path.exists(path):
        os.unlink(path)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(1)
    while True:
        conn, _ = server.accept()
        args = conn.recv(65536).decode().split("\0")
        bytecode = tempfile.mkdtemp(prefix="mutpyc-")  # the child's, removed once it is done
        pid = os.fork()
        if pid == 0:
            server.close()
            os.setsid()
            # never reuse bytecode: a mutant can keep the source's size and mtime second
            sys.dont_write_bytecode = True
            sys.pycache_prefix = bytecode
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.dup2(devnull, 2)
            import pytest

            code = pytest.main(args)
            os._exit(int(code))
        code = wait_or_kill(pid, conn)
        shutil.rmtree(bytecode, ignore_errors=True)
        try:
            conn.sendall(str(code).encode())
        except OSError:  # the client is gone (mutmut's timeout)
            pass
        conn.close()


def wait_or_kill(pid: int, conn: socket.socket) -> int:
    """The child's exit code; when mutmut gives up on a mutant (timeout) it kills the client,
    the connection closes, and the child's whole process group is killed too."""
    import select
    import signal

    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        readable, _, _ = select.select([conn], [], [], 0.05)
        if readable and not conn.recv(1):
            os.killpg(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return -9


def run(path: str, args: list[str]) -> int:
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.connect(path)
    client.sendall("\0".join(args).encode())
    reply = client.recv(64).decode()
    client.close()
    code = int(reply or 1)
    # mutmut 2 counts only exit code 1 as a kill: a mutant that breaks an import makes pytest
    # stop at collection (exit code 2), which it would count as a survivor
    return 0 if code == 0 else 1


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve(sys.argv[2])
    else:
        sys.exit(run(sys.argv[2], sys.argv[3:]))
