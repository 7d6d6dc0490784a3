"""Transfer learning on a :class:`~relkd.models.taps.TappedModel`: start from a
checkpoint with a new classifier head, freeze stages, split the parameters into body and
head (for a lower body learning rate)::

    model = create_model("cnn_tiny", num_classes=5)
    report = load_init(model, "source.pt")               # the body from the file, a fresh head
    freeze(model, ["stage1"], input_shape=(1, 28, 28))    # requires_grad off, its BatchNorm kept in eval
    body, head = body_and_head(model)                     # parameter lists, e.g. for optimizer groups

The parts of a model, for every model family alike:

* ``head``: the classifier's last layer with parameters, whose output is the logits
  (``fc`` of the CNNs and ResNets, ``classifier.3`` of MobileNetV3, ``classifier.6`` of
  VGG): the layer torchvision's fine-tuning recipes replace for the new classes.
* ``stage1`` ... ``stageK``: the parameters used after stage K-1's output and up to stage
  K's output (the taps ``stage1..stageK``), so ``stage1`` includes the stem. Found with one
  forward pass in eval mode.
* ``neck``: parameters after the last stage that are not the head's (VGG's and
  MobileNetV3's hidden classifier layers), and parameters the forward pass never uses.
* the *body*: everything but the head.

Checkpoints are read with ``torch.load(path, weights_only=True, map_location="cpu")``: a
plain ``state_dict`` (a torchvision weights ``.pth``), one under a ``state_dict`` or
``model`` key, or a relkd model's ``state_dict`` (keys prefixed ``net.``: teacher,
``relkd train --out`` and ``relkd pretrain`` checkpoints), with ``module.`` prefixes of
(Distributed)DataParallel stripped. ``.safetensors`` files are read with ``safetensors``.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import torch
from torch import Tensor, nn

from ..files import file_sha256, not_a_file
from relkd.models.taps import TappedModel

__all__ = ["InitError", "InitReport", "HEADS", "BODY", "read_state_dict", "fit_state", "load_init", "head_name",
           "module_parts", "parameter_parts", "freeze", "body_and_head"]

log = logging.getLogger(__name__)

#: ``replace``: a new, freshly initialised head; ``keep``: the file's head (it must fit).
HEADS = ("replace", "keep")
#: freeze everything but the head
BODY = "body"


class InitError(ValueError):
    """A checkpoint that cannot start this model: unreadable, or its body does not fit."""


@dataclass
class InitReport:
    """What :func:`load_init` did: the file and its SHA-256, the tensors loaded, and the
    head's tensors that were not loaded (``replaced``: the file's shapes)."""

    path: str
    sha256: str
    head: str
    loaded: list[str] = field(default_factory=list)
    replaced: dict[str, tuple[int, ...]] = field(default_factory=dict)


def _under(key: str, prefix: str) -> bool:
    return key == prefix or key.startswith(prefix + ".")


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """The state dict in a checkpoint file (``.pt``/``.pth``: plain, or under ``state_dict`` or
    ``model`` as Lightning and RepDistiller save it; ``.safetensors``), with the ``module.``
    prefix of (Distributed)DataParallel and the ``net.`` prefix of relkd models removed (so it
    fits the wrapped network). Raises
    :class:`InitError` for an unreadable file or one that holds no state dict;
    ``FileNotFoundError`` for a missing one."""
    path = Path(path)
    problem = not_a_file(path)
    if problem:
        raise FileNotFoundError(problem)
    if path.suffix == ".safetensors":
        return _strip_prefixes(_read_safetensors(path))
    try:
        state: Any = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as err:  # noqa: BLE001 - pickle, zip and torch errors all mean: not a usable checkpoint
        # only torch's first sentence: its advice to load with weights_only=False is not one relkd gives
        reason = str(err).strip().splitlines()[0].split(". ")[0] if str(err).strip() else ""
        raise InitError(f"{str(path)!r} is not a checkpoint torch.load reads with weights_only=True "
                        f"({type(err).__name__}: {reason})") from None
    for key in ("state_dict", "model"):
        if isinstance(state, Mapping) and isinstance(state.get(key), Mapping):
            state = state[key]
    if not isinstance(state, Mapping) or not all(isinstance(k, str) for k in state):
        raise InitError(f"{str(path)!r} holds {type(state).__name__}, not a state_dict")
    return _strip_prefixes({k: v for k, v in state.items() if isinstance(v, Tensor)})


def _read_safetensors(path: Path) -> dict[str, Tensor]:
    """The tensors of a ``.safetensors`` file (how timm and most model hubs ship weights)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as err:
        reason = (str(err).strip().splitlines() or [""])[0]
        raise InitError(f"{str(path)!r} is not a safetensors file safetensors can read ({type(err).__name__}: "
                        f"{reason})") from None


