"""Complete ModelScope/ZeroScope-family diffusers folders with random weights, written without any download.

Two sizes: ``tiny`` (CI: a few hundred thousand parameters, runs on a CPU in milliseconds) and ``zeroscope``
(the real zeroscope_v2_576w configs: UNet3D 320/640/1280/1280 with cross-attention width 1024, the
OpenCLIP-H text encoder of 23 layers at width 1024, the SD VAE) for GPU benchmarks, where cost and memory do
not depend on the weights' values. The CLIP tokenizer is built in code: byte-level BPE with the real special
tokens and a synthetic merge table that fills the vocabulary to the wanted size (49408 for ZeroScope); it
is a working CLIPTokenizer, not OpenAI's vocabulary.

Weights are filled from one seeded generator (normal, std 1/sqrt(fan_in); norm scales 1) on modules built
on the meta device, so writing the full size takes seconds, not the minutes of the libraries' own init.
The folder is written to a temporary sibling and renamed into place: never half-written.

This module imports only torch, safetensors, diffusers and transformers (no relative import), so
scripts/make_t2v_folder.py can load it by path.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import string
import tempfile

import torch

SCHEDULER_CONFIG = {  # ModelScope's DDIM settings (text-to-video-ms-1.7b / zeroscope_v2_576w scheduler/)
    "_class_name": "DDIMScheduler",
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "clip_sample": False,
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "trained_betas": None,
}

SIZES = {
    "tiny": {
        "vocab_size": 49408,  # ComfyUI's CLIP text model has a fixed 49408-token embedding
        "unet": {
            "sample_size": 8, "in_channels": 4, "out_channels": 4, "layers_per_block": 1,
            "down_block_types": ["CrossAttnDownBlock3D", "DownBlock3D"],
            "up_block_types": ["UpBlock3D", "CrossAttnUpBlock3D"],
            "block_out_channels": [32, 64], "norm_num_groups": 32, "cross_attention_dim": 32,
            "attention_head_dim": 8,
        },
        "text_encoder": {
            "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
            "hidden_act": "gelu", "max_position_embeddings": 77, "projection_dim": 32,
        },
        "vae": {
            "in_channels": 3, "out_channels": 3, "latent_channels": 4, "layers_per_block": 1,
            "down_block_types": ["DownEncoderBlock2D"] * 4, "up_block_types": ["UpDecoderBlock2D"] * 4,
            "block_out_channels": [32, 32, 32, 32], "norm_num_groups": 32, "sample_size": 64,
            "scaling_factor": 0.18215,
        },
    },
    "toy": {  # the toy world's trained model (scripts/train_toy_world.py): 64x64 px, 8 frames, ~9.8 M parameters
        "vocab_size": 49408,
        "unet": {
            "sample_size": 8, "in_channels": 4, "out_channels": 4, "layers_per_block": 1,
            "down_block_types": ["CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "DownBlock3D"],
            "up_block_types": ["UpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D"],
            "block_out_channels": [48, 96, 96], "norm_num_groups": 16, "cross_attention_dim": 64,
            "attention_head_dim": 4,
        },
        "text_encoder": {
            "hidden_size": 64, "intermediate_size": 256, "num_hidden_layers": 2, "num_attention_heads": 4,
            "hidden_act": "quick_gelu", "max_position_embeddings": 77, "projection_dim": 64,
        },
        "vae": {  # SD-style: 4 levels (8x down), ComfyUI's VAE needs channel multiples of 32
            "in_channels": 3, "out_channels": 3, "latent_channels": 4, "layers_per_block": 1,
            "down_block_types": ["DownEncoderBlock2D"] * 4, "up_block_types": ["UpDecoderBlock2D"] * 4,
            "block_out_channels": [32, 64, 64, 64], "norm_num_groups": 32, "sample_size": 64,
            "scaling_factor": 0.18215,   # replaced by the trained latents' 1 / std when exported
        },
    },
    "zeroscope": {
        "vocab_size": 49408,
        "unet": {
            "sample_size": 32, "in_channels": 4, "out_channels": 4, "layers_per_block": 2, "act_fn": "silu",
            "down_block_types": ["CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "DownBlock3D"],
            "up_block_types": ["UpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D"],
            "block_out_channels": [320, 640, 1280, 1280], "norm_num_groups": 32, "norm_eps": 1e-05,
            "cross_attention_dim": 1024, "attention_head_dim": 64, "downsample_padding": 1,
            "mid_block_scale_factor": 1,
        },
        "text_encoder": {  # OpenCLIP ViT-H text tower as ModelScope ships it (23 layers: the last one dropped)
            "hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 23, "num_attention_heads": 16,
            "hidden_act": "gelu", "max_position_embeddings": 77, "projection_dim": 512,
            "bos_token_id": 0, "eos_token_id": 2, "pad_token_id": 1,  # as in the published config.json
        },
        "vae": {  # the Stable Diffusion VAE
            "in_channels": 3, "out_channels": 3, "latent_channels": 4, "layers_per_block": 2, "act_fn": "silu",
            "down_block_types": ["DownEncoderBlock2D"] * 4, "up_block_types": ["UpDecoderBlock2D"] * 4,
            "block_out_channels": [128, 256, 512, 512], "norm_num_groups": 32, "sample_size": 512,
            "scaling_factor": 0.18215,
        },
    },
}
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


# ---------------------------------------------------------------- tokenizer
def _bytes_to_unicode() -> dict[int, str]:
    """The byte -> printable character table of byte-level BPE (GPT-2 / CLIP)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in chars)))


