"""No scene may hang a prep run: regular files only, and a per-scene time limit.

A FIFO, socket or device in place of a dataset file blocks ``open()`` forever, so readers
check ``tttkd.core.require_regular_file`` (``os.stat`` never blocks) before opening.
``--scene-timeout SECONDS`` bounds the CPU stage of each scene (read, voxelize, frames,
correspondences): when it runs longer, the scene fails with :class:`SceneTimeout` and the
run goes on with the next; the scene is not complete, so a rerun retries it.

Serial runs: a ``SIGALRM`` timer (:func:`scene_deadline`), which interrupts even a blocking
system call in the main thread. Dask runs: a task runs in a worker thread, which nothing can
interrupt, so the driver keeps the clock (:class:`TaskClock`): each CPU task announces its
start (:func:`announce_start`), and one running past the limit is cancelled and its worker
process restarted by its nanny (:func:`stop_task`); Dask recomputes what that worker held.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

from tttkd.core import DatasetError


class SceneTimeout(DatasetError):
    """A scene's CPU stage ran past ``--scene-timeout``."""


def timeout_error(seconds: float, scene: str) -> SceneTimeout:
    """The one message of a timed-out scene, serial or Dask."""
    return SceneTimeout(
        f"the scene took longer than --scene-timeout {seconds:g} s (reading, frames and "
        "correspondences) and was stopped",
        scene=scene,
        fix="look for a file that blocks or is huge in this scene, or raise --scene-timeout; "
        "a rerun retries the scene",
    )


@contextlib.contextmanager
def scene_deadline(seconds: float | None, scene: str) -> Iterator[None]:
    """Raise :class:`SceneTimeout` in this block after ``seconds`` (None/0: no limit)."""
    usable = (
        seconds
        and hasattr(signal, "setitimer")
        and threading.current_thread() is threading.main_thread()
    )
    if not usable:
        yield
        return

    expired = False

    def expire(signum: int, frame: object) -> None:
        nonlocal expired
        expired = True
        raise timeout_error(float(seconds), scene)

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, float(seconds))
    try:
        yield
    except SceneTimeout:
        raise
    except Exception as e:  # raised after the deadline: the timeout is the cause
        if expired:
            raise timeout_error(float(seconds), scene) from e
        raise
    else:  # a reader's own handler (a dropped frame) may have swallowed the timeout
        if expired:
            raise timeout_error(float(seconds), scene)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def announce_start(topic: str) -> None:
    """In a Dask task: tell the driver's :class:`TaskClock` that this task starts now."""
    from distributed import get_worker

    worker = get_worker()
    worker.log_event(topic, {"key": worker.get_current_task(), "worker": worker.address})


class TaskClock:
    """Driver side of ``--scene-timeout`` on Dask: when each watched task started, and where.

    The clock starts when the driver hears of the start (an event through the scheduler), so
    clocks of other machines never matter; a task rerun after its worker died starts again.
    """

    def __init__(self, client: Any, seconds: float, topic: str) -> None:
        self.client, self.seconds, self.topic = client, float(seconds), topic
        self.watched: set[str] = set()
        self.started: dict[str, tuple[float, str]] = {}  # key -> (monotonic time, worker)
        client.subscribe_topic(topic, self._on_start)

    def _on_start(self, event: tuple[float, dict]) -> None:  # on the client's event loop
        msg = event[1]
        if msg.get("key") in self.watched:
            self.started[msg["key"]] = (time.monotonic(), msg["worker"])

    def watch(self, key: str) -> None:
        self.watched.add(key)

    def forget(self, key: str) -> None:
        self.watched.discard(key)
        self.started.pop(key, None)

    def expired(self) -> list[tuple[str, str]]:
        """(key, worker address) of watched tasks running longer than ``seconds``."""
        now = time.monotonic()
        return [
            (key, worker)
            for key, (t0, worker) in list(self.started.items())
            if key in self.watched and now - t0 > self.seconds
        ]

    def close(self) -> None:
        self.client.unsubscribe_topic(self.topic)


def stop_task(client: Any, futures: list, worker: str) -> str:
    """Cancel a stuck task's futures and restart its worker (a blocked thread cannot be
    stopped otherwise); returns "" or a note on why the worker stays busy."""
    client.cancel(futures, force=True)
    try:
        status = client.restart_workers([worker], timeout=60, raise_for_error=False)
    except ValueError:  # no nanny (a worker started with --no-nanny)
        return f"; its worker {worker} has no nanny, so it stays busy until the task ends"
    if status.get(worker) not in ("OK", "removed"):
        return f"; its worker {worker} did not restart ({status.get(worker)})"
    return ""
