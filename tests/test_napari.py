"""The napari widget: a work folder's suggestions, correcting and saving a mask, the next round."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image

from axal.annotate import annotate
from tests.test_annotate import annotate_cfg, synthetic_folder

napari = pytest.importorskip("napari", reason="napari not installed: pip install '.[napari]'")
pytest.importorskip("pytestqt", reason="pytest-qt not installed: pip install '.[dev]'")

if not os.environ.get("DISPLAY"):  # Qt's offscreen platform has no OpenGL for napari's canvas
    pytest.skip(
        "napari needs a display with OpenGL: run under xvfb-run -a (Debian's xvfb and Mesa)",
        allow_module_level=True,
    )

OVERRIDES = (
    "al.initial=2",
    "dataset.patch_size=32",
    "dataset.infer_size=64",
    "dataset.batch_size=4",
    "trainer.steps=3",
    "trainer.finetune_steps=2",
)


@pytest.fixture
def work_folder(tmp_path):
    """A folder after a tiny two-round annotate run (the second after one suggestion's mask)."""
    root = tmp_path / "lab"
    truth = synthetic_folder(root, n=6, labelled=2, size=64)
    r0 = annotate(annotate_cfg(root, *OVERRIDES))["rounds"][0]
    first = r0["suggestions"][0]["image"]
    Image.fromarray(truth[first]).save(root / first / "mask.png")
    annotate(annotate_cfg(root, *OVERRIDES))
    return root


def test_the_widget_saves_a_corrected_mask_and_runs_the_next_round(
    make_napari_viewer, qtbot, work_folder
):
    from axal.napari import AnnotateWidget
    from axal.napari.widget import LABELS

    viewer = make_napari_viewer()
    widget = AnnotateWidget(viewer, folder=work_folder)
    state = json.loads((work_folder / "axal" / "rounds.json").read_text())
    assert len(state["rounds"]) == 2
    rows = state["rounds"][-1]["suggestions"]
    shown = [widget.table.item(i, 1).text() for i in range(widget.table.rowCount())]
    assert shown == [r["image"] for r in rows] and len(shown) == 2
    assert widget.images.count() == 6  # labelled and pool, browsable

    widget.table.selectRow(0)  # the first suggestion: image, prediction, uncertainty, box
    pick = rows[0]
    assert {"uncertainty", "suggested box", LABELS, pick["image"]} <= {
        layer.name for layer in viewer.layers
    }
    labels = viewer.layers[LABELS]
    predicted = np.array(labels.data)
    edited = predicted.copy()
    edited[:10, :10] = 2  # the annotator paints an axon ...
    edited[30:40, 30:40] = 1  # ... and some myelin
    labels.data = edited
    saved = widget.save()

    assert saved == work_folder / pick["image"] / "mask.png"  # where annotate.py reads it
    with Image.open(saved) as im:
        assert im.mode == "L" and im.size == (64, 64)
        grey = np.asarray(im)
    assert set(np.unique(grey).tolist()) <= {0, 127, 255}
    assert np.array_equal(grey, np.array([0, 127, 255], dtype=np.uint8)[edited])
    state = json.loads((work_folder / "axal" / "rounds.json").read_text())
    (effort,) = state["rounds"][-1]["efforts"]
    assert effort["unit"] == pick["unit"] and effort["seconds"] >= 0
    assert effort["pixels_changed"] == int((edited != predicted).sum()) > 0

    stages = []
    widget._signals.progressed.connect(lambda stage, done, total: stages.append(stage))
    worker = widget.next_round()
    assert worker is not None
    assert widget.next_round() is None  # a second round while one runs is refused
    qtbot.waitUntil(lambda: widget.worker is None, timeout=240_000)
    state = json.loads((work_folder / "axal" / "rounds.json").read_text())
    assert len(state["rounds"]) == 3 and state["rounds"][1]["efforts"][0] == effort
    new = [r["image"] for r in state["rounds"][-1]["suggestions"]]
    assert pick["image"] in state["rounds"][-1]["labelled_images"]
    assert [widget.table.item(i, 1).text() for i in range(widget.table.rowCount())] == new
    assert widget.progress.format() == "idle"
    assert stages.index("train") < stages.index("score") < stages.index("predict")


def test_a_failed_round_is_one_notification_line(make_napari_viewer, qtbot, tmp_path):
    from napari.utils.notifications import notification_manager

    from axal.napari import AnnotateWidget

    synthetic_folder(tmp_path / "lab", n=3, labelled=1, size=64)
    widget = AnnotateWidget(make_napari_viewer(), folder=tmp_path / "lab")
    assert widget.table.rowCount() == 0
    widget.override_edit.setText("model=tiny trainer.steps=2 al.initial_pick=random")
    seen = []
    notification_manager.notification_ready.connect(lambda n: seen.append(n.message))
    assert widget.next_round() is not None
    qtbot.waitUntil(lambda: widget.worker is None, timeout=60_000)
    errors = [m for m in seen if "images have a mask" in m]
    assert errors and "\n" not in errors[0] and "1 of 3 images" in errors[0]


def test_first_picks_of_a_folder_without_masks_are_drawn_and_saved_in_the_widget(
    make_napari_viewer, qtbot, tmp_path
):
    """No mask yet: "next round" gives the label-free first picks; one opens with its box on
    an empty mask (there is no model to start from), and saving it records the effort of a
    mask drawn from scratch beside the picks."""
    from axal.napari import AnnotateWidget
    from axal.napari.widget import LABELS

    root = tmp_path / "lab"
    synthetic_folder(root, n=4, labelled=0, size=64)
    widget = AnnotateWidget(make_napari_viewer(), folder=root)
    widget.override_edit.setText("model=tiny al.initial=2")
    assert widget.next_round() is not None
    qtbot.waitUntil(lambda: widget.worker is None, timeout=60_000)
    state = json.loads((root / "axal" / "rounds.json").read_text())
    picks = state["first_picks"]["suggestions"]
    assert state["rounds"] == [] and len(picks) == 2
    assert [widget.table.item(i, 1).text() for i in range(widget.table.rowCount())] == [
        p["image"] for p in picks
    ]
    widget.table.selectRow(0)
    viewer = widget.viewer
    assert "suggested box" in {layer.name for layer in viewer.layers}
    labels = viewer.layers[LABELS]
    assert not np.asarray(labels.data).any()  # drawn from scratch
    drawn = np.zeros((64, 64), dtype=np.uint8)
    drawn[5:20, 5:20], drawn[8:17, 8:17] = 1, 2
    labels.data = drawn
    saved = widget.save()
    assert saved == root / picks[0]["image"] / "mask.png" and saved.is_file()
    (effort,) = json.loads((root / "axal" / "rounds.json").read_text())["first_picks"]["efforts"]
    assert effort["unit"] == picks[0]["unit"] and effort["round"] is None
    assert effort["pixels_changed"] == int((drawn > 0).sum())
