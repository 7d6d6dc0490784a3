"""Evaluation beyond accuracy: calibration, per-class accuracy, teacher agreement and
accuracy under input degradation.

One call evaluates a trained model on a split::

    from relkd.evaluation import evaluate_models, format_degradation_table, plot_degradation

    results = evaluate_models({"baseline": base, "kd": kd, "best": best}, data, teacher=teacher)
    print(format_degradation_table(results))
    plot_degradation(results, "out/degradation")         # out/degradation.png and .svg

Each model's result holds, for the clean split: ``accuracy`` (top-1), ``top5_accuracy``
(top-``k`` with ``k = min(5, classes)``, stored as ``top_k``), ``ece`` (expected
calibration error, 15 equal-width confidence bins), ``nll`` (mean cross-entropy),
``per_class_accuracy`` and, given a teacher, ``teacher_agreement``; and under ``degradation``
the top-1 accuracy for every degradation kind and severity.

Degradations (``DEGRADATIONS.list()``): ``gaussian_noise``, ``gaussian_blur``, ``contrast``
and ``occlusion``, each at severities 1..5 whose strengths are the module-level tables
:data:`NOISE_STD`, :data:`BLUR_SIGMA`, :data:`CONTRAST_FACTOR` and :data:`OCCLUSION_SIDE`.
They act on images in [0, 1] and are deterministic: :func:`degrade` draws from its own
``torch.Generator`` seeded by ``(seed, kind, severity)`` (never the global RNG), so every
model evaluated with the same seed sees exactly the same corrupted images.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .data import DatasetSplits, _mix_seed, normalize
from .registry import Param, Registry

__all__ = [
    "BLUR_SIGMA",
    "CONTRAST_FACTOR",
    "DEGRADATIONS",
    "DEFAULT_DEGRADATIONS",
    "DEFAULT_SEVERITIES",
    "NOISE_STD",
    "OCCLUSION_SIDE",
    "classification_metrics",
    "degrade",
    "evaluate_model",
    "evaluate_models",
    "expected_calibration_error",
    "format_degradation_table",
    "plot_degradation",
    "predict_logits",
]

log = logging.getLogger(__name__)

# ----------------------------------------------------------------------------------------
# Strength of each degradation per severity 1..5 (index severity - 1). Chosen for 28x28
# (Fashion-MNIST) and 32x32 (CIFAR) images: severity 1 is barely visible, severity 5
# leaves the object hard but not impossible to recognise.

#: Standard deviation of the added Gaussian noise, in [0, 1] intensity units.
NOISE_STD: tuple[float, ...] = (0.04, 0.08, 0.12, 0.18, 0.26)
#: Standard deviation (pixels) of the Gaussian blur kernel.
BLUR_SIGMA: tuple[float, ...] = (0.7, 1.0, 1.5, 2.0, 3.0)
#: Factor ``c`` that scales each image's deviation from its mean (1 = unchanged).
CONTRAST_FACTOR: tuple[float, ...] = (0.75, 0.5, 0.35, 0.2, 0.1)
#: Side of the occluding square as a fraction of the image side (area: its square).
OCCLUSION_SIDE: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5)
#: Blur kernels are truncated at radius ``ceil(BLUR_TRUNCATE * sigma)`` pixels.
BLUR_TRUNCATE = 4.0

DEFAULT_DEGRADATIONS: tuple[str, ...] = ("gaussian_noise", "gaussian_blur", "contrast", "occlusion")
DEFAULT_SEVERITIES: tuple[int, ...] = (1, 2, 3, 4, 5)
NUM_SEVERITIES = 5

DEGRADATIONS = Registry("degradation", bind=True)

_SEVERITY = Param("severity", 1, int, "1 (mild) .. 5 (strong)", min=1, max=NUM_SEVERITIES)


def _strength(table: Sequence[float], severity: int) -> float:
    """``table[severity - 1]``; a severity outside 1..5 (or not an integer) raises ``ValueError``."""
    if isinstance(severity, bool) or not isinstance(severity, int) or not 1 <= severity <= len(table):
        raise ValueError(f"severity must be an integer in 1..{len(table)}, got {severity!r}")
    return float(table[severity - 1])


def _check_images(images: Tensor) -> None:
    if not isinstance(images, Tensor) or images.ndim != 4 or not images.is_floating_point():
        raise ValueError("a degradation needs float images (N, C, H, W) in [0, 1], got "
                         f"{getattr(images, 'dtype', type(images).__name__)} {tuple(getattr(images, 'shape', ()))}")


@DEGRADATIONS.register("gaussian_noise", params=[_SEVERITY], strengths=NOISE_STD, unit="noise std", random=True)
def gaussian_noise(images: Tensor, generator: torch.Generator, severity: int = 1) -> Tensor:
    """Additive Gaussian noise. x' = clamp(x + s * z, 0, 1), z ~ N(0, 1) i.i.d. per pixel and channel.

    ``s`` (in [0, 1] intensity units) per severity 1..5: 0.04, 0.08, 0.12, 0.18, 0.26
    (:data:`NOISE_STD`). The clamp makes the measured std a little smaller near 0 and 1.
    ``z`` is drawn on the CPU from ``generator`` (the same on every device).
    """
    _check_images(images)
    std = _strength(NOISE_STD, severity)
    z = torch.randn(images.shape, generator=generator, dtype=torch.float32)
    return images.add(z.to(images.device, images.dtype), alpha=std).clamp_(0.0, 1.0)


def _gaussian_kernel(sigma: float) -> Tensor:
    """The Gaussian sampled at integer offsets ``-r..r``, ``r = ceil(4 sigma)``, summing to 1 (float64)."""
    radius = max(1, math.ceil(BLUR_TRUNCATE * sigma))
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    return kernel / kernel.sum()


def _reflect(index: Tensor, n: int) -> Tensor:
    """Positions reflected into ``0..n-1`` about the edge pixels (``-1 -> 1``, ``n -> n-2``;
    torch's ``reflect`` padding), repeatedly for offsets beyond one image side."""
    if n == 1:
        return torch.zeros_like(index)
    period = 2 * (n - 1)
    index = index.remainder(period)
    return torch.where(index >= n, period - index, index)


def _blur_matrix(kernel: Tensor, n: int) -> Tensor:
    """The ``(n, n)`` matrix of a 1-D convolution with ``kernel`` and reflect padding:
    ``(M @ v)[i] = sum_k kernel[k] v[reflect(i + k - r)]``."""
    r = kernel.numel() // 2
    rows = torch.arange(n).view(n, 1).expand(n, kernel.numel())
    cols = _reflect(rows + torch.arange(-r, r + 1).view(1, -1), n)
    matrix = torch.zeros(n, n, dtype=torch.float64)
    matrix.index_put_((rows.reshape(-1), cols.reshape(-1)), kernel.repeat(n), accumulate=True)
    return matrix


@DEGRADATIONS.register("gaussian_blur", params=[_SEVERITY], strengths=BLUR_SIGMA, unit="blur sigma (px)",
                       random=False)
def gaussian_blur(images: Tensor, generator: torch.Generator, severity: int = 1) -> Tensor:
    """Gaussian blur. x' = g_sigma * x per channel, g_sigma(d) ∝ exp(-d^2 / (2 sigma^2)), separable.

    ``sigma`` in pixels per severity 1..5: 0.7, 1.0, 1.5, 2.0, 3.0 (:data:`BLUR_SIGMA`).
    The kernel is the Gaussian sampled at integer offsets up to radius ``ceil(4 sigma)``
    and normalised to sum 1, so the blur of a single bright pixel away from the border has
    variance sigma^2 per axis (within 0.5% for these sigmas; truncating at 3 sigma would
    lose 3% of it). Borders are reflected (torch's ``reflect`` padding, mirrored again
    where the kernel is wider than the image). Computed as ``M_H @ x @ M_W^T`` with the
    blur matrices of each axis (fast on the CPU). Deterministic: ``generator`` is not used.
    """
    _check_images(images)
    kernel = _gaussian_kernel(_strength(BLUR_SIGMA, severity))
    h, w = images.shape[-2:]
    rows = _blur_matrix(kernel, h).to(images.device, images.dtype)
    cols = _blur_matrix(kernel, w).to(images.device, images.dtype)
    return torch.matmul(torch.matmul(rows, images), cols.t()).clamp_(0.0, 1.0)


@DEGRADATIONS.register("contrast", params=[_SEVERITY], strengths=CONTRAST_FACTOR, unit="contrast factor c",
                       random=False)
def contrast(images: Tensor, generator: torch.Generator, severity: int = 1) -> Tensor:
    """Contrast reduction. x' = m + c * (x - m), m = the image's mean per channel.

    ``c`` per severity 1..5: 0.75, 0.5, 0.35, 0.2, 0.1 (:data:`CONTRAST_FACTOR`); each
    image's per-channel std is multiplied by ``c`` and its mean kept (as in CIFAR-10-C).
    The result stays in [0, 1] (a convex combination). Deterministic: ``generator`` is not used.
    """
    _check_images(images)
    c = _strength(CONTRAST_FACTOR, severity)
    mean = images.mean(dim=(2, 3), keepdim=True)
    return (mean + c * (images - mean)).clamp_(0.0, 1.0)


@DEGRADATIONS.register("occlusion", params=[_SEVERITY], strengths=OCCLUSION_SIDE, unit="occluded side fraction",
                       random=True)
def occlusion(images: Tensor, generator: torch.Generator, severity: int = 1) -> Tensor:
    """Occlusion by a black square. x'[i, :, t:t+s_h, l:l+s_w] = 0, s_h = round(f H), s_w = round(f W).

    ``f`` (side as a fraction of the image side; the occluded area is about f^2) per
    severity 1..5: 0.1, 0.2, 0.3, 0.4, 0.5 (:data:`OCCLUSION_SIDE`), i.e. 3, 6, 8, 11, 14
    pixels at 28x28 and 3, 6, 10, 13, 16 at 32x32. One square per image, filled with 0 in
    every channel (black, Fashion-MNIST's background; cutout-like on colour images), lying
    entirely inside the image at a uniformly random position: the top-left corner ``(t, l)``
    is uniform on ``0..H-s_h`` x ``0..W-s_w``, drawn on the CPU from ``generator``.
    """
    _check_images(images)
    f = _strength(OCCLUSION_SIDE, severity)
    n, _, h, w = images.shape
    sh, sw = max(1, math.floor(f * h + 0.5)), max(1, math.floor(f * w + 0.5))
    top = torch.randint(0, h - sh + 1, (n, 1), generator=generator).to(images.device)
    left = torch.randint(0, w - sw + 1, (n, 1), generator=generator).to(images.device)
    rows = torch.arange(h, device=images.device).view(1, h)
    cols = torch.arange(w, device=images.device).view(1, w)
    in_rows = (rows >= top) & (rows < top + sh)  # (N, H)
    in_cols = (cols >= left) & (cols < left + sw)  # (N, W)
    mask = (in_rows.unsqueeze(2) & in_cols.unsqueeze(1)).unsqueeze(1)  # (N, 1, H, W)
    return images.masked_fill(mask, 0.0)


def _unit_float(images: Tensor) -> Tensor:
    """``uint8`` images as float32 in [0, 1]; float images checked to lie in [0, 1]."""
    if not isinstance(images, Tensor) or images.ndim != 4:
        raise ValueError(f"images must be a (N, C, H, W) tensor, got {tuple(getattr(images, 'shape', ()))}")
    if images.dtype == torch.uint8:
        return images.to(torch.float32).div_(255.0)
    if not images.is_floating_point():
        raise ValueError(f"images must be uint8 or float in [0, 1], got {images.dtype}")
    if images.numel() and (float(images.min()) < 0.0 or float(images.max()) > 1.0):
        raise ValueError(f"float images must lie in [0, 1], got values in [{float(images.min())}, "
                         f"{float(images.max())}]; pass uint8 images or divide by 255")
    return images


def degrade(images: Tensor, kind: str, severity: int, seed: int = 0) -> Tensor:
    """Images degraded by ``kind`` at ``severity``, deterministically in ``seed``.

    Args:
        images: ``uint8`` (divided by 255) or float in [0, 1], ``(N, C, H, W)``, any device.
        kind: a name from ``DEGRADATIONS.list()``.
        severity: 1..5.
        seed: with ``kind`` and ``severity``, seeds the generator of this call's random
            draws (the same arguments give the same images on every call).

    Returns:
        New float images in [0, 1] of the same shape, on the same device (float32 for
        ``uint8`` input, else the input's dtype).

    Raises:
        ValueError: unknown kind (with valid names and a did-you-mean), bad severity, bad images.
    """
    entry = DEGRADATIONS.get(kind)
    params = entry.resolve_params({"severity": severity})
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    x = _unit_float(images)
    generator = torch.Generator().manual_seed(_mix_seed("relkd.evaluation", int(seed), kind, params["severity"]))
    return entry.obj(x, generator, **params)


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
    # Imported here: the engine may import this module.
    from .engine import _autocast, _prepare

    if images.ndim != 4 or images.shape[0] == 0:
        raise ValueError(f"images must be a non-empty (N, C, H, W) tensor, got {tuple(images.shape)}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    dev = torch.device(device) if device is not None else _model_device(model)
    was_training = model.training
    model.eval()
    out = []
    try:
        with torch.inference_mode(), _autocast(dev):
            for start in range(0, images.shape[0], batch_size):
                batch = images[start:start + batch_size].to(dev)
                if batch.is_floating_point():
                    # normalize() computes (x / 255 - mean) / std; mul() makes a new tensor,
                    # so normalize's in-place ops never touch the caller's images.
                    batch = batch.mul(255.0)
                x = normalize(batch, mean, std)
                out.append(model(_prepare(x, dev), taps=("logits",))["logits"].float().cpu())
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
            levels.add(_SEVERITY.check(s))
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

    Every model sees exactly the same degraded images (made once per kind and severity
    with :func:`degrade` and ``seed``, on the CPU, so they do not depend on ``device``);
    ``device`` (where the models already are) defaults to each model's own. Returns
    ``{label: result}`` in the order of ``models``.
    """
    if not models:
        raise ValueError("no models to evaluate")
    kinds, levels = _check_plan(degradations, severities, seed)
    images, labels = data.split(split)
    # Degraded on the CPU (float32): the same images on every device and in every call.
    # predict_logits moves each batch to ``device`` (default: each model's own).
    images = images.cpu()
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


# ----------------------------------------------------------------------------------------
# Table and plot


def _curves(results: Mapping[str, Mapping[str, Any]]) -> tuple[list[str], list[int]]:
    """Degradation kinds (in order of first appearance) and sorted severities over all results."""
    if not results:
        raise ValueError("no results to show")
    kinds: dict[str, None] = {}
    levels: set[int] = set()
    for label, result in results.items():
        if "accuracy" not in result or "degradation" not in result:
            raise ValueError(f"result {label!r} is not an evaluate_model result (needs 'accuracy' and 'degradation')")
        for kind, by_severity in result["degradation"].items():
            kinds.setdefault(kind, None)
            levels.update(int(s) for s in by_severity)
    return list(kinds), sorted(levels)


def _accuracy_at(result: Mapping[str, Any], kind: str, severity: int) -> float | None:
    by_severity = result["degradation"].get(kind, {})
    value = by_severity.get(severity, by_severity.get(str(severity)))
    return None if value is None else float(value)


def _strength_label(kind: str) -> tuple[str, Sequence[float] | None]:
    """``(unit, strengths per severity)`` of a registered kind; ``("", None)`` for an unknown one."""
    if kind not in DEGRADATIONS:
        return "", None
    entry = DEGRADATIONS.get(kind)
    return entry.property("unit", default=""), entry.property("strengths")


def format_degradation_table(results: Mapping[str, Mapping[str, Any]]) -> str:
    """A Markdown table of top-1 accuracy (%): one row per model label and degradation kind,
    columns ``clean``, each severity and the mean over severities; a line below gives each
    kind's strength per severity."""
    kinds, levels = _curves(results)
    header = ["model", "degradation", "clean", *(str(s) for s in levels), "mean"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * 2 + ["---:"] * (len(header) - 2)) + "|"]

    def pct(value: float | None) -> str:
        return "–" if value is None else f"{100 * value:.2f}"

    for label, result in results.items():
        for kind in kinds or ["–"]:
            values = [_accuracy_at(result, kind, s) for s in levels] if kinds else []
            present = [v for v in values if v is not None]
            mean = sum(present) / len(present) if present else None
            row = [str(label), kind, pct(result["accuracy"]), *(pct(v) for v in values), pct(mean)]
            lines.append("| " + " | ".join(row) + " |")
    notes = []
    for kind in kinds:
        unit, strengths = _strength_label(kind)
        if strengths is not None:
            notes.append(f"{kind}: {unit} " + ", ".join(f"{strengths[s - 1]:g}" for s in levels if s <= len(strengths)))
    text = "\n".join(lines)
    if notes:
        text += "\n\nStrength per severity " + ", ".join(str(s) for s in levels) + ": " + "; ".join(notes) + "."
    return text


def plot_degradation(results: Mapping[str, Mapping[str, Any]], out: str | Path) -> list[Path]:
    """Plot accuracy versus severity, one panel per degradation kind and one line per model;
    severity 0 is the clean accuracy. Writes ``out`` + ``.png`` and ``.svg`` (creating the
    folder) and returns both paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds, levels = _curves(results)
    if not kinds:
        raise ValueError("the results hold no degradation accuracies to plot")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, len(kinds), figsize=(3.4 * len(kinds), 3.6), sharey=True, squeeze=False)
    for ax, kind in zip(axes[0], kinds):
        unit, strengths = _strength_label(kind)
        for label, result in results.items():
            points = [(0, float(result["accuracy"]))]
            points += [(s, a) for s in levels if (a := _accuracy_at(result, kind, s)) is not None]
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", linewidth=1.5, label=str(label))
        ticks = [0, *levels]
        names = ["clean"] + [f"{s}\n{strengths[s - 1]:g}" if strengths is not None and s <= len(strengths) else str(s)
                             for s in levels]
        ax.set_xticks(ticks)
        ax.set_xticklabels(names, fontsize=8)
        ax.set_xlabel(f"severity ({unit})" if unit else "severity")
        ax.set_title(f"{kind}\n{unit} per severity" if unit else kind, fontsize=10)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("top-1 accuracy")
    axes[0][0].legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    paths = []
    for fmt in ("png", "svg"):
        path = out.with_name(f"{out.name}.{fmt}")
        fig.savefig(path, dpi=110, bbox_inches="tight")
        paths.append(path)
    plt.close(fig)
    return paths


# ----------------------------------------------------------------------------------------
# Checkpoints of a setting's student


def load_student(setting: Any, checkpoint: str | Path, data: DatasetSplits | None = None,
                 device: torch.device | str | None = None) -> torch.nn.Module:
    """The setting's student model with the weights of ``checkpoint`` (a state dict as
    ``relkd train --out`` writes, or ``{"state_dict": ...}``), read with
    ``torch.load(weights_only=True)``. A missing file or weights of another model raise
    ``ValueError``/``FileNotFoundError`` naming the checkpoint."""
    from .engine import load_data
    from .models import create_model
    from .models.transfer import InitError, fit_state, head_name, read_state_dict
    from .setting import resolve_device

    path = Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"--checkpoint {path}: no such file (relkd train --out DIR writes "
                                f"DIR/student_seed0.pt)")
    data = data if data is not None else load_data(setting)
    model = create_model(setting.student.model, num_classes=data.num_classes, in_channels=data.in_channels,
                         **setting.student.params)
    try:
        state, _ = fit_state(model.net, read_state_dict(path), head_name(model), replace_head=False,
                             what="the file", head_advice="")
    except InitError as err:
        raise ValueError(f"--checkpoint {path}: not the weights of student {setting.student.model} for "
                         f"{data.num_classes} classes ({err})") from None
    model.net.load_state_dict(state)
    dev = resolve_device(setting.device) if device is None else torch.device(device)
    return model.to(dev).eval()


def evaluate_checkpoints(
    setting: Any,
    checkpoints: Mapping[str, str | Path],
    *,
    out: str | Path | None = None,
    split: str = "test",
    with_teacher: bool = True,
    degradations: Sequence[str] = DEFAULT_DEGRADATIONS,
    severities: Sequence[int] = DEFAULT_SEVERITIES,
    seed: int = 0,
) -> dict[str, dict[str, Any]]:
    """Evaluate student checkpoints of ``setting`` ({label: path}) with :func:`evaluate_models`
    on ``split``; ``with_teacher`` adds agreement with the setting's teacher (loaded from
    the cache, trained if missing). With ``out``, writes ``evaluation.json``,
    ``evaluation.md`` (the degradation table) and ``degradation.png``/``.svg`` there."""
    import json

    from .engine import get_teacher, load_data

    if not checkpoints:
        raise ValueError("--checkpoint: give at least one checkpoint")
    data = load_data(setting)
    models = {label: load_student(setting, path, data) for label, path in checkpoints.items()}
    teacher = get_teacher(setting).model if with_teacher else None
    results = evaluate_models(models, data, split=split, teacher=teacher, degradations=degradations,
                              severities=severities, seed=seed)
    if out is not None:
        folder = Path(out)
        folder.mkdir(parents=True, exist_ok=True)
        document = {"setting": setting.name, "split": split, "seed": seed,
                    "checkpoints": {k: str(v) for k, v in checkpoints.items()}, "results": results}
        (folder / "evaluation.json").write_text(json.dumps(document, indent=2))
        (folder / "evaluation.md").write_text(format_degradation_table(results) + "\n")
        plot_degradation(results, folder / "degradation")
        log.info("wrote evaluation.json, evaluation.md and degradation.png/.svg to %s", folder)
    return results
