"""VMC Temporal LoRA, Save / Load Motion LoRA in-process on a tiny ModelScope folder (CPU, fp32, one thread).

A clip of a moving square goes through core VAE Encode; training runs under inference mode as ComfyUI runs
nodes; the input MODEL stays bitwise unchanged; core LoraLoaderModelOnly on the saved file, the pack's
loader and the node's own MODEL sample the same latents bit for bit; another base model, Cancel and a model
without temporal attention give clear errors.
"""

from __future__ import annotations

import os
import stat
import types

import numpy as np
import pytest
import torch


pytestmark = pytest.mark.usefixtures("one_torch_thread", "comfy_inference_mode")
FRAMES, SIZE = 4, 64
TEMPORAL_Q = "diffusion_model.down_blocks.0.temp_attentions.0.transformer_blocks.0.attn1.to_q"


@pytest.fixture(scope="module")
def folders(comfy, tmp_path_factory):
    import folder_paths
    from comfyui_searchpriors.distill.synthetic_t2v import write_t2v_folder

    # outside models/diffusers, so the loader's list that test_modelscope.py checks stays as it is
    root = tmp_path_factory.mktemp("vmc_models")
    loras = comfy / "models" / "loras"
    loras.mkdir(exist_ok=True)
    folder_paths.folder_names_and_paths["loras"] = ([str(loras)], set(folder_paths.supported_pt_extensions))
    for name, seed in (("vmc-a", 0), ("vmc-b", 1)):
        write_t2v_folder(str(root / name), size="tiny", dtype="fp32", seed=seed)
    return root, loras


def load(folder):
    from comfyui_searchpriors.nodes.comfy_internals.modelscope_model import load_modelscope_folder

    with torch.inference_mode():  # as the loader node runs
        return load_modelscope_folder(str(folder), dtype="fp32")


@pytest.fixture(scope="module")
def loaded(folders, pack_nodes):
    return load(folders[0] / "vmc-a")


def moving_square_frames() -> torch.Tensor:
    frames = np.full((FRAMES, SIZE, SIZE, 3), 0.1, dtype=np.float32)
    for f in range(FRAMES):
        x = 8 + 12 * f
        frames[f, 20:36, x:x + 16] = (0.9, 0.8, 0.2)
    return torch.from_numpy(frames)


def encode_text(clip, text):
    import nodes as comfy_nodes

    return comfy_nodes.CLIPTextEncode().encode(clip, text)[0]


@pytest.fixture(scope="module")
def inputs(loaded):
    import nodes as comfy_nodes

    _, clip, vae = loaded
    with torch.inference_mode():
        latent = comfy_nodes.VAEEncode().encode(vae, moving_square_frames())[0]
        return latent, encode_text(clip, "a yellow square slides to the right")


@pytest.fixture(scope="module")
def trained(loaded, inputs):
    from comfyui_searchpriors.nodes.vmc_nodes import VMCTemporalLoRA

    model = loaded[0]
    before = {k: v.clone() for k, v in model.model_state_dict().items()}
    patches_before = dict(model.patches)
    with torch.inference_mode():
        out = VMCTemporalLoRA.execute(model=model, keyframes=inputs[0], conditioning=inputs[1], steps=4, lr=1e-2,
                                      rank=4, targets="qkv", loss="vmc_abs", seed=3, gradient_checkpointing=True,
                                      caption="a yellow square slides to the right").args[:4]
    return out, before, patches_before


def sample(model, clip, seed=0):
    from comfy_extras import nodes_custom_sampler as cs
    import nodes as comfy_nodes

    latent = comfy_nodes.EmptyLatentImage().generate(SIZE, SIZE, FRAMES)[0]
    sigmas = cs.BasicScheduler.execute(model=model, scheduler="normal", steps=2, denoise=1.0).args[0]
    guider = cs.CFGGuider.execute(model=model, positive=encode_text(clip, "a square"), negative=encode_text(clip, ""),
                                  cfg=5.0).args[0]
    noise = cs.RandomNoise.execute(noise_seed=seed).args[0]
    sampler = cs.KSamplerSelect.execute(sampler_name="euler").args[0]
    return cs.SamplerCustomAdvanced.execute(noise=noise, guider=guider, sampler=sampler, sigmas=sigmas,
                                            latent_image=latent).args[0]["samples"]


