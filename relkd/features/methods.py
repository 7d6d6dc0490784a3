"""Feature-level distillation methods: the ``feature`` registry (FitNets, AT, NST, VID, CRD;
SRM in :mod:`relkd.features.srm`).

A feature method compares the student's and the teacher's features at a tap directly (not
their B x B relations), often through parts of its own that train with the student: FitNets'
regressor, VID's regressor and variance, CRD's embedding heads and memory banks. Each entry
is an :class:`FeatureMethod` (a ``torch.nn.Module``); :meth:`FeatureMethod.build` makes the
trainable parts for the actual tap shapes when the objective first meets the models
(:meth:`relkd.Objective.bind`), and their parameters then join the student's optimizer.

Feature maps of different spatial sizes are compared after the larger one is average-pooled
to the smaller one's size (:func:`match_spatial`), except by FitNets, whose regressor maps
the student's map to the teacher's size as RepDistiller's does; channel counts may differ
wherever the method has a regressor or compares channel distributions (NST).

Published defaults (weights are in :mod:`relkd.presets`) follow the papers and, where the
papers leave a choice open, RepDistiller (Tian et al.'s public code for the CRD benchmark,
which Quinn et al. also build on). Each choice is named in the entry's docstring.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..registry import Param, Registry

__all__ = ["FEATURES", "FeatureMethod", "register_method", "match_spatial", "conv_regressor", "FitNet", "Attention",
           "NeuralStyle", "VariationalInfo", "Contrastive"]

FEATURES = Registry("feature method", bind=False)


def match_spatial(student: Tensor, teacher: Tensor) -> tuple[Tensor, Tensor]:
    """The two feature maps at one spatial size: the larger side of each is average-pooled
    (``adaptive_avg_pool2d``) to the smaller one's. Tensors of rank 2 are returned as they are."""
    if student.dim() != 4 or teacher.dim() != 4 or student.shape[2:] == teacher.shape[2:]:
        return student, teacher
    size = (min(student.shape[2], teacher.shape[2]), min(student.shape[3], teacher.shape[3]))
    if tuple(student.shape[2:]) != size:
        student = F.adaptive_avg_pool2d(student, size)
    if tuple(teacher.shape[2:]) != size:
        teacher = F.adaptive_avg_pool2d(teacher, size)
    return student, teacher


class FeatureMethod(nn.Module):
    """A feature-level term between the student's and the teacher's features at one tap.

    Subclasses set :attr:`needs_map` (the tap must be a feature map (B, C, H, W)),
    :attr:`needs_index` (the term needs each sample's index in the training set),
    :attr:`needs_stage` (a stage on the teacher's features before the student trains, with
    ``stage(batches, key)`` and ``stage_key(teacher_key, tap)``) and override
    :meth:`build` when they have trainable parts."""

    needs_map = False
    needs_index = False
    #: a stage before the student trains (SRM's dictionary): :meth:`stage`, run by the training loop
    needs_stage = False

    def __init__(self) -> None:
        super().__init__()
        self.built = not self.has_parts()
        self.staged = not self.needs_stage  # set by ``stage`` for a method that has one

    @classmethod
    def has_parts(cls) -> bool:
        """Whether :meth:`build` makes parts (trainable or stateful) of this method: its
        objective trains them with the student, and they keep it out of a population."""
        return cls.build is not FeatureMethod.build

    def build(self, student: Tensor, teacher: Tensor, num_samples: int | None) -> None:
        """Make the parts for example features of both models (shapes and device taken from
        them); ``num_samples`` is the size of the training set. Nothing to make here."""

    def forward(self, student: Tensor, teacher: Tensor, index: Tensor | None = None) -> Tensor:
        raise NotImplementedError


def register_method(name: str, *, description: str, params: Sequence[Param] = ()) -> Callable[[type], type]:
    """Register a :class:`FeatureMethod` in :data:`FEATURES`; its entry's properties (``map``,
    ``index``, ``stage``, ``trainable``: what ``relkd list features --properties`` shows and
    validation reads) come from the class itself, so they are stated once."""
    def decorator(cls: type) -> type:
        if (cls.needs_index or cls.needs_stage) and not cls.has_parts():  # such state lives in built parts
            raise TypeError(f"feature method {name!r} needs an index or a stage, so it must build parts")
        FEATURES.add(name, cls, description=description, params=params, map=cls.needs_map, index=cls.needs_index,
                     stage=cls.needs_stage, trainable=cls.has_parts())
        return cls
    return decorator