def _synthetic_merges(count: int) -> list[tuple[str, str]]:
    """``count`` valid BPE merges over lowercase letters: letter pairs first, then pairs of those pairs."""
    letters = string.ascii_lowercase
    merges: list[tuple[str, str]] = []
    for a in letters:
        for b in letters:
            merges.append((a, b))
            merges.append((a, b + "</w>"))
    pairs = [a + b for a in letters for b in letters]
    if len(merges) < count:
        for left in pairs:
            for right in pairs:
                merges.append((left, right))
                merges.append((left, right + "</w>"))
                if len(merges) >= count:
                    break
            if len(merges) >= count:
                break
    return merges[:count]


def write_clip_tokenizer(folder: str, vocab_size: int, pad_token: str = "!", max_length: int = 77) -> None:
    """A CLIPTokenizer folder (vocab.json, merges.txt, configs) with exactly ``vocab_size`` tokens.

    As in CLIP: 256 byte symbols, the same with '</w>', the merges, then <|startoftext|> and <|endoftext|>
    as the last two ids. ``pad_token`` '!' (id 0) is what ModelScope's tokenizer pads with.
    """
    base = list(_bytes_to_unicode().values())
    vocab_list = base + [c + "</w>" for c in base]
    n_merges = vocab_size - len(vocab_list) - 2
    if n_merges < 0:
        raise ValueError(f"vocab_size must be at least {len(vocab_list) + 2}")
    merges = _synthetic_merges(n_merges)
    vocab_list += ["".join(m) for m in merges] + ["<|startoftext|>", "<|endoftext|>"]
    vocab = {tok: i for i, tok in enumerate(vocab_list)}
    assert len(vocab) == vocab_size, "synthetic merges must not repeat a token"
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump(vocab, f, ensure_ascii=False)
    with open(os.path.join(folder, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    special = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
               "pad_token": pad_token}
    with open(os.path.join(folder, "special_tokens_map.json"), "w", encoding="utf-8") as f:
        json.dump(special, f, indent=2)
    with open(os.path.join(folder, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump({**special, "tokenizer_class": "CLIPTokenizer", "model_max_length": max_length,
                   "do_lower_case": True, "errors": "replace", "add_prefix_space": False}, f, indent=2)


# ---------------------------------------------------------------- weights
def _fill_random_(module: torch.nn.Module, generator: torch.Generator) -> None:
    """Seeded random values for every parameter: std 1/sqrt(fan_in); norm scales 1, norm shifts 0."""
    for name, param in module.named_parameters():
        data = param.data
        if data.ndim >= 2:
            fan_in = math.prod(data.shape[1:])
            data.normal_(0.0, 1.0 / math.sqrt(fan_in), generator=generator)
        elif "norm" in name:
            data.fill_(1.0 if name.endswith("weight") else 0.0)
        else:
            data.normal_(0.0, 0.02, generator=generator)


def _materialize(module: torch.nn.Module, dtype: torch.dtype, generator: torch.Generator) -> torch.nn.Module:
    # cast while still on meta (free), then allocate once in the target dtype; the libraries' .to() warns
    module = torch.nn.Module.to(module, dtype).to_empty(device="cpu")
    _fill_random_(module, generator)
    for name, buf in module.named_buffers():
        if name.endswith("position_ids"):
            buf.copy_(torch.arange(buf.shape[-1]).expand_as(buf))
        else:
            raise RuntimeError(f"unexpected buffer {name}: add its initial value here")
    return module.eval()


def build_components(size: str = "tiny", dtype: torch.dtype = torch.float32, seed: int = 0, tokenizer_dir=None):
    """(unet, vae, text_encoder, text_encoder_config) as random-weight diffusers/transformers modules."""
    from diffusers import AutoencoderKL, UNet3DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    spec = SIZES[size]
    generator = torch.Generator().manual_seed(seed)
    with torch.device("meta"):
        unet = UNet3DConditionModel(**spec["unet"])
        vae = AutoencoderKL(**spec["vae"])
    te = {"vocab_size": spec["vocab_size"], "bos_token_id": spec["vocab_size"] - 2,
          "eos_token_id": spec["vocab_size"] - 1, "pad_token_id": 0, **spec["text_encoder"]}
    te_config = CLIPTextConfig(**te)
    te_config.architectures = ["CLIPTextModel"]
    with torch.device("meta"):
        text_encoder = CLIPTextModel(te_config)
    return (_materialize(unet, dtype, generator), _materialize(vae, dtype, generator),
            _materialize(text_encoder, dtype, generator), te_config)


def _save_text_encoder(text_encoder, folder: str) -> None:
    """config.json + model.safetensors with the published checkpoints' 'text_model.' key prefix."""
    import safetensors.torch

    os.makedirs(folder, exist_ok=True)
    text_encoder.config.save_pretrained(folder)
    state = {(k if k.startswith("text_model.") else f"text_model.{k}"): v.contiguous()
             for k, v in text_encoder.state_dict().items() if not k.endswith("position_ids")}
    safetensors.torch.save_file(state, os.path.join(folder, "model.safetensors"), metadata={"format": "pt"})


def write_t2v_folder(out: str, size: str = "tiny", dtype: str = "fp32", seed: int = 0, pad_token: str = "!",
                     overwrite: bool = False) -> str:
    """Write a complete TextToVideoSDPipeline folder at ``out`` (atomically). Returns ``out``."""

    if size not in SIZES:
        raise ValueError(f"size must be one of {', '.join(SIZES)}")
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}")
    out = os.path.abspath(out)
    if os.path.exists(out) and not overwrite:
        raise FileExistsError(f"{out} exists; pass overwrite=True (--overwrite) to replace it")
    parent = os.path.dirname(out)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.", dir=parent)
    try:
        unet, vae, text_encoder, _ = build_components(size, DTYPES[dtype], seed)
        unet.save_pretrained(os.path.join(tmp, "unet"), safe_serialization=True)
        vae.save_pretrained(os.path.join(tmp, "vae"), safe_serialization=True)
        _save_text_encoder(text_encoder, os.path.join(tmp, "text_encoder"))
        write_clip_tokenizer(os.path.join(tmp, "tokenizer"), SIZES[size]["vocab_size"], pad_token=pad_token)
        write_pipeline_files(tmp)
        publish_folder(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def write_pipeline_files(folder: str) -> None:
    """scheduler/ (ModelScope's DDIM) and model_index.json of a TextToVideoSDPipeline folder."""
    import diffusers
    from diffusers import DDIMScheduler

    DDIMScheduler.from_config({k: v for k, v in SCHEDULER_CONFIG.items() if not k.startswith("_")}) \
        .save_pretrained(os.path.join(folder, "scheduler"))
    model_index = {
        "_class_name": "TextToVideoSDPipeline", "_diffusers_version": diffusers.__version__,
        "scheduler": ["diffusers", "DDIMScheduler"], "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"], "unet": ["diffusers", "UNet3DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }
    with open(os.path.join(folder, "model_index.json"), "w", encoding="utf-8") as f:
        json.dump(model_index, f, indent=2)


def publish_folder(tmp: str, out: str) -> None:
    """Move the finished ``tmp`` to ``out``, replacing an existing ``out`` without a moment of neither."""
    os.chmod(tmp, 0o755)
    if os.path.exists(out):
        trash = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.old.", dir=os.path.dirname(out))
        os.replace(out, os.path.join(trash, "old"))
        os.replace(tmp, out)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(tmp, out)


def main(argv=None) -> int:
    import argparse
    import time

    parser = argparse.ArgumentParser(description="Write a ModelScope/ZeroScope-family diffusers folder with random "
                                                 "weights (no download).")
    parser.add_argument("--size", choices=sorted(SIZES), default="tiny")
    parser.add_argument("--out", required=True, help="folder to create, e.g. ComfyUI/models/diffusers/zeroscope-random")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default=None,
                        help="weight dtype on disk (default: fp32 for tiny, fp16 for zeroscope)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true", help="replace an existing folder")
    args = parser.parse_args(argv)
    dtype = args.dtype or ("fp32" if args.size == "tiny" else "fp16")
    start = time.perf_counter()
    try:
        path = write_t2v_folder(args.out, args.size, dtype, args.seed, overwrite=args.overwrite)
    except (FileExistsError, ValueError) as exc:
        print(f"error: {exc}")
        return 2
    print(f"wrote {args.size} ({dtype}) to {path} in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
