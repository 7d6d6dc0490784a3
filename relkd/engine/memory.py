"""What a composition's relation terms need in memory, and whether the device has it.

A (B, B) relation is small, but a (B, B, B) one is not: ``angle`` builds the unit
differences of every pair of samples, B x B x D numbers, before its B x B x B angles (RKD-A;
over a flattened ``stage1`` map of ``resnet32x4``, D = 64 x 32 x 32, that is about 1 GB at
B = 64). The study's validity rules ask :func:`memory_problems` before a draw trains, so a
draw the device cannot hold is skipped as an invalid combination instead of failing.

The estimate, per term, in float32 (relation terms always compute in float32):
``4 x (B^2 x (3 D_s + D_t) + 4 B^3)`` bytes for a (B, B, B) affinity (the student's side is
kept for backward, about three copies; the teacher's is not) and ``4 x (B x (D_s + D_t) +
8 B^2)`` for a (B, B) one, where ``D_s``/``D_t`` are the view's widths at the tap. The budget
is :data:`DEVICE_SHARE` of the CUDA card's memory, or of the machine's memory on the CPU.
"""
from __future__ import annotations

import functools
import os
from typing import Sequence

import torch

from ..objective import Objective
from ..relation import AFFINITIES
from ..relation.term import RelationTerm
from ..setting import Setting

__all__ = ["term_bytes", "memory_problems", "device_budget", "view_widths", "DEVICE_SHARE"]

#: The share of the device's memory a composition's relation terms may take.
DEVICE_SHARE = 0.5


def term_bytes(term: RelationTerm, batch: int, student_width: int, teacher_width: int) -> int:
    """The estimated bytes ``term`` needs for one batch (see the module)."""
    order = AFFINITIES.get(term.affinity.name).property("order", default=2)
    if order >= 3:
        return 4 * (batch ** 2 * (3 * student_width + teacher_width) + 4 * batch ** 3)
    return 4 * (batch * (student_width + teacher_width) + 8 * batch ** 2)


def device_budget(device: torch.device) -> int:
    """Bytes the relation terms of one composition may take on ``device``."""
    if device.type == "cuda":
        total = torch.cuda.get_device_properties(device).total_memory
    else:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return int(DEVICE_SHARE * total)


@functools.lru_cache(maxsize=64)
def _tap_shapes(model: str, params: str, in_shape: tuple[int, ...], num_classes: int,
                taps: tuple[str, ...]) -> dict[str, tuple[int, ...]]:
    import json

    from ..models import create_model

    net = create_model(model, num_classes=num_classes, in_channels=in_shape[0], **json.loads(params))
    net.eval()
    with torch.no_grad():
        out = net(torch.zeros(2, *in_shape), taps=taps)
    return {t: tuple(v.shape[1:]) for t, v in out.items()}


def view_widths(term: RelationTerm, setting: Setting, in_shape: Sequence[int], num_classes: int,
                pair: tuple[str, str] | None = None) -> tuple[int, int]:
    """The widths D_s, D_t of ``term``'s view at its tap (or at the layer ``pair`` (student,
    teacher)), for the setting's student and teacher."""
    import json

    widths = []
    for spec, tap in zip((setting.student, setting.teacher), pair or (term.tap, term.tap)):
        shape = _tap_shapes(spec.model, json.dumps(spec.params, sort_keys=True), tuple(in_shape), num_classes,
                            (tap,))[tap]
        widths.append(int(term.view(torch.zeros(2, *shape)).shape[1]))
    return widths[0], widths[1]


def memory_problems(objective: Objective, setting: Setting, device: torch.device, in_shape: Sequence[int],
                    num_classes: int) -> list[str]:
    """Sentences for the terms of ``objective`` that would not fit on ``device`` (empty: all fit)."""
    if setting.teacher is None or not objective.terms:
        return []
    batch = setting.batch_size
    budget = device_budget(device)
    problems = []
    for term, pairs in zip(objective.terms, objective.pairs):
        if not isinstance(term, RelationTerm):  # feature terms hold (B, C, H, W) features, no B x B relations
            continue
        need = max(term_bytes(term, batch, *view_widths(term, setting, in_shape, num_classes, pair))
                   for pair in pairs)
        if need > budget:
            problems.append(f"{term.affinity.name} over view {term.view.name} at {term.tap} needs about "
                            f"{need / 2**30:.1f} GiB for a batch of {batch}, more than the "
                            f"{budget / 2**30:.1f} GiB this {device.type} device gives one composition; "
                            f"use a pooled view, another tap or a (B, B) affinity")
    return problems