def _ranks_match(method: str, student: Tensor, teacher: Tensor) -> None:
    if student.dim() != teacher.dim() or student.dim() not in (2, 4):
        raise ValueError(f"{method}: the student's features have shape {tuple(student.shape)} and the teacher's "
                         f"{tuple(teacher.shape)}; expected both (B, C, H, W) or both (B, D)")


def conv_regressor(student: Sequence[int], teacher: Sequence[int]) -> tuple[nn.Module, bool]:
    """FitNets' regressor from a student map of shape ``(C_s, H_s, W_s)`` to a teacher map
    ``(C_t, H_t, W_t)``, by RepDistiller's rule (``models/util.py: ConvReg``, which compares
    heights only):

    * H_s = 2 H_t: conv 3x3, stride 2, padding 1 (the student's full map, halved);
    * 2 H_s = H_t: transposed conv 4x4, stride 2, padding 1 (the loss at the teacher's size);
    * H_s >= H_t otherwise: a valid conv of kernel (1 + H_s - H_t, 1 + W_s - W_t), so 1x1 when
      the sizes are equal;

    each followed by BatchNorm and ReLU. Returns ``(module, pooled)``: ``pooled`` is True
    where the reference has no rule (a student map smaller than the teacher's, not half of it,
    or widths that the valid conv cannot map): there relkd average-pools the larger side of
    each map to the smaller one's (:func:`match_spatial`) and uses a 1x1 conv."""
    (c_s, h_s, w_s), (c_t, h_t, w_t) = student, teacher
    # the rule compares heights only; each case applies where its output is the teacher's size
    if h_s == 2 * h_t and (w_s + 1) // 2 == w_t:
        conv: nn.Module = nn.Conv2d(c_s, c_t, kernel_size=3, stride=2, padding=1)
    elif 2 * h_s == h_t and 2 * w_s == w_t:
        conv = nn.ConvTranspose2d(c_s, c_t, kernel_size=4, stride=2, padding=1)
    elif h_s >= h_t and w_s >= w_t and h_s != 2 * h_t:
        conv = nn.Conv2d(c_s, c_t, kernel_size=(1 + h_s - h_t, 1 + w_s - w_t))
    else:
        return nn.Sequential(nn.Conv2d(c_s, c_t, kernel_size=1), nn.BatchNorm2d(c_t), nn.ReLU()), True
    return nn.Sequential(conv, nn.BatchNorm2d(c_t), nn.ReLU()), False


@register_method("fitnet", description="FitNets hint (Romero et al. 2015): MSE of a regressor of the student's map")
class FitNet(FeatureMethod):
    """FitNets hint (Romero et al. 2015): L = mean((r(f_s) - f_t)^2).

    r is a regressor from the student's width to the teacher's, trained with the student:
    for feature maps RepDistiller's ``ConvReg`` (:func:`conv_regressor`: a 1x1 conv when the
    maps have the same size, a 3x3 stride-2 conv when the student's is twice the teacher's,
    a 4x4 transposed conv when it is half, then BatchNorm and ReLU), for vectors a linear
    layer. The paper trains the hint in a first stage and the student with KD after; relkd,
    like RepDistiller and Quinn et al., trains the hint jointly with the other parts."""

    def build(self, student: Tensor, teacher: Tensor, num_samples: int | None) -> None:
        _ranks_match("fitnet", student, teacher)
        c_s, c_t = student.shape[1], teacher.shape[1]
        self.pooled = False
        if student.dim() == 4:
            self.regressor, self.pooled = conv_regressor(student.shape[1:], teacher.shape[1:])
        else:
            self.regressor = nn.Linear(c_s, c_t)
        self.regressor.to(student.device)
        self.built = True

    def forward(self, student: Tensor, teacher: Tensor, index: Tensor | None = None) -> Tensor:
        if self.pooled:
            student, teacher = match_spatial(student, teacher)
        return F.mse_loss(self.regressor(student), teacher)