def test_training_leaves_the_input_model_unchanged_and_patches_a_clone(loaded, trained):
    (tuned, motion_lora, curve, report), before, patches_before = trained
    model = loaded[0]
    after = model.model_state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items())
    assert model.patches == patches_before and tuned is not model and tuned.model is model.model
    state = motion_lora["state_dict"]
    assert f"{TEMPORAL_Q}.lora_up.weight" in state and f"{TEMPORAL_Q}.lora_down.weight" in state
    assert float(state[f"{TEMPORAL_Q}.alpha"]) == 4.0
    assert all(".temp_attentions." in k for k in state)
    assert set(tuned.patches) == {k.rsplit(".", 2)[0] + ".weight" if ".lora_" in k else k.rsplit(".", 1)[0] + ".weight"
                                  for k in state}
    meta = motion_lora["metadata"]
    assert meta["searchpriors.base_model"] == "vmc-a" and meta["searchpriors.steps"] == "4"
    assert meta["searchpriors.rank"] == "4" and meta["searchpriors.prompt"].startswith("a yellow square")
    assert curve.shape == (1, 256, 512, 3) and "4 of 4 steps" in report
    assert not any(p.requires_grad for p in model.model.parameters())


def test_save_then_core_loader_and_pack_loader_give_the_same_model(loaded, trained, folders):
    import safetensors
    import nodes as comfy_nodes
    from comfyui_searchpriors.nodes.vmc_nodes import LoadMotionLoRA, SaveMotionLoRA

    (tuned, motion_lora, _, _), _, _ = trained
    model, clip, _ = loaded
    name = SaveMotionLoRA.execute(motion_lora=motion_lora, filename_prefix="motion/test").args[0]
    path = folders[1] / name
    assert name.startswith("motion/test_") and path.is_file()
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".tmp-")]
    with safetensors.safe_open(str(path), "pt") as f:
        assert f.metadata()["searchpriors.loss"] == motion_lora["metadata"]["searchpriors.loss"]
        assert set(f.keys()) == set(motion_lora["state_dict"])

    core = comfy_nodes.LoraLoaderModelOnly().load_lora_model_only(model, name, 1.0)[0]
    pack = LoadMotionLoRA.execute(model=model, lora_name=name, strength=1.0).args[0]
    assert set(core.patches) == set(tuned.patches) == set(pack.patches)
    for key in tuned.patches:
        ours, theirs = tuned.patches[key][-1][1], core.patches[key][-1][1]
        assert all(torch.equal(a, b) for a, b in zip(ours.weights[:2], theirs.weights[:2]))
        assert ours.weights[2] == theirs.weights[2]
    plain, from_node, from_core, from_pack = (sample(m, clip) for m in (model, tuned, core, pack))
    assert torch.equal(from_node, from_core) and torch.equal(from_node, from_pack)
    assert not torch.equal(from_node, plain)
    assert torch.equal(sample(model, clip), plain)  # the loaded model is back to its own weights


def test_lora_for_another_base_model_is_refused(folders, trained, pack_nodes):
    from comfyui_searchpriors.nodes.vmc_nodes import LoadMotionLoRA, SaveMotionLoRA
    from comfyui_searchpriors.retrieval.errors import SearchPriorsError

    (_, motion_lora, _, _), _, _ = trained
    name = SaveMotionLoRA.execute(motion_lora=motion_lora, filename_prefix="motion/other").args[0]
    other = load(folders[0] / "vmc-b")[0]
    with pytest.raises(SearchPriorsError, match="trained on base model 'vmc-a'.*other values"):
        LoadMotionLoRA.execute(model=other, lora_name=name, strength=1.0)
    with pytest.raises(SearchPriorsError, match="relative path inside models/loras"):
        SaveMotionLoRA.execute(motion_lora=motion_lora, filename_prefix="../escape")


