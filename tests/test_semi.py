"""Semi-supervised rounds (trainer/semi=mean_teacher): what the unlabelled pixels do to the
student, which pixels count, where the unlabelled patches come from, and that semi=none is the
supervised training it always was."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import CombinedLoader
from omegaconf import OmegaConf

import axal.rounds as rounds
import axal.settings as settings
import axal.simulation as simulation
from axal.data import make_synthetic
from axal.errors import ConfigError
from axal.first_round import entry_dir
from axal.mean_teacher import MeanTeacher, consistency_loss, make_semi, sigmoid_rampup
from axal.pools import ActiveDataModule, unit_splits
from axal.report import strategy_name
from axal.training import fit_round
from tests.conftest import FAST, compose_cfg


def tile_dm(unlabelled_batch: int = 0, augment: bool = True) -> ActiveDataModule:
    """Four 64 px synthetic images in 32 px tiles; two tiles of the first image labelled."""
    samples = make_synthetic(n_images=4, size=64, n_subjects=4, seed=0)
    ids = [s.id for s in samples]
    images = {"test": [], "val": [], "initial": ids[:1], "pool": ids[1:]}
    shapes = {s.id: s.image.shape for s in samples}
    splits = unit_splits(images, shapes, "tile", 32, n_initial=2, seed=0)
    first = [u for u in splits["initial"] + splits["pool"] if u.startswith(ids[0])][:2]
    rest = [u for u in splits["initial"] + splits["pool"] if u not in first]
    dm = ActiveDataModule(
        samples,
        {"test": [], "val": [], "initial": first, "pool": rest},
        patch_size=32,
        steps=3,
        batch_size=2,
        augment=augment,
    )
    dm.unlabelled_batch_size = unlabelled_batch
    return dm


def first_batch(loader) -> object:
    batch = next(iter(loader))
    return batch[0] if isinstance(loader, CombinedLoader) else batch


def test_the_consistency_step_moves_the_student_toward_the_teacher_and_keeps_the_labelled_loss():
    """Only the consistency term: one step reduces the student's disagreement with the teacher
    on the unlabelled patches. With it: the supervised term is the semi=none module's own."""
    cfg = compose_cfg(FAST)
    torch.manual_seed(0)
    student = settings.build_model(cfg, 2)
    torch.manual_seed(1)
    other = settings.build_model(cfg, 2)  # a teacher that disagrees: other weights
    semi = MeanTeacher(threshold=0.0, ramp_steps=0)
    semi.reset(other.net)
    dm = tile_dm(unlabelled_batch=4)
    torch.manual_seed(2)
    batch = first_batch(dm.train_dataloader())
    unlabelled = batch["unlabelled"]
    with torch.no_grad():
        target = semi.teacher(unlabelled["weak"]).argmax(1)
    free = unlabelled["unlabelled"]
    assert free.any()

    def disagreement() -> float:
        torch.manual_seed(3)  # the same dropout masks before and after
        with torch.no_grad():
            ce = F.cross_entropy(student(unlabelled["strong"]), target, reduction="none")
        return float(ce[free].mean())

    before = disagreement()
    optimizer = torch.optim.SGD(student.parameters(), lr=0.05)
    torch.manual_seed(3)
    semi.loss(student, unlabelled).backward()
    optimizer.step()
    assert disagreement() < before

    # the supervised term of a semi step is the value a supervised module computes
    supervised = copy.deepcopy(student)
    student.semi = semi
    torch.manual_seed(4)
    total = student.training_step(batch, 0)
    torch.manual_seed(4)
    alone = supervised.training_step(batch["labelled"], 0)
    assert torch.equal(student._losses[-1], alone)
    assert total > alone  # plus a positive consistency term


