"""The committed study reports rebuild from the committed runs, byte for byte: a change to the
report code that moves a published number shows up here (rebuild and commit them on purpose)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from axal.report import write_report
from tests.conftest import ROOT

FULL, STEPS_3000 = "results/runs/tem_full", "results/runs/convergence/tem/steps=3000,lr=0.003"
STUDIES = {  # report folder -> the run folders its README rebuilds it from, in its order
    "results/tem_tile": ["results/runs/tem_tile", STEPS_3000, FULL],
    "results/tem_image": ["results/runs/tem_image", FULL, STEPS_3000],
    "results/sem_tile": ["results/runs/sem_tile"],
    # issue 23's study, in progress: its README reports the seeds every arm has finished
    "results/tem_tile_axonmyelin": ["results/runs/tem_tile_axonmyelin"],
}
IN_PROGRESS = {"results/tem_tile_axonmyelin"}
FILES = ("table.md", "table.csv", "summary.csv", "summary.json", "report.html")
STAMP = re.compile(r"generated \d{4}-\d\d-\d\d \d\d:\d\d UTC")


@pytest.mark.parametrize("study", sorted(STUDIES))
def test_a_committed_report_rebuilds_identically(study, tmp_path, monkeypatch):
    committed = ROOT / study
    if not committed.is_dir():
        pytest.skip(f"{study} is not in this checkout")
    from axal.report import complete_seeds, load_runs

    monkeypatch.chdir(ROOT)  # the reports name the runs by their paths from the repository root
    runs = load_runs(STUDIES[study])
    if study in IN_PROGRESS:  # sweep.py report --complete-seeds
        runs, _ = complete_seeds(runs)
    else:
        runs = [r for r in runs if r.get("_finished")]
    maps = committed / "uncertainty_maps.png"
    if maps.is_file():  # the runs' maps/ are not committed: the report keeps the earlier figure
        shutil.copy(maps, tmp_path / maps.name)
    write_report(runs, tmp_path)
    for name in FILES:
        old, new = (Path(p, name).read_text() for p in (committed, tmp_path))
        if name == "report.html":
            old, new = STAMP.sub("generated <time>", old), STAMP.sub("generated <time>", new)
        assert new == old, f"{study}/{name} no longer rebuilds from its runs"
