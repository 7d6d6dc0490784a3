"""Losses between the student's relation matrix ``s`` and the teacher's ``t`` -> scalar.

Both have the same shape ((B, B) or (B, B, B)); every loss is a mean over entries, so
its scale does not grow with the batch size. Properties used by the validity rules:

- ``requires``: ``"distribution"`` when rows must be distributions (``kl``, ``js``);
- ``symmetric``: L(s, t) == L(t, s).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..registry import Param, Registry

LOSSES = Registry("loss", bind=True)

_EPS_PARAM = Param("eps", 1e-7, float, "added inside the logarithms", min=0.0, min_inclusive=False, max=1e-2)


@LOSSES.register("mse", symmetric=True)
def mse(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Mean squared error over entries. L = mean_ij (S_ij - T_ij)^2."""
    return (s - t).pow(2).mean()


@LOSSES.register("l1", symmetric=True)
def l1(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Mean absolute error over entries. L = mean_ij |S_ij - T_ij|."""
    return (s - t).abs().mean()


@LOSSES.register(
    "smooth_l1",
    params=[Param("beta", 1.0, float, "quadratic zone width", search=(0.01, 10.0), log=True,
                  min=0.0, min_inclusive=False)],
    symmetric=True,
)
def smooth_l1(s: torch.Tensor, t: torch.Tensor, beta: float = 1.0) -> torch.Tensor:
    """Huber-style smooth L1 (RKD), mean over entries, with d = |S_ij - T_ij|:
    l = 0.5 d^2 / beta if d < beta else d - 0.5 beta."""
    return F.smooth_l1_loss(s, t, beta=beta)


@LOSSES.register("kl", params=[_EPS_PARAM], requires="distribution", symmetric=False)
def kl(s: torch.Tensor, t: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """KL(teacher || student) with rows as distributions (PKT), mean over entries, eps-stable:
    L = mean_ij T_ij log((T_ij + eps) / (S_ij + eps))."""
    return (t * torch.log((t + eps) / (s + eps))).mean()


@LOSSES.register("js", params=[_EPS_PARAM], requires="distribution", symmetric=True)
def js(s: torch.Tensor, t: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Jensen-Shannon divergence with rows as distributions, mean over entries, M = (S + T) / 2:
    L = mean_ij [T_ij log((T_ij + eps)/(M_ij + eps)) + S_ij log((S_ij + eps)/(M_ij + eps))] / 2."""
    m = 0.5 * (s + t)
    return 0.5 * (kl(m, t, eps) + kl(m, s, eps))


@LOSSES.register("cosine", symmetric=True)
def cosine(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """One minus the cosine similarity of the flattened matrices, computed as
    L = ||s/|s| - t/|t| ||^2 / 2 (equal to 1 - cos(S, T); zero for identical matrices,
    including all-zero ones)."""
    return 0.5 * (F.normalize(s.reshape(1, -1), dim=1) - F.normalize(t.reshape(1, -1), dim=1)).pow(2).sum()