@pytest.mark.parametrize("kind", ["ce", "mse"])
def test_pixels_below_the_threshold_or_labelled_contribute_nothing(kind):
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 8, 8, requires_grad=True)
    confident = torch.rand(2, 8, 8) > 0.5
    top = torch.where(confident, 0.95, 0.6)  # the teacher's largest class probability
    probs = torch.stack([top, (1 - top) / 2, (1 - top) / 2], dim=1)
    unlabelled = torch.ones(2, 8, 8, dtype=torch.bool)
    unlabelled[:, :2] = False  # two rows of labelled pixels
    loss, keep = consistency_loss(logits, probs, unlabelled, threshold=0.9, kind=kind)
    loss.backward()
    grad = logits.grad.abs().sum(1)
    assert torch.equal(keep, confident & unlabelled)
    assert (grad[~keep] == 0).all() and (grad[keep] > 0).all()
    # whatever the student predicts there, the loss does not change
    edited = logits.detach().clone()
    edited[(~keep)[:, None].expand_as(edited)] = 50.0
    again, _ = consistency_loss(edited, probs, unlabelled, threshold=0.9, kind=kind)
    assert torch.equal(again, loss.detach())
    nothing, _ = consistency_loss(logits, probs, unlabelled, threshold=0.99, kind=kind)
    assert nothing.item() == 0.0


def test_the_consistency_weight_ramps_up_to_its_value():
    ramp = [sigmoid_rampup(s, 100) for s in range(0, 151, 10)]
    assert ramp[0] == pytest.approx(np.exp(-5)) and ramp[10] == ramp[-1] == 1.0
    assert all(a < b for a, b in zip(ramp[:10], ramp[1:11]))
    assert sigmoid_rampup(0, 0) == 1.0


def test_unlabelled_patches_come_from_the_pool_and_the_unlabelled_rest_of_labelled_images():
    dm = tile_dm(unlabelled_batch=2, augment=False)
    maps = dm.unlabelled_maps()
    first = dm.units[dm.labelled[0]].image
    assert set(maps) == {dm.units[u].image for u in dm.unlabelled}  # every image with a pool unit
    expected = np.ones((64, 64), dtype=np.uint8)
    for unit_id in dm.labelled:
        expected[dm.units[unit_id].slices] = 0
    assert np.array_equal(maps[first], expected)  # its labelled tiles are not unlabelled
    assert all(m.all() for i, m in maps.items() if i != first)
    loader = dm._unlabelled_loader(labelled_seed=5)
    assert sorted(u.id for _, _, u in loader.dataset.regions) == sorted(dm.unlabelled)
    assert len(loader) == dm.steps  # one unlabelled batch per optimizer step
    item = loader.dataset[0]
    weak, strong = item["weak"][0].numpy(), item["strong"][0].numpy()
    assert weak.shape == strong.shape == item["unlabelled"].shape == (32, 32)
    assert not np.array_equal(weak, strong)
    # the strong view changes intensities only: the same pixels, strongly correlated
    assert np.corrcoef(weak.ravel(), strong.ravel())[0, 1] > 0.8


def test_the_labelled_stream_is_the_same_with_or_without_unlabelled_batches():
    plain = tile_dm(unlabelled_batch=0)
    semi = tile_dm(unlabelled_batch=2)
    torch.manual_seed(7)
    loader = plain.train_dataloader()
    after_plain = torch.rand(1)
    torch.manual_seed(7)
    combined = semi.train_dataloader()
    assert torch.equal(torch.rand(1), after_plain)  # torch's RNG (dropout, ...) left alone
    alone = list(loader)
    assert isinstance(combined, CombinedLoader) and not isinstance(alone, CombinedLoader)
    both = [batch for batch, _, _ in iter(combined)]
    assert len(both) == len(alone) == plain.steps
    for (x, y), batch in zip(alone, both):
        assert torch.equal(x, batch["labelled"][0]) and torch.equal(y, batch["labelled"][1])
        assert batch["unlabelled"]["weak"].shape == (2, 1, 32, 32)