def test_cancel_mid_training_stops_cleanly(loaded, inputs):
    import comfy.model_management
    from comfyui_searchpriors.nodes.vmc_nodes import VMCTemporalLoRA

    model = loaded[0]
    before = {k: v.clone() for k, v in model.model_state_dict().items()}
    comfy.model_management.interrupt_current_processing(True)
    try:
        with pytest.raises(comfy.model_management.InterruptProcessingException):
            VMCTemporalLoRA.execute(model=model, keyframes=inputs[0], conditioning=inputs[1], steps=50, lr=1e-2,
                                    rank=4, targets="qkv+out", loss="eq10_pairs", seed=0,
                                    gradient_checkpointing=False)
    finally:
        comfy.model_management.interrupt_current_processing(False)
    unet = model.model.diffusion_model
    assert all(not m._forward_hooks for m in unet.modules())
    after = model.model_state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items())


def test_bad_inputs_say_what_to_do(loaded, inputs, monkeypatch):
    from comfyui_searchpriors.distill import vmc
    from comfyui_searchpriors.distill.vmc import VMCError
    from comfyui_searchpriors.nodes.vmc_nodes import VMCTemporalLoRA

    no_temporal = types.SimpleNamespace(model=types.SimpleNamespace(diffusion_model=torch.nn.Linear(2, 2)))
    with pytest.raises(VMCError, match="cannot tune this model.*ModelScope / ZeroScope.*Wan"):
        VMCTemporalLoRA.execute(model=no_temporal, keyframes=inputs[0], conditioning=inputs[1], steps=1)
    two = {"samples": inputs[0]["samples"][:2]}
    with pytest.raises(VMCError, match="at least 3 keyframes"):
        VMCTemporalLoRA.execute(model=loaded[0], keyframes=two, conditioning=inputs[1], steps=1)
    with pytest.raises(VMCError, match="conditioning is empty"):
        VMCTemporalLoRA.execute(model=loaded[0], keyframes=inputs[0], conditioning=[], steps=1)

    def out_of_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(vmc, "train_motion_adapters", out_of_memory)
    with pytest.raises(VMCError, match="Out of GPU memory.*4 keyframes of 64x64 \\(gradient_checkpointing 'outer'\\): set "
                                     "gradient_checkpointing to 'all'"):
        VMCTemporalLoRA.execute(model=loaded[0], keyframes=inputs[0], conditioning=inputs[1], steps=1,
                                targets="full_qkv", gradient_checkpointing="outer")
    with pytest.raises(VMCError, match=r"\(gradient_checkpointing 'all'\): use fewer"):
        VMCTemporalLoRA.execute(model=loaded[0], keyframes=inputs[0], conditioning=inputs[1], steps=1,
                                targets="full_qkv", gradient_checkpointing="all")
    with pytest.raises(VMCError, match="gradient_checkpointing 'some' is not one of all, outer, outermost, off, compiled"):
        VMCTemporalLoRA.execute(model=loaded[0], keyframes=inputs[0], conditioning=inputs[1], steps=1,
                                gradient_checkpointing="some")


def test_full_qkv_differences_load_in_core_and_nan_stops_with_a_report(loaded, inputs, nan_loss_from_call):
    import nodes as comfy_nodes
    from comfyui_searchpriors.nodes.vmc_nodes import SaveMotionLoRA, VMCTemporalLoRA

    model, clip, _ = loaded
    nan_loss_from_call(3)
    tuned, motion_lora, curve, report = VMCTemporalLoRA.execute(
        model=model, keyframes=inputs[0], conditioning=inputs[1], steps=10, lr=1e-3, rank=4, targets="full_qkv",
        loss="vmc_abs", seed=0, gradient_checkpointing="off").args[:4]
    assert "2 of 10 steps" in report and "STOPPED: loss became nan at step 3" in report
    assert motion_lora["metadata"]["searchpriors.steps_done"] == "2"
    assert all(k.endswith(".diff") for k in motion_lora["state_dict"])
    assert all(torch.isfinite(v).all() for v in motion_lora["state_dict"].values())
    name = SaveMotionLoRA.execute(motion_lora=motion_lora, filename_prefix="motion/full").args[0]
    core = comfy_nodes.LoraLoaderModelOnly().load_lora_model_only(model, name, 1.0)[0]
    assert set(core.patches) == set(tuned.patches)
    assert torch.equal(sample(tuned, clip), sample(core, clip))


