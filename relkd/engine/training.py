"""The one training loop (:func:`fit`) for teachers and students, its optimizer and learning-rate
schedule, and top-1 evaluation.

A training step is written once, for one student (:func:`fit`) and for K
(:func:`relkd.engine.population.run_population`): :func:`train_step` runs the students on a
batch, takes the teacher's taps from :class:`TeacherTaps` (the teacher-output cache, or the
teacher run live), computes each student's loss parts, steps on the sum of their totals and
counts each student's parts in its :class:`PartSums`, which checks their finiteness every few
steps."""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import itertools
import json
import logging
import math
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping, Sequence

import torch

from ..data import DatasetSplits, DeviceLoader
from ..models import TappedModel
from ..models.transfer import body_and_head
from ..objective import Objective
from ..setting import Recipe
from .curves import Curve, learning_rate
from .resume import EpochCheckpoint, restore_fit
from .device import autocast, autocast_dtype, grad_scaler, prepare_input
from .teacher_outputs import TeacherOutputs

__all__ = ["NonFiniteLossError", "FitResult", "Report", "fit", "evaluate", "member_accuracies", "optimizer_step",
           "param_groups", "make_optimizer", "bind_objective", "prepare_stages", "TeacherTaps", "PartSums",
           "train_step", "check_interval", "non_finite_error", "raise_non_finite", "progress_bar"]

log = logging.getLogger(__name__)

#: ``report(epoch, val_accuracy)``: a truthy return stops training (how studies prune).
Report = Callable[[int, float], Any]


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or inf; ``part`` names the part that went bad."""

    def __init__(self, part: str, epoch: int, step: int, detail: str = ""):
        self.part, self.epoch, self.step = part, epoch, step
        super().__init__(
            f"the loss became NaN or inf in part {part!r} at epoch {epoch}, step {step}{detail}; "
            f"lower that part's weight or the learning rate"
        )


def param_groups(model: torch.nn.Module, recipe: Recipe) -> list[dict[str, Any]]:
    """The trainable parameters as optimizer groups: one group, or with ``body_lr_scale``
    a ``body`` group at ``lr x body_lr_scale`` and a ``head`` group at ``lr``."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    if recipe.body_lr_scale == 1.0 or not isinstance(model, TappedModel):
        return [{"params": trainable, "lr": recipe.lr}]
    body, head = body_and_head(model)
    groups = [{"params": [p for p in body if p.requires_grad], "lr": recipe.lr * recipe.body_lr_scale, "name": "body"},
              {"params": [p for p in head if p.requires_grad], "lr": recipe.lr, "name": "head"}]
    return [g for g in groups if g["params"]]


def make_optimizer(model: torch.nn.Module, recipe: Recipe, steps: int,
                   extra: Sequence[torch.nn.Parameter] = ()) -> tuple[torch.optim.Optimizer, Any]:
    """Optimizer and per-step schedule; every schedule scales each parameter group's own
    learning rate (frozen parameters are left out). ``extra``: parameters that train with the
    student (an objective's feature-term parts), a group ``objective`` at ``recipe.lr``."""
    groups = param_groups(model, recipe)
    if extra:
        groups.append({"params": list(extra), "lr": recipe.lr, "name": "objective"})
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


@torch.inference_mode()
def member_accuracies(loader: DeviceLoader, member_logits: Callable[[torch.Tensor], torch.Tensor],
                      precision: str = "auto") -> list[float]:
    """Top-1 accuracy over ``loader`` (in [0, 1]) of each of K models whose logits for a
    batch ``member_logits(x)`` gives as ``(K, B, classes)``; the hits are counted on the
    device and read once. The callers put their models in eval mode."""
    correct: torch.Tensor | None = None
    total = 0
    with autocast(loader.device, precision):
        for x, y in loader:
            hits = (member_logits(prepare_input(x, loader.device)).argmax(-1) == y).sum(1)
            correct = hits if correct is None else correct + hits
            total += int(y.numel())
    return [int(c) / max(total, 1) for c in correct] if correct is not None else []


def evaluate(model: TappedModel, loader: DeviceLoader, precision: str = "auto") -> float:
    """Top-1 accuracy of ``model`` over ``loader`` (in [0, 1])."""
    was_training = model.training
    model.eval()
    try:
        accuracies = member_accuracies(loader, lambda x: model(x, taps=("logits",))["logits"].unsqueeze(0),
                                       precision)
    finally:
        model.train(was_training)
    return accuracies[0] if accuracies else 0.0