def attention_map(features: Tensor, p: float) -> Tensor:
    """a(f) = normalise_2(mean_c |f|^p) over the positions: (B, C, H, W) -> (B, H W)."""
    return F.normalize(features.abs().pow(p).mean(1).flatten(1), dim=1)


@register_method("at", description="Attention transfer (Zagoruyko & Komodakis 2017): MSE of normalise(mean_c |f|^p)",
                 params=[Param("p", 2.0, help="power of the activations", min=0.0, min_inclusive=False)])
class Attention(FeatureMethod):
    """Attention transfer (Zagoruyko & Komodakis 2017): a(f) = normalise(mean_c |f|^p) over
    the H W positions, L = mean over B x H W of (a(f_s) - a(f_t))^2, p = 2.

    relkd takes the paper's |f|^p (its F^p_sum = sum_c |A_c|^p). RepDistiller computes
    f.pow(p): the same for every even integer p (its default, 2); for an odd integer p it keeps
    the sign, so positive and negative activations of a channel cancel in the mean, where
    relkd's add; for a non-integer p it is NaN at every negative activation (relkd's is defined).

    The maps are spatial (B, C, H, W); channel counts may differ. Maps of different sizes:
    relkd pools the larger size of each dimension to the smaller (:func:`match_spatial`);
    RepDistiller pools the map of the larger height to a square of the smaller height, which
    is the same for square maps (every CIFAR network) and squashes a non-square map's width.
    The paper sums AT over several layer pairs: the ``at`` preset has one term per group of
    blocks (RepDistiller's layers, :mod:`relkd.presets`)."""

    needs_map = True

    def __init__(self, p: float = 2.0):
        super().__init__()
        self.p = p

    def forward(self, student: Tensor, teacher: Tensor, index: Tensor | None = None) -> Tensor:
        student, teacher = match_spatial(student, teacher)
        return (attention_map(student, self.p) - attention_map(teacher, self.p)).pow(2).mean()


def _poly_kernel(a: Tensor, b: Tensor) -> Tensor:
    """k(a_i, b_j) = (a_i . b_j)^2 for the channels of every sample: (B, Ca, HW), (B, Cb, HW) -> (B, Ca, Cb)."""
    return torch.bmm(a, b.transpose(1, 2)).pow(2)


@register_method("nst", description="Neural selectivity transfer (Huang & Wang 2017): MMD of channels, (x.y)^2")
class NeuralStyle(FeatureMethod):
    """Neural selectivity transfer (Huang & Wang 2017): squared MMD between the student's
    and the teacher's channels, each channel's spatial map L2-normalised, with the
    polynomial kernel k(x, y) = (x . y)^2 (d = 2, c = 0, the paper's best):

        L = mean k(s, s) + mean k(t, t) - 2 mean k(s, t)   (means over B x C x C' pairs).

    Channel counts may differ; maps of different spatial sizes are pooled to the smaller."""

    needs_map = True

    def forward(self, student: Tensor, teacher: Tensor, index: Tensor | None = None) -> Tensor:
        student, teacher = match_spatial(student, teacher)
        s = F.normalize(student.flatten(2), dim=2)
        t = F.normalize(teacher.flatten(2), dim=2)
        return _poly_kernel(s, s).mean() + _poly_kernel(t, t).mean() - 2 * _poly_kernel(s, t).mean()


