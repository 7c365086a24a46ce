"""Mean-teacher rounds: the pool's unlabelled pixels train the student through an EMA teacher.

``trainer/semi=mean_teacher`` (docs/semi.md). Every optimizer step of a round takes the usual
labelled batch and, from :class:`axal.pools.ActiveDataModule`, a batch of patches centred in
unlabelled units (the pool, including the unlabelled tiles of tile-labelled images) in two
views with the same pixels: a weak one (the labelled stream's augmentation) and a strong one
(that patch after intensity, contrast, noise and blur changes). The teacher, an exponential
moving average of the student's weights (Tarvainen & Valpola 2017, arXiv 1703.01780), predicts
the weak view; where its softmax is at least ``threshold`` and the pixel is unlabelled, the
student's prediction of the strong view is pulled towards it (cross-entropy to the teacher's
class, FixMatch/UniMatch style, or the squared distance of the softmaxes, UA-MT's
arXiv 1907.07034). The consistency weight ramps up as ``weight * exp(-5 (1 - t)^2)``,
t = step / ``ramp_steps`` (Laine & Aila 2017), so an untrained teacher says little.

The supervised term is unchanged: the student's labelled forward is the supervised arm's own
(its batch, its value), and the round keeps its optimizer steps; the unlabelled forward,
backward and teacher forward are the extra cost (``train_seconds`` in the round records).

With ``from_round=k`` the rounds before k train supervised only: the mean teacher joins once
a round starts from a trained model (round k fine-tunes round k - 1's), rather than from two
labelled tiles and a random teacher, where it costs Dice and can collapse. Round 0 is then the
supervised arm's round 0, and shares its :mod:`axal.first_round` entry.

The teacher copies the student at the start of each round's training (a fine-tuned round's
teacher starts from the previous round's model). Its BatchNorm buffers are copied from the
student after every step, not averaged: they are already moving averages (momentum 0.1) of
the student's activations, an average of averages would lag twice, and the batch counter is an
integer. The teacher predicts in eval mode (no dropout, running statistics): a deterministic
target. The model kept (tested, scoring the pool, saved) is the student, or the teacher with
``keep=teacher``.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

METHODS = ("none", "mean_teacher")
CONSISTENCY = ("ce", "mse")


def sigmoid_rampup(step: int, ramp_steps: int) -> float:
    """exp(-5 (1 - t)^2) for t = step / ramp_steps in [0, 1]; 1 without a ramp."""
    if ramp_steps <= 0:
        return 1.0
    t = min(1.0, max(0.0, step / ramp_steps))
    return math.exp(-5.0 * (1.0 - t) ** 2)


def consistency_loss(
    student_logits: torch.Tensor,
    teacher_probs: torch.Tensor,
    unlabelled: torch.Tensor,
    threshold: float,
    kind: str = "ce",
) -> tuple[torch.Tensor, torch.Tensor]:
    """The per-pixel consistency of (B, C, H, W) student logits with the teacher's softmax,
    summed over the confident unlabelled pixels and divided by all unlabelled pixels (a pixel
    below ``threshold`` or labelled adds nothing, and its gradient is zero). Returns the loss
    and the mask of pixels that count."""
    confidence, target = teacher_probs.max(dim=1)
    keep = unlabelled & (confidence >= threshold)
    if kind == "ce":
        per_pixel = F.cross_entropy(student_logits, target, reduction="none")
    elif kind == "mse":
        per_pixel = (torch.softmax(student_logits, dim=1) - teacher_probs).pow(2).sum(dim=1)
    else:
        raise ValueError(f"trainer.semi.consistency={kind!r} is not one of {CONSISTENCY}")
    total = torch.where(keep, per_pixel, torch.zeros_like(per_pixel)).sum()
    return total / unlabelled.sum().clamp_min(1), keep


class MeanTeacher(L.Callback):
    """The EMA teacher and the consistency term; a Callback that the model brings along.

    :class:`axal.model.SegModel` adds :meth:`loss` of the unlabelled batch to its supervised
    loss in ``training_step`` and returns this object from ``configure_callbacks``; the
    teacher is made in ``on_train_start`` and follows the student in ``on_train_batch_end``.
    """

    def __init__(
        self,
        ema_decay: float = 0.99,
        threshold: float = 0.9,
        weight: float = 1.0,
        ramp_steps: int = 300,
        consistency: str = "ce",
        batch_size: int | None = None,
        keep: str = "student",
        from_round: int = 0,
    ) -> None:
        checks = {
            "ema_decay": 0.0 <= ema_decay < 1.0,
            "threshold": 0.0 <= threshold <= 1.0,
            "weight": weight >= 0.0,
            "ramp_steps": isinstance(ramp_steps, int) and ramp_steps >= 0,
            "consistency": consistency in CONSISTENCY,
            "batch_size": batch_size is None or (isinstance(batch_size, int) and batch_size > 0),
            "keep": keep in ("student", "teacher"),
            "from_round": isinstance(from_round, int)
            and not isinstance(from_round, bool)
            and from_round >= 0,
        }
        given = {
            "ema_decay": ema_decay,
            "threshold": threshold,
            "weight": weight,
            "ramp_steps": ramp_steps,
            "consistency": consistency,
            "batch_size": batch_size,
            "keep": keep,
            "from_round": from_round,
        }
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            values = ", ".join(f"trainer.semi.{k}={given[k]!r}" for k in bad)
            raise ValueError(
                f"{values}: ema_decay in [0, 1), threshold in [0, 1], weight >= 0, ramp_steps "
                f"an integer >= 0, consistency one of {CONSISTENCY}, batch_size null or >= 1, "
                "keep student or teacher, from_round an integer >= 0"
            )
        self.ema_decay, self.threshold, self.weight = ema_decay, threshold, weight
        self.ramp_steps, self.kind, self.batch_size, self.keep = (
            ramp_steps,
            consistency,
            batch_size,
            keep,
        )
        self.from_round = from_round
        self.teacher: nn.Module | None = None
        self.steps = 0  # optimizer steps of this round's training so far
        self._confident: list[torch.Tensor] = []
        self._losses: list[torch.Tensor] = []

    # ------------------------------------------------------------------ the teacher

    def reset(self, student: nn.Module) -> None:
        """A new teacher: a frozen copy of the student, predicting in eval mode."""
        self.teacher = copy.deepcopy(student).eval().requires_grad_(False)
        self.steps = 0
        self._confident, self._losses = [], []

    @torch.no_grad()
    def update(self, student: nn.Module) -> None:
        """One EMA step after an optimizer step; the decay warms up as 1 - 1/(step + 1)."""
        assert self.teacher is not None, "the teacher is made in on_train_start"
        self.steps += 1
        decay = min(self.ema_decay, 1.0 - 1.0 / (self.steps + 1))
        for t, s in zip(self.teacher.parameters(), student.parameters()):
            t.lerp_(s.detach(), 1.0 - decay)
        for t, s in zip(self.teacher.buffers(), student.buffers()):
            t.copy_(s)

    def current_weight(self) -> float:
        return self.weight * sigmoid_rampup(self.steps, self.ramp_steps)

    def loss(
        self, student: Callable[[torch.Tensor], torch.Tensor], batch: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        """The weighted consistency of ``student(strong)`` with the teacher's ``weak`` view."""
        assert self.teacher is not None, "the teacher is made in on_train_start"
        with torch.no_grad():
            probs = torch.softmax(self.teacher(batch["weak"]).float(), dim=1)
        logits = student(batch["strong"]).float()
        value, keep = consistency_loss(
            logits, probs, batch["unlabelled"], self.threshold, self.kind
        )
        self._confident.append(keep.sum() / batch["unlabelled"].sum().clamp_min(1))
        self._losses.append(value.detach())
        return self.current_weight() * value

    def summary(self) -> dict[str, Any]:
        """What the round's record says about it (read once: no per-step device sync)."""
        confident = torch.stack(self._confident).float().mean().item() if self._confident else 0.0
        last = torch.stack(self._losses[-max(1, len(self._losses) // 10) :]).mean().item()
        return {
            "method": "mean_teacher",
            "unlabelled_batches": len(self._losses),
            "confident_share": round(float(confident), 4),  # unlabelled pixels used, mean
            "consistency_last": round(float(last), 5) if self._losses else None,
            "weight_last": round(self.current_weight(), 4),
        }

    # ------------------------------------------------------------------ Lightning hooks

    def state_dict(self) -> dict[str, Any]:
        """The teacher inside a mid-round checkpoint (Lightning saves callbacks' states), so a
        resumed round goes on with the teacher an uninterrupted one would have."""
        if self.teacher is None:
            return {}
        return {
            "teacher": self.teacher.state_dict(),
            "steps": self.steps,
            "confident": [float(c) for c in self._confident],
            "losses": [float(v) for v in self._losses],
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._resume = state_dict or None  # applied in on_train_start, after the student's

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.reset(pl_module.net)
        resume, self._resume = getattr(self, "_resume", None), None
        if resume:
            self.teacher.load_state_dict(resume["teacher"])
            self.steps = int(resume["steps"])
            self._confident = [torch.tensor(c) for c in resume["confident"]]
            self._losses = [torch.tensor(v) for v in resume["losses"]]

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any
    ) -> None:
        self.update(pl_module.net)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.keep == "teacher":
            pl_module.net.load_state_dict(self.teacher.state_dict())
        self.teacher = None  # its memory; the next round's training makes a new one


def make_semi(cfg: DictConfig, round_index: int = 0) -> MeanTeacher | None:
    """``trainer.semi``'s method for round ``round_index``, or None for supervised training
    (``none``, no setting, or a round before ``trainer.semi.from_round``)."""
    semi = cfg.trainer.get("semi")
    if semi is None:
        return None
    if not OmegaConf.is_dict(semi):
        raise ValueError(
            f"trainer.semi={semi!r} sets a value, not the method: choose the config group with "
            f"trainer/semi={semi} (one of {', '.join(METHODS)}); its settings are then "
            "trainer.semi.threshold=... etc."
        )
    params = OmegaConf.to_container(semi, resolve=True)
    name = params.pop("name", None)
    if name not in METHODS:
        raise ValueError(f"trainer.semi.name={name!r} is not one of {', '.join(METHODS)}")
    if name == "none":
        return None
    try:
        semi = instantiate(params)
    except InstantiationException as err:
        raise ValueError(f"trainer/semi={name}: {err.__cause__ or err}") from err
    return None if round_index < semi.from_round else semi
