"""The setting: everything a run needs besides the objective.

A setting file names the data, the teacher (model and training recipe), the student and
the student's training budget, a seed and a device. A study file is a setting plus
``search`` and ``optuna`` sections, so any study file is also a valid setting::

    name: fmnist_quick
    seed: 0
    device: auto                 # auto (cuda, then mps, then cpu) | cpu | cuda | cuda:1 | mps
    precision: auto              # CUDA only (relkd.engine.device): auto | bf16 | fp16 | fp32
    tf32: false                  # CUDA only: TensorFloat-32 for float32 matrix products
    data:
      dataset: fashion-mnist
      data_dir: null             # else RELKD_DATA_DIR, Debian's files, torchvision's cache
      val_fraction: 0.1
      split_seed: 0
      train_subset: 12000        # stratified subset for short trials (null: all)
      batch_size: 128
      augment: false             # student runs; false lets the teacher's outputs be cached
    teacher:
      model: cnn_large
      params: {}
      epochs: 8
      optimizer: sgd
      lr: 0.05
      augment: true
    student:
      model: cnn_tiny
      params: {}
    budget:
      epochs: 3
      optimizer: sgd
      lr: 0.05
      schedule: cosine

Transfer learning (all optional; absent, nothing changes)::

    data:
      classes: [5, 6, 7, 8, 9]     # keep these classes (indices or names), labels 0..k-1 in this order
      train_per_class: 100         # student runs: this many training samples per class
    student:                       # (and teacher:)
      init: runs/source.pt         # a state-dict file, or {pretrain: SOURCE.yaml}; head: replace | keep
      freeze: [stage1]             # stage names, or body (everything but the head)
      adapt: {ratio: 0.5}          # student only: pruned on the target first (relkd.setting_models, relkd.adapt)
    budget:                        # (and teacher:)
      body_lr_scale: 0.1           # every parameter but the head's trains at lr x 0.1

Few labels (optional): the student sees every training sample but only some keep their labels;
CE skips the others, KD and the relation and feature terms use them all (the teacher trains on
every label)::

    data:
      train_subset: 8000
      labelled: 1000               # stratified, deterministic in split_seed; null: every label

Data that does not fit on the device (relkd.data.stream): streamed through DataLoader workers,
the same batches as the device-resident path::

    data:
      loader: auto                 # device | stream | auto: device while the splits fit in max_resident_gib
      max_resident_gib: 4.0
      workers: 4                   # stream: worker processes (default: none for data in memory, else the
                                   # cores, at most 4)

The student's learning rate tuned first (relkd.setting_tune, relkd.tuning)::

    tune: {lr: [0.025, 0.05, 0.1, 0.2, 0.4], seeds: 3, extend: 2}   # or tune: {} for the defaults

:func:`validate_setting` returns a :class:`Setting` whose ``to_dict()`` is the canonical
form; errors name the field path (``budget.lr: expected a finite number > 0, got -1``).
"""
from __future__ import annotations

import copy
import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any, Mapping

import torch

from .data.stream import DEFAULT_MAX_RESIDENT_GIB, LOADERS
from .fields import ConfigError, FieldChecker, join_path, read_yaml_file
from .registry import short_repr
from .setting_models import AdaptSpec, InitSpec, ModelSpec, check_model
from .setting_tune import TuneSpec, check_tune

__all__ = ["Setting", "DataSpec", "ModelSpec", "InitSpec", "AdaptSpec", "Recipe", "TuneSpec", "validate_setting",
           "setting_or_errors",
           "load_setting", "resolve_device", "device_problem", "require_device_here", "setting_record",
           "comparable_setting", "EXECUTION_DATA_FIELDS"]

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("cosine", "onecycle", "step", "none")
# The CIFAR recipe of the distillation literature (CRD): lr x 0.1 at epochs 150, 180 and 210 of 240.
STEP_MILESTONES = (0.625, 0.75, 0.875)
STUDY_SECTIONS = ("search", "optuna", "compare")  # validated by the study driver / compare, kept as they are
_TOP_FIELDS = ("name", "seed", "device", "precision", "tf32", "data", "teacher", "student", "budget", "tune",
               *STUDY_SECTIONS)
