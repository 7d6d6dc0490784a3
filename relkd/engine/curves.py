"""Per-epoch curves of a run: what :func:`relkd.engine.fit` and
:func:`relkd.engine.run_population` record after each epoch of each student, kept in
:attr:`relkd.engine.RunResult.curves` and logged by :mod:`relkd.engine.tracking`.

One point per epoch (a plain JSON-ready dict)::

    {"epoch": 1,                       # 1-based
     "lr": 0.05,                       # the learning rate at the epoch's first step (the head's)
     "samples_per_second": 5120.3,     # training samples over the epoch's training time
     "val_accuracy": 0.81,             # absent when the epoch was not evaluated
     "parts": {"ce": 0.9, "kd": 1.3},  # each loss part's mean over the epoch's steps, unweighted
     "weighted": {"ce": 0.9, "kd": 1.2}}  # the same, times its weight (what the total sums)

:func:`scalars` flattens a point into the names the trackers log (``loss/ce``,
``loss/ce.weighted``, ``lr``, ``samples_per_second``, ``val_accuracy``)."""
from __future__ import annotations

import time
from typing import Any, Mapping, Protocol

import torch

__all__ = ["Curve", "scalars", "learning_rate"]


class _Sums(Protocol):
    sums: dict[str, torch.Tensor]
    weighted: dict[str, torch.Tensor]
    steps: int
    samples: int


def learning_rate(optimizer: torch.optim.Optimizer) -> float:
    """The recipe's learning rate now: the largest of the parameter groups' (the head's; a
    body group trains at ``body_lr_scale`` times it)."""
    return max(float(group["lr"]) for group in optimizer.param_groups)


def _floats(sums: Mapping[str, torch.Tensor]) -> dict[str, float]:
    return {name: float(value) for name, value in sums.items()}


class Curve:
    """The per-epoch points of one student, from its loss-part sums (a
    :class:`relkd.engine.training.PartSums`): :meth:`start_epoch` before an epoch's first
    step, :meth:`end_epoch` after its last (and after its evaluation, if any). Reading the
    sums at the start and the end of each epoch is the only host-device wait it adds (none per
    step)."""

    def __init__(self, sums: _Sums):
        self.sums = sums
        self.points: list[dict[str, Any]] = []
        self._lr = 0.0
        self._at: tuple[dict[str, float], dict[str, float], int, int, float] | None = None

    def start_epoch(self, lr: float) -> None:
        """Mark the start of an epoch trained at ``lr``."""
        s = self.sums
        self._lr = lr
        self._at = (_floats(s.sums), _floats(s.weighted), s.steps, s.samples, time.perf_counter())

    def end_epoch(self, epoch: int, val_accuracy: float | None = None, seconds: float | None = None) -> dict[str, Any]:
        """Close epoch ``epoch`` (0-based) and return its point. ``seconds``: the epoch's
        training time when the caller measured it (a population's members share one); by
        default the time since :meth:`start_epoch`."""
        if self._at is None:
            raise RuntimeError("Curve.end_epoch before start_epoch")
        raw0, weighted0, steps0, samples0, t0 = self._at
        s = self.sums
        steps = max(s.steps - steps0, 1)
        seconds = time.perf_counter() - t0 if seconds is None else seconds
        point: dict[str, Any] = {
            "epoch": epoch + 1, "lr": self._lr,
            "samples_per_second": (s.samples - samples0) / max(seconds, 1e-9),
        }
        if val_accuracy is not None:
            point["val_accuracy"] = val_accuracy
        point["parts"] = {k: (v - raw0.get(k, 0.0)) / steps for k, v in _floats(s.sums).items()}
        point["weighted"] = {k: (v - weighted0.get(k, 0.0)) / steps for k, v in _floats(s.weighted).items()}
        self.points.append(point)
        self._at = None
        return point


def scalars(point: Mapping[str, Any]) -> dict[str, float]:
    """A curve point as the flat scalars the trackers log: ``lr``, ``samples_per_second``,
    ``val_accuracy`` (when evaluated), ``loss/<part>`` and ``loss/<part>.weighted``."""
    out = {name: float(point[name]) for name in ("lr", "samples_per_second", "val_accuracy") if name in point}
    out.update({f"loss/{k}": float(v) for k, v in point.get("parts", {}).items()})
    out.update({f"loss/{k}.weighted": float(v) for k, v in point.get("weighted", {}).items()})
    return out
