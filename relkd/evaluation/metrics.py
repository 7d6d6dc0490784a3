"""Metrics of trained models on a split: accuracy, top-k, calibration, NLL, per-class accuracy,
teacher agreement, and accuracy under each degradation."""
from __future__ import annotations

import logging
import statistics
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ..data import DatasetSplits, normalize
from ..engine import TeacherResult, autocast, load_data, prepare_input
from .degrade import DEFAULT_DEGRADATIONS, DEFAULT_SEVERITIES, DEGRADATIONS, SEVERITY, degrade

__all__ = ["expected_calibration_error", "classification_metrics", "predict_logits", "evaluate_models",
           "evaluate_model", "TestEvaluation"]

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------
# Metrics


def _check_logits(logits: Tensor, labels: Tensor) -> None:
    if logits.ndim != 2 or labels.ndim != 1 or logits.shape[0] != labels.shape[0]:
        raise ValueError(f"logits must be (N, C) and labels (N,), got {tuple(logits.shape)} and {tuple(labels.shape)}")
    if labels.numel() == 0:
        raise ValueError("no samples to evaluate")
    if labels.dtype in (torch.bool,) or labels.is_floating_point():
        raise ValueError(f"labels must be integers, got {labels.dtype}")
    if int(labels.min()) < 0 or int(labels.max()) >= logits.shape[1]:
        raise ValueError(f"labels range over {int(labels.min())}..{int(labels.max())} but there are "
                         f"{logits.shape[1]} classes")


def expected_calibration_error(logits: Tensor, labels: Tensor, n_bins: int = 15) -> float:
    """Top-label expected calibration error (Guo et al., 2017).

    ``ECE = sum_b (n_b / N) |acc_b - conf_b|`` over ``n_bins`` equal-width bins
    ``(k/n_bins, (k+1)/n_bins]`` of the confidence (the largest softmax probability);
    ``acc_b`` and ``conf_b`` are the accuracy and mean confidence of the samples in bin
    ``b``. Computed in float64. In [0, 1]; 0 means perfectly calibrated.
    """
    _check_logits(logits, labels)
    if isinstance(n_bins, bool) or not isinstance(n_bins, int) or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer, got {n_bins!r}")
    probs = logits.detach().to("cpu", torch.float64).softmax(dim=1)
    conf, pred = probs.max(dim=1)
    correct = (pred == labels.detach().cpu()).to(torch.float64)
    inner = torch.linspace(0.0, 1.0, n_bins + 1, dtype=torch.float64)[1:-1]
    index = torch.bucketize(conf, inner, right=False)  # bin k holds (k/n, (k+1)/n]
    sum_conf = torch.zeros(n_bins, dtype=torch.float64).index_add_(0, index, conf)
    sum_correct = torch.zeros(n_bins, dtype=torch.float64).index_add_(0, index, correct)
    # (n_b / N) |acc_b - conf_b| = |sum correct - sum conf| / N
    return float((sum_correct - sum_conf).abs().sum() / labels.numel())


def classification_metrics(
    logits: Tensor,
    labels: Tensor,
    teacher_logits: Tensor | None = None,
    class_names: Sequence[str] | None = None,
    n_bins: int = 15,
) -> dict[str, Any]:
    """Accuracy, top-k accuracy, ECE, NLL, per-class accuracy and teacher agreement of logits.

    Returns a JSON-serialisable dict: ``accuracy`` (top-1), ``top5_accuracy`` (top-``k``
    with ``k = min(5, C)``), ``top_k`` (that ``k``), ``ece`` (:func:`expected_calibration_error`
    with ``n_bins``), ``nll`` (mean cross-entropy, nats), ``per_class_accuracy``
    (``{class name: accuracy}``, ``None`` for a class without samples; names default to
    ``"0"``, ``"1"``, ...), ``num_samples`` and, with ``teacher_logits``,
    ``teacher_agreement`` (fraction of samples where both argmaxes agree).
    """
    _check_logits(logits, labels)
    logits = logits.detach().to("cpu", torch.float64)
    labels = labels.detach().to("cpu", torch.int64)
    n, num_classes = logits.shape
    names = [str(i) for i in range(num_classes)] if class_names is None else [str(c) for c in class_names]
    if len(names) != num_classes:
        raise ValueError(f"{len(names)} class names for {num_classes} classes")
    correct = logits.argmax(dim=1) == labels
    k = min(5, num_classes)
    in_top_k = (logits.topk(k, dim=1).indices == labels.unsqueeze(1)).any(dim=1)
    per_class: dict[str, float | None] = {}
    for c, name in enumerate(names):
        mask = labels == c
        per_class[name] = float(correct[mask].double().mean()) if bool(mask.any()) else None
    result: dict[str, Any] = {
        "accuracy": float(correct.double().mean()),
        "top5_accuracy": float(in_top_k.double().mean()),
        "top_k": k,
        "ece": expected_calibration_error(logits, labels, n_bins),
        "nll": float(F.cross_entropy(logits, labels)),
        "per_class_accuracy": per_class,
        "num_samples": n,
    }
    if teacher_logits is not None:
        if tuple(teacher_logits.shape) != (n, num_classes):
            raise ValueError(f"teacher logits must be {(n, num_classes)}, got {tuple(teacher_logits.shape)}")
        agree = teacher_logits.detach().cpu().argmax(dim=1) == logits.argmax(dim=1)
        result["teacher_agreement"] = float(agree.double().mean())
    return result


