"""VMC motion distillation (distill/vmc.py) on a tiny random UNet3DConditionModel, CPU, one thread.

Losses against literal loops, the temporal projections found, training on latents of a moving square
(the loss falls, only adapters change), checkpointing vs none (same gradients), NaN and Cancel handling,
a model without temporal attention.
"""

from __future__ import annotations

import pytest
import torch

from comfyui_searchpriors.distill import vmc


pytestmark = pytest.mark.usefixtures("one_torch_thread")
FRAMES = 6


@pytest.fixture(scope="module")
def unet():
    from comfyui_searchpriors.distill.synthetic_t2v import build_components

    return build_components("tiny", torch.float32, seed=0)[0]


def schedule() -> torch.Tensor:
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
    return torch.cumprod(1 - betas, 0).float()


def moving_square(frames: int = FRAMES, size: int = 8, side: int = 3) -> torch.Tensor:
    """[1,4,F,size,size] latents: a bright square moving one cell right per frame on a dark ground."""
    video = torch.full((1, 4, frames, size, size), -1.0)
    for f in range(frames):
        x = f % (size - side + 1)
        video[:, :, f, 2:2 + side, x:x + side] = 1.5
    return video


def context() -> torch.Tensor:
    return torch.randn(1, 77, 32, generator=torch.Generator().manual_seed(7))


