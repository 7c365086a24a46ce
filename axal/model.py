"""The LightningModule: a staged U-Net, the paper's losses, and whole-image test metrics."""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from torch import nn

from axal.checkpoint import META_KEY
from axal.morphometrics import compare, fiber_summary
from axal.pools import IGNORE
from axal.tiling import sliding_window

LOSSES = ("dice", "weighted_bce", "ce", "dice_ce")


class WeightedBCELoss(nn.Module):
    """The paper's loss: BCE with 0.3 on foreground and 0.7 on background pixels.

    Works on two-class logits (background, foreground): their difference is the binary logit.
    """

    def __init__(self, foreground_weight: float = 0.3, background_weight: float = 0.7) -> None:
        super().__init__()
        self.fg, self.bg = foreground_weight, background_weight

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if logits.shape[1] != 2:
            raise ValueError("model.loss=weighted_bce needs task=myelin (two classes)")
        binary_logit = logits[:, 1] - logits[:, 0]
        known = (target != IGNORE).float()
        y = (target == 1).float()
        weight = (self.fg * y + self.bg * (1 - y)) * known
        loss = F.binary_cross_entropy_with_logits(binary_logit, y, weight=weight, reduction="sum")
        return loss / known.sum().clamp_min(1.0)


def build_loss(name: str, n_classes: int) -> nn.Module:
    """smp's Dice and torch's cross-entropy; Dice on foreground classes only, as the paper.

    Pixels labelled ``IGNORE`` (outside the labelled tiles) never reach any loss.
    """
    if name not in LOSSES:
        raise ValueError(f"model.loss={name!r} is not one of {', '.join(LOSSES)}")
    classes = list(range(1, n_classes))

    def dice() -> nn.Module:
        return smp.losses.DiceLoss(
            "multiclass", classes=classes, from_logits=True, ignore_index=IGNORE
        )

    if name == "dice":
        return dice()
    if name == "weighted_bce":
        return WeightedBCELoss()
    if name == "ce":
        return nn.CrossEntropyLoss(ignore_index=IGNORE)
    return _Sum(dice(), nn.CrossEntropyLoss(ignore_index=IGNORE))


class _Sum(nn.Module):
    def __init__(self, *losses: nn.Module) -> None:
        super().__init__()
        self.losses = nn.ModuleList(losses)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return sum(loss(logits, target) for loss in self.losses)


def scores_from_stats(
    tp: torch.Tensor, fp: torch.Tensor, fn: torch.Tensor, tn: torch.Tensor
) -> dict[str, float | None]:
    """Dice per class, IoU, precision and sensitivity from per-class pixel counts (C,).

    Counts are summed over all test images first (micro average): small images don't weigh
    more than large ones. ``dice`` is the mean over foreground classes.
    """
    stats = [s[None] for s in (tp, fp, fn, tn)]
    dice = smp.metrics.f1_score(*stats, reduction="none")[0]
    iou = smp.metrics.iou_score(*stats, reduction="none")[0]
    prec = smp.metrics.precision(*stats, reduction="none", zero_division=0)[0]
    sens = smp.metrics.sensitivity(*stats, reduction="none", zero_division=0)[0]
    fg = slice(1, None)
    out: dict[str, float | None] = {
        "dice": float(dice[fg].mean()),
        "dice_myelin": float(dice[1]),
        "dice_axon": float(dice[2]) if len(dice) > 2 else None,
        "iou": float(iou[fg].mean()),
        "precision": float(prec[fg].mean()),
        "sensitivity": float(sens[fg].mean()),
    }
    return out


