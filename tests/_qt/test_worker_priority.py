"""The Train widget's worker runs on the plugin's own thread pool at Linux nice +5, never on Qt's
global pool, whose threads napari and other plugins reuse (an unprivileged thread cannot raise
its priority again)."""

from __future__ import annotations

import sys
import threading

import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from napari_deepseg._qt import train_widget
from napari_deepseg._qt._worker_pool import NICE_INCREMENT, lower_priority, training_pool

from .conftest import FAST, TIMEOUT

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice is Linux's")


def _nice(thread_id: int) -> int:
    with open(f"/proc/self/task/{thread_id}/stat") as f:
        stat = f.read()
    return int(stat[stat.rindex(")") + 2 :].split()[16])  # field 19; the thread's name may hold ")"


@linux_only
def test_lowering_twice_lowers_once():
    gui = _nice(threading.get_native_id())
    seen: list[int] = []

    def lower_twice() -> None:
        lower_priority()
        lower_priority()  # a pool thread that trains a second time
        seen.append(_nice(threading.get_native_id()))

    thread = threading.Thread(target=lower_twice)
    thread.start()
    thread.join()
    assert seen == [min(19, gui + NICE_INCREMENT)]
    assert _nice(threading.get_native_id()) == gui


@linux_only
def test_training_runs_on_our_pool_below_the_gui(trainer_setup, qtbot, monkeypatch):
    from qtpy.QtCore import QThreadPool

    _, widget, _, _ = trainer_setup
    thread_ids: list[int] = []
    drive = train_widget.drive

    def recording_drive(job):
        thread_ids.append(threading.get_native_id())
        return (yield from drive(job))

    monkeypatch.setattr(train_widget, "drive", recording_drive)
    widget.set_config(**{**FAST, "iterations": 10_000})
    widget.start_button.click()
    qtbot.waitUntil(lambda: widget.plot.point_count >= 1, timeout=TIMEOUT)

    gui = threading.get_native_id()
    assert len(thread_ids) == 1 and thread_ids[0] != gui
    assert _nice(thread_ids[0]) == min(19, _nice(gui) + NICE_INCREMENT)
    assert training_pool().activeThreadCount() == 1
    assert QThreadPool.globalInstance().activeThreadCount() == 0
    widget.stop()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=TIMEOUT)
    qtbot.waitUntil(lambda: training_pool().activeThreadCount() == 0, timeout=10_000)