def optimizer_step(opt: torch.optim.Optimizer, sched: Any, scaler: torch.amp.GradScaler, loss: torch.Tensor) -> None:
    """One training step on ``loss``: gradients (scaled where the precision needs it), the
    optimizer, the schedule."""
    opt.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(opt)
    scaler.update()
    sched.step()


def bind_objective(objective: Objective, model: TappedModel, teacher: TappedModel | None, loader: DeviceLoader,
                   precision: str = "auto") -> None:
    """Build the objective's trainable parts for the taps of ``model`` and ``teacher`` on the
    first samples of ``loader`` (both models in eval mode for the probe, so no BatchNorm
    statistic moves; nothing is drawn from a random stream) and the training set's size."""
    if objective.bound:
        return
    x = prepare_input(next(iter(loader.epoch(0)))[0][:2], loader.device)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), autocast(loader.device, precision):
            s_taps = model(x, taps=objective.student_taps)
            t_taps = teacher(x, taps=objective.teacher_taps) if teacher is not None else {}
    finally:
        model.train(was_training)
    objective.bind(s_taps, t_taps, loader.num_samples)


def prepare_stages(objective: Objective, teacher: TappedModel | None, loader: DeviceLoader,
                   teacher_key: tuple | None, precision: str = "auto") -> None:
    """Run the objective's stages before the student trains (SRM's dictionary) on the teacher's
    features over the training set in its stored order, without augmentation, so that every
    seed's run shares one stage; cached by ``teacher_key`` (the teacher checkpoint and its
    data; ``None``: uncached)."""
    if teacher is None:
        raise ValueError("this objective has a stage on the teacher's features (SRM), so it needs a teacher")
    plain = copy.copy(loader)
    plain.shuffle, plain.augment = False, False

    def batches(tap: str) -> Callable[[], Iterator[torch.Tensor]]:
        def run() -> Iterator[torch.Tensor]:
            for x, _ in plain.epoch(0):
                with torch.inference_mode(), autocast(loader.device, precision):
                    out = teacher(prepare_input(x, loader.device), taps=(tap,))[tap]
                yield out.float().clone()
        return run

    key = None
    if teacher_key is not None:
        text = json.dumps([list(map(str, teacher_key)), plain.batch_size, loader.device.type,
                           str(autocast_dtype(loader.device, precision))])
        key = hashlib.sha256(text.encode()).hexdigest()[:20]
    objective.prepare_stages(batches, key)


def check_interval(device: torch.device) -> int:
    """Steps between finiteness checks of the loss: every step on the CPU; every 25 on an
    accelerator, where the check makes the host wait for the device."""
    return 1 if device.type == "cpu" else 25


class TeacherTaps:
    """The teacher's taps for each training batch: from the teacher-output cache (computed or
    read once per epoch, then indexed by the batch's samples) when ``cache_key`` is given (the
    teacher checkpoint and its data), else the teacher run on the batch."""

    def __init__(self, teacher: TappedModel, taps: tuple[str, ...], loader: DeviceLoader,
                 cache_key: tuple | None, precision: str = "auto"):
        self.teacher, self.taps, self.loader, self.cache_key = teacher, taps, loader, cache_key
        self.precision = precision
        self.cached: dict[str, torch.Tensor] | None = None
        self.live = False

    def start_epoch(self, epoch: int, needed: bool = True) -> None:
        """Ready the taps of ``epoch`` of ``loader``; ``needed=False``: no batch of this epoch
        asks for them (each then gives ``None``)."""
        self.live, self.cached = needed, None
        if needed and self.cache_key is not None:
            loader = self.loader
            key = (*self.cache_key, loader.seed if loader.augments else None, epoch if loader.augments else None)
            self.cached = TeacherOutputs.get(key, self.teacher, loader, epoch, self.taps, self.precision)

    def __call__(self, x: torch.Tensor, index: torch.Tensor) -> dict[str, torch.Tensor] | None:
        """The taps for the batch ``x`` of samples ``index`` (inside the step's autocast)."""
        if self.cached is not None:  # on the device, or mapped into host memory (streamed data)
            return {t: v.index_select(0, index.to(v.device)).to(x.device, non_blocking=True)
                    for t, v in self.cached.items()}
        if not self.live:
            return None
        with torch.inference_mode():
            live = self.teacher(x, taps=self.taps)
        # inference tensors may not be saved for backward: clone them out
        return {k: v.clone() for k, v in live.items()}