class SegModel(L.LightningModule):
    """U-Net for myelin (2 classes) or axon+myelin (3 classes) segmentation.

    ``net`` is any :class:`axal.networks.StagedNet` (built by Hydra from ``model.net``), so the
    MC-dropout engine can split it into a cached prefix and a stochastic suffix. The learning
    rate warms up linearly over the first ``warmup`` share of the round's optimizer steps, then
    follows a cosine to zero: the weights that are tested come from the end of a decay.

    ``channels_last`` stores the weights, and so every activation, as NHWC (faster convolutions
    on CPU; ``docs/engine.md``). Inference (test, collapse check, MC dropout, predict, annotate)
    always runs in fp32, outside ``trainer.precision``'s autocast, with the same memory format.
    """

    def __init__(
        self,
        net: nn.Module,
        n_classes: int = 2,
        loss: str = "dice",
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        patch_size: int = 256,
        overlap: int = 32,
        eval_batch_size: int = 4,
        cosine: bool = True,
        warmup: float = 0.05,
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["net"])
        self.net = net.to(memory_format=torch.channels_last) if channels_last else net
        self.loss_fn = build_loss(loss, n_classes)
        self._counts: dict[str, torch.Tensor] = {}
        self._fibers: dict[str, list[dict]] | None = None
        self._losses: list[torch.Tensor] = []
        self.loss_history: list[float] = []
        self.test_metrics: dict[str, Any] = {}
        # what predictions need besides the weights (checkpoint.describe_model), saved with them
        self.meta: dict[str, Any] | None = None
        # semi-supervised training (axal.mean_teacher), set by axal.training.fit_round; a plain
        # attribute, so neither the teacher nor its settings enter the checkpoint
        self.semi: Any = None

    def configure_callbacks(self) -> list[L.Callback]:
        trainer = self._trainer
        if self.semi is None or (trainer is not None and self.semi in trainer.callbacks):
            return []
        return [self.semi]

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.meta is not None:
            checkpoint[META_KEY] = self.meta

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.meta = checkpoint.get(META_KEY, self.meta)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.hparams.get("channels_last"):
            x = x.contiguous(memory_format=torch.channels_last)
        return self.net(x)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor] | dict, batch_idx: int):
        """The supervised loss; plus the consistency term when the batch is a dict of a
        ``labelled`` and an ``unlabelled`` batch (trainer.semi). ``train_loss`` and the loss
        history (the collapse check) stay the supervised term."""
        unlabelled = None
        if isinstance(batch, dict):
            batch, unlabelled = batch["labelled"], batch["unlabelled"]
        x, y = batch
        loss = self.loss_fn(self(x), y)
        self._losses.append(loss.detach())  # no per-step device sync; read once at the end
        self.log(
            "train_loss", loss, prog_bar=True, on_step=False, on_epoch=True, batch_size=x.shape[0]
        )
        if unlabelled is None or self.semi is None:
            return loss
        consistency = self.semi.loss(self, unlabelled)
        self.log(
            "train_consistency", consistency, on_step=False, on_epoch=True, batch_size=x.shape[0]
        )
        return loss + consistency

    def on_train_start(self) -> None:
        self._losses = []

    def on_train_end(self) -> None:
        self.loss_history = torch.stack(self._losses).float().cpu().tolist() if self._losses else []
        self._losses = []

    @torch.no_grad()
    def predict_image(self, image: torch.Tensor) -> torch.Tensor:
        """Class probabilities (C, H, W) of a whole (1, H, W) image by sliding windows, in fp32
        also under a bf16 trainer (its autocast is switched off here)."""
        hp = self.hparams
        with torch.autocast(self.device.type, enabled=False):
            return sliding_window(
                lambda t: torch.softmax(self(t), dim=1),
                image,
                patch=hp.patch_size,
                overlap=hp.overlap,
                batch_size=hp.eval_batch_size,
            )

    def _count(self, batch: dict[str, Any]) -> None:
        image, mask = batch["image"][0], batch["mask"][0]
        pred = self.predict_image(image).argmax(0)
        tp, fp, fn, tn = smp.metrics.get_stats(
            pred[None], mask[None].long(), mode="multiclass", num_classes=self.hparams.n_classes
        )
        counts = torch.stack([tp[0], fp[0], fn[0], tn[0]])
        subject = batch.get("subject", ["all"])[0]
        old = self._counts.get(subject)
        self._counts[subject] = counts if old is None else old + counts
        if self._fibers is not None and self.hparams.n_classes == 3:
            size = float(batch["pixel_size"][0]) if "pixel_size" in batch else float("nan")
            size = size if size == size else 1.0  # unknown: measured in pixels
            found = compare(pred.cpu().numpy(), mask.cpu().numpy(), size)
            self._fibers.setdefault(subject, []).append(found)

    def _finish(self, prefix: str) -> dict[str, Any]:
        assert self._counts, "no evaluation image"
        total = sum(self._counts.values())
        metrics = scores_from_stats(*total)
        if len(self._counts) > 1 or "all" not in self._counts:
            metrics["per_subject"] = {
                subject: {k: v for k, v in scores_from_stats(*c).items() if k.startswith("dice")}
                for subject, c in sorted(self._counts.items())
            }
        self._counts = {}
        if self._fibers:
            metrics.update(fiber_summary([f for fs in self._fibers.values() for f in fs]))
            for subject, found in self._fibers.items():
                metrics.setdefault("per_subject", {}).setdefault(subject, {}).update(
                    fiber_summary(found)
                )
            self._fibers = {}
        loggable = {f"{prefix}_{k}": v for k, v in metrics.items() if isinstance(v, float)}
        self.log_dict(loggable, prog_bar=prefix == "val")
        return metrics

    def on_validation_epoch_start(self) -> None:
        self._counts, self._fibers = {}, None

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._count(batch)

    def on_validation_epoch_end(self) -> None:
        self._finish("val")

    def on_test_epoch_start(self) -> None:
        self._counts, self._fibers = {}, {}  # fibers and morphometrics: test only

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._count(batch)

    def on_test_epoch_end(self) -> None:
        self.test_metrics = self._finish("test")

    def configure_optimizers(self):
        optimizer = torch.optim.Adam(
            self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay
        )
        if not self.hparams.cosine:
            return optimizer
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warm = int(round(self.hparams.warmup * total))
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: lr_factor(s, total, warm)
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }


def lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warm-up over ``warmup`` steps, then a cosine from 1 to 0 at step ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.5 * (1.0 + math.cos(math.pi * progress))