def weights(module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


# ------------------------------------------------------------------ loss
def literal_vmc_abs(pred, true):
    b, c, f, h, w = pred.shape
    total, count = 0.0, 0
    for bi in range(b):
        for ci in range(c):
            for y in range(h):
                for x in range(w):
                    dp = torch.tensor([abs(float(pred[bi, ci, n + 1, y, x] - pred[bi, ci, n, y, x]))
                                       for n in range(f - 1)])
                    dt = torch.tensor([abs(float(true[bi, ci, n + 1, y, x] - true[bi, ci, n, y, x]))
                                       for n in range(f - 1)])
                    total += 1 - float(dp @ dt) / max(float(dp.norm() * dt.norm()), 1e-8)
                    count += 1
    return total / count


def literal_eq10(pred, true):
    b, _, f, _, _ = pred.shape
    total, count = 0.0, 0
    for bi in range(b):
        for n in range(f - 1):
            dp = (pred[bi, :, n + 1] - pred[bi, :, n]).flatten().double()
            dt = (true[bi, :, n + 1] - true[bi, :, n]).flatten().double()
            total += 1 - float(dp @ dt / (dp.norm() * dt.norm()))
            count += 1
    return total / count


def test_losses_equal_literal_loops():
    g = torch.Generator().manual_seed(0)
    pred, true = torch.randn(2, 3, 5, 2, 3, generator=g), torch.randn(2, 3, 5, 2, 3, generator=g)
    assert float(vmc.motion_loss(pred, true, "vmc_abs")) == pytest.approx(literal_vmc_abs(pred, true), abs=1e-5)
    assert float(vmc.motion_loss(pred, true, "eq10_pairs")) == pytest.approx(literal_eq10(pred, true), abs=1e-5)
    assert float(vmc.motion_loss(true, true, "eq10_pairs")) == pytest.approx(0.0, abs=1e-6)
    # the loss sees motion only: adding the same image to every frame changes nothing
    shifted = pred + torch.randn(2, 3, 1, 2, 3, generator=g)
    assert float(vmc.motion_loss(shifted, true, "eq10_pairs")) == pytest.approx(
        float(vmc.motion_loss(pred, true, "eq10_pairs")), abs=1e-5)
    with pytest.raises(vmc.VMCError, match="vmc_abs, eq10_pairs"):
        vmc.motion_loss(pred, true, "mse")


# ------------------------------------------------------------------ layers
def test_finds_temporal_qkv_and_refuses_a_model_without(unet):
    qkv = vmc.find_temporal_projections(unet, "qkv")
    blocks = {n.split(".transformer_blocks")[0] for n in qkv}
    assert len(blocks) == 4  # down 0, mid, up 1 (two layers) of the tiny model
    assert len(qkv) == len(blocks) * 2 * 3  # attn1 and attn2, q/k/v
    assert all(".temp_attentions." in f".{n}" and n.endswith(("to_q", "to_k", "to_v")) for n in qkv)
    assert len(vmc.find_temporal_projections(unet, "qkv+out")) == len(blocks) * 2 * 4

    from diffusers import UNet2DConditionModel

    image_unet = UNet2DConditionModel(sample_size=8, block_out_channels=(32, 64), layers_per_block=1,
                                      down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                      up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=32)
    with pytest.raises(vmc.VMCError, match="no temporal attention.*ModelScope / ZeroScope"):
        vmc.find_temporal_projections(image_unet)
    with pytest.raises(vmc.VMCError, match="cannot tune this model.*ModelScope / ZeroScope.*Wan"):
        vmc.MotionAdapters(image_unet)
    with pytest.raises(vmc.VMCError, match="blocks '0-3'.*set blocks to 'all'"):
        vmc.MotionAdapters(unet, blocks="0-3")


def test_adapters_start_as_identity_and_give_comfy_keys(unet):
    x = torch.randn(1, 4, FRAMES, 8, 8)
    t = torch.tensor([500])
    with torch.no_grad():
        base = unet(x, t, encoder_hidden_states=context()).sample
        adapters = vmc.MotionAdapters(unet, "qkv+out", rank=4, seed=1)
        with adapters.attached():
            same = unet(x, t, encoder_hidden_states=context()).sample
    assert torch.equal(base, same)
    sd = adapters.comfy_state_dict("diffusion_model.")
    name = "down_blocks.0.temp_attentions.0.transformer_blocks.0.attn1.to_out.0"
    assert sd[f"diffusion_model.{name}.lora_up.weight"].shape == (32, 4)
    assert sd[f"diffusion_model.{name}.lora_down.weight"].shape == (4, 32)
    assert float(sd[f"diffusion_model.{name}.alpha"]) == 4.0
    full = vmc.MotionAdapters(unet, "full_qkv").comfy_state_dict("diffusion_model.")
    assert set(full) == {f"diffusion_model.{n}.diff" for n in vmc.find_temporal_projections(unet)}


# ------------------------------------------------------------------ training
def held_out_loss(unet, adapters, kind: str) -> float:
    """The motion loss on four fixed (timestep, noise) draws, so before/after compare like with like."""
    generator, x0, alphas = torch.Generator().manual_seed(99), moving_square(), schedule()
    total = 0.0
    with torch.no_grad(), adapters.attached():
        for t in (350, 450, 550, 650):
            noise, a = torch.randn(x0.shape, generator=generator), alphas[t]
            noisy = a.sqrt() * x0 + (1 - a).sqrt() * noise
            pred = unet(noisy, torch.tensor([t]), encoder_hidden_states=context()).sample
            total += float(vmc.motion_loss(pred, noise, kind))
    return total / 4


@pytest.mark.parametrize("kind,targets,ratio", [("eq10_pairs", "qkv+out", 0.9), ("vmc_abs", "qkv+out", 0.995)])
def test_loss_falls_and_only_adapters_change(unet, kind, targets, ratio):
    before = weights(unet)
    adapters = vmc.MotionAdapters(unet, targets, rank=8, seed=0)
    start = held_out_loss(unet, adapters, kind)
    config = vmc.VMCConfig(steps=30, lr=1e-2, loss=kind, seed=0, timestep_range=(300, 700),
                           gradient_checkpointing=False)
    result = vmc.train_motion_adapters(unet, adapters, moving_square(), context(), schedule(), config)
    assert result.steps_done == 30 and result.stopped is None and len(result.losses) == 30
    assert held_out_loss(unet, adapters, kind) < start * ratio, result.losses
    if kind == "eq10_pairs":
        assert sum(result.losses[-8:]) < sum(result.losses[:8]) * 0.95
    after = unet.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items())
    assert not any(p.requires_grad for p in adapters.parameters())
    assert any(float(d.lora_up.abs().max()) > 0 for d in adapters.deltas)
    assert all("forward" not in vars(m) for m in unet.modules())


