"""Normalisations: relation matrix -> relation matrix of the same shape.

Row-wise entries act on the last dimension, so they apply to (B, B) matrices and to
(B, B, B) angle tensors alike. Properties used by the validity rules:

- ``requires_nonnegative``: the input must be >= 0 (e.g. ``row_sum``);
- ``output``: ``"same"`` (keeps the sign pattern of its input), ``"nonnegative"``,
  ``"signed"`` or ``"distribution"`` (every row is non-negative and sums to one);
- ``matrix_only``: only defined for (B, B) matrices.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..registry import Param, Registry

NORMALISATIONS = Registry("normalisation", bind=True)

EPS = 1e-12


@NORMALISATIONS.register("none", output="same")
def none(m: torch.Tensor) -> torch.Tensor:
    """Identity. N(M) = M."""
    return m


@NORMALISATIONS.register("row_l2", output="same")
def row_l2(m: torch.Tensor) -> torch.Tensor:
    """Each row scaled to unit L2 norm (SP). N(M)_ij = M_ij / max(||M_i||_2, 1e-12)."""
    return F.normalize(m, dim=-1)


@NORMALISATIONS.register("mean", output="same")
def mean(m: torch.Tensor) -> torch.Tensor:
    """Divide by the mean of the strictly positive entries (RKD-D). N(M) = M / mean{M_ij : M_ij > 0}.

    A matrix with no positive entry is divided by 1e-12 (so a zero matrix stays zero).
    """
    pos = m > 0
    denom = (m * pos).sum() / pos.sum().clamp(min=1)
    return m / denom.clamp(min=EPS)


@NORMALISATIONS.register("max", output="same")
def max_abs(m: torch.Tensor) -> torch.Tensor:
    """Divide by the largest absolute entry. N(M) = M / max(max_ij |M_ij|, 1e-12)."""
    return m / m.abs().amax().clamp(min=EPS)


@NORMALISATIONS.register(
    "row_softmax",
    params=[Param("temperature", 1.0, float, "softmax temperature", search=(0.05, 10.0), log=True,
                  min=0.0, min_inclusive=False)],
    output="distribution",
)
def row_softmax(m: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Row-wise softmax. N(M)_ij = exp(M_ij / T) / sum_k exp(M_ik / T)."""
    return torch.softmax(m / temperature, dim=-1)


@NORMALISATIONS.register("row_sum", output="distribution", requires_nonnegative=True)
def row_sum(m: torch.Tensor) -> torch.Tensor:
    """Rows scaled to sum to one (PKT); needs non-negative input. N(M)_ij = M_ij / (sum_k M_ik + 1e-12)."""
    return m / (m.sum(dim=-1, keepdim=True) + EPS)  # adding eps is cheaper than clamping (identity backward)


@NORMALISATIONS.register("minmax", output="nonnegative")
def minmax(m: torch.Tensor) -> torch.Tensor:
    """Global min-max scaling to [0, 1]. N(M) = (M - min M) / max(max M - min M, 1e-12)."""
    lo = m.amin()
    return (m - lo) / (m.amax() - lo).clamp(min=EPS)


@NORMALISATIONS.register("zscore", output="signed")
def zscore(m: torch.Tensor) -> torch.Tensor:
    """Global standardisation. N(M) = (M - mean M) / sqrt(var M + 1e-12) (population variance)."""
    centred = m - m.mean()
    return centred / (centred.pow(2).mean() + EPS).sqrt()


@NORMALISATIONS.register("center", output="signed", matrix_only=True)
def center(m: torch.Tensor) -> torch.Tensor:
    """Double centering, as in CKA/HSIC. N(M) = H M H with H = I - 11^T/B:
    N(M)_ij = M_ij - mean_k M_kj - mean_k M_ik + mean_kl M_kl."""
    return m - m.mean(dim=0, keepdim=True) - m.mean(dim=1, keepdim=True) + m.mean()


@NORMALISATIONS.register("frobenius", output="same")
def frobenius(m: torch.Tensor) -> torch.Tensor:
    """Scale to unit Frobenius norm. N(M) = M / max(||M||_F, 1e-12)."""
    return m / m.norm().clamp(min=EPS)
