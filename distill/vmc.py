"""VMC motion distillation (Search-T2V Sec. 4.3, Eq. 10; VMC, Jeong et al. 2023) on diffusers' UNet3D and on
Wan's DiT (ComfyUI's WanModel: Wan 2.1, Wan 2.2 5B and each A14B expert).

Plain torch + diffusers, no ComfyUI import (nodes/comfy_internals/motion_lora.py binds it to a ComfyUI MODEL).

- ``model_family``: 'unet3d' (a separate temporal attention: ModelScope, ZeroScope, Show-1) or 'wan' (one
  self-attention over the whole clip, every token of every latent frame; no temporal layers of its own).
- ``find_projections``: the query/key/value (optionally output) projections the adapters go on: on the UNet3D
  the ``temp_attentions`` TransformerTemporalModel blocks (both attentions of each, attn1 and attn2, attend
  over frames); on Wan the self-attention of each transformer block (``blocks.N.self_attn.q/k/v/o``), of every
  block or of the blocks ``parse_blocks`` selects.
- ``MotionAdapters``: additive adapters on those projections, attached with forward hooks so the module tree,
  its state-dict keys and every base weight stay untouched: low-rank (``lora_up @ lora_down * alpha/rank``,
  up initialised to zero so training starts from the base model) or full fine-tuning of the projection
  (a full-size weight delta, plus a bias delta where the projection has a bias), as the VMC code trains them.
  ``comfy_state_dict`` gives them in ComfyUI's native LoRA key form (``diffusion_model.<module>.lora_up.weight``,
  ``.lora_down.weight``, ``.alpha``; full: ``.diff`` / ``.diff_b``).
- ``motion_loss``: 1 - cosine between the consecutive-frame differences of the true and predicted noise.
  ``vmc_abs`` (default; what the VMC code that the paper uses computes): abs() of the differences, cosine
  over the frame axis at every (channel, pixel), averaged. ``eq10_pairs``: Eq. 10 literally, one cosine per
  frame pair n over the whole (channel, pixel) vector, averaged over pairs.
- ``train_motion_adapters``: the loop with VMC's defaults (400 steps, lr 1e-4, AdamW weight decay 1e-2,
  gradient clipping 1.0, batch 1): a random timestep per step, noise added with the model's own schedule,
  the prediction turned into noise, fp16 with gradient scaling, gradient checkpointing, progress/cancel
  callbacks; a non-finite loss stops training and restores the last adapter weights that gave a finite loss.
  How noise is added and the prediction read back is a ``Noiser``: ``VPNoiser`` (epsilon / v models called
  the diffusers way, the UNet3D) or ``SamplerSpaceNoiser`` (any model through a denoiser callable and its
  noise scaling, as ComfyUI samples it: Wan's rectified flow, x_t = (1 - s) x0 + s eps).
- Frame differences on Wan are between latent frames: Wan's VAE packs frame 0 alone into latent frame 0 and
  frames 4k-3..4k into latent frame k (4k+1 input frames), so a difference spans about 4 video frames of motion.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Callable, Iterator, Optional

import torch
import torch.nn.functional as F
import torch.utils.checkpoint

from ..errors import SearchPriorsError
from .device_copy import to_device_without_wait

TARGETS = {"qkv": ("to_q", "to_k", "to_v"), "qkv+out": ("to_q", "to_k", "to_v", "to_out.0"),
           "full_qkv": ("to_q", "to_k", "to_v")}
WAN_TARGETS = {"qkv": ("q", "k", "v"), "qkv+out": ("q", "k", "v", "o"), "full_qkv": ("q", "k", "v")}
FAMILIES = ("unet3d", "wan")
FAMILY_NAMES = {"unet3d": "ModelScope / ZeroScope (UNet3D)", "wan": "Wan (WanModel DiT)"}
LOSSES = ("vmc_abs", "eq10_pairs")
# blocks whose forward is recomputed in backward when gradient checkpointing is on (finest grain that still
# holds whole attention/conv units; the UNet3D's own down/mid/up blocks are too coarse for the VRAM target)
CHECKPOINTED_CLASSES = ("TransformerTemporalModel", "Transformer2DModel", "ResnetBlock2D", "TemporalConvLayer")


class VMCError(SearchPriorsError):
    """Bad model, latents or settings for motion distillation; the message says how to fix it."""


# ------------------------------------------------------------------ finding the layers to tune
def model_family(network: torch.nn.Module) -> str:
    """'unet3d' or 'wan' (see the module's docstring); a clear error for any other network."""
    if any(type(m).__name__ == "TransformerTemporalModel" for m in network.modules()):
        return "unet3d"
    blocks = getattr(network, "blocks", None)
    if isinstance(blocks, torch.nn.ModuleList) and len(blocks) and all(
            isinstance(getattr(getattr(b, "self_attn", None), n, None), torch.nn.Linear)
            for b in blocks for n in ("q", "k", "v", "o")):
        return "wan"
    raise VMCError(
        f"VMC cannot tune this model ({type(network).__name__}): it tunes the temporal attention of a "
        f"ModelScope / ZeroScope model (diffusers UNet3DConditionModel, loaded with the pack's ModelScope / "
        f"ZeroScope Loader) or the self-attention of a Wan model (Wan 2.1, Wan 2.2 5B or an A14B expert, loaded "
        f"with core Load Diffusion Model).")


def _is_wan(network: torch.nn.Module) -> bool:
    try:
        return model_family(network) == "wan"
    except VMCError:
        return False


def parse_blocks(spec: str, count: int) -> list[int]:
    """'all' or a list like '0-9, 20, 25-29' (0-based block numbers) -> sorted block indices < ``count``."""
    text = (spec or "").strip().lower()
    if text in ("", "all"):
        return list(range(count))
    chosen: set[int] = set()
    for part in text.replace(" ", "").split(","):
        if not part:
            continue
        try:
            lo, _, hi = part.partition("-")
            first, last = int(lo), int(hi) if hi else int(lo)
        except ValueError:
            raise VMCError(f"blocks '{spec}' is not 'all' or a list of block numbers and ranges such as "
                           f"'0-9, 20' (0-based).") from None
        if first > last or first < 0 or last >= count:
            raise VMCError(f"blocks '{spec}': '{part}' is outside 0-{count - 1} (this model has {count} "
                           f"transformer blocks). Use 'all' or numbers from 0 to {count - 1}.")
        chosen.update(range(first, last + 1))
    if not chosen:
        raise VMCError(f"blocks '{spec}' selects no block: use 'all' or numbers such as '0-9'.")
    return sorted(chosen)


def find_projections(network: torch.nn.Module, targets: str = "qkv", blocks: str = "all") -> dict[str, torch.nn.Linear]:
    """{module path: Linear} of the projections the adapters go on (see ``model_family``)."""
    if targets not in TARGETS:
        raise VMCError(f"targets '{targets}' is not one of {', '.join(TARGETS)}.")
    family = model_family(network)
    if family == "unet3d":
        if (blocks or "all").strip().lower() != "all":
            raise VMCError(f"blocks '{blocks}' selects transformer blocks of a Wan model; on a ModelScope / "
                           f"ZeroScope model VMC tunes every temporal attention layer: set blocks to 'all'.")
        return find_temporal_projections(network, targets)
    found = {}
    for i in parse_blocks(blocks, len(network.blocks)):
        for name in WAN_TARGETS[targets]:
            found[f"blocks.{i}.self_attn.{name}"] = getattr(network.blocks[i].self_attn, name)
    return found


def find_temporal_projections(unet: torch.nn.Module, targets: str = "qkv") -> dict[str, torch.nn.Linear]:
    """{module path: Linear} of the temporal attention projections named by ``targets`` (see TARGETS)."""
    if targets not in TARGETS:
        raise VMCError(f"targets '{targets}' is not one of {', '.join(TARGETS)}.")
    wanted = TARGETS[targets]
    temporal = [name for name, module in unet.named_modules()
                if type(module).__name__ == "TransformerTemporalModel" and ".temp_attentions." in f".{name}"]
    if not temporal:
        raise VMCError(
            f"This model ({type(unet).__name__}) has no temporal attention layers (no 'temp_attentions' "
            f"TransformerTemporalModel blocks), so VMC has nothing to tune. Use a ModelScope / ZeroScope model "
            f"(diffusers UNet3DConditionModel, e.g. text-to-video-ms-1.7b, zeroscope_v2_576w, Show-1's stages) "
            f"loaded with the pack's ModelScope / ZeroScope Loader.")
    found: dict[str, torch.nn.Linear] = {}
    for block in temporal:
        for name, module in unet.named_modules():
            if not name.startswith(block + ".") or not isinstance(module, torch.nn.Linear):
                continue
            if ".attn" in name and any(name.endswith("." + t) for t in wanted):
                found[name] = module
    if not found:
        raise VMCError(f"The temporal attention layers of this model have no {'/'.join(wanted)} projections "
                       f"(an attention implementation diffusers' UNet3DConditionModel does not use).")
    return found


# ------------------------------------------------------------------ adapters
class LowRankDelta(torch.nn.Module):
    """output += (x @ down^T @ up^T) * alpha / rank; up starts at zero, so the model starts unchanged."""

    def __init__(self, linear: torch.nn.Linear, rank: int, alpha: float, generator: torch.Generator):
        super().__init__()
        rank = max(1, min(int(rank), linear.in_features, linear.out_features))
        down = torch.empty(rank, linear.in_features)
        bound = 1.0 / math.sqrt(linear.in_features)  # kaiming_uniform(a=sqrt(5)), as nn.Linear and PEFT
        down.uniform_(-bound, bound, generator=generator)
        self.lora_down = torch.nn.Parameter(down)
        self.lora_up = torch.nn.Parameter(torch.zeros(linear.out_features, rank))
        self.rank, self.alpha = rank, float(alpha)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        return F.linear(F.linear(x, self.lora_down.to(dtype)), self.lora_up.to(dtype)) * (self.alpha / self.rank)

    def comfy_entries(self, key: str) -> dict[str, torch.Tensor]:
        return {f"{key}.lora_up.weight": self.lora_up.detach().float().cpu().clone(),
                f"{key}.lora_down.weight": self.lora_down.detach().float().cpu().clone(),
                f"{key}.alpha": torch.tensor(self.alpha)}


class FullDelta(torch.nn.Module):
    """Full fine-tuning of a projection as an additive delta (weight, and bias where there is one)."""

    def __init__(self, linear: torch.nn.Linear):
        super().__init__()
        self.weight_delta = torch.nn.Parameter(torch.zeros(linear.out_features, linear.in_features))
        self.bias_delta = torch.nn.Parameter(torch.zeros(linear.out_features)) if linear.bias is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias_delta is None else self.bias_delta.to(x.dtype)
        return F.linear(x, self.weight_delta.to(x.dtype), bias)

    def comfy_entries(self, key: str) -> dict[str, torch.Tensor]:
        out = {f"{key}.diff": self.weight_delta.detach().float().cpu().clone()}
        if self.bias_delta is not None:
            out[f"{key}.diff_b"] = self.bias_delta.detach().float().cpu().clone()
        return out


class MotionAdapters(torch.nn.Module):
    """Adapters on the temporal projections of one UNet; ``attached`` hooks them in for a while."""

    def __init__(self, unet: torch.nn.Module, targets: str = "qkv", rank: int = 32, alpha: Optional[float] = None,
                 seed: int = 0, blocks: str = "all"):
        super().__init__()
        self.targets, self.rank, self.blocks = targets, int(rank), (blocks or "all").strip() or "all"
        self.alpha = float(alpha if alpha is not None else rank)
        if targets != "full_qkv" and int(rank) < 1:
            raise VMCError(f"rank must be at least 1 (got {rank}).")
        self.family = model_family(unet)
        self.linears = find_projections(unet, targets, self.blocks)
        generator = torch.Generator().manual_seed(int(seed))
        self.names = sorted(self.linears)
        self.deltas = torch.nn.ModuleList(
            FullDelta(self.linears[n]) if targets == "full_qkv" else
            LowRankDelta(self.linears[n], rank, self.alpha, generator) for n in self.names)
        device = next(unet.parameters()).device
        self.to(device)

    @contextlib.contextmanager
    def attached(self) -> Iterator["MotionAdapters"]:
        handles = []
        try:
            for name, delta in zip(self.names, self.deltas):
                handles.append(self.linears[name].register_forward_hook(_adding_hook(delta)))
            yield self
        finally:
            for handle in handles:
                handle.remove()

    def snapshot(self) -> list[torch.Tensor]:
        return [p.detach().clone() for p in self.parameters()]

    def restore(self, values: list[torch.Tensor]) -> None:
        with torch.no_grad():
            for p, v in zip(self.parameters(), values):
                p.copy_(v)

    def comfy_state_dict(self, prefix: str) -> dict[str, torch.Tensor]:
        """The adapters in ComfyUI's native LoRA key form (core LoraLoaderModelOnly reads it): ``prefix`` + module
        path + .lora_up/.lora_down/.alpha (or .diff/.diff_b); the prefix is ComfyUI's (nodes/comfy_internals/motion_lora.py)."""
        out: dict[str, torch.Tensor] = {}
        for name, delta in zip(self.names, self.deltas):
            out.update(delta.comfy_entries(prefix + name))
        return out


def _adding_hook(delta: torch.nn.Module):
    def hook(module, inputs, output):
        return output + delta(inputs[0])
    return hook


# ------------------------------------------------------------------ loss
def frame_differences(video: torch.Tensor) -> torch.Tensor:
    """[B,C,F,H,W] -> [B,C,F-1,H,W]: frame n+1 minus frame n (VMC's motion vectors)."""
    return video[:, :, 1:] - video[:, :, :-1]


def motion_loss(predicted_noise: torch.Tensor, true_noise: torch.Tensor, kind: str = "vmc_abs") -> torch.Tensor:
    """1 - cosine between consecutive-frame differences of predicted and true noise, both [B,C,F,H,W]."""
    if kind not in LOSSES:
        raise VMCError(f"loss '{kind}' is not one of {', '.join(LOSSES)}.")
    pred, true = frame_differences(predicted_noise.float()), frame_differences(true_noise.float())
    if kind == "vmc_abs":
        cos = F.cosine_similarity(pred.abs(), true.abs(), dim=2)  # over the frame axis, per channel and pixel
    else:
        pred, true = pred.transpose(1, 2).flatten(2), true.transpose(1, 2).flatten(2)  # [B, F-1, C*H*W]
        cos = F.cosine_similarity(pred, true, dim=-1)  # one cosine per frame pair (Eq. 10)
    return (1.0 - cos).mean()


# ------------------------------------------------------------------ gradient checkpointing
# Which blocks are recomputed, by resolution level of the UNet (level 0 = full latent size: down_blocks.0,
# up_blocks.-1, conv_in/transformer_in; the deepest level also holds mid_block). Activation memory per block
# halves with every level down while the compute per block stays about the same, so checkpointing only the
# outer (high-resolution) levels keeps most of the VRAM saving for a fraction of the recomputation.
CHECKPOINT_MODES = {
    "all": None,      # every block: least VRAM, one extra forward per step
    "outer": 1,       # the two highest-resolution levels
    "outermost": 0,   # only the highest-resolution level
    "off": -1,        # nothing: fastest, most VRAM
    "compiled": 1,    # Wan on a CUDA GPU with Triton: compiled blocks (see COMPILED_MEMORY_BUDGET); else as 'outer'
}
DEFAULT_CHECKPOINTING = "compiled"   # Wan on CUDA with Triton; everywhere else it runs as "outer"


def checkpoint_mode(value) -> str:
    """A CHECKPOINT_MODES name; booleans of older workflows read as 'all' (True) and 'off' (False)."""
    if isinstance(value, bool):
        return "all" if value else "off"
    if value not in CHECKPOINT_MODES:
        raise VMCError(f"gradient_checkpointing '{value}' is not one of {', '.join(CHECKPOINT_MODES)}.")
    return value


def resolution_level(name: str, levels: int) -> int:
    """The resolution level of a UNet3D submodule from its path (see CHECKPOINT_MODES)."""
    parts = name.split(".")
    if len(parts) > 1 and parts[0] == "down_blocks" and parts[1].isdigit():
        return int(parts[1])
    if len(parts) > 1 and parts[0] == "up_blocks" and parts[1].isdigit():
        return levels - 1 - int(parts[1])
    if parts[0] == "mid_block":
        return levels - 1
    return 0


# On a DiT (Wan) every block works at the same size, so the modes choose how much of each block is recomputed:
# 'all' recomputes whole blocks; 'outer' recomputes every block except its attention kernel, whose outputs are
# kept (selective checkpointing: the attention over the whole clip is most of a block's compute, its saved
# output a small part of the block's activations); 'outermost' does that on the even-numbered blocks only.
ATTENTION_KERNELS = ("_scaled_dot_product_flash_attention", "_scaled_dot_product_efficient_attention",
                     "_scaled_dot_product_cudnn_attention", "_scaled_dot_product_flash_attention_for_cpu",
                     "_flash_attention_forward", "_efficient_attention_forward")


def _attention_ops() -> set:
    found = set()
    for name in ATTENTION_KERNELS:
        packet = getattr(torch.ops.aten, name, None)
        if packet is not None:
            found.add(packet.default)
    return found


def _keep_attention_context():
    """A checkpoint ``context_fn`` that keeps the attention kernels' outputs and recomputes everything else."""
    from torch.utils.checkpoint import CheckpointPolicy, create_selective_checkpoint_contexts

    kernels = _attention_ops()

    def policy(ctx, op, *args, **kwargs):
        return CheckpointPolicy.MUST_SAVE if op in kernels else CheckpointPolicy.PREFER_RECOMPUTE

    return create_selective_checkpoint_contexts(policy)


def _wrap_checkpointed(module: torch.nn.Module, selective: bool = False) -> None:
    original = module.forward

    def checkpointed(*args, _forward=original, **kwargs):
        if not torch.is_grad_enabled():
            return _forward(*args, **kwargs)
        if selective:
            return torch.utils.checkpoint.checkpoint(_forward, *args, use_reentrant=False,
                                                     context_fn=_keep_attention_context, **kwargs)
        return torch.utils.checkpoint.checkpoint(_forward, *args, use_reentrant=False, **kwargs)

    module.forward = checkpointed


def _dit_blocks_to_wrap(network: torch.nn.Module, mode: str) -> list[tuple[torch.nn.Module, bool]]:
    blocks = list(network.blocks)
    if mode == "off":
        return []
    if mode == "all":
        return [(b, False) for b in blocks]
    if mode == "outer":
        return [(b, True) for b in blocks]
    return [(b, True) for i, b in enumerate(blocks) if i % 2 == 0]   # outermost


# 'compiled' (Wan on CUDA with Triton; the default): every block's forward is compiled once (torch.compile,
# inductor) and AOTAutograd's partitioner decides what to keep for backward under an activation memory budget: it
# keeps the matmul and attention outputs and recomputes the fused elementwise chains (ComfyUI's Wan block runs its
# residual stream and modulation in float32: many cheap passes whose outputs are most of a block's activations).
# Measured through the node (benchmarks/README.md, Wan 2.1 1.3B, 832x480x33, H200, one process): budget 0.1 3.24x a
# forward at 6.4 GiB; 0.05 3.85x at 5.5; 0.15 3.25x at 7.6; 0.3 3.18x at 11.1; 'outer' 3.85x at 7.7. The first
# step pays the compile (~15-35 s; a few seconds once inductor's cache holds it), less than 400 steps save. Elsewhere
# (no CUDA, no Triton, a UNet3D) it is 'outer'.
COMPILED_MEMORY_BUDGET = 0.1
COMPILE_BACKEND = "inductor"
_COMPILED_FORWARDS: dict = {}   # one compiled function per block class: its cache is reused across runs


def compiled_blocks_available(network: torch.nn.Module, device=None) -> bool:
    """Whether 'compiled' compiles here: a Wan network on a CUDA device (``device``, else its weights') with
    Triton (else it runs as 'outer')."""
    if not _is_wan(network):
        return False
    if COMPILE_BACKEND != "inductor":   # tests: another backend runs anywhere
        return True
    try:
        from torch.utils._triton import has_triton
    except ImportError:
        return False
    device = torch.device(device) if device is not None else next(network.parameters()).device
    return device.type == "cuda" and has_triton()


def effective_checkpointing(network: torch.nn.Module, mode, device=None) -> str:
    """The mode that runs: 'compiled' reads as 'outer' where compiled_blocks_available is False."""
    mode = checkpoint_mode(mode)
    if mode == "compiled" and not compiled_blocks_available(network, device):
        return "outer"
    return mode


def _wrap_compiled(module: torch.nn.Module) -> None:
    """Forward through the block class's compiled forward while gradients are on; if compiling fails, this block
    falls back to 'outer' (attention kept, the rest recomputed) for the rest of the run."""
    cls = type(module)
    if cls not in _COMPILED_FORWARDS:
        _COMPILED_FORWARDS[cls] = torch.compile(cls.forward, backend=COMPILE_BACKEND, dynamic=False)
    compiled, state = _COMPILED_FORWARDS[cls], {"failed": False}
    original = module.forward

    def forward(*args, _module=module, **kwargs):
        if not torch.is_grad_enabled():
            return original(*args, **kwargs)
        if not state["failed"]:
            try:
                return compiled(_module, *args, **kwargs)
            except torch.OutOfMemoryError:
                raise
            except Exception as exc:  # a compiler that does not work here: run this block as 'outer'
                state["failed"] = True
                import logging
                logging.getLogger(__name__).warning("VMC: compiling a block failed (%s: %s); it runs as 'outer'",
                                                    type(exc).__name__, str(exc)[:200])
        return torch.utils.checkpoint.checkpoint(original, *args, use_reentrant=False,
                                                 context_fn=_keep_attention_context, **kwargs)

    module.forward = forward


def _compile_settings(blocks: int):
    """The partitioner's memory budget and room in dynamo's cache for every block, while training runs."""
    import torch._dynamo
    import torch._functorch.config

    stack = contextlib.ExitStack()
    stack.enter_context(torch._functorch.config.patch(activation_memory_budget=COMPILED_MEMORY_BUDGET))
    limit = max(torch._dynamo.config.cache_size_limit, 2 * blocks + 8)
    stack.enter_context(torch._dynamo.config.patch(cache_size_limit=limit))
    return stack


@contextlib.contextmanager
def checkpointed_blocks(unet: torch.nn.Module, mode="all") -> Iterator[int]:
    """Recompute blocks in backward instead of keeping their activations. UNet3D: transformer / resnet /
    temporal-conv blocks, every one (``mode`` 'all' or True), those of the outer resolution levels ('outer',
    'outermost'; 'compiled' is 'outer' there), or none ('off' or False). Wan: see ATTENTION_KERNELS' and
    COMPILED_MEMORY_BUDGET's comments. Yields how many blocks are
    wrapped."""
    mode = effective_checkpointing(unet, mode)
    wrapped = []
    try:
        if mode == "compiled":
            for block in unet.blocks:
                if "forward" not in vars(block):
                    _wrap_compiled(block)
                    wrapped.append(block)
            with _compile_settings(len(unet.blocks)):
                yield len(wrapped)
            return
        if _is_wan(unet):
            for block, selective in _dit_blocks_to_wrap(unet, mode):
                if "forward" not in vars(block):
                    _wrap_checkpointed(block, selective)
                    wrapped.append(block)
            yield len(wrapped)
            return
        deepest = CHECKPOINT_MODES[mode]
        levels = len(getattr(unet, "down_blocks", ())) or 1
        for name, module in unet.named_modules():
            if type(module).__name__ not in CHECKPOINTED_CLASSES or "forward" in vars(module):
                continue
            if deepest is not None and resolution_level(name, levels) > deepest:
                continue
            _wrap_checkpointed(module)
            wrapped.append(module)
        yield len(wrapped)
    finally:
        for module in wrapped:
            del module.forward


# ------------------------------------------------------------------ training
@dataclass
class VMCConfig:
    steps: int = 400
    lr: float = 1e-4
    weight_decay: float = 1e-2
    max_grad_norm: float = 1.0
    loss: str = "vmc_abs"
    seed: int = 0
    gradient_checkpointing: object = DEFAULT_CHECKPOINTING  # a CHECKPOINT_MODES name (True/False: 'all'/'off')
    timestep_range: tuple[int, int] = (0, 1000)  # [low, high) of training timesteps, clipped to the schedule


@dataclass
class VMCResult:
    losses: list[float] = field(default_factory=list)
    steps_done: int = 0
    stopped: Optional[str] = None  # None: all steps ran; otherwise why training stopped early


def noise_prediction(unet, noisy: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor,
                     alpha_cumprod: torch.Tensor, prediction_type: str) -> torch.Tensor:
    """The UNet's output as predicted noise ([B,C,F,H,W], fp32) for epsilon and v-prediction models."""
    dtype = next(unet.parameters()).dtype
    out = unet(noisy.to(dtype), timestep, encoder_hidden_states=context.to(dtype), return_dict=False)[0].float()
    if prediction_type == "v_prediction":
        return alpha_cumprod.sqrt() * out + (1 - alpha_cumprod).sqrt() * noisy
    if prediction_type != "epsilon":
        raise VMCError(f"prediction type '{prediction_type}' is not supported (epsilon or v_prediction).")
    return out


class VPNoiser:
    """Epsilon / v-prediction models called the diffusers way (the UNet3D): x_t = sqrt(a_t) x0 + sqrt(1 - a_t) eps
    at the integer timestep t, the network's output read back as noise."""

    def __init__(self, alphas_cumprod: torch.Tensor, prediction_type: str = "epsilon"):
        self.alphas_cumprod = alphas_cumprod.float()
        self.prediction_type = prediction_type

    @property
    def steps(self) -> int:
        return len(self.alphas_cumprod)

    def to(self, device) -> "VPNoiser":
        self.alphas_cumprod = self.alphas_cumprod.to(device=device, dtype=torch.float32)
        return self

    def noisy(self, x0: torch.Tensor, noise: torch.Tensor, t: int) -> torch.Tensor:
        a = self.alphas_cumprod[t]
        return a.sqrt() * x0 + (1 - a).sqrt() * noise

    def predicted_noise(self, network, noisy: torch.Tensor, t: int, context: torch.Tensor) -> torch.Tensor:
        timestep = torch.full((1,), t, device=noisy.device, dtype=torch.long)
        return noise_prediction(network, noisy, timestep, context, self.alphas_cumprod[t], self.prediction_type)


class SamplerSpaceNoiser:
    """Any model as a sampler sees it: ``noise_scaling(sigma, noise, x0)`` makes x at sigma (ComfyUI's
    model_sampling.noise_scaling: x0 + sigma eps for eps/v models, (1 - sigma) x0 + sigma eps for rectified
    flow), ``denoise(x, sigma, context)`` predicts x0, and since x is linear in x0 and eps, the predicted noise
    is (x - A x0_pred) / B with A, B the scaling's coefficients at sigma. ``sigmas``: the model's table of
    training sigmas (index t = timestep), ascending."""

    def __init__(self, sigmas: torch.Tensor, noise_scaling: Callable, denoise: Callable):
        self.sigmas = sigmas.detach().clone().float()   # a normal tensor even when ComfyUI made it under inference mode
        self.noise_scaling, self.denoise = noise_scaling, denoise

    @property
    def steps(self) -> int:
        return len(self.sigmas)

    def to(self, device) -> "SamplerSpaceNoiser":
        self.sigmas = self.sigmas.to(device)
        return self

    def noisy(self, x0: torch.Tensor, noise: torch.Tensor, t: int) -> torch.Tensor:
        return self.noise_scaling(self.sigmas[t].reshape(1), noise, x0)

    def predicted_noise(self, network, noisy: torch.Tensor, t: int, context: torch.Tensor) -> torch.Tensor:
        sigma = self.sigmas[t].reshape(1)
        one, zero = torch.ones(1, device=noisy.device), torch.zeros(1, device=noisy.device)
        a = self.noise_scaling(sigma, zero, one).reshape(())
        b = self.noise_scaling(sigma, one, zero).reshape(())
        x0 = self.denoise(noisy, sigma, context).float()
        return (noisy - a * x0) / b


def train_motion_adapters(unet: torch.nn.Module, adapters: MotionAdapters, latents: torch.Tensor,
                          context: torch.Tensor, alphas_cumprod: torch.Tensor, config: VMCConfig,
                          prediction_type: str = "epsilon",
                          on_step: Optional[Callable[[int, int, float], None]] = None) -> VMCResult:
    """Train ``adapters`` (attached to ``unet``) on one clip: latents [1,C,F,H,W] (model scale), context [1,L,D].
    ``alphas_cumprod``: the VP schedule of a diffusers-style network (with ``prediction_type``), or a Noiser
    (``VPNoiser``, ``SamplerSpaceNoiser``) that says how noise is added and read back.

    Every other parameter is frozen (requires_grad restored afterwards). ``on_step(done, total, loss)`` is
    called after every step; raising from it (Cancel) stops training cleanly with hooks and forwards removed.
    """
    if latents.ndim != 5 or latents.shape[0] != 1:
        raise VMCError(f"latents must be one clip [1, C, F, H, W]; got shape {tuple(latents.shape)}.")
    frames = latents.shape[2]
    needed = 3 if config.loss == "vmc_abs" else 2
    if frames < needed:
        raise VMCError(f"The '{config.loss}' loss needs at least {needed} keyframes (got {frames}): it compares "
                       f"differences between consecutive frames. Encode more keyframes.")
    if config.steps < 1:
        raise VMCError(f"steps must be at least 1 (got {config.steps}).")
    device = next(unet.parameters()).device
    model_dtype = next(unet.parameters()).dtype
    noiser = alphas_cumprod if hasattr(alphas_cumprod, "predicted_noise") else VPNoiser(alphas_cumprod, prediction_type)
    noiser.to(device)
    low, high = max(0, int(config.timestep_range[0])), min(noiser.steps, int(config.timestep_range[1]))
    if high <= low:
        raise VMCError(f"timestep range {config.timestep_range} is empty for a {noiser.steps}-step schedule.")
    x0 = latents.to(device=device, dtype=torch.float32)
    context = context.to(device)
    generator = torch.Generator().manual_seed(int(config.seed))
    params = [p for p in adapters.parameters()]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    scaler = torch.amp.GradScaler(device.type) if model_dtype == torch.float16 else None
    frozen = [(p, p.requires_grad) for p in unet.parameters()]
    result = VMCResult()
    # The adapter weights that produced the previous step's loss and this step's: a non-finite loss at step n is
    # read only after step n's update was queued (reading it earlier would make the CPU wait for the GPU in the
    # middle of every step), so the weights that gave the last finite loss are the ones before step n-1's update.
    gave_previous = gave_current = adapters.snapshot()
    was_training = unet.training
    try:
        for p, _ in frozen:
            p.requires_grad_(False)
        for p in params:
            p.requires_grad_(True)
        unet.train(False)  # dropout off: the loss compares the model's deterministic predictions
        with adapters.attached(), checkpointed_blocks(unet, config.gradient_checkpointing):
            for step in range(config.steps):
                t = int(torch.randint(low, high, (1,), generator=generator))
                noise = torch.randn(x0.shape, generator=generator)  # CPU generator: the same draws on every device
                noise = to_device_without_wait(noise, device)  # a plain copy would wait for the previous step
                noisy = noiser.noisy(x0, noise, t)
                predicted = noiser.predicted_noise(unet, noisy, t, context)
                loss = motion_loss(predicted, noise, config.loss)
                gave_previous, gave_current = gave_current, (adapters.snapshot() if step else gave_current)
                optimizer.zero_grad(set_to_none=True)
                if scaler is not None:
                    scaler.scale(loss).backward()
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    loss.backward()
                    torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
                    optimizer.step()
                value = float(loss.detach())
                if not math.isfinite(value):
                    adapters.restore(gave_previous)  # at step 0 both are the initial weights
                    result.stopped = (f"loss became {value} at step {step + 1}; training stopped and the adapter "
                                      f"weights that gave the last finite loss (step {step}) are kept. Lower lr, or "
                                      f"use bf16/fp32 instead of fp16.")
                    break
                result.losses.append(value)
                result.steps_done = step + 1
                if on_step is not None:
                    on_step(step + 1, config.steps, value)
    finally:
        optimizer.zero_grad(set_to_none=True)
        for p in params:
            p.requires_grad_(False)
        for p, flag in frozen:
            p.requires_grad_(flag)
        unet.train(was_training)
    return result


# ------------------------------------------------------------------ base-model fingerprint
FINGERPRINT_PROBES = ("conv_in.weight", "time_embedding.linear_1.weight",          # UNet3D
                      "patch_embedding.weight", "time_embedding.0.weight")          # Wan


def base_fingerprint(weights: dict[str, torch.Tensor], target_keys: list[str]) -> dict:
    """What identifies the base model a motion LoRA was trained on: shapes of its targets, probe values.

    Probes come from weights a temporal LoRA never patches, read as fp32, so the same checkpoint in fp16,
    bf16 or fp32 gives (nearly) the same numbers; ``fingerprint_mismatch`` compares them with a tolerance.
    """
    shapes = {k: list(weights[k].shape) for k in sorted(target_keys) if k in weights}
    probes = {}
    for key in FINGERPRINT_PROBES:
        if key in weights:
            probes[key] = [round(float(v), 6) for v in weights[key].detach().flatten()[:16].float().cpu()]
    return {"target_shapes": shapes, "probes": probes}


def fingerprint_mismatch(saved: dict, current: dict, rtol: float = 2e-2) -> Optional[str]:
    """None when ``current`` (from the model at hand) matches ``saved``; else what differs."""
    for key, shape in saved.get("target_shapes", {}).items():
        have = current.get("target_shapes", {}).get(key)
        if have is None:
            return f"the model has no layer '{key}'"
        if list(have) != list(shape):
            return f"layer '{key}' has shape {have}, the LoRA was trained on {shape}"
    for key, values in saved.get("probes", {}).items():
        have = current.get("probes", {}).get(key)
        if have is None:
            return f"the model has no weight '{key}'"
        a, b = torch.tensor(values), torch.tensor(have)
        if a.shape != b.shape or float((a - b).abs().max()) > rtol * max(float(a.abs().max()), 1e-6):
            return f"weight '{key}' has other values (a different checkpoint of the same architecture)"
    return None