def _strip_prefixes(state: dict[str, Tensor]) -> dict[str, Tensor]:
    if state and all(k.startswith("module.") for k in state):  # saved from DataParallel / DistributedDataParallel
        state = {k[len("module."):]: v for k, v in state.items()}
    if state and all(k.startswith("net.") for k in state):
        state = {k[len("net."):]: v for k, v in state.items()}
    return state


def fit_state(net: nn.Module, state: Mapping[str, Tensor], head: str, *, replace_head: bool | None,
              what: str = "the checkpoint", head_advice: str = ": use head: replace",
              ) -> tuple[dict[str, Tensor], dict[str, tuple[int, ...]]]:
    """Match ``state`` to ``net``: return the tensors to load and the head tensors left out.

    ``head`` is the head's module name in ``net``. ``replace_head=True`` leaves out every
    head tensor (the net keeps its new head), ``False`` loads them (they must fit),
    ``None`` leaves out only head tensors whose shapes differ (another number of classes).
    Any other shape mismatch, missing or unexpected key raises :class:`InitError` listing
    a few of each (and, for a head of another size, ``head_advice``)."""
    own = net.state_dict()

    def differs(k: str, v: Tensor) -> bool:
        return k in own and v.shape != own[k].shape

    dropped = {k: tuple(v.shape) for k, v in state.items() if _under(k, head)
               and (replace_head or (replace_head is None and differs(k, v)))}
    kept = {k: v for k, v in state.items() if k not in dropped}
    mismatched = [f"{k}: file {tuple(v.shape)} vs model {tuple(own[k].shape)}" for k, v in kept.items()
                  if differs(k, v)]
    head_keys = {k for k in own if _under(k, head)} if replace_head else set()
    missing = sorted(set(own) - set(kept) - head_keys - set(dropped))
    unexpected = sorted(set(kept) - set(own))
    if mismatched or missing or unexpected:
        parts = []
        if mismatched:
            parts.append("shape mismatches: " + "; ".join(mismatched[:5]) + (" ..." if len(mismatched) > 5 else ""))
        if missing:
            parts.append(f"{len(missing)} missing keys (e.g. {missing[:3]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[:3]})")
        hint = ""
        head_shapes = [(tuple(v.shape), tuple(own[k].shape)) for k, v in kept.items() if differs(k, v)
                       and _under(k, head)]
        if replace_head is False and head_shapes:
            if any(f[:1] != m[:1] for f, m in head_shapes):
                hint = f"; the head {head!r} has another number of classes{head_advice}"
            else:
                hint = (f"; the head {head!r} has the same number of classes but another input width: "
                        f"expected a checkpoint of this model with the setting's params (width, ...)")
        raise InitError(f"{what} does not fit {type(net).__name__}: " + ", ".join(parts) + hint)
    return kept, dropped


def head_name(model: TappedModel) -> str:
    """The head's module name in ``model.net``: the classifier's last submodule that has
    parameters (the classifier itself when it is one layer)."""
    classifier = model.points.classifier
    last = classifier
    for name, module in model.net.get_submodule(classifier).named_modules(prefix=classifier):
        if next(module.parameters(recurse=False), None) is not None:
            last = name
    return last


def load_init(model: TappedModel, path: str | Path, head: str = "replace") -> InitReport:
    """Load a checkpoint into ``model``: every tensor of the body must be in the file with
    the model's shape; the head is replaced (``head="replace"``: it keeps its fresh
    initialisation, the file's head is dropped, and the log says so) or loaded
    (``"keep"``). Raises ``FileNotFoundError`` or :class:`InitError`."""
    if head not in HEADS:
        raise ValueError(f"head: expected one of {', '.join(HEADS)}, got {head!r}")
    state = read_state_dict(path)
    name = head_name(model)
    kept, dropped = fit_state(model.net, state, name, replace_head=head == "replace",
                              what=f"checkpoint {str(path)!r}")
    model.net.load_state_dict(kept, strict=False)
    report = InitReport(str(path), file_sha256(path), name, sorted(kept), dropped)
    if head == "replace":
        shapes = ", ".join(f"{k} {list(v)}" for k, v in dropped.items()) or "none in the file"
        new = ", ".join(f"{k} {list(v.shape)}" for k, v in model.net.state_dict().items() if _under(k, name))
        log.info("init %s: loaded %d tensors; replaced the head %s (file: %s) by a new one (%s)",
                 path, len(kept), name, shapes, new)
    else:
        log.info("init %s: loaded %d tensors, head %s included", path, len(kept), name)
    return report