def _weights(model) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_semi_none_is_the_supervised_training_of_before(tmp_path):
    """semi=none (the default) and a config from before trainer.semi existed train the same
    weights bit for bit; no teacher, no unlabelled loader, no ``semi`` record."""
    cfg = compose_cfg([*FAST, "trainer.steps=4"])
    assert cfg.trainer.semi.name == "none" and make_semi(cfg) is None
    old = copy.deepcopy(cfg)
    OmegaConf.set_struct(old, False)
    del old.trainer["semi"]

    def fit(c):
        dm = tile_dm()
        result = fit_round(c, dm, lambda: settings.build_model(c, dm.n_classes), 11, 4)
        assert dm.unlabelled_batch_size == 0 and not isinstance(
            dm.train_dataloader(), CombinedLoader
        )
        return result

    new, before = fit(cfg), fit(old)
    assert new.model.configure_callbacks() == [] and new.semi is None
    a, b = _weights(new.model), _weights(before.model)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert new.model.loss_history == before.model.loss_history


def test_a_mean_teacher_run_keeps_the_step_budget_and_records_its_cost(tmp_path, monkeypatch):
    steps = []
    real = rounds.fit_round

    def spy(*args, **kwargs):
        fit = real(*args, **kwargs)
        steps.append(fit.trainer.global_step)
        return fit

    monkeypatch.setattr(rounds, "fit_round", spy)
    over = ["al.unit=tile", "al.tile_size=32", "al.initial=2", "trainer.steps=3"]
    cfg = compose_cfg([*FAST, *over, "trainer/semi=mean_teacher"])
    saved = simulation.run(cfg, tmp_path / "mt")
    assert steps == [3, 3]  # the supervised arm's optimizer steps
    for record in saved["rounds"]:
        assert record["steps"] == 3 and record["train_seconds"] > 0
        assert record["semi"]["method"] == "mean_teacher"
        assert record["semi"]["unlabelled_batches"] == 3
    plain = simulation.run(compose_cfg([*FAST, *over]), tmp_path / "none")
    assert all("semi" not in r and r["train_seconds"] > 0 for r in plain["rounds"])


def test_a_run_loading_a_shared_mean_teacher_round_0_records_what_the_teacher_did(tmp_path):
    """The shared round 0 carries its semi record: the strategy that loads it says how many
    unlabelled batches trained it and how many pixels counted, as the one that trained it."""
    over = ["al.unit=tile", "al.tile_size=32", "al.initial=2", "trainer.steps=3"]
    cache = f"al.first_round_cache={tmp_path / 'shared'}"
    common = [*FAST, *over, "trainer/semi=mean_teacher", cache]
    trained = simulation.run(compose_cfg([*common, "strategy=random"]), tmp_path / "random")
    loaded = simulation.run(compose_cfg([*common, "strategy=bald"]), tmp_path / "bald")
    first, second = trained["rounds"][0], loaded["rounds"][0]
    assert second["shared_first_round"]["trained_here"] is False
    assert second["semi"] == first["semi"]
    assert second["semi"]["unlabelled_batches"] == 3


def test_semi_settings_change_the_round_0_cache_key(tmp_path):
    splits = {"test": ["a"], "val": [], "initial": ["c"], "pool": ["d"]}

    def entry(*overrides: str):
        config = OmegaConf.to_container(compose_cfg(list(overrides)), resolve=True)
        return entry_dir(tmp_path, config, splits)

    base = entry()
    teacher = entry("trainer/semi=mean_teacher")
    assert teacher != base
    assert entry("trainer/semi=mean_teacher", "trainer.semi.threshold=0.8") != teacher
    # a mean teacher joining later trains round 0 as the supervised arm, whatever its settings
    late = ["trainer/semi=mean_teacher", "trainer.semi.from_round=1"]
    assert entry(*late) == base
    assert entry(*late, "trainer.semi.threshold=0.8") == base
    # a config from before from_round existed keeps its entries
    old = OmegaConf.to_container(compose_cfg(["trainer/semi=mean_teacher"]), resolve=True)
    del old["trainer"]["semi"]["from_round"]
    assert entry_dir(tmp_path, old, splits) == teacher