PRECISIONS = ("auto", "bf16", "fp16", "fp32")  # what CUDA runs compute in (relkd.engine.device)


@dataclass(frozen=True)
class DataSpec:
    dataset: str = "fashion-mnist"
    data_dir: str | None = None
    val_fraction: float = 0.1
    split_seed: int = 0
    train_subset: int | None = None
    batch_size: int = 128
    eval_batch_size: int = 1024
    augment: bool = False
    params: dict[str, Any] = field(default_factory=dict)
    classes: tuple[int | str, ...] | None = None  # keep these classes (indices or names); None: all
    train_per_class: int | None = None  # student runs: this many training samples of each class
    labelled: int | None = None  # student runs: only this many training samples keep their labels
    loader: str = "auto"  # device | stream | auto (relkd.data.stream): how batches are made
    max_resident_gib: float = DEFAULT_MAX_RESIDENT_GIB  # loader auto: the splits stay on the device up to this
    workers: int | None = None  # loader stream: DataLoader worker processes (None: relkd.data.stream.default_workers)


@dataclass(frozen=True)
class Recipe:
    """How a network is trained: optimiser, schedule and number of epochs."""

    epochs: int = 3
    optimizer: str = "sgd"
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    milestones: tuple[float, ...] = STEP_MILESTONES  # schedule step: fractions of the run where lr *= gamma
    gamma: float = 0.1
    batch_size: int | None = None  # default: data.batch_size
    augment: bool | None = None  # default: data.augment (student) / true (teacher)
    body_lr_scale: float = 1.0  # lr of every parameter but the classifier head's = lr x this

    def to_dict(self) -> dict[str, Any]:
        """Plain data; ``body_lr_scale`` only when it is not 1."""
        out = dataclasses.asdict(self)
        out["milestones"] = list(out["milestones"])
        if out["body_lr_scale"] == 1.0:
            del out["body_lr_scale"]
        return out

    def key_fields(self, default_batch_size: int) -> dict[str, Any]:
        """The fields that change what this recipe trains, for cache keys: the batch size
        filled in; the step schedule's fields only for the step schedule (so adding them left
        the keys of other schedules as they were)."""
        out = self.to_dict()
        out["batch_size"] = out["batch_size"] or default_batch_size
        if out["schedule"] != "step":
            del out["milestones"], out["gamma"]
        return out


