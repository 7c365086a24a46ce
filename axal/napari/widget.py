"""The annotator's seat: suggestions, the editable prediction, save, and the next round.

The dock widget reads the work folder that :func:`axal.annotate.annotate` writes (rounds.json:
suggestions, predictions, uncertainty maps) and saves masks where it reads them (AxonDeepSeg's
names and 0 / 127 / 255 values, atomically), so a mask saved here opens in AxonDeepSeg's plugin
and the other way round. "Next round" calls the same ``annotate`` in a napari thread worker.
Each save records, in rounds.json, the seconds from opening the suggestion and the pixels
changed against the prediction: the measured annotation effort.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from napari.utils.colormaps import DirectLabelColormap
from omegaconf import DictConfig, OmegaConf
from qtpy.QtCore import QObject, Signal
from qtpy.QtWidgets import (
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QProgressBar,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from axal.adsfiles import image_stem, manual_masks, mask_target, write_png
from axal.annotate import RECORD, annotate, record_effort
from axal.data.io import classes_from_axonmyelin, read_image, read_mask
from axal.data.sources import bids_images, find_named, is_bids
from axal.suggestions import latest_suggestions

CONF = Path(__file__).resolve().parents[2] / "conf"
GREY = np.array([0, 127, 255], dtype=np.uint8)  # class (background, myelin, axon) -> grey
LABELS = "mask (1 myelin, 2 axon)"
CLASS_COLORS = {None: "transparent", 0: "transparent", 1: "#ff3b30", 2: "#2f9bff"}
COLUMNS = ("rank", "image", "box", "score", "strategy")


def compose_config(root: Path, overrides: list[str]) -> DictConfig:
    """conf/annotate.yaml with ``dataset.root`` and the user's Hydra overrides."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():
        GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("annotate", overrides=[f"dataset.root={root}", *overrides])


def folder_images(root: Path) -> dict[str, Path]:
    """Every image of a folder by id, as annotate reads it (legacy cases or BIDS stems)."""
    if is_bids(root):
        return {image_stem(p): p for p in bids_images(root)}
    found = {}
    for case in sorted(p for p in root.iterdir() if p.is_dir()):
        image = find_named(case, "image")
        if image is not None:
            found[case.name] = image
    return found


class _Signals(QObject):
    progressed = Signal(str, int, int)


