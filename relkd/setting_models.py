"""A setting's model sections (``teacher:`` and ``student:``): which model, its parameters,
where its weights start (``init``), what stays frozen (``freeze``) and, for the student,
whether it is first adapted to the target task (``adapt``)::

    student:
      model: cnn_tiny
      init: {pretrain: studies/pretrain_fmnist_source.yaml}   # a pretrained student ...
      adapt: {ratio: 0.5}            # ... pruned to half its parameters on the target data (relkd.adapt)

``adapt`` fields and their defaults (:class:`AdaptSpec`): ``ratio`` (required, in (0, 1):
the target size as a fraction of the original), ``measure: params`` (or ``macs``),
``criterion: activation`` (the target-aware method: cumulative activation statistics and a
priority across layers; ``l1``: uniform L1-norm filter pruning, the baseline), ``step:
0.1`` (the size removed per pruning step, a fraction of the original), ``warmup_epochs:
2`` (fine-tuning before the first step), ``finetune_epochs: 2`` (after each step),
``min_channels: 2`` (no layer keeps fewer). Fine-tuning uses the setting's ``budget``
(optimizer, lr, schedule) with these epochs, cross-entropy only, on the target's training
split.
"""
from __future__ import annotations

import copy
import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

from .fields import FieldChecker, join_path
from .models.prune import PRUNABLE as PRUNABLE_FAMILIES

__all__ = ["InitSpec", "AdaptSpec", "ModelSpec", "HEADS", "FREEZE_BODY", "ADAPT_MEASURES", "ADAPT_CRITERIA",
           "PRUNABLE_FAMILIES", "check_model"]

HEADS = ("replace", "keep")
FREEZE_BODY = "body"
ADAPT_MEASURES = ("params", "macs")
ADAPT_CRITERIA = ("activation", "l1")


@dataclass(frozen=True)
class InitSpec:
    """Where a model's starting weights come from: a state-dict file (``path``), or the
    checkpoint ``relkd pretrain`` makes from a source setting file (``pretrain``).
    ``head: replace`` (the default) gives the model a new, freshly initialised classifier
    head, as in torchvision's fine-tuning recipes; ``keep`` loads the file's head too (it
    must fit: same number of classes)."""

    path: str | None = None
    pretrain: str | None = None
    head: str = "replace"
    #: the checkpoint file a ``pretrain`` source was resolved to (:func:`relkd.pretrain.resolve_inits`);
    #: where this process found it, not part of the setting's record
    checkpoint: str | None = field(default=None, compare=False, repr=False)

    def to_dict(self) -> dict[str, Any]:
        where = {"path": self.path} if self.path is not None else {"pretrain": self.pretrain}
        return {**where, "head": self.head}


@dataclass(frozen=True)
class AdaptSpec:
    """How the student is adapted to the target task before it is distilled: its ``init``
    pruned filter by filter to ``ratio`` of its size (:mod:`relkd.adapt`)."""

    ratio: float
    measure: str = "params"
    criterion: str = "activation"
    step: float = 0.1
    warmup_epochs: int = 2
    finetune_epochs: int = 2
    min_channels: int = 2
    #: the adapted model's file once made or found in the cache (:func:`relkd.adapt.resolve_student`);
    #: where this process found it, not part of the setting's record
    checkpoint: str | None = field(default=None, compare=False, repr=False)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        del out["checkpoint"]
        return out


@dataclass(frozen=True)
class ModelSpec:
    model: str
    params: dict[str, Any] = field(default_factory=dict)
    init: InitSpec | None = None
    freeze: tuple[str, ...] = ()  # stage names (stage1, ...) or ("body",): everything but the head
    role: str = field(default="student", compare=False, repr=False)  # "student" | "teacher", for messages
    adapt: AdaptSpec | None = None  # the student only

    def to_dict(self) -> dict[str, Any]:
        """``model`` and ``params``, plus ``init``, ``freeze`` and ``adapt`` when set."""
        out: dict[str, Any] = {"model": self.model, "params": copy.deepcopy(dict(self.params))}
        if self.init is not None:
            out["init"] = self.init.to_dict()
        if self.freeze:
            out["freeze"] = FREEZE_BODY if self.freeze == (FREEZE_BODY,) else list(self.freeze)
        if self.adapt is not None:
            out["adapt"] = self.adapt.to_dict()
        return out


def _check_init(c: FieldChecker, value: Any, path: str) -> InitSpec | None:
    """``init``: a path string, ``{path: P}`` or ``{pretrain: SETTING.yaml}``, with ``head``."""
    if value is None:
        return None
    example = f"e.g. {path}: runs/source.pt or {path}: {{pretrain: studies/pretrain_fmnist_source.yaml}}"
    if isinstance(value, str):
        value = {"path": value}
    if not isinstance(value, Mapping):
        c.error(path, f"expected a checkpoint path or a mapping with path or pretrain (and head); {example}; "
                      f"got {value!r}")
        return None
    if not c.mapping(value, path, ("path", "pretrain", "head")):
        return None
    where = [k for k in ("path", "pretrain") if value.get(k) is not None]
    if len(where) != 1:
        c.error(path, f"give exactly one of path (a state-dict file) and pretrain (a setting file for "
                      f"`relkd pretrain`); {example}")
        return None
    file = value[where[0]]
    if not isinstance(file, str) or not file.strip() or "\0" in file:
        what = "a state-dict file" if where[0] == "path" else "a setting file (YAML)"
        c.error(join_path(path, where[0]), f"expected the path of {what}, got {file!r}")
        return None
    head = c.choice(value.get("head", "replace"), join_path(path, "head"), HEADS)
    if head is None:
        return None
    return InitSpec(**{where[0]: file}, head=head)