@dataclass(frozen=True)
class Setting:
    data: DataSpec
    teacher: ModelSpec | None  # None only in a pretrain setting (validate_setting(..., teacher_required=False))
    teacher_recipe: Recipe
    student: ModelSpec
    budget: Recipe
    seed: int = 0
    device: str = "auto"
    name: str = "setting"
    extra: dict[str, Any] = field(default_factory=dict)  # a study file's search / optuna sections
    precision: str = "auto"  # CUDA autocast: auto | bf16 | fp16 | fp32 (the CPU runs float32)
    tf32: bool = False  # CUDA: TensorFloat-32 for float32 matrix products (relation matrices included)
    tune: TuneSpec | None = None  # the student's learning rate tuned before runs (relkd.setting_tune)

    @property
    def batch_size(self) -> int:
        """The batch size the student trains with: ``budget.batch_size``, else ``data.batch_size``
        (every student run, population, calibration and memory estimate reads it here)."""
        return self.budget.batch_size or self.data.batch_size

    @property
    def augment(self) -> bool:
        """Whether the student's training batches are augmented: ``budget.augment`` where it is
        set, else ``data.augment``."""
        return self.data.augment if self.budget.augment is None else self.budget.augment

    @property
    def teacher_batch_size(self) -> int:
        """The batch size the teacher trains with: its own recipe's ``batch_size``, else
        ``data.batch_size`` (what :meth:`Recipe.key_fields` writes into the teacher's key)."""
        return self.teacher_recipe.batch_size or self.data.batch_size

    def to_dict(self) -> dict[str, Any]:
        """The canonical setting as plain data (study sections included when present)."""
        data = dataclasses.asdict(self.data)
        for key in ("classes", "train_per_class", "labelled", "workers"):  # new fields (also precision, tf32,
            if data[key] is None:                                            # loader): absent when unset
                del data[key]
            elif key == "classes":
                data[key] = list(data[key])
        for key, default in (("loader", "auto"), ("max_resident_gib", DEFAULT_MAX_RESIDENT_GIB)):
            if data[key] == default:
                del data[key]
        out = {
            "name": self.name,
            "seed": self.seed,
            "device": self.device,
            "data": data,
            "teacher": None if self.teacher is None else {**self.teacher.to_dict(), **self.teacher_recipe.to_dict()},
            "student": self.student.to_dict(),
            "budget": self.budget.to_dict(),
        }
        if self.teacher is None:
            del out["teacher"]
        out.update({k: v for k, v in (("precision", self.precision), ("tf32", self.tf32)) if v not in ("auto", False)})
        if self.tune is not None:  # written only when set, so older settings' records stay the same
            out["tune"] = self.tune.to_dict()
        out.update(copy.deepcopy(self.extra))
        return out

    def replace(self, **changes: Any) -> Setting:
        """A copy with top-level fields or sections replaced (``budget=Recipe(...)``)."""
        return dataclasses.replace(self, **changes)

    def with_budget(self, **changes: Any) -> Setting:
        """A copy with budget fields replaced (e.g. ``epochs=10``)."""
        return dataclasses.replace(self, budget=dataclasses.replace(self.budget, **changes))

    def preset(self, name: str) -> dict[str, Any]:
        """The preset ``name`` for this setting's student and teacher: the multi-layer presets
        (FitNets, AT, NST, VID, SRM) read these models' groups of blocks, as RepDistiller does
        (:func:`relkd.presets.preset`)."""
        from .models import body_stages
        from .presets import preset

        if self.teacher is None:
            return preset(name)
        return preset(name, stages=(body_stages(self.student.model, self.student.params),
                                    body_stages(self.teacher.model, self.teacher.params)))


def setting_record(setting: Setting) -> dict[str, Any]:
    """The part of a setting or study file that every run of a study must share (not search /
    optuna / compare, not the name)."""
    return {k: v for k, v in setting.to_dict().items() if k not in ("search", "optuna", "compare", "name")}


# Where a process runs, not what it trains: may differ between workers and runs (a streamed
# worker trains on the batches a device-resident one does).
EXECUTION_DATA_FIELDS = ("data_dir", "eval_batch_size", "loader", "max_resident_gib", "workers")


def comparable_setting(record: dict[str, Any]) -> dict[str, Any]:
    """A setting record without the fields that do not change a run's result (device,
    data folder, evaluation batch size, how batches are loaded): what workers of one study, and reused confirm
    runs, must agree on."""
    out = {k: v for k, v in record.items() if k != "device"}
    out["data"] = {k: v for k, v in record.get("data", {}).items() if k not in EXECUTION_DATA_FIELDS}
    for role in ("student", "teacher"):  # where an init file lies; its content is compared by hash (INITS_ATTR)
        section = out.get(role)
        if isinstance(section, dict) and isinstance(section.get("init"), dict):
            out[role] = {**section, "init": {k: v for k, v in section["init"].items() if k not in ("path", "pretrain")}}
    return out


DEVICE_NAMES = "'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'"