class AnnotateWidget(QWidget):
    """Dock widget: open a folder, pick a suggestion, correct its mask, save, next round."""

    def __init__(self, viewer: Any, folder: str | Path | None = None, overrides=()):
        super().__init__()
        self.viewer = viewer
        self.overrides = list(overrides)
        self.root: Path | None = None
        self.out: Path | None = None
        self.state: dict[str, Any] = {}
        self.current: dict[str, Any] | None = None  # what is open: image, row, prediction
        self.worker: Any = None
        self._signals = _Signals()
        self._signals.progressed.connect(self._on_progress)

        self.path_edit = QLineEdit(placeholderText="folder of images (legacy or BIDS)")
        browse = QPushButton("Open…")
        browse.clicked.connect(self._choose_folder)
        self.path_edit.returnPressed.connect(lambda: self.open_folder(self.path_edit.text()))
        self.override_edit = QLineEdit(" ".join(self.overrides))
        self.override_edit.setPlaceholderText("overrides for the next round, e.g. k=4")
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.verticalHeader().setVisible(False)
        self.table.setSelectionBehavior(QTableWidget.SelectRows)
        self.table.setEditTriggers(QTableWidget.NoEditTriggers)
        self.table.itemSelectionChanged.connect(self._on_pick)
        self.images = QListWidget()
        self.images.itemActivated.connect(self._on_browse)
        self.images.itemClicked.connect(self._on_browse)
        self.save_button = QPushButton("Save mask")
        self.save_button.clicked.connect(self.save)
        self.round_button = QPushButton("Next round")
        self.round_button.clicked.connect(self.next_round)
        self.progress = QProgressBar()
        self.progress.setFormat("idle")
        self.progress.setValue(0)
        self.status = QLabel("")
        self.status.setWordWrap(True)

        self.setMinimumWidth(520)  # the table's columns: rank, image, box, score, strategy
        layout = QVBoxLayout(self)
        row = QHBoxLayout()
        row.addWidget(self.path_edit)
        row.addWidget(browse)
        layout.addLayout(row)
        layout.addWidget(QLabel("Suggestions (latest round)"))
        layout.addWidget(self.table)
        layout.addWidget(QLabel("All images: labelled and pool"))
        layout.addWidget(self.images)
        buttons = QHBoxLayout()
        buttons.addWidget(self.save_button)
        buttons.addWidget(self.round_button)
        layout.addLayout(buttons)
        layout.addWidget(self.override_edit)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        if folder is not None:
            self.open_folder(folder)

    # ------------------------------------------------------------------ folder and lists

    def _choose_folder(self) -> None:
        chosen = QFileDialog.getExistingDirectory(self, "Folder of images")
        if chosen:
            self.open_folder(chosen)

    def open_folder(self, folder: str | Path) -> None:
        """Read the folder's images and its work folder (``<folder>/axal`` or annotate.out)."""
        self.root = Path(folder).expanduser().resolve()
        self.path_edit.setText(str(self.root))
        out = None
        for token in self.overrides:
            if token.startswith("annotate.out="):
                out = Path(token.split("=", 1)[1]).expanduser()
        self.out = out or self.root / "axal"
        self.reload()

    def reload(self) -> None:
        """Re-read rounds.json and the folder: the suggestion table and the image list."""
        path = self.out / RECORD
        self.state = json.loads(path.read_text()) if path.is_file() else {"rounds": []}
        rows = latest_suggestions(self.state)
        self.table.setRowCount(len(rows))
        for i, row in enumerate(rows):
            score = "" if row.get("score") is None else f"{row['score']:.4g}"
            box = f"{row['x']},{row['y']} {row['width']}x{row['height']}"
            for j, value in enumerate((row["rank"], row["image"], box, score, row["strategy"])):
                self.table.setItem(i, j, QTableWidgetItem(str(value)))
        self.table.resizeColumnsToContents()
        self.paths = folder_images(self.root)
        self.images.clear()
        for image_id, image_path in self.paths.items():
            kind = "labelled" if mask_target(self.root, image_path).is_file() else "pool"
            if not mask_target(self.root, image_path).is_file() and self._has_manual(image_path):
                kind = "labelled"
            item = QListWidgetItem(f"{image_id}  [{kind}]")
            item.setData(256, image_id)
            self.images.addItem(item)
        n = len(self.state["rounds"])
        self.status.setText(
            f"{self.root}: {len(self.paths)} images, {n} rounds, {len(rows)} suggestions"
        )

    def _has_manual(self, image_path: Path) -> bool:
        return bool(manual_masks(self.root, image_path))

    @property
    def suggestions(self) -> list[dict[str, Any]]:
        return latest_suggestions(self.state)

    def _on_pick(self) -> None:
        rows = self.table.selectionModel().selectedRows()
        if rows:
            self.show_suggestion(rows[0].row())

    def _on_browse(self, item: QListWidgetItem) -> None:
        self.show_image(item.data(256))

    # ------------------------------------------------------------------ layers

    def show_suggestion(self, index: int) -> None:
        """The suggestion's image, its prediction (editable), uncertainty and box."""
        self.show_image(self.suggestions[index]["image"], self.suggestions[index])

    def show_image(self, image_id: str, row: dict[str, Any] | None = None) -> None:
        image_path = self.paths[image_id]
        image = read_image(image_path)
        prediction = self._prediction(image_id, image.shape)
        target = mask_target(self.root, image_path)
        start = prediction
        if target.is_file():  # a mask saved before: go on from it, never from scratch
            start = classes_from_axonmyelin(read_mask(target))
        self.viewer.layers.clear()
        self.viewer.add_image(image, name=image_id, colormap="gray")
        uncertainty = self._uncertainty(row, image_id)
        if uncertainty is not None:
            scale = (image.shape[0] / uncertainty.shape[0], image.shape[1] / uncertainty.shape[1])
            self.viewer.add_image(
                uncertainty,
                name="uncertainty",
                colormap="magma",
                opacity=0.45,
                blending="additive",
                scale=scale,
                translate=((scale[0] - 1) / 2, (scale[1] - 1) / 2),
            )
        labels = self.viewer.add_labels(start.astype(np.uint8), name=LABELS, opacity=0.45)
        labels.colormap = DirectLabelColormap(color_dict=CLASS_COLORS)
        labels.selected_label = 2
        boxes = [r for r in self.suggestions if r["image"] == image_id]
        if boxes:
            rects = [[[r["y"], r["x"]], [r["y"] + r["height"], r["x"] + r["width"]]] for r in boxes]
            self.viewer.add_shapes(
                rects,
                shape_type="rectangle",
                name="suggested box",
                edge_color="#39ff14",
                face_color="transparent",
                edge_width=max(2, image.shape[0] // 200),
            )
        self.viewer.layers.selection.active = labels
        self.current = {
            "image": image_id,
            "row": row,
            "prediction": prediction,
            "opened": time.monotonic(),
            "target": target,
        }
        self.viewer.reset_view()
        where = f"#{row['rank']} " if row else ""
        self.status.setText(f"{where}{image_id}: correct the mask, then save it as {target}")

    def _prediction(self, image_id: str, shape: tuple[int, int]) -> np.ndarray:
        """Classes of the latest predicted mask of the image; background when there is none."""
        for record in reversed(self.state.get("rounds", [])):
            files = record.get("predictions", {}).get(image_id, [])
            name = next((f for f in files if f.endswith("_seg-axonmyelin.png")), None)
            if name and (self.out / name).is_file():
                return classes_from_axonmyelin(read_mask(self.out / name))
        return np.zeros(shape, dtype=np.uint8)

    def _uncertainty(self, row: dict[str, Any] | None, image_id: str) -> np.ndarray | None:
        rows = [row] if row else [r for r in self.suggestions if r["image"] == image_id]
        for r in rows:
            if r and r.get("uncertainty") and (self.out / r["uncertainty"]).is_file():
                return np.load(self.out / r["uncertainty"])
        return None

    # ------------------------------------------------------------------ save

    def save(self) -> Path | None:
        """Write the Labels layer as the image's AxonDeepSeg mask and record the effort."""
        from napari.utils.notifications import show_error, show_info

        if self.current is None or LABELS not in self.viewer.layers:
            show_error("axal: open a suggestion or an image before saving")
            return None
        classes = np.asarray(self.viewer.layers[LABELS].data)
        if classes.max(initial=0) > 2:
            show_error(f"axal: the mask holds label {classes.max()}: use 1 myelin, 2 axon")
            return None
        target = self.current["target"]
        write_png(target, GREY[classes])
        prediction = self.current["prediction"]
        changed = classes != prediction
        effort: dict[str, Any] = {
            "image": self.current["image"],
            "mask": str(target),
            "seconds": round(time.monotonic() - self.current["opened"], 2),
            "pixels_changed": int(changed.sum()),
            "pixels": int(changed.size),
        }
        row = self.current["row"]
        if row is not None:
            y, x, h, w = row["y"], row["x"], row["height"], row["width"]
            effort.update(
                unit=row["unit"],
                rank=row["rank"],
                round=self.state["rounds"][-1]["round"] if self.state.get("rounds") else None,
                pixels_changed_in_box=int(changed[y : y + h, x : x + w].sum()),
            )
        if self.state.get("rounds") or self.state.get("first_picks"):
            record_effort(self.out, effort)
        self.reload()
        show_info(f"axal: saved {target} ({effort['pixels_changed']} px changed)")
        self.status.setText(f"saved {target}")
        return target

    # ------------------------------------------------------------------ next round

    def config(self) -> DictConfig:
        """The round's config: the overrides typed in, else the last round's own config."""
        overrides = self.override_edit.text().split()
        rounds = self.state.get("rounds", [])
        if rounds and not overrides:
            return OmegaConf.create(rounds[-1]["config"])
        return compose_config(self.root, [*self.overrides, *overrides])

    def next_round(self) -> Any:
        """Start :func:`axal.annotate.annotate` in a thread worker; refused while one runs."""
        from napari.qt.threading import create_worker
        from napari.utils.notifications import show_error, show_warning

        if self.worker is not None:
            show_warning("axal: a round is already running; wait for it to finish")
            return None
        if self.root is None:
            show_error("axal: open a folder first")
            return None
        try:
            cfg = self.config()
        except Exception as err:  # a bad override: one line, as Hydra words it
            show_error(f"axal: {err}".splitlines()[0])
            return None
        self.worker = create_worker(
            annotate, cfg, progress=self._signals.progressed.emit, _ignore_errors=True
        )
        self.worker.returned.connect(self._round_done)
        self.worker.errored.connect(self._round_failed)
        self.worker.finished.connect(self._round_finished)
        self.round_button.setEnabled(False)
        self.progress.setRange(0, 0)
        self.progress.setFormat("starting the round…")
        self.worker.start()
        return self.worker

    def _on_progress(self, stage: str, done: int, total: int) -> None:
        words = {"train": "training", "score": "scoring the pool", "predict": "predicting"}
        self.progress.setRange(0, total)
        self.progress.setValue(done)
        tail = " %v / %m" if total else ""
        self.progress.setFormat(f"{words.get(stage, stage)}{tail}")

    def _round_done(self, state: dict[str, Any]) -> None:
        from napari.utils.notifications import show_info

        self.reload()
        if not state["rounds"]:
            show_info(f"axal: no model yet: {len(self.suggestions)} first picks to annotate")
            return
        last = state["rounds"][-1]
        show_info(f"axal: round {last['round']} done, {len(self.suggestions)} suggestions")

    def _round_failed(self, err: Exception) -> None:
        from napari.utils.notifications import show_error

        show_error(f"axal: {err}".splitlines()[0])
        self.status.setText(f"round failed: {err}")

    def _round_finished(self) -> None:
        self.worker = None
        self.round_button.setEnabled(True)
        self.progress.setRange(0, 1)
        self.progress.setValue(1)
        self.progress.setFormat("idle")


def make_widget(napari_viewer: Any) -> AnnotateWidget:
    """npe2 widget command: Plugins -> axal -> Annotate."""
    return AnnotateWidget(napari_viewer)
