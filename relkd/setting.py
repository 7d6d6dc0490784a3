"""The setting: everything a run needs besides the objective.

A setting file names the data, the teacher (model and training recipe), the student and
the student's training budget, a seed and a device. A study file is a setting plus
``search`` and ``optuna`` sections, so any study file is also a valid setting::

    name: fmnist_quick
    seed: 0
    device: auto                 # auto (cuda, then mps, then cpu) | cpu | cuda | cuda:1 | mps
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

from .config import ConfigError, FieldChecker, join_path, read_yaml_file

__all__ = ["Setting", "DataSpec", "ModelSpec", "Recipe", "validate_setting", "setting_or_errors", "load_setting",
           "resolve_device"]

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("cosine", "onecycle", "step", "none")
# The CIFAR recipe of the distillation literature (CRD): lr x 0.1 at epochs 150, 180 and 210 of 240.
STEP_MILESTONES = (0.625, 0.75, 0.875)
STUDY_SECTIONS = ("search", "optuna", "compare")  # validated by the study driver / compare, kept as they are
_TOP_FIELDS = ("name", "seed", "device", "data", "teacher", "student", "budget", *STUDY_SECTIONS)


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


@dataclass(frozen=True)
class ModelSpec:
    model: str
    params: dict[str, Any] = field(default_factory=dict)


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


@dataclass(frozen=True)
class Setting:
    data: DataSpec
    teacher: ModelSpec
    teacher_recipe: Recipe
    student: ModelSpec
    budget: Recipe
    seed: int = 0
    device: str = "auto"
    name: str = "setting"
    extra: dict[str, Any] = field(default_factory=dict)  # a study file's search / optuna sections

    def to_dict(self) -> dict[str, Any]:
        """The canonical setting as plain data (study sections included when present)."""
        teacher = {"model": self.teacher.model, "params": dict(self.teacher.params),
                   **dataclasses.asdict(self.teacher_recipe)}
        out = {
            "name": self.name,
            "seed": self.seed,
            "device": self.device,
            "data": dataclasses.asdict(self.data),
            "teacher": teacher,
            "student": dataclasses.asdict(self.student),
            "budget": dataclasses.asdict(self.budget),
        }
        for section in (out["teacher"], out["budget"]):
            section["milestones"] = list(section["milestones"])  # plain YAML/JSON
        out.update(copy.deepcopy(self.extra))
        return out

    def replace(self, **changes: Any) -> Setting:
        """A copy with top-level fields or sections replaced (``budget=Recipe(...)``)."""
        return dataclasses.replace(self, **changes)

    def with_budget(self, **changes: Any) -> Setting:
        """A copy with budget fields replaced (e.g. ``epochs=10``)."""
        return dataclasses.replace(self, budget=dataclasses.replace(self.budget, **changes))


def resolve_device(device: str = "auto") -> torch.device:
    """``auto``: CUDA if available, then MPS, then the CPU; otherwise ``torch.device(device)``."""
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    return torch.device(device)


def _check_device(c: FieldChecker, value: Any) -> str:
    if not isinstance(value, str):
        c.error("device", f"expected 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps', got {value!r}")
        return "auto"
    if value == "auto":
        return value
    try:
        torch.device(value)
    except (RuntimeError, ValueError):
        c.error("device", f"expected 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps', got {value!r}")
    return value


def _check_model(c: FieldChecker, section: Any, path: str, extra_fields: tuple[str, ...] = ()) -> ModelSpec | None:
    from .models import model_entry

    if not c.mapping(section, path, ("model", "params", *extra_fields)):
        return None
    name = section.get("model")
    params = section.get("params") or {}
    try:
        entry = model_entry(name) if isinstance(name, str) else None
    except ValueError as err:
        c.error(join_path(path, "model"), str(err))
        return None
    if entry is None:
        c.error(join_path(path, "model"), f"expected a model name (see `relkd list models`), got {name!r}")
        return None
    if not isinstance(params, Mapping):
        c.error(join_path(path, "params"), f"expected a mapping of model parameters, got {params!r}")
        return None
    reserved = {"num_classes", "in_channels"} & set(params)
    for key in sorted(reserved):
        c.error(join_path(path, f"params.{key}"), "set by the dataset; remove it")
    params = {k: v for k, v in params.items() if k not in reserved}
    for key, message in entry.param_errors(params):
        c.error(join_path(path, f"params.{key}"), message)
    return ModelSpec(name, dict(params))


def _check_milestones(c: FieldChecker, value: Any, path: str) -> tuple[float, ...]:
    ok = isinstance(value, (list, tuple)) and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v < 1 for v in value)
    if not ok or list(value) != sorted(value):
        c.error(path, f"expected increasing fractions of the run between 0 and 1, e.g. [0.625, 0.75, 0.875] "
                      f"(epochs 150, 180, 210 of 240), got {value!r}")
        return STEP_MILESTONES
    return tuple(float(v) for v in value)


def _check_recipe(c: FieldChecker, section: Mapping[str, Any], path: str, defaults: Recipe) -> Recipe:
    get = section.get
    return Recipe(
        epochs=c.integer(get("epochs", defaults.epochs), join_path(path, "epochs"), minimum=1),
        optimizer=c.choice(get("optimizer", defaults.optimizer), join_path(path, "optimizer"), OPTIMIZERS),
        lr=c.number(get("lr", defaults.lr), join_path(path, "lr"), strict=True),
        momentum=c.number(get("momentum", defaults.momentum), join_path(path, "momentum"), maximum=0.999),
        weight_decay=c.number(get("weight_decay", defaults.weight_decay), join_path(path, "weight_decay")),
        schedule=c.choice(get("schedule", defaults.schedule), join_path(path, "schedule"), SCHEDULES),
        milestones=_check_milestones(c, get("milestones", defaults.milestones), join_path(path, "milestones")),
        gamma=c.number(get("gamma", defaults.gamma), join_path(path, "gamma"), strict=True, maximum=1.0),
        batch_size=c.optional(get("batch_size"), lambda v: c.integer(v, join_path(path, "batch_size"), minimum=1)),
        augment=c.optional(get("augment", defaults.augment), lambda v: c.boolean(v, join_path(path, "augment"))),
    )


_RECIPE_FIELDS = tuple(f.name for f in dataclasses.fields(Recipe))


def validate_setting(setting: Any, source: str | os.PathLike | None = None) -> Setting:
    """Check a setting (or study) mapping; return a :class:`Setting` or raise
    :class:`~relkd.config.ConfigError` listing every problem with its field path."""
    from .data import canonical_dataset_name

    c = FieldChecker()
    if not c.mapping(setting, "", _TOP_FIELDS):
        raise ConfigError(c.errors, source)
    for section in ("teacher", "student"):
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
            batch_size=c.integer(data_in.get("batch_size", data.batch_size), "data.batch_size", minimum=1),
            eval_batch_size=c.integer(data_in.get("eval_batch_size", data.eval_batch_size), "data.eval_batch_size",
                                      minimum=1),
            augment=c.boolean(data_in.get("augment", data.augment), "data.augment"),
            params=c.mapping_value(data_in.get("params") or {}, "data.params"),
        )

    teacher = student = None
    teacher_recipe = Recipe(epochs=10, augment=True)
    if "teacher" in setting:
        teacher = _check_model(c, setting["teacher"], "teacher", _RECIPE_FIELDS)
        if isinstance(setting["teacher"], Mapping):
            teacher_recipe = _check_recipe(c, setting["teacher"], "teacher", teacher_recipe)
    if "student" in setting:
        student = _check_model(c, setting["student"], "student")
    budget = Recipe()
    budget_in = setting.get("budget") or {}
    if c.mapping(budget_in, "budget", _RECIPE_FIELDS):
        budget = _check_recipe(c, budget_in, "budget", budget)

    name = setting.get("name", "setting")
    if not isinstance(name, str) or not name or "/" in name:
        c.error("name", f"expected a short name without '/', got {name!r}")
    seed = c.integer(setting.get("seed", 0), "seed", minimum=0)
    device = _check_device(c, setting.get("device", "auto"))
    if c.errors:
        raise ConfigError(c.errors, source)
    extra = {k: copy.deepcopy(setting[k]) for k in STUDY_SECTIONS if k in setting}
    return Setting(data, teacher, teacher_recipe, student, budget, seed, device, name, extra)


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


def load_setting(path: str | os.PathLike) -> Setting:
    """Read a setting or study file (YAML, safe loading) and validate it."""
    return validate_setting(read_yaml_file(path), path)