def device_problem(value: Any, *, here: bool = True) -> str | None:
    """What is wrong with a device value, or ``None``: not a device name, or (``here``) a
    device this machine does not have (``cuda`` without CUDA, ``cuda:N`` past the last GPU,
    ``mps`` without Metal). ``auto`` is always fine. The one device check: validation of
    files and flags and :func:`resolve_device` (every run) call it."""
    if value == "auto":
        return None
    try:
        device = torch.device(value) if isinstance(value, str) and value else None
    except (RuntimeError, ValueError):
        device = None
    if device is None or device.type not in ("cpu", "cuda", "mps"):
        return f"expected {DEVICE_NAMES}, got {short_repr(value)}"
    if not here or device.type == "cpu":
        return None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            return f"{value!r} asked, but this machine has no CUDA device; expected 'auto' or 'cpu' here"
        if device.index is not None and device.index >= count:
            last = "cuda:0" if count == 1 else f"cuda:0 to cuda:{count - 1}"
            return f"{value!r} asked, but this machine has {count} CUDA device(s): expected {last}, 'auto' or 'cpu'"
        return None
    mps = getattr(torch.backends, "mps", None)
    if mps is None or not mps.is_available():
        return f"{value!r} asked, but MPS (Apple Metal) is not available here; expected 'auto' or 'cpu'"
    return None


def resolve_device(device: str = "auto", field: str = "device") -> torch.device:
    """``auto``: CUDA if available, then MPS, then the CPU; otherwise ``torch.device(device)``
    after checking this machine has it (``ValueError`` naming ``field`` if not)."""
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if problem := device_problem(device):
        raise ValueError(f"{field}: {problem}")
    return torch.device(device)


def require_device_here(setting: Setting, source: str | os.PathLike | None = None) -> Setting:
    """``setting`` if this machine has its device; otherwise :class:`ConfigError` on ``device``.
    Files are checked when they are read for a run or a validation; a setting stored in a
    study (read back for status or export) is not, since it may come from another machine."""
    if problem := device_problem(setting.device):
        raise ConfigError([f"device: {problem}"], source)
    return setting


def _check_device(c: FieldChecker, value: Any) -> str:
    if problem := device_problem(value, here=False):
        c.error("device", problem)
        return "auto"
    return value


def _check_milestones(c: FieldChecker, value: Any, path: str) -> tuple[float, ...]:
    ok = isinstance(value, (list, tuple)) and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v < 1 for v in value)
    if not ok or list(value) != sorted(value):
        c.error(path, f"expected increasing fractions of the run between 0 and 1, e.g. [0.625, 0.75, 0.875] "
                      f"(epochs 150, 180, 210 of 240), got {value!r}")
        return STEP_MILESTONES
    return tuple(float(v) for v in value)


def _check_recipe(c: FieldChecker, section: Mapping[str, Any], path: str, defaults: Recipe,
                  min_epochs: int = 1) -> Recipe:
    get = section.get
    return Recipe(
        epochs=c.integer(get("epochs", defaults.epochs), join_path(path, "epochs"), minimum=min_epochs),
        optimizer=c.choice(get("optimizer", defaults.optimizer), join_path(path, "optimizer"), OPTIMIZERS),
        lr=c.number(get("lr", defaults.lr), join_path(path, "lr"), strict=True),
        momentum=c.number(get("momentum", defaults.momentum), join_path(path, "momentum"), maximum=0.999),
        weight_decay=c.number(get("weight_decay", defaults.weight_decay), join_path(path, "weight_decay")),
        schedule=c.choice(get("schedule", defaults.schedule), join_path(path, "schedule"), SCHEDULES),
        milestones=_check_milestones(c, get("milestones", defaults.milestones), join_path(path, "milestones")),
        gamma=c.number(get("gamma", defaults.gamma), join_path(path, "gamma"), strict=True, maximum=1.0),
        batch_size=c.optional(get("batch_size"), lambda v: c.integer(v, join_path(path, "batch_size"), minimum=2)),
        augment=c.optional(get("augment", defaults.augment), lambda v: c.boolean(v, join_path(path, "augment"))),
        body_lr_scale=c.number(get("body_lr_scale", defaults.body_lr_scale), join_path(path, "body_lr_scale"),
                               strict=True, maximum=1.0),
    )


