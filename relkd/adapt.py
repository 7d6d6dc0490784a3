"""Target-aware adaptation: prune a pretrained student to the target task, filter by filter,
before distilling into it (Zhong, Li, Maki et al. 2018, "target-aware transfer learning").

A setting whose student has an ``adapt`` section (:mod:`relkd.setting_models`) trains its
runs from an adapted student: its ``init`` (the pretrained network, with a new head for the
target classes) fine-tuned on the target's training split, then pruned and fine-tuned in
turns until its size (parameters or MACs) is ``ratio`` of the original's::

    setting = load_setting("studies/adapt_fmnist.yaml")
    result = get_adapted(setting)           # made once, then loaded from the cache
    export_adapted(result, "runs/adapt")    # runs/adapt/model.pt + meta.json: student.model: adapted:runs/adapt
    setting = resolve_student(setting)      # what every run starts from (inits and adaptation resolved)

The method's two ideas, and the choices the public description leaves open (written down
here because the paper's body was not reachable from this project; its abstract names the
ideas, not their formulas):

1. **Cumulative activation statistics per layer.** For each channel group (a layer's
   filters; for a ResNet stage, every tensor added into its residual stream,
   :func:`relkd.models.prune.channel_groups`), the mean activation of each channel after
   its ReLU over the target training images (in eval mode, no augmentation). Within the
   group, channels are sorted by it and the normalised cumulative sum is taken: a
   channel's *cumulative share* is the part of the layer's total activation lost when it
   and every weaker channel of the layer are removed. *Choice:* the mean of the
   post-ReLU activation (non-negative, so the shares are well defined), the target's
   training split only.
2. **A priority across layers.** All channels of all layers are ranked by their
   cumulative share, lowest first (ties: the channel whose removal saves more size
   first): the layers whose weak tail carries least of their activation are pruned first,
   and a layer's channels always go weakest first. *Choice:* each step removes the
   shortest prefix of that ranking that brings the model down to the step's size
   (measured exactly on the pruned model), no layer below ``min_channels``.
3. **Alternating pruning and network optimisation.** ``warmup_epochs`` of fine-tuning
   (cross-entropy, the setting's budget recipe) before the first step, ``finetune_epochs``
   after each; each step removes ``step`` of the original size until ``ratio`` is reached;
   statistics are measured again before every step. *Choice:* the step sizes and epochs
   are fields with small defaults suited to short runs.

The baseline criterion ``criterion: l1`` runs the same loop with uniform L1-norm filter
pruning (Li et al. 2017): every layer keeps the same fraction of its original filters,
those with the largest L1 norm. Only the criterion differs, so a comparison measures it.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from . import __version__
from .cache import Artefact, ArtefactKind
from .engine import build_model, evaluate, fit, load_data, transfer_ident
from .fields import ConfigError
from .models import TappedModel, count_params, model_entry
from .models.adapted import META_FILE, PREFIX, WEIGHTS_FILE
from .models.prune import (
    activation_statistics,
    channel_groups,
    count_macs,
    l1_scores,
    prune_channels,
    structure,
)
from .objective import build_objective
from .pretrain import prepare_inits, resolve_inits
from .setting import AdaptSpec, Setting, resolve_device, validate_setting

__all__ = ["ADAPTED", "AdaptResult", "adapt_setting", "adapt_key", "adapt_model", "get_adapted", "export_adapted",
           "resolve_student",
           "prepare_student", "with_ratio", "model_size", "activation_ranking", "plan_activation", "plan_uniform_l1",
           "ADAPT_FORMAT"]

log = logging.getLogger(__name__)

#: bump when the adapted model's format or the adaptation changes meaning
ADAPT_FORMAT = 1


@dataclass
class AdaptResult(Artefact):
    """An adapted student on the store, its metadata and whether this call made it."""

    SUMMARY = ("checkpoint", "built", "key", "sha256", "criterion", "measure", "ratio", "ratio_reached",
               "original_params", "params", "original_macs", "macs", "warmup_val_accuracy", "val_accuracy",
               "test_accuracy", "steps_taken", "seconds")

    @property
    def model_name(self) -> str:
        return PREFIX + str(self.checkpoint.parent)


#: adapted students on the store: ``adapted/<model>-<key>/model.pt`` (a folder that
#: ``adapted:<folder>`` names); its consumers read the file, so a write error is an error
ADAPTED = ArtefactKind("adapted", "adapted model", AdaptResult, format=ADAPT_FORMAT, filename=WEIGHTS_FILE)


def with_ratio(setting: Setting, ratio: float | None, **fields: Any) -> Setting:
    """The setting with its student adapted to ``ratio`` (the student's ``adapt`` fields,
    or the defaults, with ``fields`` replaced); ``ratio`` 1 or ``None``: not adapted."""
    student = setting.student
    if ratio is None or ratio >= 1:
        return setting.replace(student=dataclasses.replace(student, adapt=None))
    base = student.adapt or AdaptSpec(ratio=ratio)
    adapt = dataclasses.replace(base, ratio=float(ratio), checkpoint=None, **fields)
    return setting.replace(student=dataclasses.replace(student, adapt=adapt))


def adapt_setting(setting: Setting, *, ratio: float | None = None, **fields: Any) -> Setting:
    """The setting with ``student.adapt`` fields replaced (``ratio``, ``criterion``, ...; a
    student without an ``adapt`` section gets one), validated again so that every problem
    names its field (``student.adapt.ratio``, a family that cannot be pruned, a missing
    ``student.init``). What ``relkd adapt --target-ratio R`` runs."""
    document = setting.to_dict()
    student = document["student"]
    adapt = dict(student.get("adapt") or {})
    adapt.update({k: v for k, v in fields.items() if v is not None})
    if ratio is not None:
        adapt["ratio"] = ratio
    if "ratio" not in adapt:
        raise ConfigError(["student.adapt.ratio: missing; give --target-ratio R or student.adapt: {ratio: R} "
                           "(the adapted size as a fraction of the original, e.g. 0.5)"])
    student["adapt"] = adapt
    checked = validate_setting(document, teacher_required=setting.teacher is not None)
    return checked.replace(device=setting.device)


def model_size(model: TappedModel, input_size: tuple[int, ...]) -> dict[str, int]:
    """``{"params": ..., "macs": ...}`` of ``model`` for one input of ``input_size``."""
    return {"params": count_params(model), "macs": count_macs(model, tuple(input_size))}


def adapt_key(setting: Setting, data: Any = None) -> str:
    """A hash of everything that determines the adapted model: the data as a student run sees
    it, the student model and its init (the checkpoint's SHA-256), the adapt fields, the
    fine-tuning recipe, the seed and the format. Not the file paths or the device."""
    data = data if data is not None else load_data(setting)
    spec = setting.student
    recipe = setting.budget.key_fields(setting.data.batch_size)
    recipe["augment"] = setting.data.augment if recipe["augment"] is None else recipe["augment"]
    del recipe["epochs"]  # the adapt fields say how long it fine-tunes
    ident = {
        "data": data.fingerprint(),
        "model": spec.model,
        "params": model_entry(spec.model).resolve_params(spec.params),
        "init": transfer_ident(dataclasses.replace(spec, freeze=())),
        "adapt": spec.adapt.to_dict(),
        "recipe": recipe,
        "seed": setting.seed,
    }
    return ADAPTED.key(ident)


# ----------------------------------------------------------------------------- choosing filters


def _size_function(measure: str, input_size: tuple[int, ...]) -> Callable[[TappedModel], int]:
    if measure == "params":
        return count_params
    return lambda model: count_macs(model, input_size)


def activation_ranking(stats: Mapping[str, torch.Tensor], cost: Mapping[str, float]) -> list[tuple[str, int]]:
    """Every channel, in the order the target-aware criterion removes them: by cumulative
    share of its layer's activation (module docstring), ties by the size it saves."""
    ranked = []
    for name, values in stats.items():
        values = values.detach().double().clamp_min(0).cpu()
        order = torch.argsort(values, stable=True)
        total = float(values.sum())
        shares = values[order] / total if total > 0 else torch.full_like(values, 1.0 / len(values))
        for share, channel in zip(torch.cumsum(shares, 0).tolist(), order.tolist()):
            ranked.append((share, -cost[name], name, channel))
    ranked.sort()
    return [(name, channel) for _, _, name, channel in ranked]


def _keep_after(model: TappedModel, removed: list[tuple[str, int]]) -> dict[str, list[int]]:
    drop: dict[str, set[int]] = {}
    for name, channel in removed:
        drop.setdefault(name, set()).add(channel)
    sizes = {g.name: g.size for g in channel_groups(model)}
    return {name: [i for i in range(sizes[name]) if i not in gone] for name, gone in drop.items()}


def plan_activation(model: TappedModel, stats: Mapping[str, torch.Tensor], goal: float, min_channels: int,
                    size: Callable[[TappedModel], int]) -> dict[str, list[int]] | None:
    """The fewest channels, in ranking order, whose removal brings ``model`` to ``goal``;
    ``None`` when even every removable channel is not enough."""
    groups = {g.name: g for g in channel_groups(model)}
    cost = {name: float(sum(model.net.state_dict()[k][0].numel() for k in g.producers)) for name, g in groups.items()}
    allowed = {name: max(0, g.size - min_channels) for name, g in groups.items()}
    candidates, taken = [], dict.fromkeys(groups, 0)
    for name, channel in activation_ranking(stats, cost):
        if taken[name] < allowed[name]:
            candidates.append((name, channel))
            taken[name] += 1

    def fits(k: int) -> bool:  # whether removing the first k candidates reaches the goal
        pruned = prune_channels(model, _keep_after(model, candidates[:k])) if k else model
        return size(pruned) <= goal

    if not candidates or not fits(len(candidates)):
        return None
    low, high = 0, len(candidates)  # fits(high) holds; find the smallest such k
    while low < high:
        mid = (low + high) // 2
        if fits(mid):
            high = mid
        else:
            low = mid + 1
    return _keep_after(model, candidates[:high])


def plan_uniform_l1(model: TappedModel, original: Mapping[str, int], goal: float, min_channels: int,
                    size: Callable[[TappedModel], int]) -> dict[str, list[int]] | None:
    """Every layer keeps the same fraction of its original filters (the largest fraction
    that reaches ``goal``), those with the largest L1 norm (Li et al. 2017)."""
    scores = l1_scores(model)
    groups = {g.name: g for g in channel_groups(model)}

    def keep_for(fraction: float) -> dict[str, list[int]]:
        keep = {}
        for name, g in groups.items():
            n = min(g.size, max(min_channels, math.ceil(fraction * original[name])))
            order = torch.argsort(scores[name].detach().cpu(), descending=True, stable=True)
            keep[name] = sorted(order[:n].tolist())
        return keep

    def fits(fraction: float) -> bool:
        return size(prune_channels(model, keep_for(fraction))) <= goal

    if not fits(0.0):
        return None
    low, high = 0.0, 1.0  # fits(low) holds
    for _ in range(30):
        mid = (low + high) / 2
        low, high = (mid, high) if fits(mid) else (low, mid)
    return keep_for(low)


# ----------------------------------------------------------------------------- the loop


def adapt_model(setting: Setting, *, progress: bool = False) -> tuple[TappedModel, dict[str, Any]]:
    """Adapt the setting's student (``student.adapt``) and return ``(model, metadata)``.
    ``setting`` must have its inits resolved (:func:`relkd.pretrain.resolve_inits`).
    Raises :class:`ConfigError` naming ``student.adapt.ratio`` when the ratio cannot be
    reached with ``min_channels`` channels left in every layer."""
    spec, adapt = setting.student, setting.student.adapt
    if adapt is None:
        raise ConfigError(["student.adapt: missing; e.g. student: {..., adapt: {ratio: 0.5}}"])
    start = time.perf_counter()
    device = resolve_device(setting.device)
    data = load_data(setting)
    input_size = tuple(data.train_images.shape[1:])
    model = build_model(dataclasses.replace(spec, adapt=None, freeze=()), data, setting.seed, device)
    size = _size_function(adapt.measure, input_size)
    before = model_size(model, input_size)
    original_size, original_widths = size(model), {g.name: g.size for g in channel_groups(model)}
    target = adapt.ratio * original_size
    none = build_objective("none")
    batch_size = setting.batch_size
    augment = setting.augment

    def finetune(epochs: int, step: int) -> float | None:
        if epochs < 1:
            return None
        result = fit(model, data, dataclasses.replace(setting.budget, epochs=epochs), none,
                     seed=setting.seed + step, device=device, batch_size=batch_size, augment=augment,
                     eval_batch_size=setting.data.eval_batch_size, progress=progress,
                     desc=f"adapt {spec.model} step {step}", precision=setting.precision)
        return result.history[-1]

    warmup = finetune(adapt.warmup_epochs, 0)
    steps: list[dict[str, Any]] = []
    while size(model) > target:
        number = len(steps) + 1
        goal = max(target, original_size * (1.0 - adapt.step * number))
        if adapt.criterion == "activation":
            batches = (x for x, _ in data.eval_loader("train", setting.data.eval_batch_size, device))
            keep = plan_activation(model, activation_statistics(model, batches), goal, adapt.min_channels, size)
        else:
            keep = plan_uniform_l1(model, original_widths, goal, adapt.min_channels, size)
        if keep is None:
            reached = size(model) / original_size
            raise ConfigError([f"student.adapt.ratio: {adapt.ratio} cannot be reached: with min_channels "
                               f"{adapt.min_channels} in every layer {spec.model} keeps more than "
                               f"{goal / original_size:.3f} of its {adapt.measure} (now {reached:.3f}); raise the "
                               f"ratio or lower student.adapt.min_channels"])
        model = prune_channels(model, keep)
        accuracy = finetune(adapt.finetune_epochs, number)
        widths = {g.name: g.size for g in channel_groups(model)}
        steps.append({"step": number, **model_size(model, input_size), "widths": widths, "val_accuracy": accuracy})
        log.info("adapt %s step %d: %d parameters, %d MACs (%.3f of the original %s), val accuracy %s",
                 spec.model, number, steps[-1]["params"], steps[-1]["macs"], size(model) / original_size,
                 adapt.measure, "n/a" if accuracy is None else f"{accuracy:.4f}")
    after = model_size(model, input_size)
    val = evaluate(model, data.eval_loader("val", setting.data.eval_batch_size, device), setting.precision)
    test = evaluate(model, data.eval_loader("test", setting.data.eval_batch_size, device), setting.precision)
    meta = {
        "format": ADAPT_FORMAT, "structure": structure(model), "num_classes": data.num_classes,
        "in_channels": data.in_channels, "input_size": list(input_size), "dataset": data.name,
        "classes": list(data.classes) if data.classes is not None else None,
        "source": {"model": spec.model, "params": spec.params, **transfer_ident(dataclasses.replace(spec, freeze=()))},
        **adapt.to_dict(), "original_params": before["params"], "original_macs": before["macs"],
        "params": after["params"], "macs": after["macs"], "ratio_reached": size(model) / original_size,
        "original_widths": original_widths, "widths": {g.name: g.size for g in channel_groups(model)},
        "warmup_val_accuracy": warmup, "val_accuracy": val, "test_accuracy": test, "steps": steps,
        "steps_taken": len(steps), "seed": setting.seed, "seconds": time.perf_counter() - start,
        "relkd": __version__,
    }
    return model, meta


def get_adapted(setting: Setting, *, progress: bool = False, force: bool = False) -> AdaptResult:
    """The setting's adapted student: loaded from the cache when an intact one for exactly
    this setting exists, else made (:func:`adapt_model`) and cached. Processes that start
    together wait on a file lock."""
    setting = resolve_inits(setting, progress=progress)
    if setting.student.adapt is None:
        raise ConfigError(["student.adapt: missing; e.g. student: {..., adapt: {ratio: 0.5}}"])
    return ADAPTED.get(adapt_key(setting), lambda: adapt_model(setting, progress=progress),
                       name=setting.student.model, force=force)


def resolve_student(setting: Setting, *, progress: bool = False) -> Setting:
    """The setting as its runs need it: init checkpoints resolved (trained on first use) and,
    with ``student.adapt``, the adapted model made or found in the cache. A setting with
    neither comes back as it is."""
    setting = resolve_inits(setting, progress=progress)
    adapt = setting.student.adapt
    if adapt is None or adapt.checkpoint is not None:
        return setting
    result = get_adapted(setting, progress=progress)
    student = dataclasses.replace(setting.student, adapt=dataclasses.replace(adapt, checkpoint=str(result.checkpoint)))
    return setting.replace(student=student)


def prepare_student(setting: Setting, *, progress: bool = False) -> dict[str, str]:
    """:func:`relkd.pretrain.prepare_inits`, then the adapted student made (or found), so a
    study or compare stops on a bad init or an unreachable ratio before its first run."""
    inits = prepare_inits(setting, progress=progress)
    resolve_student(setting, progress=progress)
    return inits


def export_adapted(result: AdaptResult, out: str | Path) -> Path:
    """Copy the adapted model into the folder ``out`` (``model.pt`` and ``meta.json``, its
    SHA-256 inside); a setting names it ``student.model: adapted:<out>``. Returns the folder."""
    folder = Path(out)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"--out {folder}: expected a folder (it will hold {WEIGHTS_FILE} and {META_FILE}), "
                         f"and a file is there")
    folder.mkdir(parents=True, exist_ok=True)
    result.export(folder / WEIGHTS_FILE, folder / META_FILE, exported_from=str(result.checkpoint))
    return folder
