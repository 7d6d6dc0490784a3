"""The training engine: teacher training and caching, distillation runs, evaluation.

Everything a search trial runs is here::

    setting = load_setting("studies/fmnist_full.yaml")
    teacher = get_teacher(setting)                  # trained once, then loaded from the cache
    metrics = run_trial(setting, preset("kd"), report=lambda epoch, acc: False)

One loop (:func:`fit`) trains both teachers (CE only) and students (any objective).
Search only ever sees validation accuracy; the test split is evaluated only when a run
asks for it (``eval_test=True``).
"""
from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import functools
import hashlib
import io
import json
import logging
import math
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import torch

from . import __version__
from .data import DataFieldError, DatasetSplits, DeviceLoader, load_dataset
from .models import TappedModel, create_model, model_entry
from .models.transfer import file_sha256 as _sha256
from .objective import Objective, build_objective
from .presets import preset
from .setting import ModelSpec, Recipe, Setting, resolve_device

__all__ = [
    "NonFiniteLossError",
    "TeacherResult",
    "cache_root",
    "load_data",
    "get_teacher",
    "teacher_key",
    "fit",
    "evaluate",
    "run_trial",
    "train_runs",
]

log = logging.getLogger(__name__)

#: bump when the checkpoint format or the teacher training loop changes meaning
CHECKPOINT_FORMAT = 1
Report = Callable[[int, float], Any]


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or inf; ``part`` names the part that went bad."""

    def __init__(self, part: str, epoch: int, step: int, detail: str = ""):
        self.part, self.epoch, self.step = part, epoch, step
        super().__init__(
            f"the loss became NaN or inf in part {part!r} at epoch {epoch}, step {step}{detail}; "
            f"lower that part's weight or the learning rate"
        )


def cache_root() -> Path:
    """Where teachers are cached: ``$RELKD_CACHE_DIR`` or ``~/.cache/relkd``."""
    root = os.environ.get("RELKD_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "relkd"
    )
    return Path(root)


# ----------------------------------------------------------------------------- data


@functools.lru_cache(maxsize=4)
def _load_data_cached(dataset: str, data_dir: str | None, val_fraction: float, split_seed: int,
                      train_subset: int | None, params: str, classes: tuple | None = None,
                      train_per_class: int | None = None) -> DatasetSplits:
    try:
        return load_dataset(dataset, data_dir, val_fraction=val_fraction, split_seed=split_seed,
                            train_subset=train_subset, classes=classes, train_per_class=train_per_class,
                            **json.loads(params))
    except DataFieldError as err:  # name the setting field
        from .fields import ConfigError

        raise ConfigError([f"data.{err.field}: {err}"]) from None


def load_data(setting: Setting, *, subset: bool = True) -> DatasetSplits:
    """The setting's dataset split into train/val/test (cached per process), restricted to
    ``data.classes``. ``subset=False`` ignores ``data.train_subset`` and
    ``data.train_per_class`` (teachers train on the whole train split)."""
    d = setting.data
    return _load_data_cached(d.dataset, d.data_dir, d.val_fraction, d.split_seed,
                             d.train_subset if subset else None, json.dumps(d.params, sort_keys=True),
                             d.classes, d.train_per_class if subset else None)


def _build_model(spec: ModelSpec, data: DatasetSplits, seed: int, device: torch.device) -> TappedModel:
    """The model of ``spec`` for ``data``, initialised from ``seed``; with ``init``, the
    body loaded from the checkpoint (the head replaced, unless ``head: keep``) and the
    file's SHA-256 in ``model.init_sha256``; with ``freeze``, those parts frozen."""
    torch.manual_seed(seed)
    model = create_model(spec.model, num_classes=data.num_classes, in_channels=data.in_channels, **spec.params)
    if spec.init is not None or spec.freeze:
        from .pretrain import apply_transfer

        model.init_sha256 = apply_transfer(model, spec, tuple(data.train_images.shape[1:]))
    model = model.to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    return model


# ----------------------------------------------------------------------------- training loop


