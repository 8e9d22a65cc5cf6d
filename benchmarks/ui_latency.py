"""GUI-thread latency while the Train widget trains in a shown napari viewer.

A 10 ms QTimer probe on the main thread records the gap between consecutive timeouts; the
stall is the gap minus 10 ms. Fluorescence sample, live loss plot and live preview on.
An idle-viewer probe runs first: the machine's own noise. --compare-threads trains twice in
one viewer (torch's default threads, then one fewer). The count is set inside the worker
thread: torch.set_num_threads on the GUI thread does not reach a pool thread that already ran.

    xvfb-run -a python benchmarks/ui_latency.py [--iterations 200] [--patch-size 128]
                                [--threads N | --compare-threads] [--idle-seconds 5]
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

import napari
import numpy as np
import torch
from napari._qt.qt_event_loop import get_qapp
from qtpy.QtCore import QEventLoop, Qt, QTimer

from napari_deepseg._qt import _train_run
from napari_deepseg._qt import train_widget as train_module
from napari_deepseg._qt.train_widget import TrainWidget
from napari_deepseg.sample_data import fluorescence_sample_layers

PROBE_MS = 10
TARGET_P99_MS, TARGET_MAX_MS = 30.0, 100.0
_original_drive = train_module.drive


def _load() -> str:
    return "/".join(f"{v:.2f}" for v in os.getloadavg())


class Probe:
    """Gaps between consecutive timeouts of a precise 10 ms timer on the GUI thread."""

    def __init__(self) -> None:
        self.timer = QTimer(timerType=Qt.PreciseTimer, interval=PROBE_MS, timeout=self._tick)
        self.last: float | None = None
        self.gaps: list[float] = []

    def start(self) -> None:
        self.last = time.perf_counter()
        self.timer.start()

    def _tick(self) -> None:
        now = time.perf_counter()
        if self.last is not None:
            self.gaps.append(now - self.last)
        self.last = now

    def stop(self) -> np.ndarray:
        self.timer.stop()
        return np.maximum(np.asarray(self.gaps) * 1000 - PROBE_MS, 0.0)


class TimedHandler:
    """Wraps the widget's ``yielded`` handler to time it (nested event processing included)."""

    def __init__(self, handler: Any) -> None:
        self.handler, self.ms, self.started = handler, [], None

    def __call__(self, item: Any) -> None:
        start = time.perf_counter()
        self.handler(item)
        if self.started is None:
            self.started = time.perf_counter()
        else:
            self.ms.append((time.perf_counter() - start) * 1000)


def _row(threads: Any, stalls: np.ndarray, **extra: Any) -> dict[str, Any]:
    empty = not len(stalls)
    return {
        "threads": threads,
        "samples": len(stalls),
        "top": np.sort(stalls)[::-1][:5],
        "p50": np.nan if empty else float(np.percentile(stalls, 50)),
        "p99": np.nan if empty else float(np.percentile(stalls, 99)),
        "max": np.nan if empty else float(stalls.max()),
        **extra,
    }


def probe_idle(seconds: float) -> dict[str, Any]:
    """The same probe with the viewer idle: what the machine's load alone costs the GUI thread."""
    loop, probe = QEventLoop(), Probe()
    QTimer.singleShot(int(seconds * 1000), loop.quit)
    start = time.perf_counter()
    probe.start()
    loop.exec_()
    return _row(
        "idle",
        probe.stop(),
        iterations=0,
        wall=time.perf_counter() - start,
        per_iteration=np.nan,
        handler_p50=np.nan,
        handler_max=np.nan,
        redraws=0,
    )


