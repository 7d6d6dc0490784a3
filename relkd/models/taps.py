"""Named taps: one forward pass returns every tensor a relation term may read.

A network declares *where* its taps are with a :class:`TapPoints` (names of submodules,
as in ``net.named_modules()``); :class:`TappedModel` wraps the network and, on each call,
attaches forward hooks to exactly those submodules, runs the network once, removes the
hooks and returns a dict::

    stage1 ... stageK   output of each stage (feature maps, (B, C, H, W))
    last_stage          the same tensor as stageK (the last feature map, before pooling)
    pool                the pre-classifier embedding, (B, D): the input of the classifier
    logits              the network's output, (B, num_classes)

There is one mechanism for every model (the CNNs, the CIFAR ResNets/WRNs and the
torchvision adapter): no model has per-tap code. The hooks live only for the duration of
one call and write into a dict local to that call, so nothing is kept between calls and a
wrapped model can be deep-copied, pickled, moved to ``channels_last`` or run under
``torch.inference_mode()`` like any module.

Example::

    model = create_model("cnn_tiny")
    out = model(torch.randn(8, 1, 28, 28))            # all taps
    out = model(x, taps=["pool"])                      # {'pool': ..., 'logits': ...}
    model.tap_names                                    # ('stage1', ..., 'logits')
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import torch
from torch import Tensor, nn

from relkd.registry import did_you_mean

__all__ = ["TapPoints", "TappedModel", "stage_tap_names", "count_params"]

log = logging.getLogger(__name__)

LAST_STAGE = "last_stage"
POOL = "pool"
LOGITS = "logits"


def stage_tap_names(num_stages: int) -> tuple[str, ...]:
    """``('stage1', ..., 'stageK')``."""
    return tuple(f"stage{i}" for i in range(1, num_stages + 1))


def count_params(module: nn.Module) -> int:
    """Number of parameters (trainable or not) of ``module``."""
    return sum(p.numel() for p in module.parameters())


@dataclass(frozen=True)
class TapPoints:
    """Where a network's taps are, as dotted submodule names.

    ``stages``: the submodules whose outputs are ``stage1``, ``stage2``, ... in order.
    ``classifier``: the submodule whose output is the logits; its input, flattened to
    (B, D), is the ``pool`` tap unless ``pool_input`` names another submodule whose input
    is the embedding (e.g. a dropout layer that precedes the classifier).
    ``stem``: the first stage is the network's stem (its first convolution(s) before any group
    of blocks), which the every-stage presets leave out (:attr:`TappedModel.body_stages`).
    ``version``: raised when a tap of the network comes to read another tensor, so that
    teacher outputs cached for the old tap are not read back for the new one.
    ``channels_last``: the stages output (B, H, W, C) maps (timm's Swin): their taps are
    permuted to (B, C, H, W), as every other model gives them.
    """

    stages: tuple[str, ...]
    classifier: str
    pool_input: str | None = None
    stem: bool = False
    version: int = 1
    channels_last: bool = False

    def __post_init__(self) -> None:
        if not self.stages:
            raise ValueError("TapPoints needs at least one stage")
        object.__setattr__(self, "stages", tuple(self.stages))

    @property
    def pool_module(self) -> str:
        """Name of the submodule whose input is the ``pool`` tap."""
        return self.pool_input or self.classifier

    def tap_names(self) -> tuple[str, ...]:
        """The taps these points give, in order."""
        return stage_tap_names(len(self.stages)) + (LAST_STAGE, POOL, LOGITS)


class _SaveOutput:
    """Forward hook: ``store[key] = output`` (a (B, H, W, C) map permuted to (B, C, H, W) when
    ``channels_last``). Holds no reference beyond one call."""

    __slots__ = ("store", "key", "channels_last")

    def __init__(self, store: dict[str, Tensor], key: str, channels_last: bool = False):
        self.store = store
        self.key = key
        self.channels_last = channels_last

    def __call__(self, module: nn.Module, args: Any, output: Any) -> None:
        if self.channels_last and isinstance(output, Tensor) and output.dim() == 4:
            output = output.permute(0, 3, 1, 2)
        self.store[self.key] = output


class _SaveInput:
    """Forward pre-hook: ``store[key] = first input, flattened to (B, D)``."""

    __slots__ = ("store", "key")

    def __init__(self, store: dict[str, Tensor], key: str):
        self.store = store
        self.key = key

    def __call__(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        x = args[0]
        self.store[self.key] = torch.flatten(x, 1) if x.dim() > 2 else x


class TappedModel(nn.Module):
    """A network whose ``forward`` returns a dict of named taps from one forward pass.

    Args:
        net: the network; ``net(x)`` must return the logits.
        points: which submodules of ``net`` are the stages and the classifier.
        model_name: the registry name (``cnn_tiny``, ``resnet32x4``, ``tv:resnet18``).
        input_size: the natural input size ``(C, H, W)``, used by :meth:`tap_shapes`.
        gray_to_rgb: repeat a 1-channel input to 3 channels before ``net`` (torchvision
            models, which expect RGB).

    Attributes:
        net: the wrapped network (its ``state_dict`` keys are prefixed ``net.``).
        model_name, points, input_size.
        frozen_norms: names of ``net``'s norm layers that stay in eval mode when the model
            is put in training mode (frozen stages; see :func:`relkd.models.transfer.freeze`).
    """

    def __init__(
        self,
        net: nn.Module,
        points: TapPoints,
        *,
        model_name: str,
        input_size: Sequence[int],
        gray_to_rgb: bool = False,
    ):
        super().__init__()
        self.net = net
        self.points = points
        self.model_name = model_name
        self.input_size = tuple(int(s) for s in input_size)
        self.gray_to_rgb = gray_to_rgb
        names = dict(net.named_modules())
        for where in (*points.stages, points.classifier, points.pool_module):
            if where not in names:
                raise ValueError(
                    f"model {model_name!r}: tap point {where!r} is not a submodule of "
                    f"{type(net).__name__}"
                )
        self._tap_names = points.tap_names()
        self.frozen_norms: tuple[str, ...] = ()
        #: ``(parameter, (H, W))`` for a network that takes one image size only (a timm ViT:
        #: the parameter that sets it), checked against the data before a run; ``None`` otherwise
        self.fixed_size: tuple[str, tuple[int, int]] | None = None

    def train(self, mode: bool = True) -> TappedModel:
        """``nn.Module.train``, except that the norm layers of frozen stages stay in eval
        mode (their running statistics do not move)."""
        super().train(mode)
        if mode:
            for name in getattr(self, "frozen_norms", ()):
                self.net.get_submodule(name).eval()
        return self

    # ------------------------------------------------------------------ introspection
    @property
    def tap_names(self) -> tuple[str, ...]:
        """Every tap this model gives, in order: stages, ``last_stage``, ``pool``, ``logits``."""
        return self._tap_names

    @property
    def num_stages(self) -> int:
        return len(self.points.stages)

    @property
    def body_stages(self) -> tuple[str, ...]:
        """The taps of the stages after the stem, the last one named ``last_stage``: the
        layers RepDistiller's multi-layer methods read (its ``feat[1:-1]``: each group of
        blocks' output, without the stem). ``('stage1', 'stage2', 'last_stage')`` on the CNNs
        and CIFAR networks, ``('stage2', ..., 'stage4', 'last_stage')`` on a torchvision ResNet."""
        names = stage_tap_names(self.num_stages)[1 if self.points.stem and self.num_stages > 1 else 0:]
        return (*names[:-1], LAST_STAGE)

    @property
    def classifier(self) -> nn.Module:
        """The submodule that maps the ``pool`` tap to the logits."""
        return self.net.get_submodule(self.points.classifier)

    def stage_module(self, index: int) -> nn.Module:
        """The submodule whose output is ``stage{index}`` (1-based)."""
        if not 1 <= index <= self.num_stages:
            raise IndexError(f"stage index {index} out of range 1..{self.num_stages}")
        return self.net.get_submodule(self.points.stages[index - 1])

    def tap_module_names(self) -> dict[str, str]:
        """``{tap: 'submodule name'}`` (``pool`` is the *input* of its submodule)."""
        out = {name: where for name, where in zip(stage_tap_names(self.num_stages), self.points.stages)}
        out[LAST_STAGE] = self.points.stages[-1]
        out[POOL] = self.points.pool_module
        out[LOGITS] = self.points.classifier
        return out

    def num_params(self) -> int:
        return count_params(self)

    def resolve_taps(self, taps: Iterable[str] | str | None) -> tuple[str, ...]:
        """Validate a tap selection; return it in model order with ``logits`` included.

        Raises ``ValueError`` naming the unknown tap and listing the taps this model has.
        """
        if taps is None:
            return self._tap_names
        if isinstance(taps, str):
            taps = (taps,)
        wanted = set()
        for tap in taps:
            if tap not in self._tap_names:
                hint = did_you_mean(tap, self._tap_names) or "."
                raise ValueError(
                    f"model {self.model_name!r} has no tap {tap!r}{hint} "
                    f"Its taps: {', '.join(self._tap_names)}"
                )
            wanted.add(tap)
        wanted.add(LOGITS)
        return tuple(t for t in self._tap_names if t in wanted)

    # ------------------------------------------------------------------ forward
    def forward(self, x: Tensor, taps: Iterable[str] | str | None = None) -> dict[str, Tensor]:
        """Run the network once; return ``{tap: tensor}`` for ``taps`` (all by default).

        ``logits`` is always returned. ``last_stage`` is the very tensor of the last stage.
        """
        wanted = self.resolve_taps(taps)
        if self.gray_to_rgb and x.dim() == 4 and x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        store: dict[str, Tensor] = {}
        stage_names = stage_tap_names(self.num_stages)
        capture = set(wanted)
        if LAST_STAGE in capture:
            capture.add(stage_names[-1])
        handles = []
        try:
            for tap, where in zip(stage_names, self.points.stages):
                if tap in capture:
                    module = self.net.get_submodule(where)
                    handles.append(module.register_forward_hook(_SaveOutput(store, tap, self.points.channels_last)))
            if POOL in capture:
                module = self.net.get_submodule(self.points.pool_module)
                handles.append(module.register_forward_pre_hook(_SaveInput(store, POOL)))
            logits = self.net(x)
        finally:
            for handle in handles:
                handle.remove()
        if not isinstance(logits, Tensor):
            raise TypeError(
                f"model {self.model_name!r}: the network returned {type(logits).__name__}, "
                "expected the logits tensor"
            )
        store[LOGITS] = logits
        if LAST_STAGE in capture and stage_names[-1] in store:
            store[LAST_STAGE] = store[stage_names[-1]]
        missing = [t for t in wanted if t not in store]
        if missing:
            raise RuntimeError(
                f"model {self.model_name!r}: taps {missing} were not produced by the forward "
                f"pass (their submodules {[self.tap_module_names()[t] for t in missing]} did "
                "not run)"
            )
        return {t: store[t] for t in wanted}

    @torch.no_grad()
    def tap_shapes(
        self, input_size: Sequence[int] | None = None, batch_size: int = 2
    ) -> dict[str, tuple[int, ...]]:
        """Shape of every tap (without the batch dimension) for an input of ``input_size``
        (``(C, H, W)``, default: the model's natural input size). Runs one forward pass in
        eval mode on zeros and restores the training mode."""
        size = tuple(input_size or self.input_size)
        param = next(self.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        dtype = param.dtype if param is not None else torch.float32
        was_training = self.training
        self.eval()
        try:
            out = self(torch.zeros(batch_size, *size, device=device, dtype=dtype))
        finally:
            self.train(was_training)
        return {name: tuple(t.shape[1:]) for name, t in out.items()}

    def extra_repr(self) -> str:
        return f"model_name={self.model_name!r}, taps={self._tap_names}"
