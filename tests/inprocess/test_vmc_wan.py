"""VMC Temporal LoRA on Wan in-process: tiny random WanModels of ComfyUI's own class (CPU, fp32, one thread).

Wan has no temporal layers: the adapters go on each block's self-attention (q/k/v, o optional), the model
is called the way ComfyUI samples it (rectified flow through its own apply_model). Checked here: the LoRA's
keys are ComfyUI's for WanModel and core LoraLoaderModelOnly on the saved file samples the same latents as
the node's MODEL; both loss variants fall on a moving blob; the checkpointing modes give the same losses;
block selection; Wan 2.2 A14B's two experts tuned as a pair on their own timesteps and saved as two files;
Encode Keyframes' 4k+1 rule; and the clear errors for a mismatched expert, boundary, family or frame count.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

pytestmark = pytest.mark.usefixtures("one_torch_thread", "comfy_inference_mode")
LATENT = (1, 16, 4, 8, 8)      # 4 latent frames = 13 video frames through Wan's VAE


@pytest.fixture(scope="module")
def loras(comfy):
    import folder_paths

    root = comfy / "models" / "loras"
    root.mkdir(exist_ok=True)
    folder_paths.folder_names_and_paths["loras"] = ([str(root)], set(folder_paths.supported_pt_extensions))
    return root


@pytest.fixture(scope="module")
def wan(tiny, pack_nodes):
    return tiny.load_tiny_wan21(seed=0)


def moving_blob(shape=LATENT, seed=0) -> dict:
    """A LATENT where a bright blob crosses the frame left to right over a smooth background."""
    b, c, t, h, w = shape
    g = torch.Generator().manual_seed(seed)
    background = 0.3 * torch.randn(1, c, 1, h, w, generator=g)
    yy, xx = torch.meshgrid(torch.arange(h).float(), torch.arange(w).float(), indexing="ij")
    frames = []
    for f in range(t):
        cx = 1.5 + (w - 3) * f / max(t - 1, 1)
        blob = torch.exp(-((xx - cx) ** 2 + (yy - h / 2) ** 2) / 3.0)
        frames.append(blob)
    blob = torch.stack(frames)[None, None] * torch.linspace(1.5, -1.5, c).view(1, c, 1, 1, 1)
    return {"samples": (background + blob).expand(b, c, t, h, w).contiguous()}


def train(model, tiny, steps=3, **kw):
    from comfyui_searchpriors.nodes.vmc_nodes import VMCTemporalLoRA

    args = dict(model=model, keyframes=moving_blob(), conditioning=tiny.wan_conditioning(7), steps=steps, lr=1e-2,
                rank=4, targets="qkv", loss="vmc_abs", seed=3, gradient_checkpointing="off",
                caption="a blob moves right")
    args.update(kw)
    return VMCTemporalLoRA.execute(**args).args


def sample(model, tiny, seed=0):
    from comfy_extras import nodes_custom_sampler as cs

    sigmas = cs.BasicScheduler.execute(model=model, scheduler="simple", steps=3, denoise=1.0).args[0]
    guider = cs.CFGGuider.execute(model=model, positive=tiny.wan_conditioning(7), negative=tiny.wan_conditioning(8),
                                  cfg=4.0).args[0]
    noise = cs.RandomNoise.execute(noise_seed=seed).args[0]
    sampler = cs.KSamplerSelect.execute(sampler_name="euler").args[0]
    return cs.SamplerCustomAdvanced.execute(noise=noise, guider=guider, sampler=sampler, sigmas=sigmas,
                                            latent_image={"samples": torch.zeros(LATENT)}).args[0]["samples"]


@pytest.fixture(scope="module")
def trained(wan, tiny):
    return train(wan, tiny)


def test_adapters_on_each_blocks_self_attention_with_comfys_keys(wan, trained):
    tuned, motion_lora, curve, report, tuned_high = trained
    state = motion_lora["state_dict"]
    want = {f"diffusion_model.blocks.{b}.self_attn.{p}" for b in (0, 1) for p in "qkv"}
    assert {k.rsplit(".", 2)[0] if ".lora_" in k else k.rsplit(".", 1)[0] for k in state} == want
    assert set(tuned.patches) == {k + ".weight" for k in want}
    meta = motion_lora["metadata"]
    assert meta["searchpriors.family"] == "wan" and meta["searchpriors.base_model"] == "WAN21"
    assert meta["searchpriors.blocks"] == "all" and meta["searchpriors.expert"] == ""
    assert tuned_high is tuned and "3 of 3 steps" in report and curve.shape == (1, 256, 512, 3)
    assert not wan.patches and not any(p.requires_grad for p in wan.model.parameters())


def test_core_lora_loader_samples_what_the_node_tuned(wan, trained, tiny, loras):
    import nodes as comfy_nodes
    from comfyui_searchpriors.nodes.vmc_nodes import LoadMotionLoRA, SaveMotionLoRA

    tuned, motion_lora = trained[0], trained[1]
    name, high_name = SaveMotionLoRA.execute(motion_lora=motion_lora, filename_prefix="wan/vmc").args
    assert high_name == "" and (loras / name).is_file()
    core = comfy_nodes.LoraLoaderModelOnly().load_lora_model_only(wan, name, 1.0)[0]
    pack = LoadMotionLoRA.execute(model=wan, lora_name=name, strength=1.0).args[0]
    plain, ours, theirs, loaded = (sample(m, tiny) for m in (wan, tuned, core, pack))
    assert torch.equal(ours, theirs) and torch.equal(ours, loaded)
    assert not torch.equal(ours, plain)


@pytest.mark.parametrize("loss", ["vmc_abs", "eq10_pairs"])
def test_both_losses_fall_on_a_moving_blob(wan, tiny, loss):
    _, motion_lora, _, report, _ = train(wan, tiny, steps=30, lr=2e-2, rank=8, loss=loss, targets="qkv+out", seed=1)
    losses = json.loads(motion_lora["metadata"]["searchpriors.losses"])
    assert len(losses) == 30 and all(math.isfinite(v) for v in losses)
    assert sum(losses[-8:]) < 0.95 * sum(losses[:8]), losses
    assert any(k.endswith("self_attn.o.lora_up.weight") for k in motion_lora["state_dict"])


def test_checkpointing_modes_give_the_same_training(wan, tiny):
    runs = {mode: json.loads(train(wan, tiny, steps=3, gradient_checkpointing=mode)[1]["metadata"]
                             ["searchpriors.losses"]) for mode in ("off", "all", "outer", "outermost")}
    for mode, losses in runs.items():
        assert losses == pytest.approx(runs["off"], rel=1e-4, abs=1e-6), mode


def test_checkpointed_dit_blocks_by_mode(wan):
    from comfyui_searchpriors.distill import vmc

    network = wan.model.diffusion_model
    counts = {}
    for mode in vmc.CHECKPOINT_MODES:
        with vmc.checkpointed_blocks(network, mode) as n:
            counts[mode] = n
        assert not any("forward" in vars(b) for b in network.blocks)   # put back afterwards
    assert counts == {"all": 2, "outer": 2, "outermost": 1, "off": 0, "compiled": 2}   # compiled: as outer here


def test_compiled_runs_as_outer_without_a_cuda_gpu_and_says_so(wan, tiny):
    from comfyui_searchpriors.distill import vmc

    assert vmc.effective_checkpointing(wan.model.diffusion_model, "compiled") == "outer"   # CPU weights
    report = train(wan, tiny, steps=1, gradient_checkpointing="compiled")[3]
    assert "checkpointing outer (compiled needs a Wan model on a CUDA GPU with Triton)" in report


def test_compiled_blocks_train_as_uncompiled_ones(wan, tiny, monkeypatch):
    """The 'compiled' wiring (one compiled forward per block class, the partitioner's settings, blocks put back),
    with a compiler that runs on the CPU (aot_eager; inductor needs Triton and a GPU): the same losses as 'off'."""
    from comfyui_searchpriors.distill import vmc

    monkeypatch.setattr(vmc, "COMPILE_BACKEND", "aot_eager")
    monkeypatch.setattr(vmc, "_COMPILED_FORWARDS", {})
    losses = {mode: json.loads(train(wan, tiny, steps=3, gradient_checkpointing=mode)[1]["metadata"]
                               ["searchpriors.losses"]) for mode in ("off", "compiled")}
    assert losses["compiled"] == pytest.approx(losses["off"], rel=1e-4, abs=1e-6)
    assert len(vmc._COMPILED_FORWARDS) == 1   # every block shares its class's compiled forward
    assert not any("forward" in vars(b) for b in wan.model.diffusion_model.blocks)


def test_a_block_that_does_not_compile_runs_as_outer(wan, tiny, monkeypatch, caplog):
    from comfyui_searchpriors.distill import vmc

    def broken(*args, **kwargs):
        raise RuntimeError("no compiler here")

    monkeypatch.setattr(vmc, "COMPILE_BACKEND", "aot_eager")
    block_class = type(wan.model.diffusion_model.blocks[0])
    monkeypatch.setattr(vmc, "_COMPILED_FORWARDS", {block_class: broken})
    losses = {mode: json.loads(train(wan, tiny, steps=2, gradient_checkpointing=mode)[1]["metadata"]
                               ["searchpriors.losses"]) for mode in ("outer", "compiled")}
    assert losses["compiled"] == pytest.approx(losses["outer"], rel=1e-4, abs=1e-6)
    assert "compiling a block failed (RuntimeError: no compiler here)" in caplog.text


def test_block_selection(wan, tiny):
    from comfyui_searchpriors.distill.vmc import VMCError

    _, motion_lora, _, report, _ = train(wan, tiny, steps=1, blocks="1")
    assert {k.split(".")[2] for k in motion_lora["state_dict"]} == {"1"} and "blocks 1" in report
    with pytest.raises(VMCError, match=r"'0-5' is outside 0-1 \(this model has 2"):
        train(wan, tiny, steps=1, blocks="0-5")
    with pytest.raises(VMCError, match="not 'all' or a list"):
        train(wan, tiny, steps=1, blocks="first")


def test_two_experts_are_tuned_on_their_own_timesteps_and_saved_as_a_pair(wan, tiny, loras):
    from comfyui_searchpriors.nodes.vmc_nodes import LoadMotionLoRA, SaveMotionLoRA
    from comfyui_searchpriors.retrieval.errors import SearchPriorsError

    high = tiny.load_tiny_wan21(seed=5)
    tuned, motion_lora, _, report, tuned_high = train(wan, tiny, steps=2, high_noise_model=high, boundary=0.875)
    assert tuned.model is wan.model and tuned_high.model is high.model and "both Wan 2.2 experts" in report
    low_range = json.loads(motion_lora["metadata"]["searchpriors.timestep_range"])
    high_range = json.loads(motion_lora["high_noise"]["metadata"]["searchpriors.timestep_range"])
    assert low_range[1] == high_range[0] and high_range[1] == 1000 and low_range[0] == 0
    sampling = wan.model.model_sampling
    timesteps = sampling.timestep(sampling.sigmas).float()
    assert bool((timesteps[high_range[0]:] >= 875).all()) and bool((timesteps[:low_range[1]] < 875).all())
    assert motion_lora["high_noise"]["metadata"]["searchpriors.expert"] == "high_noise"
    assert not torch.equal(sample(tuned_high, tiny), sample(high, tiny))

    low_name, high_name = SaveMotionLoRA.execute(motion_lora=motion_lora, filename_prefix="wan22/pair").args
    assert "_low_noise_" in low_name and "_high_noise_" in high_name
    assert (loras / low_name).is_file() and (loras / high_name).is_file()
    LoadMotionLoRA.execute(model=high, lora_name=high_name, strength=1.0)
    with pytest.raises(SearchPriorsError, match="high-noise expert: load it on that expert's MODEL"):
        LoadMotionLoRA.execute(model=wan, lora_name=high_name, strength=1.0)


def test_expert_and_boundary_mistakes_are_named(wan, tiny):
    from comfyui_searchpriors.retrieval.errors import SearchPriorsError

    bigger = tiny.load_tiny_wan21(seed=1, dim=256)
    with pytest.raises(SearchPriorsError, match="high_noise_model has another size or architecture than model"):
        train(wan, tiny, steps=1, high_noise_model=bigger)
    for boundary in (0.0, 1.0, 1.5):
        with pytest.raises(Exception, match="boundary"):
            train(wan, tiny, steps=1, high_noise_model=tiny.load_tiny_wan21(seed=2), boundary=boundary)
    with pytest.raises(Exception, match="boundary"):
        train(wan, tiny, steps=1, high_noise_model=wan, boundary=float("nan"))


def test_too_few_latent_frames_say_4k_plus_1(wan, tiny):
    from comfyui_searchpriors.distill.vmc import VMCError

    with pytest.raises(VMCError, match=r"2 latent frame\(s\).*4k\+1.*9 or more keyframes"):
        train(wan, tiny, steps=1, keyframes=moving_blob((1, 16, 2, 8, 8)))
    with pytest.raises(VMCError, match="video LATENT"):
        train(wan, tiny, steps=1, keyframes={"samples": torch.zeros(4, 16, 8, 8)})
    bad = moving_blob()
    bad["samples"][0, 0, 0, 0, 0] = float("nan")
    with pytest.raises(VMCError, match="NaN"):
        train(wan, tiny, steps=1, keyframes=bad)


def tiny_wan_vae(seed=0, dim=8):
    """ComfyUI's Wan 2.1 VAE (its own class, detected from the keys) with small seeded weights."""
    import comfy.ldm.wan.vae
    import comfy.sd

    with torch.device("meta"):
        skeleton = comfy.ldm.wan.vae.WanVAE(dim=dim, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2,
                                            attn_scales=[], temperal_downsample=[False, True, True], dropout=0.0)
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, t in skeleton.state_dict().items():
        if key.endswith("gamma"):
            state[key] = torch.ones(t.shape)
        elif key.endswith("bias"):
            state[key] = torch.zeros(t.shape)
        else:
            state[key] = torch.randn(t.shape, generator=g) / math.sqrt(max(1, math.prod(t.shape[1:])))
    return comfy.sd.VAE(sd=state)


def test_encode_keyframes_keeps_every_frame_or_says_which_counts_fit(wan, tiny):
    from comfyui_searchpriors.distill.vmc import VMCError
    from comfyui_searchpriors.nodes.vmc_nodes import EncodeKeyframes

    vae = tiny_wan_vae()
    frames = torch.rand(9, 32, 32, 3)
    latent = EncodeKeyframes.execute(keyframes=frames, vae=vae).args[0]
    assert tuple(latent["samples"].shape) == (1, 16, 3, 4, 4)
    with pytest.raises(VMCError, match="8 keyframes do not fit.*only 5 of the 8.*one of 5, 9"):
        EncodeKeyframes.execute(keyframes=torch.rand(8, 32, 32, 3), vae=vae)
    with pytest.raises(VMCError, match="NaN"):
        EncodeKeyframes.execute(keyframes=torch.full((9, 32, 32, 3), float("nan")), vae=vae)


def test_wan22_5b_is_tuned_through_the_same_node(tiny, loras):
    """Wan 2.2 TI2V 5B (ComfyUI's WAN22: 48-channel latents, its own VAE): the same adapters and loss."""
    from comfyui_searchpriors.distill.vmc import VMCError

    five_b = tiny.load_tiny_wan22_5b(seed=0)
    assert type(five_b.model).__name__ == "WAN22"
    tuned, motion_lora, _, report, _ = train(five_b, tiny, steps=3, keyframes=moving_blob((1, 48, 3, 8, 8)))
    assert "3 of 3 steps" in report and motion_lora["metadata"]["searchpriors.base_model"] == "WAN22"
    assert "diffusion_model.blocks.1.self_attn.v.lora_down.weight" in motion_lora["state_dict"]
    assert not torch.equal(sample_5b(tuned, tiny), sample_5b(five_b, tiny))
    with pytest.raises(VMCError, match="48"):
        train(five_b, tiny, steps=1)   # a 16-channel latent from the Wan 2.1 VAE


def sample_5b(model, tiny):
    from comfy_extras import nodes_custom_sampler as cs

    sigmas = cs.BasicScheduler.execute(model=model, scheduler="simple", steps=2, denoise=1.0).args[0]
    guider = cs.CFGGuider.execute(model=model, positive=tiny.wan_conditioning(7), negative=tiny.wan_conditioning(8),
                                  cfg=1.0).args[0]
    noise = cs.RandomNoise.execute(noise_seed=0).args[0]
    sampler = cs.KSamplerSelect.execute(sampler_name="euler").args[0]
    return cs.SamplerCustomAdvanced.execute(noise=noise, guider=guider, sampler=sampler, sigmas=sigmas,
                                            latent_image={"samples": torch.zeros(1, 48, 3, 8, 8)}).args[0]["samples"]


def test_cancel_and_a_nan_loss_on_wan_stop_as_on_the_unet3d(wan, tiny, nan_loss_from_call):
    """Cancel mid-training leaves no hook and the weights as they were; a NaN loss stops with a report and keeps
    the adapters of the last finite step (the loop is the UNet3D path's)."""
    import comfy.model_management

    network = wan.model.diffusion_model
    before = {k: v.clone() for k, v in wan.model_state_dict().items()}
    comfy.model_management.interrupt_current_processing(True)
    try:
        with pytest.raises(comfy.model_management.InterruptProcessingException):
            train(wan, tiny, steps=20, gradient_checkpointing="outer")
    finally:
        comfy.model_management.interrupt_current_processing(False)
    assert all(not m._forward_hooks for m in network.modules())
    assert not any("forward" in vars(b) for b in network.blocks)
    assert all(torch.equal(wan.model_state_dict()[k], v) for k, v in before.items())

    nan_loss_from_call(3)
    _, motion_lora, _, report, _ = train(wan, tiny, steps=10)
    assert "2 of 10 steps" in report and "STOPPED: loss became nan at step 3" in report
    assert all(torch.isfinite(v).all() for v in motion_lora["state_dict"].values())
