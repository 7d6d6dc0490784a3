"""Device and precision helpers every pass over the data shares: autocast, the gradient
scaler, TensorFloat-32 and memory layout.

``precision`` is the setting's (:data:`relkd.setting.PRECISIONS`): on CUDA ``auto`` is bf16
where the card computes it natively (Ampere on) and fp16 with a gradient scaler elsewhere
(bf16 is emulated, slowly, on older cards); ``fp32`` turns autocast off. The CPU always runs
float32 (deterministic, and CPU autocast is slower than float32 on most processors).
Relation terms compute in float32 whatever the precision (:mod:`relkd.relation.term`).
"""
from __future__ import annotations

import contextlib
import gc
from typing import Iterator

import torch

__all__ = ["autocast", "autocast_dtype", "grad_scaler", "tf32", "prepare_input", "free_device_memory"]


def autocast_dtype(device: torch.device, precision: str = "auto") -> torch.dtype | None:
    """The dtype autocast computes in on ``device`` at ``precision``; ``None``: float32."""
    if device.type != "cuda" or precision == "fp32":
        return None
    if precision == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported(including_emulation=False) else torch.float16
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def autocast(device: torch.device, precision: str = "auto") -> contextlib.AbstractContextManager:
    """Autocast at ``precision`` on CUDA; nothing on the CPU (whose float32 runs are deterministic)."""
    dtype = autocast_dtype(device, precision)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=dtype)


def grad_scaler(device: torch.device, precision: str = "auto") -> torch.amp.GradScaler:
    """A gradient scaler, enabled only where autocast runs float16 (whose small gradients
    would underflow); disabled it passes every call through."""
    return torch.amp.GradScaler("cuda", enabled=autocast_dtype(device, precision) == torch.float16)


@contextlib.contextmanager
def tf32(device: torch.device, enabled: bool) -> Iterator[None]:
    """TensorFloat-32 for float32 matrix products and convolutions on CUDA while it runs
    (the process's own setting is restored after)."""
    if device.type != "cuda":
        yield
        return
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def free_device_memory() -> None:
    """Give back what a failed run held: its tensors are garbage once its frames are gone, and
    CUDA's caching allocator keeps freed blocks until asked to return them."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def prepare_input(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A batch in the memory layout the device runs convolutions fastest in (channels-last on CUDA)."""
    return x.contiguous(memory_format=torch.channels_last) if device.type == "cuda" else x