_RECIPE_FIELDS = tuple(f.name for f in dataclasses.fields(Recipe))


def _check_classes(c: FieldChecker, value: Any) -> tuple[int | str, ...] | None:
    if value is None:
        return None
    allowed = "a list of at least two distinct class indices or names, e.g. [5, 6, 7, 8, 9]"
    if not isinstance(value, list) or len(value) < 2:
        c.error("data.classes", f"expected {allowed}, got {value!r}")
        return None
    ok = True
    seen: set[int | str] = set()
    for i, item in enumerate(value):
        if not ((isinstance(item, int) and not isinstance(item, bool) and item >= 0)
                or (isinstance(item, str) and item.strip())):
            c.error(f"data.classes[{i}]", f"expected a class index >= 0 or a class name, got {short_repr(item)}")
            ok = False
        elif item in seen:
            c.error(f"data.classes[{i}]", f"class {item!r} is given twice; expected {allowed}")
            ok = False
        else:
            seen.add(item)
    return tuple(value) if ok else None


def validate_setting(setting: Any, source: str | os.PathLike | None = None, *,
                     teacher_required: bool = True) -> Setting:
    """Check a setting (or study) mapping; return a :class:`Setting` or raise
    :class:`~relkd.config.ConfigError` listing every problem with its field path.
    ``teacher_required=False`` accepts a setting without a teacher (``relkd pretrain``'s
    source settings); its ``teacher`` is then ``None``."""
    from .data import canonical_dataset_name

    c = FieldChecker()
    if not c.mapping(setting, "", _TOP_FIELDS):
        raise ConfigError(c.errors, source)
    for section in ("teacher", "student") if teacher_required else ("student",):
        if section not in setting:
            example = "cnn_large" if section == "teacher" else "cnn_tiny"
            c.error(section, f"missing; e.g. {section}: {{model: {example}}}")

    data_in = setting.get("data") or {}
    data = DataSpec()
    if c.mapping(data_in, "data", tuple(f.name for f in dataclasses.fields(DataSpec))):
        dataset = data_in.get("dataset", data.dataset)
        try:
            canonical_dataset_name(dataset)
        except ValueError as err:
            c.error("data.dataset", str(err))
        data_dir = data_in.get("data_dir")
        if data_dir is not None and not isinstance(data_dir, str):
            c.error("data.data_dir", f"expected a directory path or null, got {data_dir!r}")
        data = DataSpec(
            dataset=dataset,
            data_dir=data_dir,
            val_fraction=c.number(data_in.get("val_fraction", data.val_fraction), "data.val_fraction",
                                  strict=True, maximum=0.9),
            split_seed=c.integer(data_in.get("split_seed", data.split_seed), "data.split_seed", minimum=0),
            train_subset=c.optional(data_in.get("train_subset"),
                                    lambda v: c.integer(v, "data.train_subset", minimum=1)),
            batch_size=c.integer(data_in.get("batch_size", data.batch_size), "data.batch_size", minimum=2),
            eval_batch_size=c.integer(data_in.get("eval_batch_size", data.eval_batch_size), "data.eval_batch_size",
                                      minimum=1),
            augment=c.boolean(data_in.get("augment", data.augment), "data.augment"),
            params=c.mapping_value(data_in.get("params") or {}, "data.params"),
            classes=_check_classes(c, data_in.get("classes")),
            train_per_class=c.optional(data_in.get("train_per_class"),
                                       lambda v: c.integer(v, "data.train_per_class", minimum=1)),
            labelled=c.optional(data_in.get("labelled"), lambda v: c.integer(v, "data.labelled", minimum=1)),
            loader=c.choice(data_in.get("loader", data.loader), "data.loader", LOADERS),
            max_resident_gib=c.number(data_in.get("max_resident_gib", data.max_resident_gib),
                                      "data.max_resident_gib", strict=True),
            workers=c.optional(data_in.get("workers"), lambda v: c.integer(v, "data.workers", minimum=0)),
        )
        if data.train_subset is not None and data.train_per_class is not None:
            c.error("data.train_per_class", "give data.train_subset (a total) or data.train_per_class, not both")
        if data.labelled is not None and data.train_subset is not None and data.labelled > data.train_subset:
            c.error("data.labelled", f"{data.labelled} labelled samples are more than data.train_subset's "
                                     f"{data.train_subset}; use at most {data.train_subset}, or null for every label")

    teacher = student = None
    teacher_recipe = Recipe(epochs=10, augment=True)
    if "teacher" in setting:
        teacher = check_model(c, setting["teacher"], "teacher", _RECIPE_FIELDS)
        if isinstance(setting["teacher"], Mapping):
            teacher_recipe = _check_recipe(c, setting["teacher"], "teacher", teacher_recipe, min_epochs=0)
        if teacher is not None and teacher_recipe.epochs == 0:
            teacher = _teacher_as_it_is(c, teacher, setting["teacher"])
    if "student" in setting:
        student = check_model(c, setting["student"], "student")
    budget = Recipe()
    budget_in = setting.get("budget") or {}
    if c.mapping(budget_in, "budget", _RECIPE_FIELDS):
        budget = _check_recipe(c, budget_in, "budget", budget)

    name = setting.get("name", "setting")
    if not isinstance(name, str) or not name or "/" in name:
        c.error("name", f"expected a short name without '/', got {name!r}")
    seed = c.integer(setting.get("seed", 0), "seed", minimum=0)
    device = _check_device(c, setting.get("device", "auto"))
    precision = c.choice(setting.get("precision", "auto"), "precision", PRECISIONS)
    tf32 = c.boolean(setting.get("tf32", False), "tf32")
    tune = check_tune(c, setting["tune"], "tune", budget.lr) if "tune" in setting else None
    if c.errors:
        raise ConfigError(c.errors, source)
    extra = {k: copy.deepcopy(setting[k]) for k in STUDY_SECTIONS if k in setting}
    return Setting(data, teacher, teacher_recipe, student, budget, seed, device, name, extra, precision, tf32, tune)


