"""Affinities: how two samples' features are compared.

Every entry maps features ``x`` of shape (B, D) to a relation matrix of shape (B, B)
(``angle``: (B, B, B)). Properties used by the validity rules (:mod:`relkd.relation.rules`):

- ``nonnegative``: every entry is >= 0 (a bool, or a function of the parameters);
- ``range``: the output range as text, for documentation;
- ``symmetric``: the matrix is symmetric;
- ``order``: 2 for (B, B) matrices, 3 for (B, B, B) tensors.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..registry import Param, Registry

AFFINITIES = Registry("affinity", bind=True)

#: squared distances are clamped here before the square root (RKD's value): keeps the
#: gradient of the distance finite when two samples coincide.
DIST_EPS = 1e-12


def _sq_dist(x: torch.Tensor) -> torch.Tensor:
    """Pairwise squared Euclidean distances via the Gram matrix, clamped at DIST_EPS."""
    sq = x.pow(2).sum(dim=1)
    return (sq.unsqueeze(1) + sq.unsqueeze(0) - 2.0 * (x @ x.t())).clamp(min=DIST_EPS)


def _zero_diagonal(m: torch.Tensor) -> torch.Tensor:
    m = m.clone()
    m.fill_diagonal_(0.0)
    return m


@AFFINITIES.register("dot", nonnegative=False, symmetric=True, order=2, range="(-inf, inf)")
def dot(x: torch.Tensor) -> torch.Tensor:
    """Gram matrix (linear kernel). A_ij = <x_i, x_j>."""
    return x @ x.t()


@AFFINITIES.register("cosine", nonnegative=False, symmetric=True, order=2, range="[-1, 1]")
def cosine(x: torch.Tensor) -> torch.Tensor:
    """Cosine similarity. A_ij = <x_i, x_j> / (||x_i|| ||x_j||); zero vectors give 0."""
    xn = F.normalize(x, dim=1)
    return xn @ xn.t()


@AFFINITIES.register("cosine01", nonnegative=True, symmetric=True, order=2, range="[0, 1]")
def cosine01(x: torch.Tensor) -> torch.Tensor:
    """Cosine similarity mapped to [0, 1] (PKT). A_ij = (cos(x_i, x_j) + 1) / 2."""
    return (cosine(x) + 1.0) * 0.5


@AFFINITIES.register("euclidean", nonnegative=True, symmetric=True, order=2, range="[0, inf)")
def euclidean(x: torch.Tensor) -> torch.Tensor:
    """Pairwise Euclidean distance (RKD-D). A_ij = sqrt(max(||x_i - x_j||^2, 1e-12)), A_ii = 0.

    The clamp before the square root keeps the gradient finite for coinciding samples.
    """
    return _zero_diagonal(_sq_dist(x).sqrt())


@AFFINITIES.register("sq_euclidean", nonnegative=True, symmetric=True, order=2, range="[0, inf)")
def sq_euclidean(x: torch.Tensor) -> torch.Tensor:
    """Pairwise squared Euclidean distance. A_ij = ||x_i - x_j||^2, A_ii = 0."""
    return _zero_diagonal(_sq_dist(x))


@AFFINITIES.register(
    "rbf",
    params=[
        Param("gamma", 1.0, float, "kernel width", search=(1e-2, 1e1), log=True, min=0.0, min_inclusive=False),
        Param("adaptive", True, bool, "divide squared distances by their mean over i != j first"),
    ],
    nonnegative=True,
    symmetric=True,
    order=2,
    range="(0, 1]",
)
def rbf(x: torch.Tensor, gamma: float = 1.0, adaptive: bool = True) -> torch.Tensor:
    """Gaussian (RBF) kernel. A_ij = exp(-gamma * d_ij^2 / s), d_ij = ||x_i - x_j||,
    s = mean_{i != j} d_ij^2 if ``adaptive`` (scale-free gamma) else 1."""
    d2 = _zero_diagonal(_sq_dist(x))
    if adaptive:
        b = x.shape[0]
        scale = d2.sum() / max(b * (b - 1), 1)
        d2 = d2 / scale.clamp(min=DIST_EPS)
    return torch.exp(-gamma * d2)


@AFFINITIES.register(
    "rbf_taylor",
    params=[
        Param("gamma", 0.4, float, "kernel width", search=(0.05, 2.0), log=True, min=0.0, min_inclusive=False),
        Param("order", 2, int, "Taylor order P", search=(1, 4), min=0, max=8),
    ],
    # A truncated exponential series of even order is positive everywhere.
    nonnegative=lambda p: p["order"] % 2 == 0,
    symmetric=True,
    order=2,
    range="(0, 1] for even order",
)
def rbf_taylor(x: torch.Tensor, gamma: float = 0.4, order: int = 2) -> torch.Tensor:
    """Taylor-expanded Gaussian kernel on L2-normalised features (CC).
    A = exp(-2 gamma) * sum_{p=0..P} (2 gamma)^p / p! * C^p, C = X_n X_n^T, powers element-wise."""
    c = cosine(x)
    # Horner's rule on a_p = exp(-2 gamma) (2 gamma)^p / p!: ((a_P c + a_{P-1}) c + ...) c + a_0
    coef = [math.exp(-2.0 * gamma) * (2.0 * gamma) ** p / math.factorial(p) for p in range(order + 1)]
    if order == 0:
        return torch.full_like(c, coef[0])
    acc = c * coef[order] + coef[order - 1]
    for p in range(order - 2, -1, -1):
        acc = acc * c + coef[p]
    return acc


@AFFINITIES.register("pearson", nonnegative=False, symmetric=True, order=2, range="[-1, 1]")
def pearson(x: torch.Tensor) -> torch.Tensor:
    """Pearson correlation of two samples across feature dimensions.
    A_ij = cos(x_i - mean(x_i), x_j - mean(x_j))."""
    return cosine(x - x.mean(dim=1, keepdim=True))


@AFFINITIES.register("angle", nonnegative=False, symmetric=False, order=3, range="[-1, 1]")
def angle(x: torch.Tensor) -> torch.Tensor:
    """Triplet angles (RKD-A), a (B, B, B) tensor indexed vertex first:
    A[j, i, k] = <e_ij, e_kj>, e_ij = (x_i - x_j) / ||x_i - x_j|| (e_jj = 0).

    Memory: O(B^2 D + B^3).
    """
    e = F.normalize(x.unsqueeze(0) - x.unsqueeze(1), dim=2)  # e[j, i] = unit(x_i - x_j)
    return torch.bmm(e, e.transpose(1, 2))