def test_a_mean_teacher_from_round_1_trains_round_0_as_the_supervised_arm_then_joins(tmp_path):
    """trainer.semi.from_round=1: round 0 is the supervised arm's own (loaded from its shared
    entry, no semi record), and the mean teacher trains the later rounds; the run is its own
    arm in the report."""
    over = ["al.unit=tile", "al.tile_size=32", "al.initial=2", "trainer.steps=3"]
    cache = f"al.first_round_cache={tmp_path / 'shared'}"
    supervised = simulation.run(compose_cfg([*FAST, *over, cache]), tmp_path / "none")
    late_cfg = compose_cfg(
        [*FAST, *over, cache, "trainer/semi=mean_teacher", "trainer.semi.from_round=1"]
    )
    late = simulation.run(late_cfg, tmp_path / "late")
    first, second = late["rounds"]
    assert first["shared_first_round"]["trained_here"] is False
    assert "semi" not in first and first["train_loss"] == supervised["rounds"][0]["train_loss"]
    assert second["semi"]["method"] == "mean_teacher"
    assert second["semi"]["unlabelled_batches"] == 3
    assert "semi" not in supervised["rounds"][1]
    assert strategy_name(late) == "random+mean_teacher_from_round1"
    assert strategy_name(supervised) == "random"
    assert strategy_name({**late, "label": None}) == "random+mean_teacher_from_round1"


def test_bad_semi_settings_are_refused_naming_them(cfg_factory):
    with pytest.raises(ConfigError, match="trainer/semi=mean_teacher"):
        settings.check_config(cfg_factory("trainer.semi=mean_teacher"))
    with pytest.raises(ConfigError, match=r"trainer\.semi\.threshold=2"):
        settings.check_config(cfg_factory("trainer/semi=mean_teacher", "trainer.semi.threshold=2"))
    with pytest.raises(ConfigError, match="consistency"):
        settings.check_config(
            cfg_factory("trainer/semi=mean_teacher", "trainer.semi.consistency=l1")
        )
    with pytest.raises(ConfigError, match=r"trainer\.semi\.from_round=-1"):
        settings.check_config(
            cfg_factory("trainer/semi=mean_teacher", "trainer.semi.from_round=-1")
        )


def test_a_sweep_over_trainer_semi_names_its_jobs_and_labels_them(tmp_path):
    from axal.sweep import expand

    cfg = compose_cfg([*FAST, f"sweep.dir={tmp_path}"])
    OmegaConf.set_struct(cfg, False)
    cfg.sweep.grid = {"trainer/semi": ["none", "mean_teacher"], "seed": [0]}  # as in YAML
    jobs = expand(cfg, [])
    assert [j.run_dir.relative_to(tmp_path) for j in jobs] == [
        Path("semi=none/seed0"),
        Path("semi=mean_teacher/seed0"),
    ]
    labels = [settings.run_label(compose_cfg([*FAST, *j.overrides[-2:]])) for j in jobs]
    assert labels == ["random", "random+mean_teacher"]


def test_the_teacher_follows_the_student_and_keep_teacher_keeps_it():
    cfg = compose_cfg(FAST)
    student = settings.build_model(cfg, 2)
    semi = MeanTeacher(ema_decay=0.9, keep="teacher")
    semi.reset(student.net)
    start = {k: v.clone() for k, v in semi.teacher.state_dict().items()}
    with torch.no_grad():
        for p in student.net.parameters():
            p.add_(1.0)
    for _ in range(3):
        semi.update(student.net)
    # decays 0.5, 0.667, 0.75 (warming up to 0.9): the weights moved 1 - 0.5 * 0.667 * 0.75
    for name, p in semi.teacher.named_parameters():
        assert torch.allclose(p - start[name], torch.full_like(p, 0.75), atol=1e-5), name
    for (name, b), s in zip(semi.teacher.named_buffers(), student.net.buffers()):
        assert torch.equal(b, s), name  # BatchNorm statistics: copied, not averaged
    teacher = {k: v.clone() for k, v in semi.teacher.state_dict().items()}
    semi.on_train_end(None, student)
    assert all(torch.equal(student.net.state_dict()[k], v) for k, v in teacher.items())
    assert semi.teacher is None  # its memory is freed after the round
