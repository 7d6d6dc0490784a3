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
cached). :func:`build_model` gives a setting's model its init and frozen stages; errors
name the setting field (``student.init.path: no such file ...``).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from . import __version__
from .fields import ConfigError
from .models import TappedModel, model_entry
from .models.transfer import InitError, file_sha256, freeze, load_init
from .setting import ModelSpec, Setting, load_setting

__all__ = ["PretrainResult", "pretrain_key", "get_pretrained", "export_pretrained", "resolve_init",
           "transfer_ident", "prepare_inits", "apply_transfer"]

log = logging.getLogger(__name__)

#: bump when the pretrain checkpoint format or its training changes meaning
PRETRAIN_FORMAT = 1


def _hint(field: str) -> str:
    return (f"make one with `relkd pretrain --setting SOURCE.yaml --out FILE` and give {field}: FILE, or give "
            f"{field}: {{pretrain: SOURCE.yaml}} to make it on first use (a torchvision weights file also works for "
            f"tv: models)")


def resolve_init(spec: ModelSpec, *, progress: bool = False) -> Path | None:
    """The checkpoint file ``spec.init`` names (``None`` without an init); for
    ``{pretrain: SOURCE.yaml}`` the source checkpoint, trained first if it is not cached.
    Raises :class:`ConfigError` naming the field (``student.init.path: no such file ...``)."""
    init = spec.init
    if init is None:
        return None
    field = f"{spec.role}.init"
    if init.path is not None:
        path = Path(init.path).expanduser()
        if not path.is_file():
            raise ConfigError([f"{field}.path: no such file {str(path)!r}; {_hint(field)}"])
        return path
    source_file = Path(init.pretrain).expanduser()
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
    return get_pretrained(source, progress=progress).checkpoint


def transfer_ident(spec: ModelSpec) -> dict[str, Any]:
    """What ``init`` and ``freeze`` add to a cache key: the checkpoint's SHA-256 (its
    content, not where it is) and head mode, and the frozen parts. Empty when neither is
    set, so the keys of settings without them are unchanged."""
    out: dict[str, Any] = {}
    path = resolve_init(spec)
    if path is not None:
        out["init"] = {"sha256": file_sha256(path), "head": spec.init.head}
    if spec.freeze:
        out["freeze"] = list(spec.freeze)
    return out


def apply_transfer(model: TappedModel, spec: ModelSpec, input_shape: Sequence[int]) -> str | None:
    """Give ``model`` (built for ``spec``) its ``init`` checkpoint and freeze its
    ``freeze`` parts; return the checkpoint's SHA-256 (``None`` without an init). Errors
    are :class:`ConfigError` naming the field."""
    sha = None
    path = resolve_init(spec)
    if path is not None:
        try:
            report = load_init(model, path, spec.init.head)
        except (InitError, FileNotFoundError) as err:
            raise ConfigError([f"{spec.role}.init: {err}"]) from None
        sha = report.sha256
    if spec.freeze:
        try:
            freeze(model, spec.freeze, input_shape)
        except ValueError as err:
            raise ConfigError([f"{spec.role}.freeze: {err}"]) from None
    return sha


def prepare_inits(setting: Setting, *, progress: bool = False) -> dict[str, str]:
    """Resolve the student's and teacher's init files up front (training a ``pretrain``
    source if needed), so a missing file stops a study or compare before its first trial.
    Returns ``{"student.init": sha256, ...}`` for the models that have one."""
    out = {}
    for spec in (setting.student, setting.teacher):
        if spec is not None and spec.init is not None:
            out[f"{spec.role}.init"] = file_sha256(resolve_init(spec, progress=progress))
    return out


# ----------------------------------------------------------------------------- source checkpoints


@dataclass
class PretrainResult:
    checkpoint: Path
    meta: dict[str, Any]
    trained: bool  # False when loaded from the cache

    @property
    def key(self) -> str:
        return self.meta["key"]

    @property
    def sha256(self) -> str:
        return self.meta["sha256"]

    def summary(self) -> dict[str, Any]:
        keys = ("key", "sha256", "model", "dataset", "classes", "val_accuracy", "test_accuracy", "train_seconds")
        return {"checkpoint": str(self.checkpoint), "trained": self.trained, **{k: self.meta.get(k) for k in keys}}