def _check_freeze(c: FieldChecker, value: Any, path: str) -> tuple[str, ...]:
    if value is None or value == []:
        return ()
    allowed = f"a list of stage names such as [stage1, stage2], or {FREEZE_BODY} (everything but the head)"
    if value == FREEZE_BODY:
        return (FREEZE_BODY,)
    if not isinstance(value, list):
        c.error(path, f"expected {allowed}, got {value!r}")
        return ()
    out = []
    for i, item in enumerate(value):
        if not isinstance(item, str) or not re.fullmatch(r"stage[1-9][0-9]*", item):
            hint = f"; {FREEZE_BODY} stands alone (freeze: {FREEZE_BODY})" if item == FREEZE_BODY else ""
            c.error(f"{path}[{i}]", f"expected a stage name stage1, stage2, ... (see the model's taps){hint}, "
                                    f"got {item!r}")
        elif item in out:
            c.error(f"{path}[{i}]", f"{item} is given twice; expected each stage at most once")
        else:
            out.append(item)
    return tuple(sorted(out, key=lambda name: int(name[len("stage"):])))


def check_ratio(c: FieldChecker, value: Any, path: str) -> float | None:
    """A size ratio strictly between 0 and 1 (a fraction of the original model)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
        c.error(path, f"expected a number strictly between 0 and 1 (the adapted size as a fraction of the "
                      f"original, e.g. 0.5), got {value!r}")
        return None
    return float(value)


def _check_adapt(c: FieldChecker, value: Any, path: str, model: str, family: str,
                 init: InitSpec | None) -> AdaptSpec | None:
    example = f"e.g. {path}: {{ratio: 0.5}}"
    if not isinstance(value, Mapping):
        c.error(path, f"expected a mapping with at least ratio; {example}; got {value!r}")
        return None
    names = tuple(f.name for f in dataclasses.fields(AdaptSpec) if f.name != "checkpoint")
    if not c.mapping(value, path, names):
        return None
    ok = True
    if "ratio" not in value:
        c.error(join_path(path, "ratio"), f"missing; {example}")
        ok = False
    ratio = check_ratio(c, value.get("ratio", 0.5), join_path(path, "ratio"))
    defaults = AdaptSpec(ratio=0.5)
    measure = c.choice(value.get("measure", defaults.measure), join_path(path, "measure"), ADAPT_MEASURES)
    criterion = c.choice(value.get("criterion", defaults.criterion), join_path(path, "criterion"), ADAPT_CRITERIA)
    step = c.number(value.get("step", defaults.step), join_path(path, "step"), strict=True, maximum=0.9)
    warmup = c.integer(value.get("warmup_epochs", defaults.warmup_epochs), join_path(path, "warmup_epochs"),
                       minimum=0)
    finetune = c.integer(value.get("finetune_epochs", defaults.finetune_epochs), join_path(path, "finetune_epochs"),
                         minimum=0)
    min_channels = c.integer(value.get("min_channels", defaults.min_channels), join_path(path, "min_channels"),
                             minimum=1)
    if family not in PRUNABLE_FAMILIES:
        c.error(path, f"model {model!r} (family {family or 'unknown'}) cannot be pruned; relkd adapts the families "
                      f"{', '.join(PRUNABLE_FAMILIES)} (expected a model of one of them; relkd list models shows each "
                      f"model's family)")
        ok = False
    if init is None:
        c.error(path, "needs a pretrained student to adapt: give student.init, e.g. init: {pretrain: "
                      "studies/pretrain_fmnist_source.yaml} or init: runs/source.pt")
        ok = False
    if not ok or None in (ratio, measure, criterion, step, warmup, finetune, min_channels):
        return None
    return AdaptSpec(ratio, measure, criterion, step, warmup, finetune, min_channels)


def check_model(c: FieldChecker, section: Any, path: str, extra_fields: tuple[str, ...] = ()) -> ModelSpec | None:
    """A ``teacher`` or ``student`` section (``path``); problems are added to ``c``."""
    from .models import model_entry

    allowed = ("model", "params", "init", "freeze", *(("adapt",) if path == "student" else ()), *extra_fields)
    if not c.mapping(section, path, allowed):
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
        c.error(join_path(path, f"params.{key}"), "set by the dataset, so it must not be given here; remove it")
    params = {k: v for k, v in params.items() if k not in reserved}
    for key, message in entry.param_errors(params):
        c.error(join_path(path, f"params.{key}"), message)
    init = _check_init(c, section.get("init"), join_path(path, "init"))
    if init is not None and params.get("weights"):
        c.error(join_path(path, "init"), f"give either {path}.init or {path}.params.weights, not both "
                                         f"({path}.init also replaces the head and records the file's hash)")
    freeze = _check_freeze(c, section.get("freeze"), join_path(path, "freeze"))
    adapt = None
    if section.get("adapt") is not None:
        adapt = _check_adapt(c, section["adapt"], join_path(path, "adapt"), name,
                             str(entry.property("family", default="")), init)
    return ModelSpec(name, dict(params), init, freeze, role=path, adapt=adapt)
