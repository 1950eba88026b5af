"""ModelScope/ZeroScope as native MODEL/CLIP/VAE: equivalence with diffusers' TextToVideoSDPipeline.

A tiny random folder of the real classes (written by distill/synthetic_t2v.py), fp32 on the CPU:
prompt embeddings, one UNet prediction (cond+uncond batched, uncond only, split), 10 DDIM steps through
core nodes vs the pipeline, core VAE nodes on F frames, a weight patch on a temporal-attention key, and
bad input on the loader.
"""

from __future__ import annotations

import math
import os

import pytest
import torch


pytestmark = pytest.mark.usefixtures("one_torch_thread", "comfy_inference_mode")
FRAMES, HEIGHT, WIDTH = 4, 64, 64
PROMPT = "a dog catches a frisbee on the beach"
CFG = 7.5
TEMPORAL_KEY = "diffusion_model.down_blocks.0.temp_attentions.0.transformer_blocks.0.attn1.to_q.weight"
MEASURED = {}  # numbers the README quotes; printed by the last test (pytest -s)


def relative_l2(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


@pytest.fixture(scope="module")
def diffusers_root(comfy):
    import folder_paths

    root = comfy / "models" / "diffusers"
    root.mkdir(exist_ok=True)
    folder_paths.folder_names_and_paths["diffusers"] = ([str(root)], set())
    return root


@pytest.fixture(scope="module")
def tiny_folder(diffusers_root):
    from comfyui_searchpriors.distill.synthetic_t2v import write_t2v_folder

    return write_t2v_folder(str(diffusers_root / "tiny-t2v"), size="tiny", dtype="fp32", seed=0)


@pytest.fixture(scope="module")
def loaded(tiny_folder, pack_nodes):
    from comfyui_searchpriors.nodes.modelscope_nodes import ModelScopeLoader

    with torch.inference_mode():
        out = ModelScopeLoader.execute(folder="tiny-t2v", dtype="fp32")
    return out.args


@pytest.fixture(scope="module")
def pipe(tiny_folder):
    from diffusers import DDIMScheduler, TextToVideoSDPipeline

    pipeline = TextToVideoSDPipeline.from_pretrained(tiny_folder)
    pipeline.scheduler = DDIMScheduler.from_config(pipeline.scheduler.config)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def encode(clip, text):
    import nodes as comfy_nodes

    return comfy_nodes.CLIPTextEncode().encode(clip, text)[0]


def test_loader_lists_folder_and_gives_native_types(loaded, pack_nodes):
    import comfy.model_patcher
    import comfy.sd
    from comfyui_searchpriors.nodes.modelscope_nodes import ModelScopeLoader

    schema = ModelScopeLoader.define_schema()
    assert [i.id for i in schema.inputs] == ["folder", "dtype"]
    assert schema.inputs[0].options == ["tiny-t2v"]
    model, clip, vae = loaded
    assert isinstance(model, comfy.model_patcher.ModelPatcher)
    assert isinstance(clip, comfy.sd.CLIP) and isinstance(vae, comfy.sd.VAE)
    assert model.model.latent_format.scale_factor == pytest.approx(0.18215)
    assert TEMPORAL_KEY in model.model_state_dict()


def test_prompt_embeddings_equal_pipeline(loaded, pipe):
    _, clip, _ = loaded
    with torch.no_grad():
        cond, uncond = pipe.encode_prompt(PROMPT, "cpu", 1, True, negative_prompt="")
    ours = encode(clip, PROMPT)[0][0]
    ours_empty = encode(clip, "")[0][0]
    assert ours.shape == cond.shape == (1, 77, 32)
    diff = max(float((ours - cond).abs().max()), float((ours_empty - uncond).abs().max()))
    MEASURED["text embedding max abs diff"] = diff
    assert diff <= 1e-4


@pytest.mark.parametrize("parallel_group_norm", [False, True], ids=["pytorch-groupnorm", "parallel-groupnorm"])
def test_unet_prediction_equal_in_every_batching(loaded, pipe, parallel_group_norm, monkeypatch):
    """Also with the loader's FewRowsGroupNorm forced onto its CUDA path (here on the CPU) for every
    whole-video GroupNorm: the batch-1 and batch-2 calls still equal the pipeline's UNet."""
    from comfyui_searchpriors.distill import group_norm

    model, clip, _ = loaded
    norms = [m for m in model.model.diffusion_model.modules() if isinstance(m, torch.nn.GroupNorm)]
    assert norms and all(type(m) is group_norm.FewRowsGroupNorm for m in norms)  # the loader swapped them all
    calls = []
    if parallel_group_norm:
        monkeypatch.setattr(group_norm.FewRowsGroupNorm, "require_cuda", False)
        monkeypatch.setattr(group_norm, "MIN_ROW", 0)
        real = group_norm.parallel_group_norm
        monkeypatch.setattr(group_norm, "parallel_group_norm", lambda *a, **k: calls.append(a[0].ndim) or real(*a, **k))
    base = model.model
    sigma_value = float(base.model_sampling.sigmas[500])
    cond = encode(clip, PROMPT)[0][0]
    uncond = encode(clip, "")[0][0]
    x = torch.randn(FRAMES, 4, 8, 8, generator=torch.Generator().manual_seed(1)) * sigma_value

    def diffusers_denoised(context):
        z = x / math.sqrt(1 + sigma_value ** 2)
        video = z.permute(1, 0, 2, 3).unsqueeze(0)
        with torch.no_grad():
            eps = pipe.unet(video, 500, encoder_hidden_states=context, return_dict=False)[0]
        return x - eps[0].permute(1, 0, 2, 3) * sigma_value

    def native(contexts, cond_or_uncond):
        batch = torch.cat([x] * len(contexts))
        context = torch.cat([c.repeat(FRAMES, 1, 1) for c in contexts])  # ComfyUI repeats cond per frame
        sigma = torch.full((batch.shape[0],), sigma_value)
        with torch.no_grad():
            return base.apply_model(batch, sigma, c_crossattn=context,
                                    transformer_options={"cond_or_uncond": cond_or_uncond})

    want_cond, want_uncond = diffusers_denoised(cond), diffusers_denoised(uncond)
    together = native([uncond, cond], [1, 0])  # ComfyUI's order: uncond first
    diffs = [relative_l2(together[:FRAMES], want_uncond), relative_l2(together[FRAMES:], want_cond),
             relative_l2(native([uncond], [1]), want_uncond), relative_l2(native([cond], [0]), want_cond)]
    MEASURED[f"UNet prediction relative L2 (batched, batched, uncond only, cond only), {parallel_group_norm=}"] = diffs
    assert max(diffs) <= 1e-5
    if parallel_group_norm:
        assert 5 in calls  # the temporal layers' whole-video norms took the parallel path
    assert relative_l2(want_cond, want_uncond) > 1e-3  # the prompt matters, so the regrouping is tested


def sample_native(model, clip, sigmas, seed=0, cfg=CFG, sampler_name="ddim"):
    from comfy_extras import nodes_custom_sampler as cs
    import nodes as comfy_nodes

    latent = comfy_nodes.EmptyLatentImage().generate(WIDTH, HEIGHT, FRAMES)[0]
    guider = cs.CFGGuider.execute(model=model, positive=encode(clip, PROMPT), negative=encode(clip, ""),
                                  cfg=cfg).args[0]
    noise = cs.RandomNoise.execute(noise_seed=seed).args[0]
    sampler = cs.KSamplerSelect.execute(sampler_name=sampler_name).args[0]
    out = cs.SamplerCustomAdvanced.execute(noise=noise, guider=guider, sampler=sampler, sigmas=sigmas,
                                           latent_image=latent).args[0]
    return out["samples"], noise.generate_noise(latent)


def test_ddim_sampling_through_core_nodes_equals_pipeline(loaded, pipe, pack_nodes):
    from comfy_extras import nodes_custom_sampler as cs
    from comfyui_searchpriors.nodes.modelscope_nodes import DiffusersSchedulerSigmas

    model, clip, _ = loaded
    assert [i.id for i in DiffusersSchedulerSigmas.define_schema().inputs] == ["model", "steps"]
    sigmas = DiffusersSchedulerSigmas.execute(model=model, steps=10).args[0]
    assert sigmas.shape == (11,)
    samples, noise = sample_native(model, clip, sigmas)
    with torch.no_grad():
        want = pipe(PROMPT, num_inference_steps=10, guidance_scale=CFG, num_frames=FRAMES, height=HEIGHT,
                    width=WIDTH, latents=noise.permute(1, 0, 2, 3).unsqueeze(0), output_type="latent",
                    return_dict=False)[0][0].permute(1, 0, 2, 3)
    scale = model.model.latent_format.scale_factor
    final_alpha = float(pipe.scheduler.final_alpha_cumprod)
    raw = relative_l2(samples * scale, want)
    vp = relative_l2(samples * scale * math.sqrt(final_alpha), want)  # ComfyUI's VE latent -> diffusers' VP z
    MEASURED["10-step DDIM relative L2 (raw VE latent, VP-corrected)"] = (raw, vp)
    assert vp <= 1e-4 and raw <= 1e-3
    assert samples.shape == (FRAMES, 4, HEIGHT // 8, WIDTH // 8)

    euler, _ = sample_native(model, clip, sigmas, sampler_name="euler")
    assert relative_l2(euler, samples) <= 1e-6  # ComfyUI's ddim is euler on these sigmas

    import comfy.model_sampling

    ours = model.model.model_sampling
    core_scaling = type("CoreScaling", (comfy.model_sampling.EPS, comfy.model_sampling.ModelSamplingDiscrete), {})()
    core_scaling.set_sigmas(ours.sigmas.clone())
    model.model.model_sampling = core_scaling  # ComfyUI's own noise scaling: sigma * noise below sigma_max
    try:
        core_samples, _ = sample_native(model, clip, sigmas)
    finally:
        model.model.model_sampling = ours
    MEASURED["10-step DDIM with ComfyUI's own noise scaling, relative L2"] = relative_l2(core_samples * scale, want)

    uniform = cs.BasicScheduler.execute(model=model, scheduler="ddim_uniform", steps=10, denoise=1.0).args[0]
    assert torch.equal(uniform[:-1], sigmas[:-1])  # same timesteps; ddim_uniform ends at 0
    uniform_samples, _ = sample_native(model, clip, uniform)
    MEASURED["ComfyUI ddim_uniform 10 steps relative L2 vs pipeline"] = relative_l2(uniform_samples * scale, want)


def test_empty_latent_start_and_img2img_noise_scaling(loaded):
    sampling = loaded[0].model.model_sampling
    sigma = torch.tensor([8.0])
    noise = torch.ones(1, 4, 2, 2)
    empty = sampling.noise_scaling(sigma, noise.clone(), torch.zeros(1, 4, 2, 2))
    assert torch.allclose(empty, noise * math.sqrt(1 + 64))  # diffusers: unit noise in VP form at any timestep
    image = torch.full((1, 4, 2, 2), 0.5)
    assert torch.allclose(sampling.noise_scaling(sigma, noise.clone(), image), noise * 8 + image)


def test_core_vae_nodes_on_frames(loaded):
    import nodes as comfy_nodes

    _, _, vae = loaded
    frames = torch.rand(FRAMES, HEIGHT, WIDTH, 3, generator=torch.Generator().manual_seed(2))
    latent = comfy_nodes.VAEEncode().encode(vae, frames)[0]
    assert latent["samples"].shape == (FRAMES, 4, HEIGHT // 8, WIDTH // 8)
    images = comfy_nodes.VAEDecode().decode(vae, latent)[0]
    assert images.shape == (FRAMES, HEIGHT, WIDTH, 3)
    assert float(images.min()) >= 0.0 and float(images.max()) <= 1.0


def test_vae_decode_equals_diffusers(loaded, pipe):
    _, _, vae = loaded
    latent = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        want = pipe.vae.decode(latent).sample.permute(0, 2, 3, 1)
    ours = vae.decode(latent)
    assert relative_l2(ours, torch.clamp((want + 1) / 2, 0, 1)) <= 1e-4


def test_temporal_attention_weight_patch_changes_output_and_unpatches_bitwise(loaded):
    import comfy.model_management
    from comfy_extras import nodes_custom_sampler as cs

    model, clip, _ = loaded
    sigmas = cs.BasicScheduler.execute(model=model, scheduler="normal", steps=2, denoise=1.0).args[0]
    before = {k: v.clone() for k, v in model.model_state_dict().items()}
    plain, _ = sample_native(model, clip, sigmas)
    patched_model = model.clone()
    weight = before[TEMPORAL_KEY]
    delta = torch.randn(weight.shape, generator=torch.Generator().manual_seed(4)) * 0.5
    assert patched_model.add_patches({TEMPORAL_KEY: (delta,)}, 1.0) == [TEMPORAL_KEY]
    patched, _ = sample_native(patched_model, clip, sigmas)
    assert relative_l2(patched, plain) > 1e-4
    comfy.model_management.load_models_gpu([model])
    again, _ = sample_native(model, clip, sigmas)
    assert torch.equal(again, plain)
    after = model.model_state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items())


@pytest.mark.parametrize("dtype,expected", [("bf16", torch.bfloat16), ("auto", torch.float32)])  # auto: CPU
def test_loader_dtypes(tiny_folder, loaded, dtype, expected):
    from comfyui_searchpriors.nodes.modelscope_nodes import ModelScopeLoader

    model, clip, vae = ModelScopeLoader.execute(folder="tiny-t2v", dtype=dtype).args
    assert model.model.get_dtype() == expected
    assert all(p.dtype == expected for p in model.model.diffusion_model.parameters())
    cond = encode(clip, PROMPT)[0][0]
    x = torch.randn(FRAMES, 4, 8, 8)
    sigma, context, options = torch.full((FRAMES,), 2.0), cond.float().repeat(FRAMES, 1, 1), {"cond_or_uncond": [0]}
    out = model.model.apply_model(x, sigma, c_crossattn=context, transformer_options=options)
    assert out.dtype == torch.float32 and bool(torch.isfinite(out).all())
    reference = loaded[0].model.apply_model(x, sigma, c_crossattn=context, transformer_options=options)
    assert relative_l2(out, reference) < (0.05 if dtype == "bf16" else 1e-6)


def test_reference_modules_equal_the_pipeline_and_the_native_unet(tiny_folder, loaded, pipe):
    from comfyui_searchpriors.distill.diffusers_folder import inspect_folder, load_modules

    modules = load_modules(inspect_folder(tiny_folder), "bf16")
    assert {m.dtype for m in (modules["unet"], modules["vae"], modules["text_encoder"])} == {torch.bfloat16}
    for name in ("unet", "vae", "text_encoder"):
        mine, theirs = modules[name].state_dict(), getattr(pipe, name).state_dict()
        assert set(mine) == set(theirs) and all(torch.equal(mine[k], theirs[k].bfloat16()) for k in mine)
    native = loaded[0].model.diffusion_model.state_dict()
    assert all(torch.equal(native[k], v) for k, v in pipe.unet.state_dict().items())


def test_model_is_loaded_fully_never_partially(loaded):
    model = loaded[0]
    model.load(torch.device("cpu"), lowvram_model_memory=1, full_load=False)
    assert model.model.model_lowvram is False
    assert model.partially_unload(torch.device("cpu"), memory_to_free=1) == 0


def test_loader_bad_input(diffusers_root, pack_nodes, tiny_folder, tmp_path):
    import folder_paths
    from comfyui_searchpriors.distill.diffusers_folder import DiffusersFolderError
    from comfyui_searchpriors.nodes.modelscope_nodes import DiffusersSchedulerSigmas, ModelScopeLoader

    assert ModelScopeLoader.validate_inputs() is True
    assert math.isnan(ModelScopeLoader.fingerprint_inputs())
    with pytest.raises(DiffusersFolderError, match="No folder 'nope'"):
        ModelScopeLoader.execute(folder="nope", dtype="fp32")
    with pytest.raises(DiffusersFolderError, match="not a folder name"):
        ModelScopeLoader.execute(folder="../tiny-t2v", dtype="fp32")
    with pytest.raises(DiffusersFolderError, match="not come from the ModelScope"):
        DiffusersSchedulerSigmas.execute(model=object(), steps=10)

    empty_root = tmp_path / "no_models"
    empty_root.mkdir()
    saved = folder_paths.folder_names_and_paths["diffusers"]
    folder_paths.folder_names_and_paths["diffusers"] = ([str(empty_root)], set())
    try:
        schema = ModelScopeLoader.define_schema()
        assert schema.inputs[0].options == []
        with pytest.raises(DiffusersFolderError, match=r"put a ModelScope/ZeroScope diffusers folder in models/diff"):
            ModelScopeLoader.execute()
    finally:
        folder_paths.folder_names_and_paths["diffusers"] = saved

    broken = diffusers_root / "broken-t2v"
    os.makedirs(broken)
    (broken / "model_index.json").write_text(open(os.path.join(tiny_folder, "model_index.json")).read())
    with pytest.raises(DiffusersFolderError, match=r"missing component folder\(s\) unet/, vae/"):
        ModelScopeLoader.execute(folder="broken-t2v", dtype="fp32")


def test_report_measured_numbers():
    for name, value in MEASURED.items():
        print(f"{name}: {value}")


def test_context_per_chunk_moves_only_the_first_row_of_each_chunk(monkeypatch):
    """ComfyUI repeats the conditioning for every frame; only one row per chunk (cond / uncond) reaches the device,
    in the model's dtype, and a batch that does not split into the chunks is refused."""
    import comfy.model_management

    from comfyui_searchpriors.nodes.comfy_internals import modelscope_model as msm

    cond, uncond = torch.randn(1, 7, 16), torch.randn(1, 7, 16)
    repeated = torch.cat([uncond.repeat(FRAMES, 1, 1), cond.repeat(FRAMES, 1, 1)])  # as cond_cat builds it
    moved = []
    real_cast = comfy.model_management.cast_to_device
    monkeypatch.setattr(comfy.model_management, "cast_to_device",
                        lambda t, device, dtype, **kw: moved.append(t.shape) or real_cast(t, device, dtype, **kw))
    out = msm.context_per_chunk(repeated, 2, "cpu", torch.bfloat16)
    assert moved == [torch.Size([2, 7, 16])] and out.dtype == torch.bfloat16
    assert torch.equal(out, torch.cat([uncond, cond]).to(torch.bfloat16))
    with pytest.raises(ValueError, match="not a multiple of 3 chunks"):
        msm.context_per_chunk(repeated, 3, "cpu", torch.float32)


def _copy_folder(tiny_folder, diffusers_root, name):
    import shutil

    target = diffusers_root / name
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(tiny_folder, target)
    return target


def _edit_weights(path, edit):
    import safetensors.torch

    state = safetensors.torch.load_file(str(path))
    edit(state)
    safetensors.torch.save_file(state, str(path))


def test_a_two_level_vae_is_refused_naming_the_levels(diffusers_root, tiny_folder, pack_nodes):
    """ComfyUI's diffusers -> ldm VAE key map assumes the SD VAE's 4 levels: a 2-level VAE loaded with keys
    missing (a log line only) and decoded to black frames. The loader refuses it."""
    import json

    from diffusers import AutoencoderKL

    from comfyui_searchpriors.distill.diffusers_folder import DiffusersFolderError
    from comfyui_searchpriors.nodes.modelscope_nodes import ModelScopeLoader

    target = _copy_folder(tiny_folder, diffusers_root, "two-level-vae")
    config = json.loads((target / "vae" / "config.json").read_text())
    config.update(block_out_channels=[32, 32], down_block_types=["DownEncoderBlock2D"] * 2,
                  up_block_types=["UpDecoderBlock2D"] * 2)
    vae = AutoencoderKL(**{k: v for k, v in config.items() if not k.startswith("_")})
    vae.save_pretrained(str(target / "vae"), safe_serialization=True)
    with pytest.raises(DiffusersFolderError, match=r"'two-level-vae/vae' has 2 levels \(block_out_channels "
                                                   r"\[32, 32\]\); ComfyUI's VAE conversion needs .* 4"):
        ModelScopeLoader.execute(folder="two-level-vae", dtype="fp32")


@pytest.mark.parametrize("component, edit, words", [
    ("vae", lambda s: s.pop("decoder.conv_in.weight"), r"'keys-t2v/vae' weights do not fit its config.json: 1 "
                                                       r"missing \(e.g. decoder.conv_in.weight\)"),
    ("vae", lambda s: s.update({"encoder.stray.weight": torch.zeros(2)}),
     r"'keys-t2v/vae' .* 1 unexpected \(e.g. encoder.stray.weight\)"),
    ("unet", lambda s: s.update({"down_blocks.0.stray.weight": torch.zeros(2)}),
     r"'keys-t2v/unet' .* 1 unexpected \(e.g. down_blocks.0.stray.weight\)"),
    ("text_encoder", lambda s: s.update({"text_model.stray.weight": torch.zeros(2)}),
     r"'keys-t2v/text_encoder' .* 1 unexpected \(e.g. text_model.stray.weight\)"),
])
def test_every_missing_or_unexpected_key_is_refused(diffusers_root, tiny_folder, pack_nodes, component, edit,
                                                    words):
    from comfyui_searchpriors.distill.diffusers_folder import DiffusersFolderError
    from comfyui_searchpriors.nodes.modelscope_nodes import ModelScopeLoader

    target = _copy_folder(tiny_folder, diffusers_root, "keys-t2v")
    files = [f for f in os.listdir(target / component) if f.endswith(".safetensors")]
    _edit_weights(target / component / files[0], edit)
    with pytest.raises(DiffusersFolderError, match=words):
        ModelScopeLoader.execute(folder="keys-t2v", dtype="fp32")


def test_scheduler_sigmas_at_the_schedulers_limit(loaded, pack_nodes):
    from comfyui_searchpriors.distill.diffusers_folder import DiffusersFolderError
    from comfyui_searchpriors.nodes.modelscope_nodes import DiffusersSchedulerSigmas

    model = loaded[0]
    with pytest.raises(DiffusersFolderError, match=r"steps 1000 is more than this scheduler can take: .* use 999 "
                                                   r"or fewer"):
        DiffusersSchedulerSigmas.execute(model=model, steps=1000)
    sigmas = DiffusersSchedulerSigmas.execute(model=model, steps=999).args[0]
    assert sigmas.shape == (1000,) and bool(torch.isfinite(sigmas).all())
