"""Sparse representation matching (SRM, Tran, Gabbouj & Iosifidis 2021): the teacher's
features are coded on a learned dictionary; the codes give pixel-level and image-level labels
that the student's features learn to predict through a head of their own.

Stage 1, before the student trains (:meth:`SparseRepresentation.stage`): per tap, a dictionary
D (C_t x M, M = ``codewords`` x C_t atoms) and one scalar bias b are learned on the teacher's
features over the training set, each pixel's C_t-vector x on its own:

    a = sigmoid(D^T x + b),  a_k = a masked to its k = max(1, int(sparsity M)) largest entries,
    minimise mean (x - D a_k)^2                                   (Adam, no weight decay).

The stage is cached by a hash of what determines it (the teacher checkpoint's SHA-256, its
training data, the tap and the parameters), written and read like every cache entry (SHA-256
checked, ``torch.load(weights_only=True)``).

Stage 2, the term (:meth:`SparseRepresentation.forward`): for the teacher's codes a_k of a
batch (the larger map average-pooled to the smaller one's size first),

    pixel label   y_hw = argmax_m a_k[h, w, m]         (one of M classes per pixel)
    image label   q    = mean_hw a_k[h, w, :]          (in [0, 1]^M)
    z = W^T s + c (the student's head: W (C_s x M) and one scalar intercept c, trained with it)
    L = pixel_weight * CE(z_hw, y_hw) (mean over pixels) + image_weight * BCE(mean_hw sigmoid(z), q).

Choices relkd made where the paper or its public code (viebboy/SRM) leaves one open or where
relkd departs from it, each for a reason:

- **Joint training.** The authors' code trains SRM as a stage of its own (the student's
  layers learn the labels without class labels), then trains the student with KD. relkd, as
  for FitNets, adds SRM's loss to the objective and trains it with CE (and KD in ``srm+kd``):
  every relkd method is then one objective config, searchable and comparable on one budget.
- **Logits for the pixel loss.** The code feeds sigmoid outputs to a cross-entropy as if they
  were logits, which caps the right class's probability near e / (e + M - 1); relkd gives the
  cross-entropy the head's logits and the sigmoid to the image-level BCE only.
- **Dictionary budget.** ``dict_epochs`` (default 3) and ``dict_lr`` (1e-3, the code's first
  rate) are relkd's CPU-sized defaults; the code trains 100 epochs on CIFAR-100 with a
  decaying rate. The teacher stays in eval mode (the code leaves its BatchNorm in train mode).
- **Defaults**: ``codewords`` 2 and ``sparsity`` 0.02 (the code's CIFAR-100 and transfer values),
  pixel and image weights 1 (the code's).
- **Initialisation, as the code's** (``cifar100/code/Layers.py``): the dictionary D (C_t x M)
  and the student's head W (C_s x M) by ``kaiming_uniform_`` with its default a = 0, i.e.
  uniform in +-sqrt(6 / M) (the fan-in of a (C, M) tensor is M), and each one scalar
  intercept uniform in [-1, 1]. The dictionary is drawn from a fixed seed and learned on the
  training set in its stored order without augmentation, so every seed's run of a study
  shares one dictionary; the head is drawn from the run's seed.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..cache import cached
from ..registry import Param
from .methods import FeatureMethod, match_spatial, register_method

__all__ = ["SparseRepresentation", "CodeHead", "sparse_codes", "initial_dictionary", "learn_dictionary"]

log = logging.getLogger(__name__)


def sparse_codes(features: Tensor, dictionary: Tensor, bias: Tensor, k: int) -> Tensor:
    """The top-``k`` sparse codes of every pixel: (B, C, H, W) -> (B, H, W, M)."""
    a = torch.sigmoid(features.permute(0, 2, 3, 1) @ dictionary + bias)
    threshold = a.topk(k, dim=-1).values[..., -1:]
    return a * (a >= threshold)


def initial_dictionary(channels: int, atoms: int, seed: int = 0) -> tuple[Tensor, Tensor]:
    """The dictionary (C x M) and its scalar bias before learning, as the authors' code draws
    them: ``kaiming_uniform_`` with a = 0, uniform in +-sqrt(6 / M) (the fan-in of a (C, M)
    tensor is M), and uniform in [-1, 1]; from ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    bound = math.sqrt(6 / atoms)
    dictionary = (torch.rand(channels, atoms, generator=generator) * 2 - 1) * bound
    return dictionary, torch.rand(1, generator=generator) * 2 - 1


