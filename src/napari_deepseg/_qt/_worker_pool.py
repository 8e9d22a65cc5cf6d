"""The training worker's own thread pool, whose threads run at a lower CPU priority than the GUI.

While a run trains, its thread competes with napari's GUI thread for the cores. Linux nice +5 on
the training thread halved the GUI's p99 stall and its worst stall, for about the same seconds per
iteration (docs/benchmarks.md, section 5). An unprivileged thread cannot raise its priority again,
so this cannot be done on Qt's global pool, where superqt runs every worker: a later task of
napari or of another plugin on that pooled thread would inherit the low priority. Our threads
run nothing but our training workers, so they never need raising.
"""

from __future__ import annotations

import os
import sys
import threading
from functools import partial

from qtpy.QtCore import QCoreApplication, QThread, QThreadPool, QTimer
from superqt.utils import GeneratorWorker

NICE_INCREMENT = 5  # above the GUI (main) thread's nice
MAX_THREADS = 2  # two viewers may train at once; a third run waits for a free thread

_pool: QThreadPool | None = None


def training_pool() -> QThreadPool:
    """The pool, created on first use; a child of the application, which waits for its threads
    when it is destroyed (as Qt's global pool does)."""
    global _pool
    if _pool is None:
        _pool = QThreadPool(QCoreApplication.instance())
        _pool.setMaxThreadCount(MAX_THREADS)
    return _pool


def lower_priority() -> None:
    """Linux: this thread's nice to the main thread's + ``NICE_INCREMENT``, best effort.

    Threads created afterwards by this one inherit it: torch's OpenMP team of the worker thread
    too, as long as no torch operation ran on it before. Other systems keep their priority (there
    ``setpriority`` takes process ids, not thread ids).
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        target = min(19, os.getpriority(os.PRIO_PROCESS, os.getpid()) + NICE_INCREMENT)
        thread = threading.get_native_id()
        if os.getpriority(os.PRIO_PROCESS, thread) < target:  # a reused thread already is
            os.setpriority(os.PRIO_PROCESS, thread, target)
    except (OSError, AttributeError):  # a sandbox without setpriority; the run goes on as is
        pass


class PooledGeneratorWorker(GeneratorWorker):
    """superqt's ``GeneratorWorker`` (same signals, pause, quit) started on ``training_pool()``
    at a lower priority.

    ``WorkerBase.start`` hardcodes ``QThreadPool.globalInstance()``; this is the same start on
    our pool: the worker joins ``_worker_set`` (so ``await_workers``, which napari runs when the
    application quits, asks it to quit) and leaves it when it finishes.
    """

    def start(self) -> None:
        if self in self._worker_set:
            raise RuntimeError("This worker is already started!")
        repr(self)  # raises RuntimeError if the worker was already deleted
        self._worker_set.add(self)
        self._finished.connect(self._set_discard)
        pool = training_pool()
        if QThread.currentThread().loopLevel():  # as superqt: connections made after start() count
            QTimer.singleShot(1, partial(pool.start, self))
        else:
            pool.start(self)

    def work(self) -> object:
        lower_priority()  # first: before torch creates this thread's OpenMP team
        return super().work()