def _teacher_as_it_is(c: FieldChecker, teacher: ModelSpec, section: Mapping[str, Any]) -> ModelSpec:
    """``teacher.epochs: 0``: the teacher is used as its ``init`` file holds it, head included
    (``head`` defaults to ``keep`` then; ``replace`` would give it an untrained classifier)."""
    if teacher.init is None or teacher.init.path is None:
        c.error("teacher.epochs", "0 trains nothing, so the teacher must be a trained checkpoint: give teacher.init "
                                  "(a .pt/.pth file of this model, head included), or epochs of at least 1")
        return teacher
    init = section.get("init")
    if isinstance(init, Mapping) and init.get("head", "keep") != "keep":
        c.error("teacher.init.head", f"teacher.epochs 0 uses the file's classifier as it is, so head must be keep "
                                     f"(or left out), got {init.get('head')!r}; train the teacher (epochs >= 1) "
                                     f"to give it a new head")
        return teacher
    return dataclasses.replace(teacher, init=dataclasses.replace(teacher.init, head="keep"))


def setting_or_errors(document: Any, c: FieldChecker, source: str | os.PathLike | None = None) -> Setting | None:
    """Validate the setting part of a study or compare file, adding its problems to ``c``
    (so they are reported together with the file's other sections); ``None`` if invalid.
    A document that is not a mapping raises at once."""
    try:
        return validate_setting(document, source)
    except ConfigError as err:
        if not isinstance(document, Mapping):
            raise
        c.errors.extend(err.errors)
        return None


def load_setting(path: str | os.PathLike, *, teacher_required: bool = True) -> Setting:
    """Read a setting or study file (YAML, safe loading) and validate it, its device
    against this machine included."""
    return require_device_here(validate_setting(read_yaml_file(path), path, teacher_required=teacher_required), path)
