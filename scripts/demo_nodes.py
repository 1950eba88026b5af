"""Demo-only ComfyUI nodes for `make serve` (never part of the pack: a ComfyUI you install the pack into does not
load this file). scripts/comfy_server.py's install_demo_nodes copies it into the serve base directory's
custom_nodes/searchpriors_demo/ (and into the test servers'), so that the demo variants of the DiT workflows
(toy_world_pos_wan21, demo_random_pos_ltxv, ...) run at demo size on a CPU.

Why they exist: ComfyUI builds the DiT workflows' text encoders from fixed configs at full size whatever the
file holds (umT5-XXL for Wan: 5.7 B parameters; T5-XXL for LTX-Video: 4.8 B; Qwen2.5-VL 7B for HunyuanVideo 1.5),
and the HunyuanVideo 1.5 VAE at fixed widths (1.26 B parameters), so no demo-size file can go through core
CLIPLoader, DualCLIPLoader or VAELoader for those. Two stand-ins with the inputs that matter:

- ``SearchPriorsDemo_ToyTextEncoderLoader`` (Demo text encoder): the toy world's text encoder, the CLIP text
  model of the ModelScope toy (models/diffusers/searchpriors-toy-t2v/text_encoder, 64 wide), its last hidden
  states of 77 tokens zero-padded to the width the video model takes: 4096 for ``wan`` and ``ltxv``, 3584 for
  ``hunyuan_video_15``. The Wan toy (sample_data/models/searchpriors-toy-wan) was trained on exactly these
  states, so its videos follow the prompt; the random HunyuanVideo 1.5 and LTX-Video demo models only need
  the shape.
- ``SearchPriorsDemo_VAELoader`` (Load VAE, demo size): core VAELoader, except that a HunyuanVideo 1.5 VAE is
  built at the block widths its file holds.

Core CLIPTextEncode and everything else in those workflows run as shipped.
"""

import contextlib
import functools
import os

import torch

TOY_TEXT_FOLDER = "searchpriors-toy-t2v"   # under models/diffusers (make serve links sample_data's there)
TEXT_WIDTHS = {"wan": 4096, "ltxv": 4096, "hunyuan_video_15": 3584}
HUNYUAN15_VAE_WIDTHS = [128, 256, 512, 1024, 1024]   # what comfy/sd.py builds
HUNYUAN15_LATENT_CHANNELS = 32


def _toy_text_folder() -> str:
    import folder_paths

    for root in folder_paths.get_folder_paths("diffusers"):
        folder = os.path.join(root, TOY_TEXT_FOLDER)
        if os.path.isfile(os.path.join(folder, "text_encoder", "config.json")):
            return folder
    raise FileNotFoundError(
        f"Demo text encoder: no {TOY_TEXT_FOLDER}/text_encoder in models/diffusers; `make serve` links "
        f"sample_data/models/{TOY_TEXT_FOLDER} there (restart it, or link the folder yourself)")


@functools.lru_cache(maxsize=2)
def _load_toy_text(folder: str):
    from transformers import CLIPTextModel, CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(os.path.join(folder, "tokenizer"))
    model = CLIPTextModel.from_pretrained(os.path.join(folder, "text_encoder")).float().eval()
    return tokenizer, model


class ToyTextEncoder:
    """A CLIP as CLIPTextEncode uses it (tokenize, encode_from_tokens_scheduled): the toy CLIP's states, padded."""

    def __init__(self, folder: str, kind: str):
        self.folder, self.kind, self.width = folder, kind, TEXT_WIDTHS[kind]

    def tokenize(self, text, **_):
        return str(text)

    def encode_from_tokens_scheduled(self, tokens, **_):
        tokenizer, model = _load_toy_text(self.folder)
        ids = tokenizer([tokens], padding="max_length", max_length=77, truncation=True, return_tensors="pt")
        with torch.no_grad():
            states = model(ids.input_ids)[0].float()
        cond = torch.nn.functional.pad(states, (0, self.width - states.shape[-1]))
        extra = {"pooled_output": None}
        if self.kind == "ltxv":   # LTX-Video's model takes T5's attention mask (all 77 positions count here)
            extra["attention_mask"] = torch.ones(cond.shape[:2], dtype=torch.long)
        return [[cond, extra]]