def _param_groups(model: torch.nn.Module, recipe: Recipe) -> list[dict[str, Any]]:
    """The trainable parameters as optimizer groups: one group, or with ``body_lr_scale``
    a ``body`` group at ``lr x body_lr_scale`` and a ``head`` group at ``lr``."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    if recipe.body_lr_scale == 1.0 or not isinstance(model, TappedModel):
        return [{"params": trainable, "lr": recipe.lr}]
    from .models.transfer import body_and_head

    body, head = body_and_head(model)
    groups = [{"params": [p for p in body if p.requires_grad], "lr": recipe.lr * recipe.body_lr_scale, "name": "body"},
              {"params": [p for p in head if p.requires_grad], "lr": recipe.lr, "name": "head"}]
    return [g for g in groups if g["params"]]


def _optimizer(model: torch.nn.Module, recipe: Recipe, steps: int) -> tuple[torch.optim.Optimizer, Any]:
    """Optimizer and per-step schedule; every schedule scales each parameter group's own
    learning rate (frozen parameters are left out)."""
    groups = _param_groups(model, recipe)
    if recipe.optimizer == "sgd":
        opt: torch.optim.Optimizer = torch.optim.SGD(
            groups, lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay,
            nesterov=recipe.momentum > 0,
        )
    else:
        opt = torch.optim.AdamW(groups, lr=recipe.lr, weight_decay=recipe.weight_decay)
    steps = max(steps, 1)
    if recipe.schedule == "onecycle":
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=[g["lr"] for g in groups], total_steps=steps)
    elif recipe.schedule == "cosine":
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    elif recipe.schedule == "step":
        bounds = [round(m * steps) for m in recipe.milestones]
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: recipe.gamma ** sum(s >= b for b in bounds))
    else:
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    return opt, sched


def _autocast(device: torch.device) -> contextlib.AbstractContextManager:
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _prepare(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if device.type == "cuda" else x


@torch.inference_mode()
def evaluate(model: TappedModel, loader: DeviceLoader) -> float:
    """Top-1 accuracy of ``model`` over ``loader`` (in [0, 1])."""
    was_training = model.training
    model.eval()
    correct = total = 0
    device = loader.device
    with _autocast(device):
        for x, y in loader:
            logits = model(_prepare(x, device), taps=("logits",))["logits"]
            correct += int((logits.argmax(1) == y).sum())
            total += int(y.numel())
    model.train(was_training)
    return correct / max(total, 1)


class _TeacherOutputs:
    """Teacher taps for every training sample, indexed by sample index, computed once
    per (teacher, data, augmentation epoch) and kept on the device for reuse across
    epochs and trials in this process.

    Without augmentation (the teacher sees the same images every epoch) they are also
    written to the cache folder, one file per tap with its sha256 beside it, so other
    processes (study workers, ``relkd train``, compare, confirm) load them instead of
    running the teacher again. A file whose hash or shape does not match is computed again
    and replaced, never used."""

    _store: dict[tuple, dict[str, torch.Tensor]] = {}
    limit_bytes = int(float(os.environ.get("RELKD_TEACHER_CACHE_MB", "4096")) * 2**20)
    persist = True  # write and read the files (benchmarks of the first trial's cost turn it off)

    @classmethod
    def clear(cls) -> None:
        """Forget what this process holds (the files stay)."""
        cls._store.clear()

    @classmethod
    def _bytes(cls) -> int:
        return sum(t.numel() * t.element_size() for d in cls._store.values() for t in d.values())

    @staticmethod
    def folder(key: tuple) -> Path:
        """Where the files of one (teacher, data) pair live."""
        digest = hashlib.sha256(repr(key).encode()).hexdigest()[:20]
        return cache_root() / "teacher_outputs" / digest

    @classmethod
    def _load(cls, key: tuple, tap: str, loader: DeviceLoader) -> torch.Tensor | None:
        path = cls.folder(key) / f"{tap}.pt"
        meta_path = path.with_suffix(".json")
        if not (cls.persist and key[-1] is None and path.exists() and meta_path.exists()):
            return None
        try:
            meta = json.loads(meta_path.read_text())
            if _sha256(path) != meta.get("sha256"):
                raise ValueError("its hash does not match (truncated or altered)")
            value = torch.load(path, map_location="cpu", weights_only=True)
            if not isinstance(value, torch.Tensor) or list(value.shape) != meta.get("shape") \
                    or value.shape[0] != loader.num_samples:
                raise ValueError(f"it holds {getattr(value, 'shape', type(value).__name__)}, not {meta.get('shape')} "
                                 f"for {loader.num_samples} samples")
        except Exception as err:  # noqa: BLE001 - any damage means: compute again
            log.warning("teacher-output cache %s is unusable (%s); computing it again", path, err)
            return None
        log.debug("teacher tap %s loaded from %s", tap, path)
        return value.to(loader.device, torch.float32)

    @classmethod
    def _save(cls, key: tuple, tap: str, value: torch.Tensor) -> None:
        if not (cls.persist and key[-1] is None):
            return
        path = cls.folder(key) / f"{tap}.pt"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            save_checked(value.detach().cpu(), path, path.with_suffix(".json"),
                         {"shape": list(value.shape), "key": [str(k) for k in key]})
        except OSError as err:  # a full disk costs the other processes a teacher pass, not this run
            log.warning("could not write the teacher-output cache %s (%s); this process keeps them in memory",
                        path, err)

    @classmethod
    def get(cls, key: tuple, teacher: TappedModel, loader: DeviceLoader, epoch: int,
            taps: tuple[str, ...]) -> dict[str, torch.Tensor] | None:
        stored = cls._store.setdefault(key, {})
        missing = tuple(t for t in taps if t not in stored)
        if missing:
            with torch.inference_mode():
                x0 = loader.images[:1].float()
                probe = teacher(_prepare(x0, loader.device), taps=missing)
            need = sum(probe[t].numel() * 4 * loader.num_samples for t in missing)
            if cls._bytes() + need > cls.limit_bytes:
                log.info("teacher-output cache would exceed %.0f MiB; running the teacher live",
                         cls.limit_bytes / 2**20)
                return None
            for t in missing:
                loaded = cls._load(key, t, loader)
                if loaded is not None:
                    stored[t] = loaded
            missing = tuple(t for t in missing if t not in stored)
        if missing:
            outputs: dict[str, list[torch.Tensor]] = {t: [] for t in missing}
            plain = DeviceLoader(loader.images, loader.labels, 1024, loader.device, shuffle=False,
                                 augment=loader.augment, seed=loader.seed, mean=loader.mean, std=loader.std,
                                 pad=loader.pad, flip=loader.flip)
            teacher.eval()
            with torch.inference_mode(), _autocast(loader.device):
                for x, _ in plain.epoch(epoch):
                    out = teacher(_prepare(x, loader.device), taps=missing)
                    for t in missing:
                        outputs[t].append(out[t].float())
            for t in missing:
                stored[t] = torch.cat(outputs[t])
                cls._save(key, t, stored[t])
            log.debug("cached teacher taps %s for %d samples", missing, loader.num_samples)
        return {t: stored[t] for t in taps}


@dataclass
class FitResult:
    history: list[float]
    part_means: dict[str, float]
    epochs: int
    stopped_early: bool
    samples: int
    seconds: float


def fit(
    model: TappedModel,
    data: DatasetSplits,
    recipe: Recipe,
    objective: Objective,
    *,
    seed: int,
    device: torch.device,
    batch_size: int,
    augment: bool,
    eval_batch_size: int = 1024,
    teacher: TappedModel | None = None,
    teacher_cache_key: tuple | None = None,
    report: Report | None = None,
    progress: bool = False,
    desc: str = "train",
) -> FitResult:
    """Train ``model`` on the train split with ``objective`` for ``recipe.epochs`` epochs,
    evaluating validation accuracy after each epoch and calling ``report(epoch, val_acc)``;
    a truthy return stops training early (pruning). Raises :class:`NonFiniteLossError`."""
    loader = data.train_loader(batch_size, device, seed=seed, augment=augment, shuffle=True,
                               drop_last=data.train_labels.numel() > batch_size)
    val_loader = data.eval_loader("val", batch_size=eval_batch_size, device=device)
    taps = objective.taps
    model.resolve_taps(taps)  # a tap the student lacks is an error now, not mid-epoch
    if objective.needs_teacher:
        if teacher is None:
            raise ValueError("this objective uses KD or relation terms, so it needs a teacher")
        teacher.resolve_taps(taps)
        teacher.eval()
    use_cache = objective.needs_teacher and teacher_cache_key is not None
    opt, sched = _optimizer(model, recipe, recipe.epochs * len(loader))
    check_every = 1 if device.type == "cpu" else 25
    sums: dict[str, torch.Tensor] = {}
    previous: dict[str, torch.Tensor] | None = None  # weighted parts at the last finite check
    history: list[float] = []
    steps = samples = 0
    stopped = False
    start = time.perf_counter()
    bar = _progress(range(recipe.epochs), progress, desc)
    for epoch in bar:
        model.train()
        cached = None
        if use_cache:
            key = (*teacher_cache_key, loader.seed if loader.augments else None, epoch if loader.augments else None)
            cached = _TeacherOutputs.get(key, teacher, loader, epoch, taps)
        for x, y, index in loader.epoch(epoch, with_indices=True):
            x = _prepare(x, device)
            with _autocast(device):
                s_taps = model(x, taps=taps)
                t_taps = None
                if cached is not None:
                    t_taps = {t: v.index_select(0, index) for t, v in cached.items()}
                elif objective.needs_teacher:
                    with torch.inference_mode():
                        live = teacher(x, taps=taps)
                    # inference tensors may not be saved for backward: clone them out
                    t_taps = {k: v.clone() for k, v in live.items()}
                parts = objective(s_taps, t_taps, y)
            opt.zero_grad(set_to_none=True)
            parts["total"].backward()
            opt.step()
            sched.step()
            steps += 1
            samples += int(y.numel())
            for name in objective.part_names:
                value = parts[name].detach().float()
                sums[name] = sums[name] + value if name in sums else value
            if steps % check_every == 0:
                if not bool(torch.isfinite(parts["total"].detach())):
                    _raise_non_finite(parts, previous, objective, epoch, steps)
                previous = {name: parts[f"{name}.weighted"].detach() for name in objective.part_names}
        val_acc = evaluate(model, val_loader)
        history.append(val_acc)
        if hasattr(bar, "set_postfix"):
            bar.set_postfix(val_acc=f"{val_acc:.4f}")
        log.info("%s epoch %d/%d: val accuracy %.4f", desc, epoch + 1, recipe.epochs, val_acc)
        if any(not math.isfinite(float(v)) for v in sums.values()):
            _raise_non_finite(sums, None, objective, epoch, steps)
        if report is not None and report(epoch, val_acc):
            stopped = epoch + 1 < recipe.epochs
            break
    seconds = time.perf_counter() - start
    means = {name: float(v) / max(steps, 1) for name, v in sums.items()}
    return FitResult(history, means, len(history), stopped, samples, seconds)


def _raise_non_finite(parts: Mapping[str, torch.Tensor], previous: Mapping[str, torch.Tensor] | None,
                      objective: Objective, epoch: int, step: int) -> None:
    """Name the part that went bad: the non-finite one if the others are finite; if all are
    (the weights were already corrupted by the previous step), the part with the largest
    weighted value in the last finite step."""
    bad = [name for name in objective.part_names
           if any(key in parts and not bool(torch.isfinite(parts[key].detach()).all())
                  for key in (name, f"{name}.weighted"))]
    if bad and (len(bad) < len(objective.part_names) or not previous):
        raise NonFiniteLossError(bad[0], epoch, step)
    if previous:
        culprit = max(previous, key=lambda name: float(previous[name].abs()))
        raise NonFiniteLossError(culprit, epoch, step, f" (every part is non-finite: the weights diverged after "
                                                       f"a step where {culprit!r} was the largest weighted part)")
    raise NonFiniteLossError("total", epoch, step)


def _progress(iterable: Any, enabled: bool, desc: str) -> Any:
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, unit="epoch", file=sys.stderr, leave=False, dynamic_ncols=True)


# ----------------------------------------------------------------------------- teachers


@dataclass
class TeacherResult:
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
        from .pretrain import transfer_ident

        ident["transfer"] = transfer_ident(setting.teacher)  # the init file's content, not its path
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:20]


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("another process is training this teacher; waiting for %s", path)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def intact_meta(ckpt: Path, meta_path: Path, key: str, what: str) -> dict[str, Any] | None:
    """The metadata beside a cached checkpoint if the file exists, belongs to ``key`` and
    has the SHA-256 the metadata names; else ``None`` (a damaged one is logged as unusable)."""
    if not ckpt.is_file() or not meta_path.is_file():
        return None
    try:
        meta = json.loads(meta_path.read_text())
        if meta.get("key") != key:
            raise ValueError(f"it belongs to key {meta.get('key')!r}")
        if _sha256(ckpt) != meta.get("sha256"):
            raise ValueError("its hash does not match (truncated or altered)")
        return meta
    except Exception as err:  # noqa: BLE001 - any damage means: train again
        log.warning("%s %s is unusable (%s); training it again", what, ckpt, err)
        return None


def save_checked(obj: Any, ckpt: Path, meta_path: Path, meta: dict[str, Any]) -> dict[str, Any]:
    """Write ``obj`` (``torch.save``) to ``ckpt`` and ``meta`` plus the file's ``sha256`` to
    ``meta_path``, each atomically and the data first, so :func:`intact_meta` never sees a
    half-written pair. Returns the metadata written. On failure (a full disk, say) the
    partial files are removed and the ``OSError`` raised; what was there before stays."""
    tmp = ckpt.with_name(f".{ckpt.name}.tmp{os.getpid()}")
    tmp_meta = meta_path.with_name(f".{meta_path.name}.tmp{os.getpid()}")
    try:
        torch.save(obj, tmp)
        meta = {**meta, "sha256": _sha256(tmp)}
        os.replace(tmp, ckpt)
        tmp_meta.write_text(json.dumps(meta, indent=2))
        os.replace(tmp_meta, meta_path)
    finally:
        tmp.unlink(missing_ok=True)
        tmp_meta.unlink(missing_ok=True)
    return meta


def _load_checkpoint(ckpt: Path, meta_path: Path, model: TappedModel, key: str) -> dict[str, Any] | None:
    """The stored metadata if the checkpoint is intact, matches ``key`` and loads into
    ``model``; else ``None``."""
    meta = intact_meta(ckpt, meta_path, key, "teacher checkpoint")
    if meta is None:
        return None
    try:
        model.load_state_dict(torch.load(ckpt, map_location="cpu", weights_only=True))
        return meta
    except Exception as err:  # noqa: BLE001 - any damage means: rebuild
        log.warning("teacher checkpoint %s is unusable (%s); training it again", ckpt, err)
        return None


def get_teacher(setting: Setting, *, progress: bool = False, force: bool = False,
                device: torch.device | None = None) -> TeacherResult:
    """The setting's trained teacher: loaded from the cache when an intact checkpoint for
    exactly this teacher exists, else trained and cached. Processes that start together
    wait on a file lock instead of training twice."""
    device = device or resolve_device(setting.device)
    data = load_data(setting, subset=False)
    key = teacher_key(setting, data)
    folder = cache_root() / "teachers" / f"{setting.teacher.model.replace(':', '_')}-{key}"
    ckpt, meta_path = folder / "teacher.pt", folder / "meta.json"
    model = _build_model(setting.teacher, data, setting.seed, torch.device("cpu"))
    with _file_lock(folder / ".lock"):
        meta = None if force else _load_checkpoint(ckpt, meta_path, model, key)
        trained = meta is None
        if trained:
            model = model.to(device)
            recipe = setting.teacher_recipe
            log.info("training teacher %s (%d epochs) -> %s", setting.teacher.model, recipe.epochs, folder)
            result = fit(
                model, data, recipe, build_objective(preset("none")), seed=setting.seed, device=device,
                batch_size=recipe.batch_size or setting.data.batch_size,
                augment=True if recipe.augment is None else recipe.augment,
                eval_batch_size=setting.data.eval_batch_size, progress=progress,
                desc=f"teacher {setting.teacher.model}",
            )
            test_acc = evaluate(model, data.eval_loader("test", setting.data.eval_batch_size, device))
            state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
            meta = {
                "key": key, "model": setting.teacher.model,
                "params": setting.teacher.params, "recipe": dataclasses.asdict(recipe),
                "val_accuracy": result.history[-1], "test_accuracy": test_acc, "seed": setting.seed,
                "dataset": data.name, "train_seconds": result.seconds, "relkd": __version__,
            }
            try:
                meta = save_checked(state, ckpt, meta_path, meta)
            except OSError as err:  # keep the trained teacher for this process rather than lose it
                log.warning("could not cache teacher checkpoint %s (%s): this process uses the teacher it "
                            "trained, later ones train it again", ckpt, err)
                buffer = io.BytesIO()
                torch.save(state, buffer)
                meta["sha256"] = hashlib.sha256(buffer.getvalue()).hexdigest()
        else:
            log.info("teacher %s loaded from %s", setting.teacher.model, ckpt)
    model = model.to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return TeacherResult(model, ckpt, key, meta["val_accuracy"], meta["test_accuracy"], trained, meta["sha256"])


# ----------------------------------------------------------------------------- students


def run_trial(
    setting: Setting,
    objective_config: Mapping[str, Any] | str,
    report: Report | None = None,
    *,
    seed: int | None = None,
    eval_test: bool = False,
    teacher_cache: bool = True,
    progress: bool = False,
    teacher: TeacherResult | None = None,
    return_model: bool = False,
) -> dict[str, Any]:
    """Train the setting's student with an objective and return its metrics.

    ``report(epoch, val_accuracy)`` is called after each epoch; a truthy return stops the
    run early (how the study driver prunes). ``teacher_cache`` reuses the teacher's taps
    across epochs and trials when the teacher sees exactly what the student sees.
    Returns ``val_accuracy`` (last epoch), ``val_history``, ``test_accuracy`` (with
    ``eval_test``), ``part_means`` (mean of every loss part over the run), ``epochs``,
    ``stopped_early``, ``wall_seconds``, ``samples_per_second`` and ``seed``.
    """
    start = time.perf_counter()
    seed = setting.seed if seed is None else seed
    objective = build_objective(objective_config)
    device = resolve_device(setting.device)
    data = load_data(setting)
    if objective.needs_teacher and teacher is None:
        teacher = get_teacher(setting, device=device)
    model = _build_model(setting.student, data, seed, device)
    budget = setting.budget
    augment = setting.data.augment if budget.augment is None else budget.augment
    cache_key = (teacher.key, teacher.sha256, data.fingerprint()) if (teacher is not None and teacher_cache) else None
    result = fit(
        model, data, budget, objective, seed=seed, device=device,
        batch_size=budget.batch_size or setting.data.batch_size, augment=augment,
        eval_batch_size=setting.data.eval_batch_size,
        teacher=teacher.model if teacher is not None else None, teacher_cache_key=cache_key,
        report=report, progress=progress, desc=f"student {setting.student.model} seed {seed}",
    )
    metrics: dict[str, Any] = {
        "seed": seed,
        "val_accuracy": result.history[-1],
        "val_history": result.history,
        "epochs": result.epochs,
        "stopped_early": result.stopped_early,
        "part_means": result.part_means,
        "train_seconds": result.seconds,
        "samples_per_second": result.samples / max(result.seconds, 1e-9),
    }
    if eval_test:
        metrics["test_accuracy"] = evaluate(model, data.eval_loader("test", setting.data.eval_batch_size, device))
    if getattr(model, "init_sha256", None):
        metrics["init_sha256"] = model.init_sha256
    metrics["wall_seconds"] = time.perf_counter() - start
    if return_model:
        metrics["model"] = model
    return metrics


def train_runs(
    setting: Setting,
    objective_config: Mapping[str, Any] | str,
    seeds: list[int],
    *,
    eval_test: bool = False,
    out: str | os.PathLike | None = None,
    progress: bool = False,
    teacher_cache: bool = True,
) -> dict[str, Any]:
    """Run :func:`run_trial` once per seed; aggregate means and standard deviations.
    With ``out``, write ``metrics.json``, the objective config and each student's weights.

    With ``eval_test``, each seed's student is also evaluated beyond accuracy on the test
    split (:func:`relkd.evaluation.evaluate_model`): ``top5_accuracy``, ``ece``, ``nll``,
    ``per_class_accuracy``, ``teacher_agreement`` (when the objective uses the teacher) and
    ``degradation`` = {kind: {severity: accuracy}}; the summary holds their means over seeds."""
    start = time.perf_counter()
    objective = build_objective(objective_config)
    teacher = get_teacher(setting, progress=progress) if objective.needs_teacher else None
    per_seed = []
    out_dir = Path(out) if out is not None else None
    for seed in seeds:
        m = run_trial(setting, objective.to_config(), seed=seed, eval_test=eval_test, teacher=teacher,
                      teacher_cache=teacher_cache, progress=progress,
                      return_model=out_dir is not None or eval_test)
        model = m.pop("model", None)
        if eval_test and model is not None:
            m.update(_evaluate_beyond_accuracy(setting, model, teacher))
        if out_dir is not None and model is not None:
            out_dir.mkdir(parents=True, exist_ok=True)
            torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, out_dir / f"student_seed{seed}.pt")
        per_seed.append(m)
    summary: dict[str, Any] = {"setting": setting.name, "student": setting.student.model,
                               "teacher": setting.teacher.model if teacher else None, "seeds": list(seeds)}
    for metric in ("val_accuracy", "test_accuracy"):
        values = [m[metric] for m in per_seed if metric in m]
        if values:
            summary[metric] = statistics.fmean(values)
            summary[f"{metric}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
    if eval_test and per_seed:
        summary.update(_mean_evaluation(per_seed))
    if per_seed and "init_sha256" in per_seed[0]:
        summary["init_sha256"] = per_seed[0]["init_sha256"]  # the student's init checkpoint
    if teacher is not None:
        summary["teacher_val_accuracy"] = teacher.val_accuracy
        summary["teacher_test_accuracy"] = teacher.test_accuracy
    summary["wall_seconds"] = time.perf_counter() - start
    total_samples = sum(m["samples_per_second"] * m["train_seconds"] for m in per_seed)
    summary["samples_per_second"] = total_samples / max(sum(m["train_seconds"] for m in per_seed), 1e-9)
    summary["objective_config"] = objective.to_config()
    summary["per_seed"] = per_seed
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        tmp = out_dir / ".metrics.json.tmp"
        tmp.write_text(json.dumps(summary, indent=2))
        os.replace(tmp, out_dir / "metrics.json")
        from .config import save_config

        save_config(objective.to_config(), out_dir / "objective.yaml")
    return summary


def _evaluate_beyond_accuracy(setting: Setting, model: TappedModel, teacher: TeacherResult | None) -> dict[str, Any]:
    """The test-split metrics of :func:`relkd.evaluation.evaluate_model` that a run's
    ``metrics.json`` carries besides ``test_accuracy`` (which equals its ``accuracy``)."""
    from .evaluation import evaluate_model

    result = evaluate_model(model, load_data(setting), split="test", batch_size=setting.data.eval_batch_size,
                            teacher=teacher.model if teacher is not None else None, seed=setting.seed)
    keys = ("top5_accuracy", "ece", "nll", "per_class_accuracy", "teacher_agreement", "degradation")
    return {k: result[k] for k in keys if k in result}


def _mean_evaluation(per_seed: list[dict[str, Any]]) -> dict[str, Any]:
    """Means over seeds of the scalar evaluation metrics and of every degradation cell."""
    out: dict[str, Any] = {}
    for metric in ("top5_accuracy", "ece", "nll", "teacher_agreement"):
        values = [m[metric] for m in per_seed if metric in m]
        if values:
            out[metric] = statistics.fmean(values)
    if all("degradation" in m for m in per_seed):
        first = per_seed[0]["degradation"]
        out["degradation"] = {kind: {sev: statistics.fmean(m["degradation"][kind][sev] for m in per_seed)
                                     for sev in by_severity} for kind, by_severity in first.items()}
    return out
