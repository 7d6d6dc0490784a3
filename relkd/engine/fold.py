"""Channel-folded populations: K students of one convolutional architecture as one network
whose every layer is K layers side by side (grouped convolutions), so each layer runs once
for all members.

    Conv2d(in, out, groups=g)  ->  Conv2d(K in, K out, groups=K g)   member k: channels k*out..(k+1)*out
    BatchNorm2d(C)             ->  BatchNorm2d(K C)                   (statistics are per channel: per member)
    Linear(in, out)            ->  FoldedLinear(K, in, out)           (a batched matrix product)

The input is repeated K times along the channels; activations, pooling and residual sums act
per channel, so a member's channels only ever meet its own. A tap of the folded network,
``(B, K C, ...)``, is the members' taps side by side: member k's is ``unflatten(1, (K, C))[:, k]``.

Only networks made of those layers (and parameter-free ones) fold; the fold is checked on a
probe batch against the template before it is used (:class:`FoldError` otherwise), so a model
whose forward mixes channels (a concatenation, a reshape by channel count) is refused rather
than trained wrong. On 2 CPU cores a folded step of ``cnn_tiny`` alone is faster than K steps,
but a whole trial (relation terms, KD, evaluation) is not (benchmarks/population.py); the fold
is meant for accelerators, where one grouped kernel replaces K small ones.
"""
from __future__ import annotations

import copy
from typing import Sequence

import torch
from torch import nn

from ..data import DeviceLoader
from ..models import TappedModel
from ..setting import Recipe
from .curves import learning_rate
from .device import grad_scaler, tf32
from .training import make_optimizer, member_accuracies, optimizer_step

__all__ = ["FoldedStudents", "FoldedLinear", "FoldError", "fold_network"]

_PARAMETER_FREE_OK = (nn.ReLU, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.Identity, nn.Flatten,
                      nn.Sequential, nn.Dropout)


class FoldError(ValueError):
    """The network cannot be folded (a layer without a folded form, or a forward that mixes
    the members' channels)."""