class SearchPriorsDemo_ToyTextEncoderLoader:
    DESCRIPTION = ("make serve's demo only: the toy world's text encoder (the ModelScope toy's CLIP, 64 wide) "
                   "zero-padded to the width of umT5-XXL / T5-XXL (4096) or Qwen2.5-VL 7B (3584), standing in "
                   "for a text encoder ComfyUI can only build at full size. Real workflows use Load CLIP.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"type": (list(TEXT_WIDTHS), {"default": "wan",
                                                          "tooltip": "the video model's text encoder family"})}}

    RETURN_TYPES = ("CLIP",)
    FUNCTION = "load"
    CATEGORY = "SearchPriors/demo (make serve only)"

    def load(self, type):
        if type not in TEXT_WIDTHS:
            raise ValueError(f"Demo text encoder: type must be one of {', '.join(TEXT_WIDTHS)}, not {type!r}")
        return (ToyTextEncoder(_toy_text_folder(), type),)


def _hunyuan15_vae_widths(path: str):
    """The block widths of the HunyuanVideo 1.5 VAE in the safetensors file at ``path`` (None if it is not one)."""
    import safetensors

    with safetensors.safe_open(path, framework="pt") as f:
        keys = set(f.keys())
        if "decoder.conv_in.conv.weight" not in keys:
            return None
        if f.get_slice("decoder.conv_in.conv.weight").get_shape()[1] != HUNYUAN15_LATENT_CHANNELS:
            return None
        widths, i = [], 0
        while f"encoder.down.{i}.block.0.conv1.conv.weight" in keys:
            widths.append(f.get_slice(f"encoder.down.{i}.block.0.conv1.conv.weight").get_shape()[0])
            i += 1
    return widths


@contextlib.contextmanager
def _vae_widths(widths):
    """comfy.sd.VAE builds the HunyuanVideo 1.5 VAE's encoder and decoder at ``widths`` inside (it looks the classes
    up by name in comfy.ldm.hunyuan_video.vae_refiner when it builds one)."""
    import comfy.ldm.hunyuan_video.vae_refiner as refiner

    encoder, decoder = refiner.Encoder, refiner.Decoder

    def at(cls):
        @functools.wraps(cls)
        def build(**params):
            return cls(**{**params, "block_out_channels": list(widths)})
        return build

    refiner.Encoder, refiner.Decoder = at(encoder), at(decoder)
    try:
        yield
    finally:
        refiner.Encoder, refiner.Decoder = encoder, decoder


class SearchPriorsDemo_VAELoader:
    DESCRIPTION = ("make serve's demo only: core Load VAE, except that a HunyuanVideo 1.5 VAE is built at the "
                   "block widths its file holds (ComfyUI builds it at full size, 1.26 B parameters, whatever "
                   "the file holds). Real workflows use Load VAE.")

    @classmethod
    def INPUT_TYPES(cls):
        import folder_paths

        return {"required": {"vae_name": (folder_paths.get_filename_list("vae"),)}}

    RETURN_TYPES = ("VAE",)
    FUNCTION = "load"
    CATEGORY = "SearchPriors/demo (make serve only)"

    def load(self, vae_name):
        import folder_paths

        import nodes

        path = folder_paths.get_full_path_or_raise("vae", vae_name)
        widths = _hunyuan15_vae_widths(path) if path.endswith(".safetensors") else None
        if not widths or widths == HUNYUAN15_VAE_WIDTHS:
            return nodes.VAELoader().load_vae(vae_name)
        with _vae_widths(widths):
            return nodes.VAELoader().load_vae(vae_name)


NODE_CLASS_MAPPINGS = {"SearchPriorsDemo_ToyTextEncoderLoader": SearchPriorsDemo_ToyTextEncoderLoader,
                       "SearchPriorsDemo_VAELoader": SearchPriorsDemo_VAELoader}
NODE_DISPLAY_NAME_MAPPINGS = {"SearchPriorsDemo_ToyTextEncoderLoader": "Demo text encoder (toy world; make serve only)",
                              "SearchPriorsDemo_VAELoader": "Load VAE (demo size; make serve only)"}