@dataclass(eq=False)
class PartSums:
    """One student's loss parts over a run: their sums (kept on the device), its steps and
    samples, and the finiteness of its total checked every ``check_every`` steps
    (:func:`check_interval`), with the weighted parts of the last finite check."""

    objective: Objective
    check_every: int = 1
    sums: dict[str, torch.Tensor] = field(default_factory=dict)
    weighted: dict[str, torch.Tensor] = field(default_factory=dict)  # the same parts times their weights
    previous: dict[str, torch.Tensor] | None = None  # weighted parts at the last finite check
    steps: int = 0
    samples: int = 0

    def add(self, parts: Mapping[str, torch.Tensor], batch: int) -> bool:
        """Count one step's ``parts`` over ``batch`` samples; false when the step was checked
        and its total is not finite (:meth:`error` says why)."""
        self.steps += 1
        self.samples += batch
        for name in self.objective.part_names:
            for sums, key in ((self.sums, name), (self.weighted, f"{name}.weighted")):
                value = parts[key].detach().float()
                sums[name] = sums[name] + value if name in sums else value
        if self.steps % self.check_every == 0:
            if not bool(torch.isfinite(parts["total"].detach())):
                return False
            self.previous = {name: parts[f"{name}.weighted"].detach() for name in self.objective.part_names}
        return True

    def error(self, parts: Mapping[str, torch.Tensor], epoch: int) -> NonFiniteLossError:
        """Why the step whose ``parts`` :meth:`add` refused went non-finite."""
        return non_finite_error(parts, self.previous, self.objective, epoch, self.steps)

    def sums_error(self, epoch: int) -> NonFiniteLossError | None:
        """At the end of ``epoch``: the error if a part's sum is not finite (a step between
        two checks went bad), else ``None``."""
        if any(not math.isfinite(float(v)) for v in self.sums.values()):
            return non_finite_error(self.sums, None, self.objective, epoch, self.steps)
        return None

    def means(self) -> dict[str, float]:
        """Each part's mean over the steps so far."""
        return {name: float(v) / max(self.steps, 1) for name, v in self.sums.items()}


def train_step(batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
               students: Callable[[torch.Tensor], Sequence[Mapping[str, torch.Tensor]]],
               objectives: Sequence[Objective], teacher: TeacherTaps | None, step: Callable[[torch.Tensor], None],
               records: Sequence[PartSums], device: torch.device,
               precision: str = "auto") -> list[tuple[int, dict[str, torch.Tensor]]]:
    """One training step of one or more students on ``batch`` ``(x, y, index)``: their taps
    (``students(x)``, one mapping per student), the teacher's (``teacher``, given to the
    objectives that use it), each student's loss parts by its objective, one ``step`` on the
    sum of their totals, and each student's parts counted in its ``records`` (the samples'
    ``index`` goes to the objectives that need it, CRD's). Returns the
    position and parts of every student whose checked total was not finite."""
    x, y, index = batch
    x = prepare_input(x, device)
    with autocast(device, precision):
        per_student = students(x)
        t_taps = teacher(x, index) if teacher is not None else None
        parts = [objective(s, t_taps if objective.needs_teacher else None, y,
                           **({"index": index} if objective.needs_index else {}))
                 for objective, s in zip(objectives, per_student)]
    step(parts[0]["total"] if len(parts) == 1 else torch.stack([p["total"] for p in parts]).sum())
    samples = int(y.numel())
    return [(i, p) for i, (record, p) in enumerate(zip(records, parts)) if not record.add(p, samples)]


