"""Transfer learning in settings: source checkpoints (``relkd pretrain``) and the
``init`` / ``freeze`` fields of a setting's student and teacher.

A source checkpoint is the setting's student architecture trained with cross-entropy
only (the ``none`` objective) on the setting's data, with the setting's ``budget`` and
``seed``: exactly the run ``relkd train --setting S.yaml --config none`` makes, cached::

    source = load_setting("studies/pretrain_fmnist_source.yaml", teacher_required=False)
    result = get_pretrained(source)      # trained once, then loaded from the cache
    export_pretrained(result, "runs/source.pt")   # + runs/source.json (metadata, sha256)

The cache (``$RELKD_CACHE_DIR/pretrained``, beside the teachers) is keyed by a hash of
everything that determines the checkpoint (:func:`pretrain_key`), so the same source
setting never trains twice and a changed one trains anew. A target setting names the
checkpoint as ``student.init: PATH`` or, so that one command runs the whole flow on a
fresh machine, ``student.init: {pretrain: SOURCE.yaml}`` (made on first use, then
cached). :func:`resolve_inits` resolves such a source before any run, and
:func:`relkd.engine.build_model` gives a model its init and frozen stages; errors name
the setting field (``student.init.path: no such file ...``).
"""
from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from . import __version__
from .cache import Artefact, ArtefactKind, file_sha256
from .engine import init_file, load_data, run_trial, transfer_ident
from .engine.resume import EpochCheckpoint, save_interval
from .fields import ConfigError
from .models import model_entry
from .setting import ModelSpec, Setting, load_setting, resolve_device

__all__ = ["PRETRAINED", "PretrainResult", "pretrain_key", "get_pretrained", "export_pretrained", "resolve_inits",
           "prepare_inits"]

log = logging.getLogger(__name__)

#: bump when the pretrain checkpoint format or its training changes meaning
PRETRAIN_FORMAT = 1


def _resolve_init(spec: ModelSpec | None, progress: bool) -> ModelSpec | None:
    """``spec`` with its ``{pretrain: SOURCE.yaml}`` init resolved to the source checkpoint
    (trained first if it is not cached); other specs as they are. Raises
    :class:`ConfigError` naming the field."""
    if spec is None or spec.init is None or spec.init.pretrain is None or spec.init.checkpoint is not None:
        return spec
    field = f"{spec.role}.init"
    source_file = Path(spec.init.pretrain).expanduser()
    if not source_file.is_file():
        raise ConfigError([f"{field}.pretrain: no such setting file {str(source_file)!r}; give the source setting "
                           f"that `relkd pretrain --setting` would train, e.g. studies/pretrain_fmnist_source.yaml"])
    try:
        source = load_setting(source_file, teacher_required=False)
    except ConfigError as err:
        raise ConfigError([f"{field}.pretrain: {source_file}: {line}" for line in err.errors]) from None
    if source.student.init is not None and source.student.init.pretrain is not None:
        if Path(source.student.init.pretrain).expanduser().resolve() == source_file.resolve():
            raise ConfigError([f"{field}.pretrain: {source_file} starts from itself (student.init.pretrain)"])
    checkpoint = get_pretrained(source, progress=progress).checkpoint
    return dataclasses.replace(spec, init=dataclasses.replace(spec.init, checkpoint=str(checkpoint)))


def resolve_inits(setting: Setting, *, progress: bool = False) -> Setting:
    """The setting with every ``{pretrain: SOURCE.yaml}`` init of its student and teacher
    resolved to the source checkpoint (trained on first use, then cached), so the engine
    never trains a source itself. A setting without such inits comes back as it is."""
    student = _resolve_init(setting.student, progress)
    teacher = _resolve_init(setting.teacher, progress)
    if student is setting.student and teacher is setting.teacher:
        return setting
    return setting.replace(student=student, teacher=teacher)


def prepare_inits(setting: Setting, *, progress: bool = False) -> dict[str, str]:
    """Resolve the student's and teacher's init files up front (training a ``pretrain``
    source if needed), so a missing file stops a study or compare before its first trial.
    Returns ``{"student.init": sha256, ...}`` for the models that have one; runs take
    the setting from :func:`resolve_inits` (cheap once the sources are cached)."""
    setting = resolve_inits(setting, progress=progress)
    out = {}
    for spec in (setting.student, setting.teacher):
        if spec is not None and spec.init is not None:
            out[f"{spec.role}.init"] = file_sha256(init_file(spec))
    return out