def pretrain_key(setting: Setting, data: Any = None) -> str:
    """A hash of everything that determines the source checkpoint: the data (content
    fingerprint, classes and split, as a student run sees it), the student model and its
    own init/freeze, the budget, the seed and the format. Not the file paths or device."""
    from .engine import load_data

    data = data if data is not None else load_data(setting)
    recipe = setting.budget.key_fields(setting.data.batch_size)
    recipe["augment"] = setting.data.augment if recipe["augment"] is None else recipe["augment"]
    ident = {
        "format": PRETRAIN_FORMAT,
        "data": data.fingerprint(),
        "model": setting.student.model,
        "params": model_entry(setting.student.model).resolve_params(setting.student.params),
        "transfer": transfer_ident(setting.student),
        "recipe": recipe,
        "seed": setting.seed,
    }
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:20]


def get_pretrained(setting: Setting, *, progress: bool = False, force: bool = False) -> PretrainResult:
    """The setting's source checkpoint: loaded from the cache when an intact one for exactly
    this setting exists, else trained (CE only, the setting's budget and seed, its data as
    a student run sees it) and cached. Processes that start together wait on a file lock."""
    from .engine import _file_lock, cache_root, intact_meta, load_data, run_trial, save_checked

    data = load_data(setting)
    key = pretrain_key(setting, data)
    folder = cache_root() / "pretrained" / f"{setting.student.model.replace(':', '_')}-{key}"
    ckpt, meta_path = folder / "model.pt", folder / "meta.json"
    with _file_lock(folder / ".lock"):
        meta = None if force else intact_meta(ckpt, meta_path, key, "pretrained checkpoint")
        if meta is not None:
            log.debug("pretrained %s loaded from %s", setting.student.model, ckpt)
            return PretrainResult(ckpt, meta, trained=False)
        log.info("pretraining %s on %s (%d epochs) -> %s", setting.student.model, data.name,
                 setting.budget.epochs, folder)
        metrics = run_trial(setting, "none", eval_test=True, return_model=True, progress=progress)
        model = metrics.pop("model")
        state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        meta = {
            "key": key, "model": setting.student.model,
            "params": setting.student.params, "dataset": data.name, "classes": list(data.classes),
            "num_classes": data.num_classes, "recipe": setting.budget.to_dict(), "seed": setting.seed,
            "val_accuracy": metrics["val_accuracy"], "test_accuracy": metrics["test_accuracy"],
            "train_seconds": metrics["train_seconds"], "init_sha256": metrics.get("init_sha256"),
            "setting": {k: v for k, v in setting.to_dict().items() if k not in ("search", "optuna", "compare")},
            "relkd": __version__,
        }
        meta = save_checked(state, ckpt, meta_path, meta)  # its consumers read the file: a failure is an error
    log.info("pretrained %s: val accuracy %.4f, test accuracy %.4f", setting.student.model,
             meta["val_accuracy"], meta["test_accuracy"])
    return PretrainResult(ckpt, meta, trained=True)


def export_pretrained(result: PretrainResult, out: str | os.PathLike) -> tuple[Path, Path]:
    """Copy the checkpoint to ``out`` and its metadata (with ``sha256``) to ``out`` with
    the suffix ``.json``; a file already there with the same hash is left as it is.
    Returns ``(checkpoint, metadata)`` paths."""
    out = Path(out)
    meta_out = out.with_suffix(".json")
    if meta_out == out:
        raise ValueError(f"--out {out}: give the checkpoint a suffix other than .json, e.g. {out.with_suffix('.pt')}")
    out.parent.mkdir(parents=True, exist_ok=True)
    if not (out.is_file() and file_sha256(out) == result.sha256):
        tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
        shutil.copyfile(result.checkpoint, tmp)
        os.replace(tmp, out)
    meta = {**result.meta, "checkpoint": str(out)}
    text = json.dumps(meta, indent=2)
    if not (meta_out.is_file() and meta_out.read_text() == text):
        tmp = meta_out.with_name(f".{meta_out.name}.tmp{os.getpid()}")
        tmp.write_text(text)
        os.replace(tmp, meta_out)
    return out, meta_out