def test_loss_falls_on_the_encoded_moving_square(loaded, inputs):
    import json

    from comfyui_searchpriors.nodes.vmc_nodes import VMCTemporalLoRA

    _, motion_lora, curve, report = VMCTemporalLoRA.execute(
        model=loaded[0], keyframes=inputs[0], conditioning=inputs[1], steps=30, lr=1e-2, rank=8, targets="qkv+out",
        loss="eq10_pairs", seed=1, gradient_checkpointing="all").args[:4]
    losses = json.loads(motion_lora["metadata"]["searchpriors.losses"])
    assert "30 of 30 steps" in report and len(losses) == 30
    assert sum(losses[-8:]) < 0.95 * sum(losses[:8]), losses
    assert curve.shape == (1, 256, 512, 3)


def test_saved_lora_mode_follows_the_umask_like_comfys_outputs(trained, folders):
    from comfyui_searchpriors.nodes.vmc_nodes import SaveMotionLoRA

    (_, motion_lora, _, _), _, _ = trained
    for umask, mode in ((0o022, 0o644), (0o077, 0o600), (0o002, 0o664)):
        old = os.umask(umask)
        try:
            name = SaveMotionLoRA.execute(motion_lora=motion_lora, filename_prefix="motion/mode").args[0]
        finally:
            os.umask(old)
        assert stat.S_IMODE(os.stat(folders[1] / name).st_mode) == mode, oct(umask)


def test_save_and_load_errors_name_the_input(trained, folders, loaded):
    import safetensors.torch

    from comfyui_searchpriors.nodes.vmc_nodes import LoadMotionLoRA, SaveMotionLoRA
    from comfyui_searchpriors.retrieval.errors import SearchPriorsError

    (_, motion_lora, _, _), _, _ = trained
    with pytest.raises(SearchPriorsError, match=r"filename_prefix has a name of 300 bytes .* at most 236\. Shorten"):
        SaveMotionLoRA.execute(motion_lora=motion_lora, filename_prefix="motion/" + "x" * 300)
    with pytest.raises(SearchPriorsError, match="filename_prefix contains a NUL character"):
        SaveMotionLoRA.execute(motion_lora=motion_lora, filename_prefix="motion/a\x00b")
    assert not list((folders[1] / "motion").glob("x" * 20 + "*"))

    broken = dict(motion_lora["metadata"], **{"searchpriors.base_fingerprint": "{not json"})
    safetensors.torch.save_file({k: v.contiguous() for k, v in motion_lora["state_dict"].items()},
                                str(folders[1] / "broken_meta.safetensors"), metadata=broken)
    with pytest.raises(SearchPriorsError, match="'broken_meta.safetensors' has damaged metadata .* Save it again"):
        LoadMotionLoRA.execute(model=loaded[0], lora_name="broken_meta.safetensors", strength=1.0)
    (folders[1] / "not_a_lora.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(SearchPriorsError, match="'not_a_lora.safetensors' could not be read as a LoRA file"):
        LoadMotionLoRA.execute(model=loaded[0], lora_name="not_a_lora.safetensors", strength=1.0)


@pytest.mark.parametrize("lr", [float("nan"), float("inf"), 0.0, 2.0])
def test_vmc_lr_out_of_range_never_reaches_the_optimizer(loaded, inputs, lr):
    from comfyui_searchpriors.nodes.vmc_nodes import VMCTemporalLoRA
    from comfyui_searchpriors.retrieval.errors import SearchPriorsError

    with pytest.raises(SearchPriorsError, match=f"VMC Temporal LoRA.*: lr is {lr:g}"):
        VMCTemporalLoRA.execute(model=loaded[0], keyframes=inputs[0], conditioning=inputs[1], steps=1, lr=lr)
