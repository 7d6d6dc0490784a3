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

The rooms: :mod:`.degrade` (the degradations), :mod:`.metrics` (metrics of models on a
split), :mod:`.tables` (table and plot of results) and :mod:`.checkpoints` (a setting's
student checkpoints). This package sits above the engine; the engine never imports it.
"""
from .checkpoints import evaluate_checkpoints, load_student
from .degrade import (
    BLUR_SIGMA,
    CONTRAST_FACTOR,
    DEFAULT_DEGRADATIONS,
    DEFAULT_SEVERITIES,
    DEGRADATIONS,
    NOISE_STD,
    OCCLUSION_SIDE,
    degrade,
)
from .metrics import (
    TestEvaluation,
    classification_metrics,
    evaluate_model,
    evaluate_models,
    expected_calibration_error,
    predict_logits,
)
from .tables import format_degradation_table, plot_degradation

__all__ = [
    "BLUR_SIGMA", "CONTRAST_FACTOR", "DEGRADATIONS", "DEFAULT_DEGRADATIONS", "DEFAULT_SEVERITIES", "NOISE_STD",
    "OCCLUSION_SIDE", "TestEvaluation", "classification_metrics", "degrade", "evaluate_checkpoints",
    "evaluate_model", "evaluate_models", "expected_calibration_error", "format_degradation_table", "load_student",
    "plot_degradation", "predict_logits",
]
