"""Checkpoints of a setting's student: load them, and evaluate several at once with the teacher."""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from ..data import DatasetSplits
from ..engine import get_teacher, load_data
from ..files import not_a_file, write_text
from ..models import create_model
from ..models.transfer import InitError, fit_state, head_name, read_state_dict
from ..setting import resolve_device
from .degrade import DEFAULT_DEGRADATIONS, DEFAULT_SEVERITIES
from .metrics import evaluate_models
from .tables import format_degradation_table, plot_degradation

__all__ = ["load_student", "evaluate_checkpoints"]

log = logging.getLogger(__name__)


def load_student(setting: Any, checkpoint: str | Path, data: DatasetSplits | None = None,
                 device: torch.device | str | None = None) -> torch.nn.Module:
    """The setting's student model with the weights of ``checkpoint`` (a state dict as
    ``relkd train --out`` writes, or ``{"state_dict": ...}``), read with
    ``torch.load(weights_only=True)``. A missing file or weights of another model raise
    ``ValueError``/``FileNotFoundError`` naming the checkpoint."""
    path = Path(checkpoint)
    problem = not_a_file(path)
    if problem:
        raise FileNotFoundError(f"--checkpoint {path}: {problem} (relkd train --out DIR writes "
                                f"DIR/student_seed0.pt)")
    data = data if data is not None else load_data(setting)
    model = create_model(setting.student.model, num_classes=data.num_classes, in_channels=data.in_channels,
                         **setting.student.params)
    try:
        state, _ = fit_state(model.net, read_state_dict(path), head_name(model), replace_head=False,
                             what="the file", head_advice="")
    except InitError as err:
        raise ValueError(f"--checkpoint {path}: expected the weights of student {setting.student.model} "
                         f"{setting.student.params or ''} for {data.num_classes} classes ({err})") from None
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
    if not checkpoints:
        raise ValueError("--checkpoint: give at least one checkpoint")
    data = load_data(setting)
    models = {label: load_student(setting, path, data) for label, path in checkpoints.items()}
    teacher = get_teacher(setting).model if with_teacher else None
    results = evaluate_models(models, data, split=split, teacher=teacher, degradations=degradations,
                              severities=severities, seed=seed)
    if out is not None:
        folder = Path(out)
        document = {"setting": setting.name, "split": split, "seed": seed,
                    "checkpoints": {k: str(v) for k, v in checkpoints.items()}, "results": results}
        write_text(folder / "evaluation.json", json.dumps(document, indent=2))
        write_text(folder / "evaluation.md", format_degradation_table(results) + "\n")
        plot_degradation(results, folder / "degradation")
        log.info("wrote evaluation.json, evaluation.md and degradation.png/.svg to %s", folder)
    return results
