"""Teachers: the key of everything that determines one, and training it once into the store."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .. import __version__
from ..cache import cached
from ..data import DatasetSplits
from ..models import TappedModel, model_entry
from ..objective import build_objective
from ..presets import preset
from ..setting import Setting, resolve_device
from .build import build_model, load_data, transfer_ident
from .device import tf32
from .training import evaluate, fit

__all__ = ["CHECKPOINT_FORMAT", "TeacherResult", "teacher_key", "get_teacher"]

log = logging.getLogger(__name__)

#: bump when the checkpoint format or the teacher training loop changes meaning
CHECKPOINT_FORMAT = 1


@dataclass
class TeacherResult:
    """A trained teacher, frozen on its device, with its checkpoint, key and accuracies."""

    model: TappedModel
    checkpoint: Path
    key: str
    val_accuracy: float
    test_accuracy: float
    trained: bool  # False when loaded from the cache
    sha256: str = ""  # of the checkpoint file: names these exact weights in the teacher-output cache

    def summary(self) -> dict[str, Any]:
        return {"val_accuracy": self.val_accuracy, "test_accuracy": self.test_accuracy,
                "checkpoint": str(self.checkpoint), "key": self.key, "trained": self.trained}


def teacher_key(setting: Setting, data: DatasetSplits | None = None) -> str:
    """A hash of everything that determines the teacher: the data (content fingerprint and
    split), model, recipe, seed and checkpoint format."""
    data = data if data is not None else load_data(setting, subset=False)
    recipe = setting.teacher_recipe.key_fields(setting.data.batch_size)
    ident = {
        "format": CHECKPOINT_FORMAT,
        "data": data.fingerprint(),
        "model": setting.teacher.model,
        "params": model_entry(setting.teacher.model).resolve_params(setting.teacher.params),
        "recipe": recipe,
        "seed": setting.seed,
    }
    if setting.teacher.init is not None or setting.teacher.freeze:
        ident["transfer"] = transfer_ident(setting.teacher)  # the init file's content, not its path
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:20]


def get_teacher(setting: Setting, *, progress: bool = False, force: bool = False,
                device: torch.device | None = None) -> TeacherResult:
    """The setting's trained teacher: loaded from the cache when an intact checkpoint for
    exactly this teacher exists, else trained and cached. Processes that start together
    wait on a file lock instead of training twice."""
    device = device or resolve_device(setting.device)
    data = load_data(setting, subset=False)
    key = teacher_key(setting, data)
    model = build_model(setting.teacher, data, setting.seed, torch.device("cpu"))

    def train() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        nonlocal model
        model = model.to(device)
        recipe = setting.teacher_recipe
        log.info("training teacher %s (%d epochs)", setting.teacher.model, recipe.epochs)
        with tf32(device, setting.tf32):
            result = fit(
                model, data, recipe, build_objective(preset("none")), seed=setting.seed, device=device,
                batch_size=recipe.batch_size or setting.data.batch_size,
                augment=True if recipe.augment is None else recipe.augment,
                eval_batch_size=setting.data.eval_batch_size, progress=progress,
                desc=f"teacher {setting.teacher.model}", precision=setting.precision,
            )
            test_acc = evaluate(model, data.eval_loader("test", setting.data.eval_batch_size, device),
                                setting.precision)
        state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        return state, {
            "key": key, "model": setting.teacher.model,
            "params": setting.teacher.params, "recipe": dataclasses.asdict(recipe),
            "val_accuracy": result.history[-1], "test_accuracy": test_acc, "seed": setting.seed,
            "dataset": data.name, "train_seconds": result.seconds, "relkd": __version__,
        }

    entry = cached("teachers", key, train, name=setting.teacher.model, filename="teacher.pt",
                   load=lambda state, meta: model.load_state_dict(state), force=force,
                   what="teacher checkpoint", keep_on_write_error=True)
    if not entry.built:
        log.info("teacher %s loaded from %s", setting.teacher.model, entry.file)
    model = model.to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    meta = entry.meta
    return TeacherResult(model, entry.file, key, meta["val_accuracy"], meta["test_accuracy"], entry.built,
                         meta["sha256"])
