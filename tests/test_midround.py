"""Checkpoints inside a round: a run stopped by SIGTERM mid-round resumes from its last
checkpoint and ends bit for bit where an uninterrupted run ends (CPU, deterministic)."""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time

import lightning as L
import pytest
import torch

from axal.interrupt import Interrupted, stop_on_signals
from axal.midround import STATE_KEY, partial_path
from axal.pools import ActiveDataModule
from axal.settings import build_model, load_samples, make_splits
from axal.simulation import run
from axal.training import fit_round

MID = ["trainer.checkpoint_every=4", "trainer.deterministic=true", "trainer.max_restarts=0"]


@pytest.fixture
def signals():
    """Signals raise Interrupted as in run.py; the test's own handlers come back after."""
    old = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    stop_on_signals()
    yield
    for s, handler in old.items():
        signal.signal(s, handler)


class TermAt(L.Callback):
    """Sends this process SIGTERM (what ``timeout`` and SLURM send) after step ``n``."""

    def __init__(self, n: int) -> None:
        self.n = n

    def on_train_batch_end(self, trainer, *_):
        if trainer.global_step == self.n:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1.0)  # the handler raises here, in the main thread


class CountSteps(L.Callback):
    def __init__(self) -> None:
        self.n = 0

    def on_train_batch_end(self, *_):
        self.n += 1


def _datamodule(cfg):
    samples = load_samples(cfg)
    return ActiveDataModule(
        samples,
        make_splits(cfg, samples),
        task=cfg.task,
        patch_size=cfg.dataset.patch_size,
        steps=cfg.trainer.steps,
        batch_size=cfg.dataset.batch_size,
    )


def _fit(cfg, partial, callbacks=(), seed=5):
    dm = _datamodule(cfg)
    make = lambda: build_model(cfg, dm.n_classes)  # noqa: E731
    return fit_round(cfg, dm, make, seed, cfg.trainer.steps, list(callbacks), partial=partial)


def _same_fit(a, b):
    wa, wb = a.model.state_dict(), b.model.state_dict()
    assert wa.keys() == wb.keys()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)  # bit for bit
    assert a.model.loss_history == b.model.loss_history  # what the collapse rule reads
    assert a.train_loss == b.train_loss  # Lightning's epoch mean, across the stop
    assert (a.restarts, a.collapses) == (b.restarts, b.collapses)


def test_a_round_stopped_by_sigterm_resumes_from_its_checkpoint_bit_for_bit(
    cfg_factory, tmp_path, signals, caplog
):
    cfg = cfg_factory("trainer.steps=12", *MID)
    whole = _fit(cfg, tmp_path / "whole" / "round-0.partial.ckpt")
    partial = tmp_path / "stopped" / "round-0.partial.ckpt"
    partial.parent.mkdir()
    with pytest.raises(Interrupted):
        _fit(cfg, partial, [TermAt(6)])
    saved = torch.load(partial, weights_only=False)
    assert saved["global_step"] == 4 and saved[STATE_KEY]["step"] == 4  # the last one, at 4
    assert saved["optimizer_states"] and saved["lr_schedulers"]  # Lightning's part
    assert saved["loops"]["fit_loop"]["state_dict"]["combined_loader"][0]["batches"] == 4
    assert not list(partial.parent.glob(".*tmp*"))  # written atomically: no temp file left

    counter = CountSteps()
    with caplog.at_level(logging.INFO, logger="axal"):
        resumed = _fit(cfg, partial, [counter])
    assert "round-0: continuing from step 4 of 12" in caplog.text
    assert counter.n == 8  # steps 5..12 only
    _same_fit(resumed, whole)


def test_a_mean_teacher_round_resumes_with_its_teacher_bit_for_bit(cfg_factory, tmp_path, signals):
    """trainer/semi=mean_teacher: the EMA teacher and the unlabelled stream's position are in
    the checkpoint, so the resumed round ends where an uninterrupted one does."""
    cfg = cfg_factory("trainer.steps=12", "trainer/semi=mean_teacher", *MID)
    whole = _fit(cfg, tmp_path / "whole" / "round-0.partial.ckpt")
    partial = tmp_path / "stopped" / "round-0.partial.ckpt"
    partial.parent.mkdir()
    with pytest.raises(Interrupted):
        _fit(cfg, partial, [TermAt(6)])
    saved = torch.load(partial, weights_only=False)
    assert any("MeanTeacher" in k and v.get("teacher") for k, v in saved["callbacks"].items())
    resumed = _fit(cfg, partial)
    _same_fit(resumed, whole)
    assert resumed.semi["unlabelled_batches"] == whole.semi["unlabelled_batches"] == 12


def test_a_checkpoint_of_another_round_is_ignored_not_resumed(
    cfg_factory, tmp_path, signals, caplog
):
    cfg = cfg_factory("trainer.steps=12", *MID)
    partial = tmp_path / "round-0.partial.ckpt"
    with pytest.raises(Interrupted):
        _fit(cfg, partial, [TermAt(5)], seed=5)
    counter = CountSteps()
    with caplog.at_level(logging.WARNING, logger="axal"):
        other = _fit(cfg, partial, [counter], seed=6)  # another round's seed
    assert "ignoring" in caplog.text and counter.n == 12  # trained from the start
    _same_fit(other, _fit(cfg, tmp_path / "fresh" / "round-0.partial.ckpt", seed=6))


def _without_timings(results: dict) -> dict:
    for record in results["rounds"]:
        for key in [k for k in record if k.endswith("seconds")]:
            record.pop(key)
        record.get("shared_first_round", {}).pop("train_seconds", None)
    results.pop("resumes", None)
    results["config"].pop("resume", None)
    return results


def test_a_run_killed_inside_round_0_resumes_there_with_the_same_results(
    cfg_factory, tmp_path, signals, caplog
):
    overrides = ["trainer.steps=40", "al.rounds=2", "strategy=mc_dropout", *MID]
    whole = run(cfg_factory(*overrides), tmp_path / "whole")
    stopped = tmp_path / "stopped"
    first = partial_path(stopped / "checkpoints" / "round-0.ckpt")

    def term_once_checkpointed():  # as `timeout` would: at some step after the first checkpoint
        while not first.is_file():
            time.sleep(0.002)
        os.kill(os.getpid(), signal.SIGTERM)

    killer = threading.Thread(target=term_once_checkpointed, daemon=True)
    killer.start()
    with pytest.raises(Interrupted):
        run(cfg_factory(*overrides), stopped)
    killer.join(5)
    on_disk = json.loads((stopped / "results.json").read_text())
    assert on_disk["rounds"] == [] and on_disk["finished"] is False  # stopped inside round 0
    with caplog.at_level(logging.INFO, logger="axal"):
        resumed = run(cfg_factory(*overrides, f"resume={stopped}"), stopped)
    assert "round-0: continuing from step" in caplog.text
    assert _without_timings(resumed) == _without_timings(whole)
    assert not list((stopped / "checkpoints").glob("*.partial.ckpt"))  # gone once recorded
