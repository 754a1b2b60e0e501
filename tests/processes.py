"""Process helpers shared by the tests that start Dask schedulers and workers, or SIGKILL a
running command: a free port, stopping what a test started, and a kill that lands mid-run.

Import as ``from tests.processes import ...`` (pytest's importlib mode makes ``tests`` a
namespace package rooted at this folder).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterable


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop(procs: Iterable[subprocess.Popen | None]) -> None:
    """Terminate each process (in the order given), killing one that ignores it for 30 s."""
    for p in procs:
        if p is not None:
            p.terminate()
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def sigkill_when(
    cmd: list[str],
    ready: Callable[[], bool],
    *,
    name: str,
    waiting_for: str,
    timeout: float,
    with_children: bool = False,
) -> int:
    """Run ``cmd``, SIGKILL it as soon as ``ready()`` (polled every 10 ms), and return its exit
    status. ``with_children``: its descendants are SIGKILLed too (as a batch system kills a
    job). Fails the test when it ends first (``"{name} ended before the kill"``) or when
    ``ready()`` stays false for ``timeout`` seconds (``waiting_for`` says what was awaited)."""
    import psutil

    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + timeout
    children: list = []
    try:
        while not ready():
            assert proc.poll() is None, f"{name} ended before the kill: {proc.stderr.read()}"
            assert time.monotonic() < deadline, waiting_for
            time.sleep(0.01)
        if with_children:
            children = psutil.Process(proc.pid).children(recursive=True)
        os.kill(proc.pid, signal.SIGKILL)
        for c in children:
            c.kill()
    finally:
        proc.wait(timeout=60)
        psutil.wait_procs(children, timeout=60)
        proc.stderr.close()
    return proc.returncode
