"""Device and precision helpers every pass over the data shares: autocast and memory layout."""
from __future__ import annotations

import contextlib
import gc

import torch

__all__ = ["autocast", "prepare_input", "free_device_memory"]


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bfloat16 autocast on CUDA; nothing on the CPU (whose float32 runs are deterministic)."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def free_device_memory() -> None:
    """Give back what a failed run held: its tensors are garbage once its frames are gone, and
    CUDA's caching allocator keeps freed blocks until asked to return them."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def prepare_input(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A batch in the memory layout the device runs convolutions fastest in (channels-last on CUDA)."""
    return x.contiguous(memory_format=torch.channels_last) if device.type == "cuda" else x