@register_method("vid", description="Variational information distillation (Ahn et al. 2019): Gaussian NLL",
                 params=[
    Param("init_var", 5.0, help="initial variance of every teacher channel", min=0.0, min_inclusive=False),
    Param("eps", 1e-5, help="lower bound of the variance", min=0.0, min_inclusive=False),
])
class VariationalInfo(FeatureMethod):
    """Variational information distillation (Ahn et al. 2019): the teacher's features are
    a Gaussian around a regression of the student's, with a learned variance per teacher
    channel (heteroscedastic over channels):

        mu = r(f_s),  sigma_c^2 = softplus(alpha_c) + eps,
        L = mean over B x C x H x W of 0.5 (log sigma_c^2 + (f_t - mu)^2 / sigma_c^2).

    r: conv 1x1 (C_s -> C_t), ReLU, conv 1x1, ReLU, conv 1x1, without biases (the paper's
    and RepDistiller's); alpha starts where sigma^2 = ``init_var`` (5, RepDistiller). The
    constant log(2 pi) / 2 is left out. Maps of different spatial sizes are pooled to the
    smaller one first."""

    needs_map = True

    def __init__(self, init_var: float = 5.0, eps: float = 1e-5):
        super().__init__()
        self.init_var, self.eps = init_var, eps

    def build(self, student: Tensor, teacher: Tensor, num_samples: int | None) -> None:
        _ranks_match("vid", student, teacher)
        c_s, c_t = student.shape[1], teacher.shape[1]
        self.regressor = nn.Sequential(nn.Conv2d(c_s, c_t, 1, bias=False), nn.ReLU(),
                                       nn.Conv2d(c_t, c_t, 1, bias=False), nn.ReLU(),
                                       nn.Conv2d(c_t, c_t, 1, bias=False))
        start = math.log(math.expm1(max(self.init_var - self.eps, 1e-12)))  # softplus^-1
        self.log_scale = nn.Parameter(torch.full((c_t,), start))
        self.to(student.device)
        self.built = True

    def forward(self, student: Tensor, teacher: Tensor, index: Tensor | None = None) -> Tensor:
        student, teacher = match_spatial(student, teacher)
        mean = self.regressor(student)
        shape = (1, -1) + (1,) * (teacher.dim() - 2)
        var = (F.softplus(self.log_scale) + self.eps).view(shape)
        return (0.5 * ((mean - teacher).pow(2) / var + var.log())).mean()


