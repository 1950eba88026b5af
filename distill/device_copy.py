"""Host-to-GPU copies that do not make the host wait. Pure torch, no ComfyUI import.

A copy from ordinary (pageable) host memory to a CUDA device is ordered behind the work already queued on
the stream, so the host waits for the GPU to drain its queue; meanwhile nothing new is queued and the GPU
idles once it catches up. A copy from page-locked memory is queued like a kernel and the host moves on.
"""

from __future__ import annotations

import torch


def to_device_without_wait(tensor: torch.Tensor, device) -> torch.Tensor:
    """``tensor`` on ``device``. A CPU tensor bound for CUDA is staged in page-locked memory (one copy) and sent
    without blocking; where no page-locked memory is to be had, and for every other pair of devices, this is
    the plain ``tensor.to(device)``."""
    device = torch.device(device)
    if tensor.device.type == "cpu" and device.type == "cuda":
        try:
            staged = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
        except RuntimeError:
            staged = None
        if staged is not None:
            return staged.copy_(tensor).to(device, non_blocking=True)
    return tensor.to(device)
