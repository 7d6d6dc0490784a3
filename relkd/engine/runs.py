"""Runs of a setting's student: one run (:func:`run_trial`, what a search trial trains) and a
run per seed with aggregate metrics (:func:`train_runs`, what ``relkd train`` does)."""
from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path
from typing import Any, Mapping, Protocol

import torch

from ..config import save_config
from ..files import write_text
from ..models import TappedModel, count_params
from ..models.prune import count_macs
from ..objective import Objective, as_objective
from ..presets import PRESETS
from ..setting import Setting, resolve_device
from .build import build_model, load_data
from .device import tf32
from .result import RunResult
from .resume import EpochCheckpoint
from .teacher import TeacherResult, get_teacher
from .tracking import open_tracker
from .training import Report, evaluate, fit

__all__ = ["RunEvaluation", "run_trial", "setting_objective", "train_runs"]


class RunEvaluation(Protocol):
    """What :func:`train_runs` asks of an evaluation beyond accuracy (it lives above the
    engine, in :mod:`relkd.evaluation`): metrics of each seed's student, and their summary."""

    def per_seed(self, model: TappedModel, teacher: TeacherResult | None) -> dict[str, Any]: ...

    def summary(self, per_seed: list[dict[str, Any]]) -> dict[str, Any]: ...


def setting_objective(setting: Setting, objective: Objective | Mapping[str, Any] | str) -> Objective:
    """:func:`as_objective` of ``objective``, except that a preset name is built for the
    setting's models (:meth:`Setting.preset`: the multi-layer presets read their layers)."""
    if isinstance(objective, str) and objective in PRESETS:
        return as_objective(setting.preset(objective))
    return as_objective(objective)


def run_trial(
    setting: Setting,
    objective_config: Objective | Mapping[str, Any] | str,
    report: Report | None = None,
    *,
    seed: int | None = None,
    eval_test: bool = False,
    teacher_cache: bool = True,
    progress: bool = False,
    teacher: TeacherResult | None = None,
    return_model: bool = False,
    every_epoch: bool = True,
    checkpoint: EpochCheckpoint | None = None,
) -> RunResult:
    """Train the setting's student with an objective and return its metrics (:class:`RunResult`).

    ``report(epoch, val_accuracy)`` is called after each epoch; a truthy return stops the
    run early (how the study driver prunes). ``teacher_cache`` reuses the teacher's taps
    across epochs and trials when the teacher sees exactly what the student sees.
    The result has ``val_accuracy`` (last epoch), ``val_history``, ``test_accuracy`` (with
    ``eval_test``), ``part_means`` (mean of every loss part over the run), ``curves`` (one
    point per epoch: :mod:`relkd.engine.curves`), ``epochs``,
    ``stopped_early``, ``wall_seconds``, ``samples_per_second``, ``seed``, and the student's
    size (``student_params``; ``student_macs`` for one input, Conv2d and Linear layers); with
    ``return_model``, ``model`` and, for an objective with trainable parts (feature terms),
    ``objective_state`` (their state dict, on the CPU). ``every_epoch=False`` (without
    ``report``) evaluates after the last epoch only: ``val_history`` then has one value.
    """
    if report is not None and not every_epoch:
        raise ValueError("every_epoch: a run that reports each epoch must evaluate each epoch")
    start = time.perf_counter()
    seed = setting.seed if seed is None else seed
    objective = setting_objective(setting, objective_config)
    if objective.trainable and objective.bound:  # every run trains the terms' parts from their start
        objective = as_objective(objective.to_config())
    device = resolve_device(setting.device)
    data = load_data(setting)
    if objective.needs_teacher and teacher is None:
        teacher = get_teacher(setting, device=device)
    model = build_model(setting.student, data, seed, device)
    budget = setting.budget
    augment = setting.augment
    cache_key = (teacher.key, teacher.sha256, data.fingerprint()) if (teacher is not None and teacher_cache) else None
    with tf32(device, setting.tf32):
        result = fit(
            model, data, budget, objective, seed=seed, device=device,
            batch_size=setting.batch_size, augment=augment,
            eval_batch_size=setting.data.eval_batch_size,
            teacher=teacher.model if teacher is not None else None, teacher_cache_key=cache_key,
            report=report, progress=progress, desc=f"student {setting.student.model} seed {seed}",
            precision=setting.precision, every_epoch=every_epoch, checkpoint=checkpoint,
        )
    test_accuracy = None
    if eval_test:
        test_accuracy = evaluate(model, data.eval_loader("test", setting.data.eval_batch_size, device),
                                 setting.precision)
    run = RunResult(
        seed=seed, val_accuracy=result.history[-1], val_history=result.history, epochs=result.epochs,
        stopped_early=result.stopped_early, part_means=result.part_means, curves=result.curves,
        train_seconds=result.seconds,
        samples_per_second=result.samples / max(result.seconds, 1e-9), test_accuracy=test_accuracy,
        init_sha256=getattr(model, "init_sha256", None) or None, student_params=count_params(model),
        student_macs=count_macs(model, tuple(data.train_images.shape[1:])),
    )
    run.wall_seconds = time.perf_counter() - start
    if return_model:
        run.model = model
        if objective.trainable:
            run.objective_state = {k: v.detach().cpu() for k, v in objective.state_dict().items()}
    return run