def learn_dictionary(batches: Callable[[], Iterator[Tensor]], channels: int, atoms: int, k: int, epochs: int,
                     lr: float, seed: int = 0) -> dict[str, Tensor]:
    """Stage 1: learn ``{"dictionary": (C, M), "bias": (1,)}`` on the teacher's feature maps
    that ``batches()`` yields (one pass per epoch) by minimising the reconstruction error."""
    dictionary, bias = initial_dictionary(channels, atoms, seed)
    device = None
    optimizer = None
    for epoch in range(epochs):
        total, count = 0.0, 0
        for x in batches():
            if optimizer is None:
                device = x.device
                dictionary = dictionary.to(device).requires_grad_(True)
                bias = bias.to(device).requires_grad_(True)
                optimizer = torch.optim.Adam([dictionary, bias], lr=lr)
            x = x.float()
            codes = sparse_codes(x, dictionary, bias, k)
            loss = (codes @ dictionary.t() - x.permute(0, 2, 3, 1)).pow(2).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total, count = total + float(loss.detach()), count + 1
        log.info("srm dictionary epoch %d/%d: reconstruction error %.5f", epoch + 1, epochs, total / max(count, 1))
    if optimizer is None:
        raise ValueError("srm: the dictionary stage got no teacher features to learn from")
    return {"dictionary": dictionary.detach().cpu(), "bias": bias.detach().cpu()}


class CodeHead(nn.Module):
    """The student's head of SRM, as the authors' code's: logits z = W^T s + c at every pixel
    of a (B, C_s, H, W) map, W a (C_s, M) matrix initialised ``kaiming_uniform_`` (a = 0:
    uniform in +-sqrt(6 / M)) and c one scalar intercept uniform in [-1, 1]; (B, M, H, W) out."""

    def __init__(self, channels: int, atoms: int):
        super().__init__()
        self.centers = nn.Parameter(torch.empty(channels, atoms))
        self.intercept = nn.Parameter(torch.empty(1))
        nn.init.kaiming_uniform_(self.centers)
        nn.init.uniform_(self.intercept, -1.0, 1.0)

    def forward(self, features: Tensor) -> Tensor:
        return torch.einsum("bchw,cm->bmhw", features, self.centers) + self.intercept


