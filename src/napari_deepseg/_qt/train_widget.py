"""The Train dock widget: choose pairs of image / stroke layers, train, watch the loss, save.

A thin layer over :class:`napari_deepseg.Trainer`: the layers are copied once at Start, the
loop runs in a superqt generator worker (pause / resume / stop take effect between
iterations) on the plugin's own thread pool at a lower priority (``_worker_pool``), and the GUI
thread only plots records and shows the preview the worker computed.
Strokes painted during the run reach the trainer through ``LiveLabels``.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from napari.utils import notifications
from qtpy.QtCore import Signal
from qtpy.QtWidgets import QLabel, QVBoxLayout, QWidget
from superqt.utils import create_worker

from .. import SegmentationModel, TrainingConfig
from ..models import architecture_spec
from ._layout import FittingScrollArea, YieldingBox
from ._live_labels import LiveLabels
from ._model_dialogs import ask_load_path, ask_save_path, load_model_file, save_model_file
from ._pairs import PairsEditor
from ._preview_job import PreviewSettings
from ._run_buttons import RunButtons
from ._session import model_store
from ._train_controls import TrainControls
from ._train_job import Started, Step, gather_inputs, model_name, training_job
from ._train_preview import TrainPreview
from ._train_run import (
    RunHolder,
    RunProgress,
    StatusLabel,
    TrainingRun,
    drive,
    progress_bar,
    report_error,
    show_warning,
    shutdown,
    status_text,
)
from ._worker_pool import PooledGeneratorWorker
from .loss_plot import LossPlot

if TYPE_CHECKING:
    import napari


class TrainWidget(QWidget):
    """Train a segmentation network on image / labels layer pairs of a napari viewer.

    Parameters
    ----------
    napari_viewer
        The viewer whose layers are listed and where the preview layer is shown.
    """

    training_finished = Signal(object)  # the model (or None) when a run ends for any reason

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.worker: Any = None
        self.model: SegmentationModel | None = None
        self.trainer: Any = None
        self.last_record: Any = None  # the latest TrainingProgress
        self._holder = RunHolder()

        self.pairs_editor = PairsEditor(napari_viewer)
        self.controls = TrainControls()
        self.preview_checkbox = self.controls.preview_checkbox.native
        self.preview = TrainPreview(napari_viewer, self.preview_checkbox)
        self.uncertainty_checkbox = self.preview.uncertainty_checkbox
        self.where_button = self.preview.where_button

        self.buttons = RunButtons(
            start=self.start,
            pause=self.toggle_pause,
            stop=self.stop,
            resume_training=self.continue_training,
            save=self._save_dialog,
            load=self._load_dialog,
        )
        buttons = self.buttons  # the names the tests and scripts use
        self.start_button, self.pause_button, self.stop_button = buttons.start, buttons.pause, buttons.stop
        self.continue_button, self.save_button, self.load_button = (
            buttons.continue_,
            buttons.save,
            buttons.load,
        )
        self.progress_bar = progress_bar()
        self.status_label = StatusLabel("Paint strokes of at least two classes, then Start.")
        self.plot = LossPlot(napari_viewer, parent=self)

        layout = QVBoxLayout(self)  # "Advanced" open must not outgrow the window: the settings scroll
        pairs_title = QLabel("<b>Training pairs</b>")
        layout.addWidget(FittingScrollArea(pairs_title, self.pairs_editor.native, self.controls))
        layout.addWidget(self.buttons)
        layout.addWidget(self.progress_bar)
        layout.addWidget(self.preview)
        layout.addWidget(self.status_label)
        layout.addWidget(YieldingBox(self.plot), 1)

        self.destroyed.connect(partial(shutdown, self._holder))
        self._set_running(False)

    # ------------------------------------------------------------ scripting
    def set_pairs(self, pairs: list[tuple[Any, Any]]) -> None:
        """Choose the (image layer, labels layer) pairs to train on."""
        self.pairs_editor.set_pairs(list(pairs))

    def config(self) -> TrainingConfig:
        """The training settings as the form shows them."""
        return self.controls.config()

    def set_config(self, config: TrainingConfig | None = None, **changes: Any) -> None:
        """Fill the form from ``config`` and/or change single fields.

        Besides the :class:`TrainingConfig` fields, accepts ``preview`` (bool), ``preview_interval``,
        ``preview_tile_size``, ``channel_axis`` (``None`` for automatic) and ``class_names``.
        """
        self.controls.set_options(config, **changes)

    # -------------------------------------------------------------- training
    def start(self) -> None:
        """Train a new model on the chosen pairs with the form's settings."""
        self._launch(None)

    def continue_training(self) -> None:
        """Train the current model (after Stop, a finished run or Load) for more iterations."""
        if self.model is None:
            notifications.show_warning("There is no model to continue yet: Start a training or Load a model.")
            return
        self._launch(self.model)

    def _launch(self, model: SegmentationModel | None) -> None:
        if self.worker is not None:
            return
        pairs = self.pairs_editor.pairs()
        try:
            config = self.controls.config()
            inputs = gather_inputs(
                pairs,
                channel_axis=self.controls.channel_axis,
                num_classes=model.num_classes if model else None,
                class_names=self.controls.class_names,
            )
        except (ValueError, TypeError) as err:
            notifications.show_error(str(err))
            return
        image_layer, labels_layer = pairs[0]
        preview = PreviewSettings(
            inputs.image_copies[0],
            interval=self.controls.preview_interval,
            tile_size=self.controls.preview_tile_size,
        )
        architecture = model.architecture if model else config.architecture
        self.plot.expect_run(
            last_iteration=None if model or config.max_minutes else config.iterations,
            validation=config.validation_fraction > 0,
            stability=self.preview_checkbox.isChecked(),
        )
        if model is None:
            self.model = None
            self.plot.clear()
        job = training_job(inputs, config, model=model, preview=preview, log_dir=self.controls.tensorboard)
        worker = create_worker(
            drive,
            job,
            _start_thread=False,
            _worker_class=PooledGeneratorWorker,  # our pool, at a lower priority than the GUI
            _connect={
                "yielded": self._on_yielded,
                "errored": self._on_errored,
                "finished": self._on_finished,
                "paused": self._on_paused,
                "resumed": self._on_resumed,
                "warned": show_warning,
            },
        )
        display = architecture_spec(architecture).display_name
        live = LiveLabels(self.viewer, [labels for _, labels in pairs])
        run = TrainingRun(
            worker=worker,
            job=job,
            name=model_name(architecture, inputs.names),
            preview=preview,
            config=config,
            live_labels=live,
        )
        self._holder.run = run
        self.worker = worker
        self._set_running(True)
        self.status_label.setText(f"Preparing {display} on {len(pairs)} pair(s)…")
        run.progress = RunProgress(
            self.progress_bar, run.progress_total, percent=config.max_minutes is not None
        )
        # The worker starts once the preview layers are in (~100 ms of GUI thread each): its
        # model build would otherwise compete with them for the cores.
        self.preview.begin(preview, image_layer, labels_layer, inputs.num_classes, ready=worker.start)

    def toggle_pause(self) -> None:
        """Pause after the current iteration, or resume a paused run."""
        if self.worker is None:
            return
        if self.worker.is_paused:
            self.pause_button.setEnabled(False)  # until the worker confirms
            self.worker.resume()
        else:
            self.buttons.pausing()
            self.worker.pause()

    def stop(self) -> None:
        """Stop after the current iteration; the model keeps what it learned so far."""
        run = self._holder.run
        if run is None:
            return
        run.request_stop()
        self.buttons.stopping()
        self.status_label.setText("Stopping…")

    # ------------------------------------------------------- worker signals
    def _on_yielded(self, item: Started | Step) -> None:
        run = self._holder.run
        if run is None:
            return
        if isinstance(item, Started):
            self.trainer, self.model = item.trainer, item.trainer.model
            run.trainer = self.trainer
            run.live_labels.set_trainer(self.trainer)
            model_store().publish(run.name, self.model)
            return
        record = self.last_record = item.record
        self.plot.append(record)
        if item.preview is not None:
            self.preview.show(item.preview)
            self.plot.add_stability(record.iteration, item.preview.stability)
        self.status_label.setText(status_text(record, run.config, self.model.class_names, self.preview.last))
        run.advance_progress(record)

    def _on_errored(self, error: BaseException) -> None:
        run = self._holder.run
        if run is not None:
            run.error = error

    def _on_paused(self) -> None:
        self.buttons.paused(self.model is not None)
        self.plot.flush()
        self.status_label.setText(f"Paused at iteration {self.model.iterations_trained if self.model else 0}")

    def _on_resumed(self) -> None:
        self.buttons.resumed()

    def _on_finished(self) -> None:
        run, self._holder.run = self._holder.run, None
        if run is None:
            return
        run.close()
        self.preview.end()
        self.worker = self.trainer = None
        self.plot.expect_run()
        self.plot.flush()
        self._set_running(False)
        if self.model is not None:
            model_store().publish(run.name, self.model)
        done = self.model.iterations_trained if self.model else 0
        state = "failed" if run.error else "stopped" if run.stopped else "finished"
        self.status_label.setText(f"Training {state}" + (f" at iteration {done}." if self.model else "."))
        if run.error is not None:
            report_error(run.error)
        self.training_finished.emit(self.model)

    # ------------------------------------------------------------ model files
    def save_model(self, path: str | Path) -> Path | None:
        """Write the current model to ``path``; ``None`` (and a notification) when that fails."""
        if self.model is None:
            notifications.show_warning("There is no model to save yet: Start a training first.")
            return None
        if self.worker is not None and not self.worker.is_paused:
            notifications.show_warning("Pause or stop the training before saving the model.")
            return None
        return save_model_file(self.model, path)

    def load_model(self, path: str | Path) -> SegmentationModel | None:
        """Load a model file to continue training it; ``None`` (and a notification) when that fails."""
        if self.worker is not None:
            notifications.show_warning("Stop the training before loading a model.")
            return None
        model = load_model_file(path)
        if model is None:
            return None
        self.model = model
        # A file from before per-image normalisation and averaged weights says "dataset" / 0: that is
        # how *it* continues (its own normalisation is kept), not how a new Start should train.
        defaults = TrainingConfig()
        self.controls.set_options(
            model.config.replace(normalisation=defaults.normalisation, ema_decay=defaults.ema_decay),
            class_names=model.class_names,
        )
        self.plot.set_history(model.history)
        self._set_running(False)
        self.status_label.setText(f"Loaded {Path(path).name}: {model.summary()}. Continue trains it further.")
        return model

    def _save_dialog(self) -> None:
        if path := ask_save_path(self):
            self.save_model(path)

    def _load_dialog(self) -> None:
        if path := ask_load_path(self):
            self.load_model(path)

    # ------------------------------------------------------------------ state
    def _set_running(self, running: bool) -> None:
        self.pairs_editor.set_enabled(not running)
        self.controls.set_enabled(not running)
        self.buttons.set_running(running, self.model is not None)
