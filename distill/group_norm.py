"""GroupNorm for tensors with few (batch x group) rows, reduced across the whole GPU.

PyTorch's GroupNorm kernel computes the statistics with one thread block per (sample, group) row. diffusers'
UNet3D (ModelScope, ZeroScope) normalises whole videos [B, C, F, H, W] in its temporal layers (4 GroupNorms per
TemporalConvLayer, one per TransformerTemporalModel): at batch 1 that is 32 rows of C/32 x F x H x W values
each, 32 blocks on a GPU with 132 multiprocessors. Measured on an H200 (ZeroScope size, 24 x 40 x 72 latents,
bf16), these ~105 calls took ~20 ms of a 120 ms forward at batch 1 and about the same at batch 2: a cost that
does not shrink with the batch, which is why the batch-1 inversion (no CFG batch) cost 0.61x of a CFG step.

``parallel_group_norm`` computes the same function with full-GPU kernels: the statistics by a float32
``var_mean`` over each group (a reduction PyTorch splits across many blocks), the normalisation and affine by
one inference-mode ``batch_norm`` with those statistics per (sample, channel), in float32 arithmetic with the
input's dtype out, as PyTorch's GroupNorm does. ``FewRowsGroupNorm`` is a drop-in ``nn.GroupNorm`` (same
parameters and state-dict keys) that takes this path only for CUDA tensors with fewer than ``ROWS`` rows and
no autograd; everything else (CPU, training, per-frame norms with 24 x 32 rows) runs PyTorch's own kernel.
Pure torch, no ComfyUI import.
"""

from __future__ import annotations

import logging
from typing import Optional

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

ROWS = 256  # below this many (batch x group) rows the statistics kernel leaves most of a large GPU idle
MIN_ROW = 300_000  # values per row below which PyTorch's kernel is faster anyway (fixed cost of the extra kernels)


def parallel_group_norm(x: torch.Tensor, num_groups: int, weight, bias, eps: float) -> torch.Tensor:
    """``F.group_norm(x, num_groups, weight, bias, eps)`` with the statistics reduced across the whole device."""
    n, c = x.shape[0], x.shape[1]
    if c % num_groups:
        raise ValueError(f"{c} channels do not split into {num_groups} groups")
    x = x.contiguous()
    var, mean = torch.var_mean(x.reshape(n, num_groups, -1).float(), dim=-1, correction=0)  # [n, G] float32
    per_channel = (n, num_groups, c // num_groups)
    mean = mean.unsqueeze(-1).expand(per_channel).reshape(n * c)
    var = var.unsqueeze(-1).expand(per_channel).reshape(n * c)
    w, b = per_sample_affine(weight, bias, n)
    out = F.batch_norm(x.reshape(1, n * c, -1), mean, var, w, b, training=False, momentum=0.0, eps=eps)
    return out.reshape(x.shape)


def per_sample_affine(weight, bias, n: int) -> tuple:
    return (weight.float().repeat(n) if weight is not None else None,
            bias.float().repeat(n) if bias is not None else None)


class FewRowsGroupNorm(torch.nn.GroupNorm):
    """nn.GroupNorm that uses ``parallel_group_norm`` where PyTorch's kernel would leave the GPU idle: CUDA,
    no autograd, fewer than ROWS (sample x group) rows of at least MIN_ROW values each.

    The per-sample affine is rebuilt every call (two kernels of C x batch values): a cache keyed on the weight
    tensors would go stale when ComfyUI patches weights in place. If the parallel path ever fails on a device
    (an op or dtype mix a backend lacks), every FewRowsGroupNorm uses PyTorch's kernel from then on and the
    reason is kept in ``FewRowsGroupNorm.disabled``."""

    require_cuda = True  # tests run the parallel path on the CPU by setting this False
    disabled: Optional[str] = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if FewRowsGroupNorm.disabled is not None or (self.require_cuda and not x.is_cuda) or \
                torch.is_grad_enabled() or x.ndim < 3 or x.shape[0] * self.num_groups >= ROWS or \
                x[0].numel() // self.num_groups < MIN_ROW:
            return super().forward(x)
        try:
            return parallel_group_norm(x, self.num_groups, self.weight, self.bias, self.eps)
        except RuntimeError as exc:
            FewRowsGroupNorm.disabled = f"{type(exc).__name__}: {exc}"
            log.warning("SearchPriors: whole-video GroupNorm falls back to PyTorch's kernel (%s)",
                        FewRowsGroupNorm.disabled)
            return super().forward(x)


def use_few_rows_group_norm(module: torch.nn.Module, parallel: bool = True) -> int:
    """Turn every plain nn.GroupNorm in ``module`` into a FewRowsGroupNorm in place, or with ``parallel=False``
    every FewRowsGroupNorm back into PyTorch's (parameters, buffers and state-dict keys unchanged); returns how
    many were turned."""
    source, target = (torch.nn.GroupNorm, FewRowsGroupNorm) if parallel else (FewRowsGroupNorm, torch.nn.GroupNorm)
    count = 0
    for sub in module.modules():
        if type(sub) is source:
            sub.__class__ = target
            count += 1
    return count