def run_once(viewer: napari.Viewer, widget: TrainWidget, threads: int | None) -> dict[str, Any]:
    seen: dict[str, int] = {}

    def drive(job: Any) -> Any:  # the worker thread's own intra-op thread count, then the job
        torch.set_num_threads(threads)
        seen["threads"] = torch.get_num_threads()
        yield from job

    def product_drive(job: Any) -> Any:  # the widget's own choice (one core left to the GUI)
        seen["threads"] = _train_run.worker_thread_count()
        yield from _original_drive(job)

    train_module.drive = drive if threads is not None else product_drive
    for layer in [la for la in viewer.layers if la.name.endswith(" preview")]:
        viewer.layers.remove(layer)  # each run creates its preview layer afresh
    handler = TimedHandler(TrainWidget._on_yielded.__get__(widget))
    widget._on_yielded = handler  # bound at Start, so the worker's signal reaches the wrapper
    loop, probe = QEventLoop(), Probe()
    widget.training_finished.connect(loop.quit)
    QTimer.singleShot(0, widget.start)
    start = time.perf_counter()
    probe.start()
    loop.exec_()
    end = time.perf_counter()
    stalls = probe.stop()
    widget.training_finished.disconnect(loop.quit)
    train_module.drive = _original_drive
    iterations = widget.model.iterations_trained if widget.model is not None else 0
    return _row(
        seen.get("threads", 0),
        stalls,
        iterations=iterations,
        wall=end - start,
        per_iteration=(end - (handler.started or start)) / max(iterations, 1),
        handler_p50=float(np.median(handler.ms)) if handler.ms else np.nan,
        handler_max=max(handler.ms, default=np.nan),
        redraws=widget.plot.redraw_count,
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--patch-size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument(
        "--compare-threads", action="store_true", help="run with torch's default threads, then with one fewer"
    )
    parser.add_argument(
        "--idle-seconds",
        type=float,
        default=5.0,
        help="probe the idle viewer first for this long (the machine's own noise)",
    )
    args = parser.parse_args()
    load_start = _load()
    default = torch.get_num_threads()
    runs = [default, max(default - 1, 1)] if args.compare_threads else [args.threads]
    # --threads unset: the widget picks (torch's default minus one, see worker_thread_count)

    app = get_qapp()
    viewer = napari.Viewer(show=True)
    (image, image_kw, _), (strokes, strokes_kw, _) = fluorescence_sample_layers()
    image_layer = viewer.add_image(image, **image_kw)
    labels_layer = viewer.add_labels(strokes, **strokes_kw)
    widget = TrainWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Train", area="right")
    widget.set_pairs([(image_layer, labels_layer)])
    widget.set_config(
        iterations=args.iterations,
        patch_size=args.patch_size,
        batch_size=4,
        pretrained=False,
        validation_fraction=0.0,
        preview=True,
    )
    for _ in range(20):  # let the window map and settle before measuring
        app.processEvents()
        time.sleep(0.01)

    results = [probe_idle(args.idle_seconds)] if args.idle_seconds > 0 else []
    for threads in runs:
        widget.plot.redraw_count = 0
        results.append(run_once(viewer, widget, threads))
    load_end = _load()

    config = widget.config()
    print(
        f"UI latency while training: fluorescence, {config.architecture}, patch {config.patch_size}, "
        f"batch {config.batch_size}, preview every {widget.controls.preview_interval}, device "
        f"{config.device}, {os.cpu_count()} CPUs; probe {PROBE_MS} ms, stall = gap - {PROBE_MS} ms"
    )
    print(f"load average (1/5/15 min): start {load_start}, end {load_end}")
    header = (
        f"{'threads':>7} {'iters':>5} {'wall s':>7} {'s/iter':>7} {'samples':>7} {'p50 ms':>7} "
        f"{'p99 ms':>7} {'max ms':>7} {'p99<30':>6} {'max<100':>7} {'yielded p50/max ms':>18} "
        f"{'redraws':>7}"
    )
    print(header)
    print("-" * len(header))
    verdicts = []
    for r in results:
        p99_ok, max_ok = r["p99"] < TARGET_P99_MS, r["max"] < TARGET_MAX_MS
        idle = r["threads"] == "idle"
        if not idle:
            verdicts.append(p99_ok and max_ok)
        handler = "-" if idle else f"{r['handler_p50']:.1f}/{r['handler_max']:.1f}"
        print(
            f"{r['threads']:>7} {r['iterations']:>5} {r['wall']:>7.1f} "
            f"{'-' if idle else format(r['per_iteration'], '.3f'):>7} "
            f"{r['samples']:>7} {r['p50']:>7.1f} {r['p99']:>7.1f} {r['max']:>7.1f} "
            f"{'PASS' if p99_ok else 'MISS':>6} {'PASS' if max_ok else 'MISS':>7} {handler:>18} "
            f"{r['redraws']:>7}"
        )
    for r in results:
        print(f"  {r['threads']}: worst stalls ms " + ", ".join(f"{v:.0f}" for v in r["top"]))
    rows = "; ".join(
        f"{r['threads']} threads p99 {r['p99']:.1f} ms, max {r['max']:.1f} ms, "
        f"{r['per_iteration']:.3f} s/iter"
        for r in results
        if r["threads"] != "idle"
    )
    print(
        f"summary: {'PASS' if all(verdicts) else 'MISS'} (p99 < {TARGET_P99_MS:.0f} ms, max < "
        f"{TARGET_MAX_MS:.0f} ms): {rows}; load {load_start} -> {load_end}"
    )

    viewer.close()
    app.processEvents()


if __name__ == "__main__":
    main()
