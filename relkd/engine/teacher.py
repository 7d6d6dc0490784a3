"""Teachers: the key of everything that determines one, and training it once into the store."""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any

import torch

from .. import __version__
from ..cache import Artefact, ArtefactKind
from ..data import DatasetSplits
from ..models import TappedModel, model_entry
from ..objective import build_objective
from ..presets import preset
from ..setting import Setting, resolve_device
from .build import build_model, load_data, transfer_ident
from .device import tf32
from .resume import EpochCheckpoint, save_interval
from .training import evaluate, fit

__all__ = ["CHECKPOINT_FORMAT", "TEACHERS", "TeacherResult", "teacher_key", "get_teacher"]

log = logging.getLogger(__name__)

#: bump when the checkpoint format or the teacher training loop changes meaning
CHECKPOINT_FORMAT = 1


@dataclass
class TeacherResult(Artefact):
    """A trained teacher, frozen on its device, with its checkpoint, key and accuracies
    (``sha256``, of the checkpoint file, names these exact weights in the teacher-output cache)."""

    model: TappedModel

    SUMMARY = ("val_accuracy", "test_accuracy", "checkpoint", "key", "trained")

    @property
    def val_accuracy(self) -> float:
        return self.meta["val_accuracy"]

    @property
    def test_accuracy(self) -> float:
        return self.meta["test_accuracy"]


#: teachers on the store: ``teachers/<model>-<key>/teacher.pt``; a full disk costs later
#: processes a retraining, never the teacher in hand
TEACHERS = ArtefactKind("teachers", "teacher checkpoint", TeacherResult, format=CHECKPOINT_FORMAT,
                        filename="teacher.pt", keep_on_write_error=True)


def teacher_key(setting: Setting, data: DatasetSplits | None = None) -> str:
    """A hash of everything that determines the teacher: the data (content fingerprint and
    split), model, recipe, seed and checkpoint format."""
    data = data if data is not None else load_data(setting, subset=False)
    recipe = setting.teacher_recipe.key_fields(setting.data.batch_size)
    ident = {
        "data": data.fingerprint(),
        "model": setting.teacher.model,
        "params": model_entry(setting.teacher.model).resolve_params(setting.teacher.params),
        "recipe": recipe,
        "seed": setting.seed,
    }
    if setting.teacher.init is not None or setting.teacher.freeze:
        ident["transfer"] = transfer_ident(setting.teacher)  # the init file's content, not its path
    return TEACHERS.key(ident)


def _as_it_is(model: TappedModel, data: Any, setting: Setting, device: torch.device) -> dict[str, Any]:
    """The metadata of a teacher used as its init file holds it (``teacher.epochs: 0``):
    evaluated on the validation and test splits, trained not at all."""
    log.info("teacher %s used as it is (epochs 0): evaluating %s", setting.teacher.model, setting.teacher.init.path)
    batch = setting.data.eval_batch_size
    with tf32(device, setting.tf32):
        val_acc = evaluate(model, data.eval_loader("val", batch, device), setting.precision)
        test_acc = evaluate(model, data.eval_loader("test", batch, device), setting.precision)
    return {"model": setting.teacher.model, "params": setting.teacher.params,
            "recipe": dataclasses.asdict(setting.teacher_recipe), "val_accuracy": val_acc, "test_accuracy": test_acc,
            "seed": setting.seed, "dataset": data.name, "train_seconds": 0.0, "relkd": __version__,
            "init_sha256": model.init_sha256}


def get_teacher(setting: Setting, *, progress: bool = False, force: bool = False,
                device: torch.device | None = None, checkpoint_every: int | None = None) -> TeacherResult:
    """The setting's trained teacher: loaded from the cache when an intact checkpoint for
    exactly this teacher exists, else trained and cached (``teacher.epochs: 0``: its init
    file used as it is, only evaluated; the file's SHA-256 is in the metadata). Processes that start together
    wait on a file lock instead of training twice. The training saves its state every
    ``checkpoint_every`` epochs (:func:`relkd.engine.resume.save_interval`) beside the
    entry, and an interrupted one resumes from there the next time this teacher is asked for."""
    device = device or resolve_device(setting.device)
    data = load_data(setting, subset=False)
    key = teacher_key(setting, data)
    model = build_model(setting.teacher, data, setting.seed, torch.device("cpu"))
    every = save_interval(checkpoint_every)  # a bad value stops here, before training
    training_state = EpochCheckpoint(TEACHERS.folder_of(key, setting.teacher.model) / "progress.pt", every,
                               ident={"key": key, "device": device.type, "precision": setting.precision})

    def train() -> tuple[TappedModel, dict[str, Any]]:
        model.to(device)
        recipe = setting.teacher_recipe
        if recipe.epochs == 0:
            return model, _as_it_is(model, data, setting, device)
        log.info("training teacher %s (%d epochs)", setting.teacher.model, recipe.epochs)
        with tf32(device, setting.tf32):
            result = fit(
                model, data, recipe, build_objective(preset("none")), seed=setting.seed, device=device,
                batch_size=setting.teacher_batch_size,
                augment=True if recipe.augment is None else recipe.augment,
                eval_batch_size=setting.data.eval_batch_size, progress=progress,
                desc=f"teacher {setting.teacher.model}", precision=setting.precision,
                checkpoint=training_state,
            )
            test_acc = evaluate(model, data.eval_loader("test", setting.data.eval_batch_size, device),
                                setting.precision)
        return model, {
            "model": setting.teacher.model,
            "params": setting.teacher.params, "recipe": dataclasses.asdict(recipe),
            "val_accuracy": result.history[-1], "test_accuracy": test_acc, "seed": setting.seed,
            "dataset": data.name, "train_seconds": result.seconds, "relkd": __version__,
        }

    result = TEACHERS.get(key, train, name=setting.teacher.model, force=force, model=model,
                          load=lambda state, meta: model.load_state_dict(state))
    training_state.clear()  # the teacher is stored: an interrupted training's state is not needed any more
    if not result.built:
        log.info("teacher %s loaded from %s", setting.teacher.model, result.checkpoint)
    model.to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return result