@dataclass
class FitResult:
    """What :func:`fit` did: validation accuracy per epoch, mean loss parts, epochs, samples,
    time, and one point per epoch (:mod:`relkd.engine.curves`)."""

    history: list[float]
    part_means: dict[str, float]
    epochs: int
    stopped_early: bool
    samples: int
    seconds: float
    curves: list[dict[str, Any]] = field(default_factory=list)


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
    precision: str = "auto",
    every_epoch: bool = True,
    checkpoint: EpochCheckpoint | None = None,
) -> FitResult:
    """Train ``model`` on the train split with ``objective`` for ``recipe.epochs`` epochs,
    evaluating validation accuracy after each epoch and calling ``report(epoch, val_acc)``
    (with ``data.labelled``, an objective without a teacher trains on the labelled samples
    only, an epoch being as many steps as one over every sample);
    a truthy return stops training early (pruning). Raises :class:`NonFiniteLossError`.
    The objective's trainable parts (feature terms) are built for these models and train with
    the student (their state stays in ``objective``).
    ``precision``: the setting's (:mod:`relkd.engine.device`); on CUDA the loss parts are
    summed on the device and the finiteness checked every 25 steps, so no step waits for
    the host. ``every_epoch=False``: validation accuracy after the last epoch only (runs that
    report nothing and need only their end point, such as a learning-rate tuning).
    ``checkpoint``: save the training state every few epochs and resume from a saved one
    (:mod:`relkd.engine.resume`); the caller removes it once what it builds is stored."""
    steps = steps_per_epoch(data, batch_size)
    # CE alone learns nothing from unlabelled samples: it trains on the labelled ones only, for as many steps as an
    # epoch over every sample takes, so that its budget is the distillation runs' budget
    labels_only = data.labelled is not None and not objective.needs_teacher
    loader = train_loader(labelled_only(data) if labels_only else data, batch_size, device, seed=seed, augment=augment)
    batches = epoch_batches(loader, steps)
    val_loader = data.eval_loader("val", batch_size=eval_batch_size, device=device)
    taps, teacher_taps = objective.student_taps, objective.teacher_taps
    model.resolve_taps(taps)  # a tap the student lacks is an error now, not mid-epoch
    source = None
    if objective.needs_teacher:
        if teacher is None:
            raise ValueError("this objective uses KD or relation terms, so it needs a teacher")
        teacher.resolve_taps(teacher_taps)
        teacher.eval()
        source = TeacherTaps(teacher, teacher_taps, loader, teacher_cache_key, precision)
    bind_objective(objective, model, teacher, loader, precision)
    if objective.needs_stage:
        prepare_stages(objective, teacher, loader, teacher_cache_key, precision)
    objective.train()
    opt, sched = make_optimizer(model, recipe, recipe.epochs * steps, objective.parameters())
    scaler = grad_scaler(device, precision)
    record = PartSums(objective, check_interval(device))
    curve = Curve(record)

    def forward(x: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        return [model(x, taps=taps)]

    def step(total: torch.Tensor) -> None:
        optimizer_step(opt, sched, scaler, total)

    history: list[float] = []
    first, before = 0, 0.0  # the epoch to start at; seconds trained before a resume
    saved = checkpoint.load() if checkpoint is not None else None
    if saved is not None:
        first, history = restore_fit(saved, model, objective.modules, opt, sched, scaler, record, curve)
        before = float(saved.get("seconds", 0.0))
    stopped = False
    start = time.perf_counter() - before

    def save(epochs_done: int) -> None:  # the state after ``epochs_done`` epochs, when one is due
        if checkpoint is not None and checkpoint.due(epochs_done, recipe.epochs):
            checkpoint.save(epochs_done, {
                "model": model.state_dict(), "objective": objective.state_dict(), "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(), "scaler": scaler.state_dict(), "history": history,
                "curves": curve.points, "sums": record.sums, "weighted": record.weighted, "steps": record.steps,
                "samples": record.samples, "seconds": time.perf_counter() - start})
    epoch = first - 1
    bar = progress_bar(range(first, recipe.epochs), progress, desc)
    for epoch in bar:
        model.train()
        if source is not None:
            source.start_epoch(epoch)
        curve.start_epoch(learning_rate(opt))
        epoch_start = time.perf_counter()
        for batch in batches(epoch):
            for _, parts in train_step(batch, forward, [objective], source, step, [record], device, precision):
                raise record.error(parts, epoch)
        if (error := record.sums_error(epoch)) is not None:
            raise error
        seconds = time.perf_counter() - epoch_start
        if not every_epoch and epoch + 1 < recipe.epochs:
            curve.end_epoch(epoch, seconds=seconds)
            save(epoch + 1)
            continue
        val_acc = evaluate(model, val_loader, precision)
        curve.end_epoch(epoch, val_acc, seconds=seconds)
        history.append(val_acc)
        if hasattr(bar, "set_postfix"):
            bar.set_postfix(val_acc=f"{val_acc:.4f}")
        log.info("%s epoch %d/%d: val accuracy %.4f", desc, epoch + 1, recipe.epochs, val_acc)
        if report is not None and report(epoch, val_acc):
            stopped = epoch + 1 < recipe.epochs
            break
        save(epoch + 1)
    seconds = time.perf_counter() - start
    return FitResult(history, record.means(), epoch + 1 if recipe.epochs else 0, stopped, record.samples, seconds,
                     curve.points)



def train_loader(data: DatasetSplits, batch_size: int, device: torch.device, *, seed: int,
                 augment: bool) -> DeviceLoader:
    """The shuffling loader a run trains on; the last partial batch is dropped when there is
    more than one batch (:func:`steps_per_epoch` counts its batches)."""
    return data.train_loader(batch_size, device, seed=seed, augment=augment, shuffle=True,
                             drop_last=data.train_labels.numel() > batch_size)


def steps_per_epoch(data: DatasetSplits, batch_size: int) -> int:
    """Batches per epoch of :func:`train_loader` over ``data``, without building it."""
    n = data.train_labels.numel()
    return n // batch_size if n > batch_size else min(n, 1)


def labelled_only(data: DatasetSplits) -> DatasetSplits:
    """``data`` whose train split keeps only its labelled samples (``data.labelled``)."""
    keep = (data.train_labels >= 0).nonzero().squeeze(1)
    return dataclasses.replace(data, train_images=data.train_images.index_select(0, keep),
                               train_labels=data.train_labels.index_select(0, keep),
                               train_index=data.train_index.index_select(0, keep.to(data.train_index.device)),
                               _fingerprint=None)


def epoch_batches(loader: DeviceLoader, steps: int) -> Callable[[int], Iterator[tuple]]:
    """``batches(epoch)``: the ``(x, y, index)`` batches of one training epoch. An epoch is
    ``loader``'s own epoch when it has ``steps`` batches; otherwise (CE alone on the labelled
    samples) it is the next ``steps`` batches of ``loader``'s epochs one after the other, so
    an epoch takes as many steps as one over every sample."""
    if len(loader) == steps:
        return lambda epoch: loader.epoch(epoch, with_indices=True)

    def stream(position: int) -> Iterator[tuple]:  # from batch ``position`` of the loader's epochs in a row
        first, skip = divmod(position, len(loader))
        for k in itertools.count(first):
            yield from itertools.islice(loader.epoch(k, with_indices=True), skip if k == first else 0, None)

    # the batches of epoch e are those at e * steps ...: the same whether the run started at epoch 0
    # or resumed at e (relkd.engine.resume); read on from where the previous epoch stopped
    state: dict[str, Any] = {"next": None, "stream": None}

    def batches(epoch: int) -> Iterator[tuple]:
        if epoch != state["next"]:
            state["stream"] = stream(epoch * steps)
        state["next"] = epoch + 1
        return itertools.islice(state["stream"], steps)

    return batches


def non_finite_error(parts: Mapping[str, torch.Tensor], previous: Mapping[str, torch.Tensor] | None,
                     objective: Objective, epoch: int, step: int) -> NonFiniteLossError:
    """The error that names the part that went bad: the non-finite one if the others are finite;
    if all are (the weights were already corrupted by the previous step), the part with the
    largest weighted value in the last finite step."""
    bad = [name for name in objective.part_names
           if any(key in parts and not bool(torch.isfinite(parts[key].detach()).all())
                  for key in (name, f"{name}.weighted"))]
    if bad and (len(bad) < len(objective.part_names) or not previous):
        return NonFiniteLossError(bad[0], epoch, step)
    if previous:
        culprit = max(previous, key=lambda name: float(previous[name].abs()))
        return NonFiniteLossError(culprit, epoch, step, f" (every part is non-finite: the weights diverged after "
                                                        f"a step where {culprit!r} was the largest weighted part)")
    return NonFiniteLossError("total", epoch, step)


def raise_non_finite(parts: Mapping[str, torch.Tensor], previous: Mapping[str, torch.Tensor] | None,
                     objective: Objective, epoch: int, step: int) -> None:
    """Raise :func:`non_finite_error`."""
    raise non_finite_error(parts, previous, objective, epoch, step)


def progress_bar(iterable: Any, enabled: bool, desc: str) -> Any:
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, unit="epoch", file=sys.stderr, leave=False, dynamic_ncols=True)