def one_step_gradients(unet, checkpointing):
    adapters = vmc.MotionAdapters(unet, "qkv+out", rank=4, seed=3)
    with torch.no_grad():
        for d in adapters.deltas:
            d.lora_up.normal_(0, 0.05, generator=torch.Generator().manual_seed(5))
    grads = {}

    def keep(step, total, loss):
        grads.update({i: p.grad.clone() for i, p in enumerate(adapters.parameters())})

    config = vmc.VMCConfig(steps=1, lr=0.0, weight_decay=0.0, seed=2, gradient_checkpointing=checkpointing)
    vmc.train_motion_adapters(unet, adapters, moving_square(), context(), schedule(), config, on_step=keep)
    return grads


def wrapped_names(unet, mode) -> set[str]:
    with vmc.checkpointed_blocks(unet, mode) as count:
        names = {n for n, m in unet.named_modules() if "forward" in vars(m)}
    assert count == len(names)
    assert all("forward" not in vars(m) for m in unet.modules())  # unwrapped on exit
    return names


def three_level_unet():
    from diffusers import UNet3DConditionModel

    torch.manual_seed(0)
    return UNet3DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, norm_num_groups=8, cross_attention_dim=32,
        down_block_types=("CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "DownBlock3D"),
        up_block_types=("UpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D"),
        block_out_channels=(8, 16, 16), attention_head_dim=4)


def test_checkpoint_modes_pick_blocks_by_resolution_level():
    unet = three_level_unet()
    every = {n for n, m in unet.named_modules() if type(m).__name__ in vmc.CHECKPOINTED_CLASSES}
    assert wrapped_names(unet, "all") == wrapped_names(unet, True) == every and every
    assert wrapped_names(unet, "off") == wrapped_names(unet, False) == set()
    outermost = wrapped_names(unet, "outermost")  # level 0: 8x8 latents
    assert outermost == {n for n in every if n.startswith(("down_blocks.0.", "up_blocks.2.", "transformer_in"))}
    assert any(n.startswith("down_blocks.0.") for n in outermost) and any(n.startswith("up_blocks.2.") for n in outermost)
    outer = wrapped_names(unet, "outer")  # levels 0 and 1; level 2 (2x2) and the mid block are not recomputed
    assert outer == {n for n in every if not n.startswith(("down_blocks.2.", "up_blocks.0.", "mid_block"))}
    assert outermost < outer < every
    assert wrapped_names(unet, "compiled") == outer   # a UNet3D is not compiled: 'compiled' runs as 'outer'
    with pytest.raises(vmc.VMCError, match="'some' is not one of all, outer, outermost, off, compiled"):
        wrapped_names(unet, "some")


@pytest.fixture(scope="module")
def unet3():
    return three_level_unet()


@pytest.mark.parametrize("mode", ["all", "outer", "outermost"])
def test_checkpointing_gives_the_same_gradients(unet3, mode):
    plain, checkpointed = one_step_gradients(unet3, "off"), one_step_gradients(unet3, mode)
    assert plain.keys() == checkpointed.keys() and plain
    for key in plain:
        torch.testing.assert_close(checkpointed[key], plain[key], rtol=1e-4, atol=1e-7)
    assert any(float(g.abs().max()) > 0 for g in plain.values())