def train_runs(
    setting: Setting,
    objective_config: Objective | Mapping[str, Any] | str,
    seeds: list[int],
    *,
    eval_test: bool = False,
    out: str | os.PathLike | None = None,
    progress: bool = False,
    teacher_cache: bool = True,
    evaluation: RunEvaluation | None = None,
    log_to: str | None = None,
) -> dict[str, Any]:
    """Run :func:`run_trial` once per seed; aggregate means and standard deviations.
    With ``out``, write ``metrics.json``, the objective config and each student's weights
    (and, for feature terms with trainable parts, their weights as ``objective_seed{seed}.pt``).

    With ``eval_test``, each seed's student is evaluated on the test split; with
    ``evaluation`` as well (``relkd.evaluation.TestEvaluation(setting)``, which ``relkd
    train --eval-test`` passes), beyond accuracy: its per-seed metrics join each seed's
    and its summary of them joins the summary. ``log_to``: a tracker each seed's run is logged
    to (:mod:`relkd.engine.tracking`; the experiment is the setting's name)."""
    start = time.perf_counter()
    tracker = open_tracker(log_to, setting.name)
    objective = setting_objective(setting, objective_config)
    teacher = get_teacher(setting, progress=progress) if objective.needs_teacher else None
    per_seed = []
    out_dir = Path(out) if out is not None else None
    for seed in seeds:
        run = run_trial(setting, objective.to_config(), seed=seed, eval_test=eval_test, teacher=teacher,
                        teacher_cache=teacher_cache, progress=progress,
                        return_model=out_dir is not None or eval_test)
        model, objective_state = run.model, run.objective_state
        m = run.to_dict()
        if eval_test and evaluation is not None and model is not None:
            m.update(evaluation.per_seed(model, teacher))
        if tracker is not None:
            tracker.log_run(f"seed-{seed}", params={"objective": objective.to_config(), "seed": seed},
                            curves=run.curves,
                            summary={"val_accuracy": run.val_accuracy, "test_accuracy": run.test_accuracy})
        if out_dir is not None and model is not None:
            out_dir.mkdir(parents=True, exist_ok=True)
            torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, out_dir / f"student_seed{seed}.pt")
            if objective_state is not None:  # the feature terms' trained parts, beside the student
                torch.save(objective_state, out_dir / f"objective_seed{seed}.pt")
        per_seed.append(m)
    summary: dict[str, Any] = {"setting": setting.name, "student": setting.student.model,
                               "teacher": setting.teacher.model if teacher else None, "seeds": list(seeds)}
    for metric in ("val_accuracy", "test_accuracy"):
        values = [m[metric] for m in per_seed if metric in m]
        if values:
            summary[metric] = statistics.fmean(values)
            summary[f"{metric}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
    if eval_test and evaluation is not None and per_seed:
        summary.update(evaluation.summary(per_seed))
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
        write_text(out_dir / "metrics.json", json.dumps(summary, indent=2))
        save_config(objective.to_config(), out_dir / "objective.yaml")
    return summary
