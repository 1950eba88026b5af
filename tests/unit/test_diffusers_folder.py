"""Reading and validating ModelScope/ZeroScope diffusers folders; the DDIM sigmas; the synthetic tokenizer."""

from __future__ import annotations

import json
import math
import os

import pytest
import torch

from comfyui_searchpriors.distill import diffusers_folder as df
from comfyui_searchpriors.distill import synthetic_t2v as st

UNET = {"_class_name": "UNet3DConditionModel", "block_out_channels": [32, 64]}
VAE = {"_class_name": "AutoencoderKL", "block_out_channels": [32, 32, 32, 32], "scaling_factor": 0.18215}
TEXT = {"architectures": ["CLIPTextModel"], "hidden_size": 32}
INDEX = {"_class_name": "TextToVideoSDPipeline", "scheduler": ["diffusers", "DDIMScheduler"],
         "text_encoder": ["transformers", "CLIPTextModel"], "tokenizer": ["transformers", "CLIPTokenizer"],
         "unet": ["diffusers", "UNet3DConditionModel"], "vae": ["diffusers", "AutoencoderKL"]}


def write_json(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(data, f)


@pytest.fixture
def config_folder(tmp_path):
    """A folder with every config and tokenizer file, and empty weight files (validation reads no weights)."""
    root = tmp_path / "t2v"
    write_json(root / "model_index.json", INDEX)
    write_json(root / "unet" / "config.json", UNET)
    write_json(root / "vae" / "config.json", VAE)
    write_json(root / "text_encoder" / "config.json", TEXT)
    write_json(root / "scheduler" / "scheduler_config.json", st.SCHEDULER_CONFIG)
    st.write_clip_tokenizer(str(root / "tokenizer"), 600)
    for rel in ("unet/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.fp16.safetensors",
                "text_encoder/pytorch_model.bin"):
        (root / rel).write_bytes(b"")
    return root


def test_valid_folder_is_read(config_folder):
    folder = df.inspect_folder(str(config_folder))
    assert folder.name == "t2v"
    assert folder.prediction_type == "epsilon" and folder.latent_scale == pytest.approx(0.18215)
    assert folder.vae_downscale == 8
    assert [os.path.basename(p) for p in folder.weight_files["vae"]] == ["diffusion_pytorch_model.fp16.safetensors"]
    assert [os.path.basename(p) for p in folder.weight_files["text_encoder"]] == ["pytorch_model.bin"]
    assert df.list_t2v_folders([str(config_folder.parent), "/nonexistent"]) == ["t2v"]


def test_sharded_weights_are_listed_and_missing_shards_named(config_folder):
    unet = config_folder / "unet"
    os.remove(unet / "diffusion_pytorch_model.safetensors")
    write_json(unet / "diffusion_pytorch_model.safetensors.index.json",
               {"weight_map": {"a": "part-2.safetensors", "b": "part-1.safetensors"}})
    (unet / "part-1.safetensors").write_bytes(b"")
    with pytest.raises(df.DiffusersFolderError, match="part-2.safetensors"):
        df.inspect_folder(str(config_folder))
    (unet / "part-2.safetensors").write_bytes(b"")
    files = df.inspect_folder(str(config_folder)).weight_files["unet"]
    assert [os.path.basename(p) for p in files] == ["part-1.safetensors", "part-2.safetensors"]


@pytest.mark.parametrize("component", ["unet", "vae", "text_encoder", "tokenizer", "scheduler"])
def test_missing_component_is_named(config_folder, component):
    import shutil

    shutil.rmtree(config_folder / component)
    with pytest.raises(df.DiffusersFolderError, match=rf"missing component folder\(s\) {component}/") as err:
        df.inspect_folder(str(config_folder))
    assert "unet/, vae/, text_encoder/, tokenizer/ and scheduler/" in str(err.value)


def test_missing_weights_and_tokenizer_files_are_named(config_folder):
    os.remove(config_folder / "vae" / "diffusion_pytorch_model.fp16.safetensors")
    with pytest.raises(df.DiffusersFolderError, match=r"'t2v/vae' has no weights"):
        df.inspect_folder(str(config_folder))
    assert df.inspect_folder(str(config_folder), check_weights=False).weight_files == {}
    os.remove(config_folder / "tokenizer" / "merges.txt")
    with pytest.raises(df.DiffusersFolderError, match="vocab.json and merges.txt"):
        df.inspect_folder(str(config_folder), check_weights=False)


@pytest.mark.parametrize("path,key,value,named", [
    ("model_index.json", "_class_name", "StableDiffusionPipeline", "StableDiffusionPipeline"),
    ("unet/config.json", "_class_name", "UNet2DConditionModel", "unet is a UNet2DConditionModel"),
    ("vae/config.json", "_class_name", "AutoencoderKLTemporalDecoder", "vae is a AutoencoderKLTemporalDecoder"),
    ("text_encoder/config.json", "architectures", ["T5EncoderModel"], "text_encoder is a T5EncoderModel"),
    ("scheduler/scheduler_config.json", "prediction_type", "sample", "prediction_type 'sample'"),
    ("scheduler/scheduler_config.json", "beta_schedule", "sigmoid", "beta_schedule 'sigmoid'"),
])
def test_unknown_architecture_is_named_with_the_supported_models(config_folder, path, key, value, named):
    data = json.loads((config_folder / path).read_text())
    data[key] = value
    write_json(config_folder / path, data)
    with pytest.raises(df.DiffusersFolderError) as err:
        df.inspect_folder(str(config_folder))
    assert named in str(err.value) and "ModelScope" in str(err.value) and "ZeroScope" in str(err.value)


def test_not_a_diffusers_folder(tmp_path):
    with pytest.raises(df.DiffusersFolderError, match="does not exist"):
        df.inspect_folder(str(tmp_path / "nope"))
    with pytest.raises(df.DiffusersFolderError, match="no model_index.json"):
        df.inspect_folder(str(tmp_path))
    (tmp_path / "model_index.json").write_text("{not json")
    with pytest.raises(df.DiffusersFolderError, match="cannot be read"):
        df.inspect_folder(str(tmp_path))
    assert not df.looks_like_t2v_folder(str(tmp_path))


def test_state_dict_reading_in_dtypes(tmp_path):
    import safetensors.torch

    state = {"w": torch.randn(3, 3), "step": torch.tensor([7])}
    safetensors.torch.save_file(state, str(tmp_path / "a.safetensors"))
    torch.save({"v": torch.ones(2, dtype=torch.float16)}, str(tmp_path / "b.bin"))
    files = [str(tmp_path / "a.safetensors"), str(tmp_path / "b.bin")]
    auto = df.read_state_dict(files)
    assert auto["w"].dtype == torch.float32 and auto["v"].dtype == torch.float16
    bf16 = df.read_state_dict(files, "bf16")
    assert bf16["w"].dtype == bf16["v"].dtype == torch.bfloat16 and bf16["step"].dtype == torch.int64
    assert df.resolve_dtype("auto", torch.float16) == torch.float16
    with pytest.raises(df.DiffusersFolderError, match="dtype 'fp8'"):
        df.resolve_dtype("fp8")


def test_ddim_sigmas_match_a_literal_ddim_schedule():
    sigmas, timesteps = df.ddim_sigmas(st.SCHEDULER_CONFIG, 10)
    assert timesteps == [901, 801, 701, 601, 501, 401, 301, 201, 101, 1]  # "leading" spacing, steps_offset 1
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
    alphas_cumprod = torch.cumprod(1 - betas, 0)
    expected = [math.sqrt((1 - alphas_cumprod[t]) / alphas_cumprod[t]) for t in timesteps]
    expected.append(math.sqrt((1 - alphas_cumprod[0]) / alphas_cumprod[0]))  # set_alpha_to_one false
    # diffusers computes in float32 (so does the node: its sigmas must hit ComfyUI's table exactly)
    assert torch.allclose(sigmas.double(), torch.tensor(expected, dtype=torch.float64), rtol=2e-4)
    to_one, _ = df.ddim_sigmas({**st.SCHEDULER_CONFIG, "set_alpha_to_one": True}, 10)
    assert float(to_one[-1]) == 0.0
    with pytest.raises(df.DiffusersFolderError, match="at least 1"):
        df.ddim_sigmas(st.SCHEDULER_CONFIG, 0)


def test_synthetic_tokenizer_is_a_working_clip_tokenizer(tmp_path):
    from transformers import CLIPTokenizer

    st.write_clip_tokenizer(str(tmp_path), 49408)
    tokenizer = CLIPTokenizer.from_pretrained(str(tmp_path))
    assert len(tokenizer) == 49408 and tokenizer.model_max_length == 77
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id) == (49406, 49407, 0)
    ids = tokenizer("A Dog catches the frisbee!", padding="max_length", max_length=77).input_ids
    assert len(ids) == 77 and ids[0] == 49406 and max(ids) < 49408
    assert tokenizer.decode(ids, skip_special_tokens=True).replace("!", "").strip() == "a dog catches the frisbee"