def _has_state(module: nn.Module) -> bool:
    return next(module.parameters(recurse=False), None) is not None or \
        next(module.buffers(recurse=False), None) is not None


def module_parts(model: TappedModel, input_shape: Sequence[int] | None = None) -> dict[str, str]:
    """``{module name in model.net: part}`` for every module that holds parameters or
    buffers; parts are ``stage1..stageK``, ``neck`` and ``head`` (module docstring).
    ``input_shape`` ``(C, H, W)`` of the dummy forward pass defaults to
    ``model.input_size``; give the data's when its channels differ."""
    net = model.net
    head = head_name(model)
    shape = tuple(input_shape) if input_shape is not None else model.input_size
    completed = [0]
    first_run: dict[str, int] = {}
    handles = []

    def before(name: str) -> Any:
        def hook(module: nn.Module, args: Any) -> None:  # returns None: the input stays as it is
            first_run.setdefault(name, completed[0] + 1)
        return hook

    def finished(module: nn.Module, args: Any, output: Any) -> None:
        completed[0] += 1

    try:
        for name, module in net.named_modules():
            if _has_state(module):
                handles.append(module.register_forward_pre_hook(before(name)))
        for where in model.points.stages:
            handles.append(net.get_submodule(where).register_forward_hook(finished))
        was_training = model.training
        reference = next(model.parameters(), None)
        device = reference.device if reference is not None else torch.device("cpu")
        dtype = reference.dtype if reference is not None and reference.is_floating_point() else torch.float32
        model.eval()
        try:
            with torch.no_grad():
                model(torch.zeros(1, *shape, device=device, dtype=dtype), taps=("logits",))
        finally:
            model.train(was_training)
    finally:
        for handle in handles:
            handle.remove()
    stages = model.num_stages
    parts = {}
    for name, module in net.named_modules():
        if not _has_state(module):
            continue
        if _under(name, head):
            parts[name] = "head"
        elif first_run.get(name, stages + 1) <= stages:
            parts[name] = f"stage{first_run[name]}"
        else:
            parts[name] = "neck"
    return parts


def parameter_parts(model: TappedModel, input_shape: Sequence[int] | None = None) -> dict[str, str]:
    """``{parameter name (as in model.named_parameters()): part}``."""
    parts = module_parts(model, input_shape)
    out = {}
    for name, module in model.net.named_modules():
        for pname, _ in module.named_parameters(recurse=False):
            out[f"net.{name}.{pname}" if name else f"net.{pname}"] = parts[name]
    return out


def freeze(model: TappedModel, parts: Iterable[str] | str, input_shape: Sequence[int] | None = None) -> list[str]:
    """Freeze ``parts`` of ``model`` (stage names such as ``["stage1", "stage2"]``, or
    ``"body"``: everything but the head): their parameters stop requiring gradients, and
    their BatchNorm layers stay in eval mode (running statistics fixed) whenever the model
    is put in training mode, as in torchvision's fine-tuning recipes. Returns the frozen
    parameter names. Raises ``ValueError`` naming a stage the model does not have."""
    wanted = (BODY,) if parts == BODY else tuple(parts)
    stages = tuple(f"stage{i}" for i in range(1, model.num_stages + 1))
    if BODY in wanted:
        if len(wanted) > 1:
            raise ValueError(f"freeze: {BODY} stands alone (it already includes every stage)")
        chosen = {*stages, "neck"}
    else:
        for part in wanted:
            if part not in stages:
                raise ValueError(f"model {model.model_name!r} has no stage {part!r}; its stages: {', '.join(stages)}")
        chosen = set(wanted)
    by_module = module_parts(model, input_shape)
    frozen = []
    for name, param in model.named_parameters():
        module = name[len("net."):].rpartition(".")[0]
        if by_module.get(module) in chosen:
            param.requires_grad_(False)
            frozen.append(name)
    norms = [name for name, module in model.net.named_modules()
             if by_module.get(name) in chosen and isinstance(module, nn.modules.batchnorm._NormBase)]
    model.frozen_norms = tuple(sorted(set(model.frozen_norms) | set(norms)))
    model.train(model.training)  # apply at once
    log.info("froze %s of %s: %d parameter tensors, %d norm layers in eval mode",
             ", ".join(wanted), model.model_name, len(frozen), len(norms))
    return frozen


def body_and_head(model: TappedModel) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """``(body, head)`` parameter lists (frozen ones included), in ``parameters()`` order."""
    head = "net." + head_name(model)
    body, out = [], []
    for name, param in model.named_parameters():
        (out if _under(name, head) else body).append(param)
    return body, out