# ----------------------------------------------------------------------------------------
# Running models


def _model_device(model: torch.nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def predict_logits(
    model: torch.nn.Module,
    images: Tensor,
    mean: Sequence[float],
    std: Sequence[float],
    device: torch.device | str | None = None,
    batch_size: int = 1024,
) -> Tensor:
    """The model's logits for every image, in eval mode under ``torch.inference_mode``.

    ``images`` are ``uint8`` ``(N, C, H, W)`` (as in :class:`~relkd.data.DatasetSplits`) or
    float in [0, 1] (degraded images); batches are moved to ``device`` (default: the
    model's) and normalised with :func:`relkd.data.normalize` and ``mean``/``std`` exactly
    as the evaluation loaders do, and run with the engine's autocast and memory format, so
    the top-1 accuracy equals :func:`relkd.engine.evaluate`'s. The model's training mode is
    restored. Returns float32 logits ``(N, num_classes)`` on the CPU.
    """
    if images.ndim != 4 or images.shape[0] == 0:
        raise ValueError(f"images must be a non-empty (N, C, H, W) tensor, got {tuple(images.shape)}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    dev = torch.device(device) if device is not None else _model_device(model)
    was_training = model.training
    model.eval()
    out = []
    try:
        with torch.inference_mode(), autocast(dev):
            for start in range(0, images.shape[0], batch_size):
                batch = images[start:start + batch_size].to(dev)
                if batch.is_floating_point():
                    # normalize() computes (x / 255 - mean) / std; mul() makes a new tensor,
                    # so normalize's in-place ops never touch the caller's images.
                    batch = batch.mul(255.0)
                x = normalize(batch, mean, std)
                out.append(model(prepare_input(x, dev), taps=("logits",))["logits"].float().cpu())
    finally:
        model.train(was_training)
    return torch.cat(out)


def _check_plan(degradations: Sequence[str], severities: Sequence[int], seed: int) -> tuple[list[str], list[int]]:
    """The kinds (de-duplicated, in the given order) and severities (sorted) after checking
    them and the seed; ``ValueError`` before any work is done."""
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    kinds = list(dict.fromkeys(degradations))
    for kind in kinds:
        DEGRADATIONS.get(kind)
    levels = set()
    for s in severities:
        try:
            levels.add(SEVERITY.check(s))
        except ValueError as err:
            raise ValueError(f"severity: {err}") from None
    return kinds, sorted(levels)


def evaluate_models(
    models: Mapping[str, torch.nn.Module],
    data: DatasetSplits,
    *,
    split: str = "test",
    device: torch.device | str | None = None,
    batch_size: int = 1024,
    teacher: torch.nn.Module | None = None,
    degradations: Sequence[str] = DEFAULT_DEGRADATIONS,
    severities: Sequence[int] = DEFAULT_SEVERITIES,
    seed: int = 0,
) -> dict[str, dict[str, Any]]:
    """:func:`evaluate_model` for several models, degrading each image set once for all.

    Every model sees exactly the same degraded images, made once per kind and severity with
    :func:`degrade` and ``seed`` on the evaluation device: ``device`` (where the models
    already are), default the first model's. Their random draws come from a CPU generator,
    so the images are the same on every device up to float rounding. Returns ``{label:
    result}`` in the order of ``models``.
    """
    if not models:
        raise ValueError("no models to evaluate")
    kinds, levels = _check_plan(degradations, severities, seed)
    images, labels = data.split(split)
    where = torch.device(device) if device is not None else _model_device(next(iter(models.values())))
    images = images.to(where)  # degraded where the models run; predict_logits' batches are already there
    teacher_logits = None
    if teacher is not None:
        teacher_logits = predict_logits(teacher, images, data.mean, data.std, device, batch_size)
    results: dict[str, dict[str, Any]] = {}
    for label, model in models.items():
        logits = predict_logits(model, images, data.mean, data.std, device, batch_size)
        result: dict[str, Any] = {"split": split, "seed": int(seed)}
        result.update(classification_metrics(logits, labels, teacher_logits, data.classes))
        result["degradation"] = {kind: {} for kind in kinds}
        results[label] = result
        log.info("%s on %s: accuracy %.4f, top-%d %.4f, ECE %.4f, NLL %.4f", label, split, result["accuracy"],
                 result["top_k"], result["top5_accuracy"], result["ece"], result["nll"])
    cpu_labels = labels.cpu()
    for kind in kinds:
        for severity in levels:
            degraded = degrade(images, kind, severity, seed)
            for label, model in models.items():
                logits = predict_logits(model, degraded, data.mean, data.std, device, batch_size)
                accuracy = float((logits.argmax(dim=1) == cpu_labels).double().mean())
                results[label]["degradation"][kind][severity] = accuracy
                log.info("%s on %s, %s severity %d: accuracy %.4f", label, split, kind, severity, accuracy)
            del degraded
    return results


def evaluate_model(
    model: torch.nn.Module,
    data: DatasetSplits,
    *,
    split: str = "test",
    device: torch.device | str | None = None,
    batch_size: int = 1024,
    teacher: torch.nn.Module | None = None,
    degradations: Sequence[str] = DEFAULT_DEGRADATIONS,
    severities: Sequence[int] = DEFAULT_SEVERITIES,
    seed: int = 0,
) -> dict[str, Any]:
    """Metrics of ``model`` on a clean split and its accuracy under each degradation.

    Returns the :func:`classification_metrics` of the clean ``split`` (``teacher_agreement``
    only with a ``teacher``) plus ``split``, ``seed`` and ``degradation``:
    ``{kind: {severity: top-1 accuracy}}``. Severities are ``int`` keys in Python; JSON
    turns them into strings (``"1"``), which :func:`format_degradation_table` and
    :func:`plot_degradation` accept too. Everything else is plain floats, ints, strings
    and ``None``. ``device`` defaults to the model's (the model is not moved). The degraded images depend only on
    the data, ``seed``, kind and severity, so models evaluated with the same seed (in
    separate calls too) see the same corrupted inputs.
    """
    return evaluate_models({"model": model}, data, split=split, device=device, batch_size=batch_size,
                           teacher=teacher, degradations=degradations, severities=severities, seed=seed)["model"]


class TestEvaluation:
    """The test-split metrics of :func:`evaluate_model` that a run's ``metrics.json``
    carries besides ``test_accuracy`` (which equals its ``accuracy``), per seed, and their
    means over seeds: what ``relkd train --eval-test`` passes to
    :func:`relkd.engine.train_runs`."""

    KEYS = ("top5_accuracy", "ece", "nll", "per_class_accuracy", "teacher_agreement", "degradation")

    def __init__(self, setting: Any):
        self.setting = setting

    def per_seed(self, model: torch.nn.Module, teacher: TeacherResult | None) -> dict[str, Any]:
        setting = self.setting
        result = evaluate_model(model, load_data(setting), split="test", batch_size=setting.data.eval_batch_size,
                                teacher=teacher.model if teacher is not None else None, seed=setting.seed)
        return {k: result[k] for k in self.KEYS if k in result}

    def summary(self, per_seed: list[dict[str, Any]]) -> dict[str, Any]:
        """Means over seeds of the scalar metrics and of every degradation cell."""
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