# ----------------------------------------------------------------------------- source checkpoints


@dataclass
class PretrainResult(Artefact):
    """A source checkpoint on the store, its metadata and whether this call trained it."""

    SUMMARY = ("checkpoint", "trained", "key", "sha256", "model", "dataset", "classes", "val_accuracy",
               "test_accuracy", "train_seconds")


#: source checkpoints on the store: ``pretrained/<model>-<key>/model.pt``; its consumers read
#: the file, so a write error is an error
PRETRAINED = ArtefactKind("pretrained", "pretrained checkpoint", PretrainResult, format=PRETRAIN_FORMAT)


def pretrain_key(setting: Setting, data: Any = None) -> str:
    """A hash of everything that determines the source checkpoint: the data (content
    fingerprint, classes and split, as a student run sees it), the student model and its
    own init/freeze, the budget, the seed and the format. Not the file paths or device."""
    data = data if data is not None else load_data(setting)
    recipe = setting.budget.key_fields(setting.data.batch_size)
    recipe["augment"] = setting.data.augment if recipe["augment"] is None else recipe["augment"]
    ident = {
        "data": data.fingerprint(),
        "model": setting.student.model,
        "params": model_entry(setting.student.model).resolve_params(setting.student.params),
        "transfer": transfer_ident(setting.student),
        "recipe": recipe,
        "seed": setting.seed,
    }
    return PRETRAINED.key(ident)


def get_pretrained(setting: Setting, *, progress: bool = False, force: bool = False,
                   checkpoint_every: int | None = None) -> PretrainResult:
    """The setting's source checkpoint: loaded from the cache when an intact one for exactly
    this setting exists, else trained (CE only, the setting's budget and seed, its data as
    a student run sees it) and cached. Processes that start together wait on a file lock.
    The training saves its state every ``checkpoint_every`` epochs
    (:func:`relkd.engine.resume.save_interval`) and an interrupted one resumes from there."""
    setting = resolve_inits(setting, progress=progress)  # a source may start from another source
    data = load_data(setting)
    key = pretrain_key(setting, data)
    every = save_interval(checkpoint_every)  # a bad value stops here, before training
    training_state = EpochCheckpoint(PRETRAINED.folder_of(key, setting.student.model) / "progress.pt", every,
                               ident={"key": key, "device": resolve_device(setting.device).type,
                                      "precision": setting.precision})

    def train() -> tuple[torch.nn.Module, dict[str, Any]]:
        log.info("pretraining %s on %s (%d epochs)", setting.student.model, data.name, setting.budget.epochs)
        run = run_trial(setting, "none", eval_test=True, return_model=True, progress=progress,
                        checkpoint=training_state)
        return run.model, {
            "model": setting.student.model,
            "params": setting.student.params, "dataset": data.name, "classes": list(data.classes),
            "num_classes": data.num_classes, "recipe": setting.budget.to_dict(), "seed": setting.seed,
            "val_accuracy": run.val_accuracy, "test_accuracy": run.test_accuracy,
            "train_seconds": run.train_seconds, "init_sha256": run.init_sha256,
            "setting": {k: v for k, v in setting.to_dict().items() if k not in ("search", "optuna", "compare")},
            "relkd": __version__,
        }

    result = PRETRAINED.get(key, train, name=setting.student.model, force=force)
    training_state.clear()  # the checkpoint is stored: an interrupted training's state is not needed any more
    if not result.built:
        log.debug("pretrained %s loaded from %s", setting.student.model, result.checkpoint)
    else:
        log.info("pretrained %s: val accuracy %.4f, test accuracy %.4f", setting.student.model,
                 result.meta["val_accuracy"], result.meta["test_accuracy"])
    return result


def export_pretrained(result: PretrainResult, out: str | os.PathLike) -> tuple[Path, Path]:
    """Copy the checkpoint to ``out`` and its metadata (with ``sha256``) to ``out`` with
    the suffix ``.json``; a file already there with the same hash is left as it is.
    Returns ``(checkpoint, metadata)`` paths."""
    out = Path(out)
    meta_out = out.with_suffix(".json")
    if meta_out == out:
        raise ValueError(f"--out {out}: give the checkpoint a suffix other than .json, e.g. {out.with_suffix('.pt')}")
    return result.export(out, meta_out, checkpoint=str(out))