@register_method("srm", description="Sparse representation matching (Tran et al. 2021): labels from sparse codes",
                 params=[
    Param("codewords", 2.0, help="dictionary atoms per teacher channel (M = codewords x C_t)", min=0.0,
          min_inclusive=False, max=64.0),
    Param("sparsity", 0.02, help="share of the atoms each pixel's code keeps (k = max(1, int(sparsity M)))",
          min=0.0, min_inclusive=False, max=1.0),
    Param("pixel_weight", 1.0, help="weight of the pixel-level loss", min=0.0),
    Param("image_weight", 1.0, help="weight of the image-level loss", min=0.0),
    Param("dict_epochs", 3, int, help="epochs of the dictionary stage over the training set", min=1, max=1000),
    Param("dict_lr", 1e-3, help="Adam learning rate of the dictionary stage", min=0.0, min_inclusive=False, max=1.0),
])
class SparseRepresentation(FeatureMethod):
    """Sparse representation matching (Tran et al. 2021): pixel-level CE and image-level BCE
    of a student head against the teacher's sparse codes on a learned dictionary (see
    :mod:`relkd.features.srm` for the stages, the formula and relkd's choices)."""

    needs_map = True
    needs_stage = True

    def __init__(self, codewords: float = 2.0, sparsity: float = 0.02, pixel_weight: float = 1.0,
                 image_weight: float = 1.0, dict_epochs: int = 3, dict_lr: float = 1e-3):
        super().__init__()
        self.codewords, self.sparsity = codewords, sparsity
        self.pixel_weight, self.image_weight = pixel_weight, image_weight
        self.dict_epochs, self.dict_lr = dict_epochs, dict_lr

    @property
    def atoms(self) -> int:
        return self.dictionary.shape[1]

    def build(self, student: Tensor, teacher: Tensor, num_samples: int | None) -> None:
        c_s, c_t = student.shape[1], teacher.shape[1]
        atoms = int(self.codewords * c_t)
        if atoms < 2:
            raise ValueError(f"srm: method.codewords {self.codewords:g} x {c_t} teacher channels gives a dictionary "
                             f"of {atoms} atom(s); expected at least 2: raise method.codewords")
        self.k = max(1, int(self.sparsity * atoms))
        self.head = CodeHead(c_s, atoms).to(student.device)
        self.register_buffer("dictionary", torch.zeros(c_t, atoms, device=student.device))
        self.register_buffer("bias", torch.zeros(1, device=student.device))
        self.built = True

    def stage_key(self, teacher_key: str, tap: str) -> str:
        """What determines the dictionary: the teacher and its data (``teacher_key``), the tap,
        the dictionary's shape and the stage's parameters."""
        text = json.dumps({"teacher": teacher_key, "tap": tap, "shape": list(self.dictionary.shape), "k": self.k,
                           "epochs": self.dict_epochs, "lr": self.dict_lr, "version": 2}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:20]

    def stage(self, batches: Callable[[], Iterator[Tensor]], key: str | None) -> None:
        """Learn (or load from the cache, when ``key`` names the stage) the dictionary on the
        teacher's features that ``batches()`` yields, from a fixed initialisation (seed 0): it
        depends on the teacher, its data and the parameters only."""
        channels, atoms = self.dictionary.shape

        def build() -> tuple[dict[str, Tensor], dict]:
            learned = learn_dictionary(batches, channels, atoms, self.k, self.dict_epochs, self.dict_lr)
            return learned, {"channels": channels, "atoms": atoms, "k": self.k, "epochs": self.dict_epochs}

        def check(value: dict, meta: dict) -> None:
            if tuple(value["dictionary"].shape) != (channels, atoms):
                raise ValueError(f"its dictionary is {tuple(value['dictionary'].shape)}, expected {(channels, atoms)}")

        if key is None:
            learned, _ = build()
        else:
            entry = cached("srm", key, build, name=f"srm{channels}x{atoms}", filename="dictionary.pt", load=check,
                           what="SRM dictionary", keep_on_write_error=True)
            learned = entry.value
        self.dictionary.copy_(learned["dictionary"].to(self.dictionary.device))
        self.bias.copy_(learned["bias"].to(self.bias.device))
        self.staged = True

    def forward(self, student: Tensor, teacher: Tensor, index: Tensor | None = None) -> Tensor:
        if not self.staged:
            raise ValueError("srm: its dictionary stage has not run; relkd's training loops run it "
                             "(objective.prepare_stages) before the student trains")
        student, teacher = match_spatial(student, teacher)
        with torch.no_grad():
            codes = sparse_codes(teacher, self.dictionary, self.bias, self.k)  # (B, H, W, M)
            pixel_labels = codes.argmax(-1)
            image_labels = codes.mean((1, 2))
        logits = self.head(student)  # (B, M, H, W)
        pixel = F.cross_entropy(logits, pixel_labels)
        image = F.binary_cross_entropy(torch.sigmoid(logits).mean((2, 3)), image_labels)
        return self.pixel_weight * pixel + self.image_weight * image