def test_zeroscope_size_has_the_published_parameter_counts():
    from diffusers import AutoencoderKL, UNet3DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    spec = st.SIZES["zeroscope"]
    with torch.device("meta"):
        unet = UNet3DConditionModel(**spec["unet"])
        vae = AutoencoderKL(**spec["vae"])
        text = CLIPTextModel(CLIPTextConfig(vocab_size=49408, **spec["text_encoder"]))
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert round(count(unet) / 1e6) == 1411  # zeroscope_v2_576w unet: 1.41 B
    assert round(count(text) / 1e6) == 340   # OpenCLIP-H text tower without its last layer
    assert round(count(vae) / 1e6) == 84     # SD VAE


def test_folder_writer_is_atomic_and_never_overwrites_silently(tmp_path, monkeypatch):
    target = tmp_path / "models" / "t2v"

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(st, "build_components", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        st.write_t2v_folder(str(target))
    assert os.listdir(tmp_path / "models") == []  # no folder, no temporary left behind
    target.mkdir()
    with pytest.raises(FileExistsError, match="overwrite"):
        st.write_t2v_folder(str(target))
    assert st.main(["--size", "tiny", "--out", str(target)]) == 2


def test_quick_dtype_answers_as_diffusers_without_walking_the_model(tmp_path, monkeypatch):
    """load_unet's UNet gives diffusers' own dtype from its first parameter (diffusers' walk over every submodule
    cost ~28 ms of host time per ComfyUI model call at ZeroScope size); class name, isinstance and keys unchanged."""
    import diffusers.models.modeling_utils as mu
    from diffusers import UNet3DConditionModel

    st.write_t2v_folder(str(tmp_path / "tiny"), "tiny", "fp32")
    folder = df.inspect_folder(str(tmp_path / "tiny"))
    for dtype, expected in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        unet = df.load_unet(folder, dtype)
        assert isinstance(unet, UNet3DConditionModel) and isinstance(unet, df.QuickDtype)
        assert type(unet).__name__ == "UNet3DConditionModel" and type(unet).__mro__[2] is UNet3DConditionModel
        assert unet.dtype == expected == mu.get_parameter_dtype(unet)
        keys = list(unet.state_dict())
        assert df.with_quick_dtype(unet) is unet and type(df.with_quick_dtype(unet)) is type(unet)  # idempotent
        assert list(unet.state_dict()) == keys
    plain = UNet3DConditionModel(**st.SIZES["tiny"]["unet"])
    quick = df.with_quick_dtype(UNet3DConditionModel(**st.SIZES["tiny"]["unet"]).to(torch.bfloat16))
    assert type(quick) is type(unet)  # one subclass per class
    walks = []
    monkeypatch.setattr(mu, "get_parameter_dtype", lambda module: walks.append(module) or torch.float16)
    assert quick.dtype == torch.bfloat16 and not walks  # no walk
    assert plain.dtype == torch.float16 and walks == [plain]  # diffusers' own property does walk
    # a module whose first parameters are kept in float32 answers with the first one that is not
    quick._keep_in_fp32_modules = ["conv_in"]
    quick.conv_in.float()
    assert quick.dtype == torch.bfloat16
