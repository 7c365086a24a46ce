"""``sweep.new=true``: a sweep rerun with changed settings starts a new folder, never mixing."""

from __future__ import annotations

import json

from tests.conftest import compose_cfg
from tests.test_sweep import one_job_sweep


def test_sweep_new_starts_a_new_folder_when_the_settings_changed(tmp_path):
    sweep = one_job_sweep(tmp_path / "a")

    assert sweep("sweep.new=true").returncode == 0  # nothing there yet: sweep.dir itself
    assert not (tmp_path / "a-2").exists()
    steps = compose_cfg(["experiment=smoke"]).trainer.steps
    changed = sweep(f"trainer.steps={steps + 1}", "sweep.new=true")
    assert changed.returncode == 0, changed.stdout[-3000:] + changed.stderr[-3000:]
    assert f"sweeping in {tmp_path / 'a-2'}" in changed.stdout
    job = "strategy=random/seed0/results.json"
    old = json.loads((tmp_path / "a" / job).read_text())
    new = json.loads((tmp_path / "a-2" / job).read_text())
    assert old["config"]["trainer"]["steps"] == steps  # the old sweep is left as it was
    assert new["config"]["trainer"]["steps"] == steps + 1 and new["finished"]
    assert (tmp_path / "a-2" / "report").is_dir()
    again = sweep(f"trainer.steps={steps + 1}", "sweep.new=true")  # the same command resumes
    assert again.returncode == 0 and "1 already finished" in again.stdout, again.stderr[-3000:]
    assert not (tmp_path / "a-3").exists()