@register_method("crd", description="Contrastive representation distillation (Tian et al. 2020): NCE, memory banks",
                 params=[
    Param("feat_dim", 128, int, help="width of the embedding both sides are projected to", min=1, max=65536),
    Param("negatives", 16384, int, help="negatives per sample, drawn from the training set", min=1, max=1_000_000),
    Param("temperature", 0.07, help="temperature of the scores", min=1e-4, max=100.0),
    Param("momentum", 0.5, help="memory-bank momentum", min=0.0, max=1.0),
])
class Contrastive(FeatureMethod):
    """Contrastive representation distillation (Tian et al. 2020), NCE form with memory banks.

    e_s = normalise(W_s f_s + b_s), e_t = normalise(W_t f_t + b_t) (linear heads to ``feat_dim``
    128, both trained; the teacher's network is not). Banks M_s, M_t hold one embedding per
    training sample. For sample i with K negatives j_1..j_K:
    x_s = exp(M_t[i, j_1..j_K] . e_s / T) / Z_s (and x_t likewise with M_s, e_t), Z fixed at
    the first batch as mean(exp(. / T)) N; with P_n = 1/N and m = K,

        nce(x) = -(1/B) sum_b [log x_0/(x_0 + m P_n + 1e-7) + sum_k log m P_n/(x_k + m P_n + 1e-7)],
        L = nce(x_s) + nce(x_t).

    After each step the banks' rows of the batch move to normalise(momentum M + (1 - momentum) e).
    T = 0.07, K = 16384, momentum 0.5, feat_dim 128 (the paper and RepDistiller). Negatives
    are drawn uniformly from the training set with replacement (RepDistiller's sampler
    without class information; its CIFAR loader samples other classes' images). Banks start
    uniform in +-1/sqrt(feat_dim / 3), as RepDistiller's. Features of rank > 2 are flattened."""

    needs_index = True

    def __init__(self, feat_dim: int = 128, negatives: int = 16384, temperature: float = 0.07, momentum: float = 0.5):
        super().__init__()
        self.feat_dim, self.negatives, self.temperature, self.momentum = feat_dim, negatives, temperature, momentum
        self.last_negatives: Tensor | None = None

    def build(self, student: Tensor, teacher: Tensor, num_samples: int | None) -> None:
        if not num_samples or num_samples < 2:
            raise ValueError(f"crd: its memory banks hold one row per training sample, so it needs the size of "
                             f"the training set (at least 2), got {num_samples!r}")
        device = student.device
        self.embed_s = nn.Linear(student.flatten(1).shape[1], self.feat_dim).to(device)
        self.embed_t = nn.Linear(teacher.flatten(1).shape[1], self.feat_dim).to(device)
        bound = 1.0 / math.sqrt(self.feat_dim / 3)
        self.register_buffer("memory_s", (torch.rand(num_samples, self.feat_dim, device=device) * 2 - 1) * bound)
        self.register_buffer("memory_t", (torch.rand(num_samples, self.feat_dim, device=device) * 2 - 1) * bound)
        self.register_buffer("z", torch.full((2,), -1.0, device=device))  # Z_s, Z_t; < 0: not set yet
        self.z_set = False  # read without a device sync (a loaded state sets it from z)
        self.built = True

    def forward(self, student: Tensor, teacher: Tensor, index: Tensor | None = None) -> Tensor:
        if index is None:
            raise ValueError("crd: needs each sample's index in the training set (its memory-bank row); "
                             "pass index= to the objective (relkd's training loops do)")
        n = self.memory_s.shape[0]
        if index.device.type == "cpu" and (int(index.max()) >= n or int(index.min()) < 0):  # no sync on a GPU
            raise ValueError(f"crd: sample indices must lie in [0, {n}) (the training set it was built for), "
                             f"got {int(index.min())}..{int(index.max())}")
        e_s = F.normalize(self.embed_s(student.flatten(1)), dim=1)
        e_t = F.normalize(self.embed_t(teacher.flatten(1)), dim=1)
        negatives = torch.randint(n, (index.shape[0], self.negatives), device=index.device)
        self.last_negatives = negatives
        rows = torch.cat([index[:, None], negatives], 1)
        memory_s, memory_t = self.memory_s, self.memory_t  # kept for backward; the banks are replaced below
        scores_s = torch.exp(_bank_scores(e_s, memory_t, rows) / self.temperature)
        scores_t = torch.exp(_bank_scores(e_t, memory_s, rows) / self.temperature)
        if not (self.z_set or bool(self.z[0] >= 0)):  # the device is read once, at the first batch
            self.z = torch.stack([scores_s.detach().mean() * n, scores_t.detach().mean() * n])
        self.z_set = True
        loss = self._nce(scores_s / self.z[0], n) + self._nce(scores_t / self.z[1], n)
        if self.training:
            with torch.no_grad():
                self.memory_s = _move_rows(memory_s, index, e_s.detach(), self.momentum)
                self.memory_t = _move_rows(memory_t, index, e_t.detach(), self.momentum)
        return loss

    def _nce(self, x: Tensor, n: int) -> Tensor:
        noise = self.negatives / n  # m P_n
        positive = torch.log(x[:, 0] / (x[:, 0] + noise + 1e-7))
        negative = torch.log(noise / (x[:, 1:] + noise + 1e-7))
        return -(positive.sum() + negative.sum()) / x.shape[0]


def _bank_scores(embeddings: Tensor, memory: Tensor, rows: Tensor) -> Tensor:
    """``memory[rows[b, k]] . embeddings[b]``, (B, K + 1): every bank row scored once when K is
    a large share of the bank (a (B, N) product is cheaper than gathering (B, K + 1, F) rows),
    the rows gathered otherwise."""
    if 4 * rows.shape[1] >= memory.shape[0]:
        return (embeddings @ memory.t()).gather(1, rows)
    return torch.bmm(memory[rows], embeddings.unsqueeze(2)).squeeze(2)


def _move_rows(memory: Tensor, index: Tensor, embeddings: Tensor, momentum: float) -> Tensor:
    """A new bank whose rows ``index`` moved toward ``embeddings`` (the old one may be saved for backward)."""
    moved = F.normalize(memory.index_select(0, index) * momentum + embeddings.to(memory.dtype) * (1 - momentum), dim=1)
    return memory.index_copy(0, index, moved)
