"""What a model checkpoint carries, and reading it back with errors that say what is wrong.

A checkpoint must be enough to segment new images long after its run, without the run's config:
the network's config (``model.net``), the module's (loss, inference window, overlap), the task
and its classes, and the pixel size and patch size the model was trained at. ``SegModel`` writes
these under the ``"axal"`` key of every checkpoint it saves (see :func:`describe_model`);
predictions and fine-tuning read them back here, and refuse a checkpoint of another task or
another tool.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from axal.domain import CLASS_NAMES, TASKS

META_KEY = "axal"
VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint that cannot serve here; the message names the file and what is wrong."""


def describe_model(cfg: DictConfig) -> dict[str, Any]:
    """The checkpoint's ``"axal"`` entry for a model built from ``cfg`` (plain containers)."""
    n = TASKS[str(cfg.task)]
    module = OmegaConf.to_container(cfg.model.module, resolve=True)
    return {
        "version": VERSION,
        "task": str(cfg.task),
        "n_classes": n,
        "classes": list(CLASS_NAMES[:n]),
        "net": OmegaConf.to_container(cfg.model.net, resolve=True),
        "module": module,
        "pixel_size": cfg.dataset.get("pixel_size"),  # um/pixel the images were resampled to
        "patch_size": int(cfg.dataset.patch_size),  # training patches
        "infer_size": int(module.get("patch_size", cfg.dataset.get("infer_size", 256))),
        "overlap": int(module.get("overlap", 32)),
        "dataset": str(cfg.dataset.name),
    }


def read(path: str | Path) -> dict[str, Any]:
    """The checkpoint dict of an axal model; CheckpointError if it is missing or foreign."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu")
    except Exception as err:  # pickle, zip and torch errors all mean "not a checkpoint"
        raise CheckpointError(f"cannot read checkpoint {path}: {err}") from err
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise CheckpointError(f"{path} is not a Lightning checkpoint (no state_dict)")
    meta = ckpt.get(META_KEY)
    if not isinstance(meta, dict) or "task" not in meta or "net" not in meta:
        raise CheckpointError(
            f"{path} is not an axal model checkpoint: it lacks the '{META_KEY}' entry with the "
            "task and network config (train one with run.py or annotate.py)"
        )
    return ckpt


def check_task(meta: dict[str, Any], task: str | None, path: str | Path) -> None:
    """Refuse a checkpoint trained for another task, naming both tasks."""
    if task is not None and meta["task"] != str(task):
        raise CheckpointError(
            f"checkpoint {path} was trained for task={meta['task']} "
            f"({', '.join(meta.get('classes', []))}), but this command asks for task={task}"
        )


def load_model(path: str | Path, task: str | None = None) -> tuple[L.LightningModule, dict]:
    """(model in eval mode on CPU, its ``"axal"`` entry) from a checkpoint of ``task``."""
    ckpt = read(path)
    meta = ckpt[META_KEY]
    check_task(meta, task, path)
    for part in ("net", "module"):  # a checkpoint names classes to build: only axal's own
        target = str(meta.get(part, {}).get("_target_", ""))
        if not target.startswith("axal."):
            raise CheckpointError(f"{path}: its {part} is {target!r}, not an axal class")
    net = instantiate(meta["net"], classes=int(meta["n_classes"]))
    model = instantiate(meta["module"], net=net, n_classes=int(meta["n_classes"]))
    _load_state(model, ckpt, path)
    model.meta = meta
    return model.eval(), meta


def load_weights(model: L.LightningModule, path: str | Path, task: str) -> None:
    """Start ``model`` from a checkpoint's weights (fine-tuning), if it is of the same task."""
    ckpt = read(path)
    check_task(ckpt[META_KEY], task, path)
    _load_state(model, ckpt, path)


def _load_state(model: L.LightningModule, ckpt: dict[str, Any], path: str | Path) -> None:
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as err:
        raise CheckpointError(
            f"checkpoint {path} does not fit this network (was model= changed since it was "
            f"trained? it holds {ckpt[META_KEY]['net'].get('_target_')}): "
            f"{str(err).splitlines()[0]}"
        ) from err


def save_checkpoint(trainer: L.Trainer, path: str | Path) -> Path:
    """``trainer.save_checkpoint`` to a temporary file beside ``path``, then renamed over it:
    a full disk or a kill mid-write leaves the previous good checkpoint, never a truncated one
    (Lightning writes into the destination itself)."""
    import os

    from axal.atomic import write_error

    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        trainer.save_checkpoint(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:  # a full disk: one paragraph naming the checkpoint
        raise write_error(err, path) from err
    finally:
        tmp.unlink(missing_ok=True)
    return path