class FoldedLinear(nn.Module):
    """K linear layers on the K blocks of a ``(B, K in)`` input: ``(B, K out)``."""

    def __init__(self, count: int, in_features: int, out_features: int, bias: bool = True):
        super().__init__()
        self.count, self.in_features, self.out_features = count, in_features, out_features
        self.weight = nn.Parameter(torch.empty(count, out_features, in_features))
        self.bias = nn.Parameter(torch.empty(count, out_features)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        blocks = x.reshape(x.shape[0], self.count, self.in_features)
        out = torch.einsum("bki,koi->bko", blocks, self.weight)
        if self.bias is not None:
            out = out + self.bias
        return out.reshape(x.shape[0], self.count * self.out_features)


def _fold_module(module: nn.Module, count: int) -> nn.Module:
    """The folded twin of one layer, its weights the layer's repeated ``count`` times."""
    if isinstance(module, nn.Conv2d):
        if module.padding_mode != "zeros":
            raise FoldError(f"a convolution with padding_mode {module.padding_mode!r} does not fold")
        folded = nn.Conv2d(module.in_channels * count, module.out_channels * count, module.kernel_size,
                           stride=module.stride, padding=module.padding, dilation=module.dilation,
                           groups=module.groups * count, bias=module.bias is not None)
    elif isinstance(module, nn.BatchNorm2d):
        folded = nn.BatchNorm2d(module.num_features * count, eps=module.eps, momentum=module.momentum,
                                affine=module.affine, track_running_stats=module.track_running_stats)
    elif isinstance(module, nn.Linear):
        folded = FoldedLinear(count, module.in_features, module.out_features, bias=module.bias is not None)
    else:
        raise FoldError(f"{type(module).__name__} has no folded form")
    with torch.no_grad():
        for name, tensor in [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]:
            target = getattr(folded, name)
            if tensor.dim() == 0:
                target.copy_(tensor)
            elif isinstance(folded, FoldedLinear):
                target.copy_(tensor.unsqueeze(0).expand_as(target))
            else:
                target.copy_(tensor.repeat(count, *([1] * (tensor.dim() - 1))))
    for name, param in module.named_parameters(recurse=False):  # frozen stays frozen
        getattr(folded, name).requires_grad_(param.requires_grad)
    return folded.to(next(iter([*module.parameters(), *module.buffers()]), torch.empty(0)).device)


def fold_network(template: TappedModel, count: int) -> TappedModel:
    """A copy of ``template`` whose layers are folded ``count`` times (no check; see
    :class:`FoldedStudents`, which checks)."""
    if getattr(template, "gray_to_rgb", False):
        raise FoldError("a model that turns gray inputs into RGB does not fold")
    model = copy.deepcopy(template)
    for name, module in list(model.net.named_modules()):
        if not name or isinstance(module, _PARAMETER_FREE_OK):
            continue
        if not isinstance(module, (nn.Conv2d, nn.BatchNorm2d, nn.Linear)):
            if any(True for _ in module.parameters(recurse=False)) or any(True for _ in module.buffers(recurse=False)):
                raise FoldError(f"{type(module).__name__} ({name}) has no folded form")
            continue
        owner, _, leaf = name.rpartition(".")
        setattr(model.net.get_submodule(owner) if owner else model.net, leaf, _fold_module(module, count))
    return model


def _member_view(tensor: torch.Tensor, count: int) -> torch.Tensor:
    """``(K n, ...)`` as ``(K, n, ...)``: a folded parameter or buffer by member."""
    return tensor.view(count, tensor.shape[0] // count, *tensor.shape[1:])


class FoldedStudents:
    """K copies of ``template`` folded into one network (the interface of
    :class:`relkd.engine.population.FusedStudents`): every member starts from the template's
    weights and has its own slice of every parameter, statistic and optimizer state; one
    optimizer steps them all (SGD and AdamW act elementwise, so this is K optimizers)."""

    def __init__(self, template: TappedModel, count: int, recipe: Recipe, steps: int, precision: str = "auto"):
        self.template, self.precision = template, precision
        self.net = fold_network(template, count)
        self._count = count
        self.check(template)
        self.opt, self.sched = make_optimizer(self.net, recipe, steps)
        self.scaler = grad_scaler(self.device, precision)

    @property
    def count(self) -> int:
        return self._count

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    def check(self, template: TappedModel) -> None:
        """Every member of the freshly folded network computes what ``template`` computes on a
        probe batch (eval mode); :class:`FoldError` if not."""
        device = self.device
        first = next((m for m in template.modules() if isinstance(m, nn.Conv2d)), None)
        if first is None:
            raise FoldError(f"model {template.model_name!r} has no convolution to fold")
        generator = torch.Generator().manual_seed(0)  # not the global stream the runs draw from
        probe = torch.randn(2, first.in_channels, *template.input_size[1:], generator=generator).to(device)
        was = template.training
        template.eval()
        self.net.eval()
        try:
            with torch.no_grad(), tf32(device, False):  # compare in full float32
                want = template(probe)
                got = self._split(self.net(probe.repeat(1, self._count, 1, 1)))
        except RuntimeError as err:  # a layer that insists on its own channel count
            raise FoldError(f"model {template.model_name!r} does not fold: {err}") from None
        finally:
            template.train(was)
            self.net.train()
        for tap, value in want.items():
            scale = float(value.abs().max()) or 1.0
            for member in (0, self._count - 1):
                other = got[member][tap]
                if other.shape != value.shape or not torch.allclose(other, value, rtol=1e-4, atol=1e-5 * scale):
                    raise FoldError(f"model {template.model_name!r} does not fold: its forward mixes channels "
                                    f"(tap {tap!r} of a folded member differs from the model's)")

    def _split(self, out: dict[str, torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        blocks = {tap: value.unflatten(1, (self._count, -1)) for tap, value in out.items()}
        return [{tap: value[:, k] for tap, value in blocks.items()} for k in range(self._count)]

    def forward(self, x: torch.Tensor, taps: tuple[str, ...]) -> list[dict[str, torch.Tensor]]:
        """Every member's taps for the batch ``x`` (training mode)."""
        self.net.train()
        return self._split(self.net(x.repeat(1, self._count, 1, 1), taps=taps))

    def step(self, total: torch.Tensor) -> None:
        """One optimizer and schedule step on the sum of the members' losses."""
        optimizer_step(self.opt, self.sched, self.scaler, total)

    def lr(self) -> float:
        """The learning rate now (every member follows the same schedule)."""
        return learning_rate(self.opt)

    def evaluate(self, loader: DeviceLoader) -> list[float]:
        """Top-1 accuracy of every member over ``loader``: one folded pass per batch."""
        self.net.eval()

        def member_logits(x: torch.Tensor) -> torch.Tensor:  # (B, K classes) -> (K, B, classes)
            logits = self.net(x.repeat(1, self._count, 1, 1), taps=("logits",))["logits"]
            return logits.unflatten(1, (self._count, -1)).transpose(0, 1)

        try:
            return member_accuracies(loader, member_logits, self.precision)
        finally:
            self.net.train()

    def keep(self, positions: Sequence[int]) -> None:
        """Keep only the members at ``positions``: a network folded for them takes their slices
        of every parameter, buffer and optimizer state; the schedule goes on where it was."""
        index = torch.as_tensor(list(positions), dtype=torch.long, device=self.device)
        old_count, new_count = self._count, len(positions)

        def pick(tensor: torch.Tensor) -> torch.Tensor:
            if tensor.dim() == 0:
                return tensor.clone()
            picked = _member_view(tensor, old_count).index_select(0, index)
            return picked.reshape(new_count * (tensor.shape[0] // old_count), *tensor.shape[1:])

        net = fold_network(self.template, new_count)
        old_params = list(self.net.parameters())
        with torch.no_grad():
            state = {name: pick(t) for name, t in self.net.state_dict().items()}
            net.load_state_dict(state)
        new_params = list(net.parameters())
        replaced = {id(old): new for old, new in zip(old_params, new_params)}
        for old, new in zip(old_params, new_params):
            new.requires_grad_(old.requires_grad)
            saved = self.opt.state.pop(old, None)
            if saved is not None:
                self.opt.state[new] = {key: pick(value) if isinstance(value, torch.Tensor) and value.shape == old.shape
                                       else value for key, value in saved.items()}
        for group in self.opt.param_groups:
            group["params"] = [replaced.get(id(p), p) for p in group["params"]]
        self.net, self._count = net, new_count

    def export(self, position: int) -> TappedModel:
        """A standalone model with the weights of the member at ``position``."""
        model = copy.deepcopy(self.template)
        folded = self.net.state_dict()
        state = {}
        for name, value in model.state_dict().items():
            source = folded[name]
            state[name] = source.clone() if source.dim() == 0 else \
                _member_view(source, self._count)[position].reshape(value.shape).clone()
        model.load_state_dict(state)
        return model