def test_nan_loss_stops_and_keeps_last_good_adapter(unet):
    before = weights(unet)
    adapters = vmc.MotionAdapters(unet, "qkv", rank=4, seed=0)
    seen = {}
    poison = {"on": False}

    def poison_after_three(step, total, loss):
        seen[step] = [p.detach().clone() for p in adapters.parameters()]
        poison["on"] = step >= 3

    handle = unet.conv_out.register_forward_hook(lambda m, i, o: o * float("nan") if poison["on"] else o)
    try:
        config = vmc.VMCConfig(steps=10, lr=1e-3, gradient_checkpointing=False)
        result = vmc.train_motion_adapters(unet, adapters, moving_square(), context(), schedule(), config,
                                           on_step=poison_after_three)
    finally:
        handle.remove()
    assert result.steps_done == 3 and len(result.losses) == 3
    assert "loss became nan at step 4" in result.stopped and "step 3" in result.stopped
    assert all(torch.equal(p, v) for p, v in zip(adapters.parameters(), seen[2]))  # gave step 3's loss
    assert all(torch.equal(unet.state_dict()[k], v) for k, v in before.items())


def test_cancel_mid_training_leaves_the_model_clean(unet):
    before = weights(unet)
    flags = {n: p.requires_grad for n, p in unet.named_parameters()}
    adapters = vmc.MotionAdapters(unet, "qkv", rank=4)

    class Cancelled(Exception):
        pass

    def cancel_at_two(step, total, loss):
        if step == 2:
            raise Cancelled()

    with pytest.raises(Cancelled):
        vmc.train_motion_adapters(unet, adapters, moving_square(), context(), schedule(),
                                  vmc.VMCConfig(steps=50), on_step=cancel_at_two)
    assert all(not m._forward_hooks for m in unet.modules())
    assert all("forward" not in vars(m) for m in unet.modules())
    assert {n: p.requires_grad for n, p in unet.named_parameters()} == flags
    assert all(torch.equal(unet.state_dict()[k], v) for k, v in before.items())


def test_bad_input_messages(unet):
    adapters = vmc.MotionAdapters(unet, "qkv", rank=4)
    with pytest.raises(vmc.VMCError, match="at least 3 keyframes"):
        vmc.train_motion_adapters(unet, adapters, moving_square(frames=2), context(), schedule(), vmc.VMCConfig())
    with pytest.raises(vmc.VMCError, match="targets 'kv'"):
        vmc.MotionAdapters(unet, "kv")


def test_fingerprint_tolerates_dtype_and_catches_other_checkpoints(unet):
    sd = unet.state_dict()
    keys = [f"{n}.weight" for n in vmc.find_temporal_projections(unet)]
    saved = vmc.base_fingerprint(sd, keys)
    assert vmc.fingerprint_mismatch(saved, vmc.base_fingerprint({k: v.half() for k, v in sd.items()}, keys)) is None
    other = dict(sd)
    other["conv_in.weight"] = sd["conv_in.weight"] + 0.5
    assert "other values" in vmc.fingerprint_mismatch(saved, vmc.base_fingerprint(other, keys))
    smaller = dict(sd)
    smaller[keys[0]] = sd[keys[0]][:8]
    assert "shape" in vmc.fingerprint_mismatch(saved, vmc.base_fingerprint(smaller, keys))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_models_train_fp32_adapters(dtype):
    from comfyui_searchpriors.distill.synthetic_t2v import build_components

    half = build_components("tiny", dtype, seed=0)[0]
    adapters = vmc.MotionAdapters(half, "qkv", rank=4)
    result = vmc.train_motion_adapters(half, adapters, moving_square(), context(), schedule(),
                                       vmc.VMCConfig(steps=2, lr=1e-3, gradient_checkpointing=False))
    assert result.stopped is None and len(result.losses) == 2  # fp16: GradScaler path
    assert all(p.dtype == torch.float32 for p in adapters.parameters())
    assert all(p.dtype == dtype for p in half.parameters())
    assert max(float(d.lora_up.abs().max()) for d in adapters.deltas) > 0
