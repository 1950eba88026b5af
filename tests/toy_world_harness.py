"""The toy world's generation harness, shared by benchmarks/bench_toy_world.py and the effect test.

It runs what the bundled workflows run, in-process on ComfyUI's own objects: the trained toy model through the
pack's ModelScope loader; base sampling (CFGGuider + ComfyUI's ddim over the pipeline's DDIM sigmas); POS
(VAE Encode of the reference, DDIM Video Invert with the empty prompt, Gaussian Noise Mix, the hybrid
guider); search-then-tune (VMC motion LoRA on the reference's latents with its caption, then sampling with
the tuned MODEL); retrieval through the pack's index (atomize, search, Reference Video Frames' decoder).
The probe (distill/toy_probe.py) reads what each video shows.

ComfyUI must be importable (``use_comfyui`` puts the set-up's copy on sys.path in CPU mode) and the pack
importable as ``comfyui_searchpriors``. Loaded by file path (tests/ is never on sys.path).
"""

from __future__ import annotations

import importlib.util
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TOY_MODEL = REPO / "sample_data" / "models" / "searchpriors-toy-t2v"
WORLD_LIBRARY = REPO / "sample_data" / "toy_world" / "library.csv"
OPPOSITE = {"left": "right", "right": "left", "up": "down", "down": "up", "up_right": "down_left",
            "down_left": "up_right", "circling": "growing", "growing": "circling"}


def comfyui_path() -> str:
    """Where ComfyUI is, resolved as the server harness does (COMFYUI_PATH, SEARCHPRIORS_COMFYUI, the cache)."""
    name = "searchpriors_comfy_server"   # the one copy tests/conftest.py and benchmarks/_common.py load
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / "comfy_server.py")
        sys.modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[name])
    return str(sys.modules[name].default_comfyui_dir())


def use_comfyui(cpu: bool = True) -> None:
    """ComfyUI importable; CPU mode unless ``cpu`` is False. Call before comfy.model_management is imported."""
    path = comfyui_path()
    if path not in sys.path:
        sys.path.insert(0, path)
    import comfy.cli_args

    if cpu:
        comfy.cli_args.args.cpu = True


@dataclass
class Generated:
    video: object          # torch.Tensor [F, H, W, 3] in 0..1
    seconds: float


class ToyPipeline:
    """The trained toy model as ComfyUI MODEL / CLIP / VAE and the pack's POS and VMC functions around it."""

    SAMPLER = "ddim"   # over the pipeline's DDIM sigmas

    def __init__(self, folder: str | os.PathLike = TOY_MODEL, steps: int = 20, cfg: float = 7.5, dtype: str = "fp32"):
        import torch

        from comfyui_searchpriors.nodes.comfy_internals.modelscope_model import load_modelscope_folder, modelscope_ddim_sigmas

        self.torch = torch
        self.model, self.clip, self.vae = load_modelscope_folder(str(folder), dtype=dtype)
        self.steps, self.cfg = steps, cfg
        self.sigmas = modelscope_ddim_sigmas(self.model, steps)
        self.negative = self.encode("")
        self.empty = torch.zeros(8, 4, 8, 8)
        self._inverted: dict[str, object] = {}

    def encode(self, text: str):
        return self.clip.encode_from_tokens_scheduled(self.clip.tokenize(text))

    def _sample(self, model, prompt: str, noise, rewritten: str | None = None, gamma: float = 0.0):
        import comfy.samplers

        from comfyui_searchpriors.nodes.comfy_internals.hybrid_guider import make_guider

        original = self.encode(prompt)
        guider = make_guider(model, self.encode(rewritten) if rewritten else original, original, self.negative,
                             self.cfg, gamma)
        out = guider.sample(noise, self.empty.clone(), comfy.samplers.sampler_object(self.SAMPLER), self.sigmas,
                            seed=0, disable_pbar=True)
        return self.decoded(out)

    def decoded(self, latent):
        return self.vae.decode(latent)

    def base(self, prompt: str, seed: int, model=None) -> Generated:
        from comfyui_searchpriors.nodes.comfy_internals.noise_objects import SeededRandomNoise

        t0 = time.perf_counter()
        noise = SeededRandomNoise(seed).generate_noise({"samples": self.empty})
        video = self._sample(model or self.model, prompt, noise)
        return Generated(video, time.perf_counter() - t0)

    def invert(self, reference, key: str | None = None):
        """DDIM Video Invert of a reference clip (IMAGE [F, H, W, 3]) with the empty prompt, cfg 1 (POS Eq. 2)."""
        from comfyui_searchpriors.nodes.comfy_internals.inversion_sampler import invert_latent

        if key is not None and key in self._inverted:
            return self._inverted[key]
        latent = self.vae.encode(reference[..., :3])
        noise = invert_latent(self.model, latent, self.negative, self.sigmas, refine_iterations=0, cfg=1.0).noise
        if key is not None:
            self._inverted[key] = noise
        return noise

    def pos(self, prompt: str, seed: int, inverted, eta: float, gamma: float = 0.0, rewritten: str | None = None,
            model=None) -> Generated:
        """POS: noise (eps + eta eps_inv) / sqrt(1 + eta^2) (Eq. 4), the hybrid switch at gamma (Eq. 8)."""
        from comfyui_searchpriors.nodes.comfy_internals.noise_objects import MixedInvertedNoise

        t0 = time.perf_counter()
        noise = MixedInvertedNoise(inverted, eta, seed=seed).generate_noise({"samples": self.empty})
        video = self._sample(model or self.model, prompt, noise, rewritten=rewritten, gamma=gamma)
        return Generated(video, time.perf_counter() - t0)

    def tune(self, reference, caption: str, loss: str = "vmc_abs", steps: int = 100, lr: float = 1e-3,
             rank: int = 8, seed: int = 0, targets: str = "qkv"):
        """VMC motion LoRA (Eq. 10) on the reference's latents with its caption: (tuned MODEL, losses, seconds)."""
        from comfyui_searchpriors.nodes.comfy_internals.motion_lora import encode_keyframes, train_motion_lora

        t0 = time.perf_counter()
        latent = {"samples": encode_keyframes(self.vae, reference[..., :3])}   # Encode Keyframes: the VAE's own count
        tuned, _lora, losses, stopped = train_motion_lora(self.model, latent, self.encode(caption), steps=steps,
                                                          lr=lr, rank=rank, targets=targets, loss=loss, seed=seed,
                                                          gradient_checkpointing="off", caption=caption)
        if stopped:
            raise RuntimeError(f"VMC stopped: {stopped}")
        return tuned, losses, time.perf_counter() - t0


TOY_WAN = REPO / "sample_data" / "models" / "searchpriors-toy-wan"
WAN_TEXT_WIDTH = 4096


class ToyWanPipeline(ToyPipeline):
    """The Wan-architecture toy (scripts/train_toy_world.py --family wan): ComfyUI's WanModel (loaded as core
    Load Diffusion Model does) and Wan 2.1 VAE class, sampled as ComfyUI samples Wan (flow, ModelSamplingSD3
    shift, euler over the 'simple' schedule, cfg); the toy CLIP's states zero-padded to Wan's text width.
    Videos are decoded at the model's size (128) and handed to the probe at the world's size (64)."""

    SAMPLER = "euler"

    def __init__(self, folder: str | os.PathLike = TOY_WAN, steps: int = 20, cfg: float = 5.0):
        import json

        import torch

        import comfy.sd
        import comfy.utils
        from comfy_extras.nodes_model_advanced import ModelSamplingSD3
        from transformers import CLIPTextModel, CLIPTokenizer

        folder = Path(folder)
        info = json.loads((folder / "TRAINING.json").read_text())
        self.torch, self.steps, self.cfg = torch, steps, cfg
        self.frames, self.size = int(info["frames"]), int(info["size"])
        base = comfy.sd.load_diffusion_model_state_dict(
            comfy.utils.load_torch_file(str(folder / "searchpriors_toy_wan_t2v.safetensors")),
            model_options={"dtype": torch.float32})
        self.model = ModelSamplingSD3().patch(base, float(info["shift"]))[0]
        self.vae = comfy.sd.VAE(sd=comfy.utils.load_torch_file(str(folder / "searchpriors_toy_wan_vae.safetensors")))
        self.tokenizer = CLIPTokenizer.from_pretrained(str(TOY_MODEL / "tokenizer"))
        self.text = CLIPTextModel.from_pretrained(str(TOY_MODEL / "text_encoder")).float().eval()
        sampling = self.model.get_model_object("model_sampling")
        import comfy.samplers

        self.sigmas = comfy.samplers.calculate_sigmas(sampling, "simple", steps).float()
        self.negative = self.encode("")
        latent_frames = (self.frames - 1) // 4 + 1
        self.empty = torch.zeros(1, 16, latent_frames, self.size // 8, self.size // 8)
        self._inverted = {}

    def encode(self, text: str):
        torch = self.torch
        ids = self.tokenizer([text], padding="max_length", max_length=77, truncation=True, return_tensors="pt")
        with torch.no_grad():
            states = self.text(ids.input_ids)[0].float()
        return [[torch.nn.functional.pad(states, (0, WAN_TEXT_WIDTH - states.shape[-1])), {}]]

    def decoded(self, latent):
        return to_world_size(self.vae.decode(latent)[0])

    def reference(self, shape: str, colour: str, motion: str, seed: int):
        """A clip of the world at this model's frames and size (IMAGE [F, H, W, 3])."""
        from comfyui_searchpriors.distill import toy_world as tw

        import random

        spec = tw.sample_spec(random.Random(f"toy-wan-ref/{seed}"), "library", frames=self.frames, size=self.size,
                              shape=shape, colour=colour, motion=motion)
        return tw.render([spec], frames=self.frames, size=self.size)[0]


def to_world_size(video):
    """[F, H, W, 3] at any size -> at the toy world's (the probe's calibration size), area-averaged."""
    import torch

    from comfyui_searchpriors.distill import toy_world as tw

    if video.shape[1] == tw.SIZE:
        return video
    small = torch.nn.functional.interpolate(video.permute(0, 3, 1, 2), size=(tw.SIZE, tw.SIZE), mode="area")
    return small.permute(0, 2, 3, 1)


class WorldRetriever:
    """The world's library through the pack's index: atomize the prompt, search, decode the top clip."""

    def __init__(self, index_dir: str | os.PathLike, library: str | os.PathLike = WORLD_LIBRARY):
        from comfyui_searchpriors.retrieval.index import build_index, load_index
        from comfyui_searchpriors.retrieval.library import read_library
        from comfyui_searchpriors.retrieval.models import load_sentence_model, load_spacy

        self.nlp = load_spacy("en_core_web_sm")
        self.sentence = load_sentence_model("all-MiniLM-L6-v2")
        entries, _ = read_library(str(library))
        build_index(str(index_dir), entries, self.nlp, self.sentence, parse_helper=False)
        self.index = load_index(str(index_dir))

    def search(self, prompt: str, mode: str = "pos", rank: int = 1, ranking: str = "paper"):
        """The ``rank``-th hit; search_t2v with the paper's ranking by default (bench_toy_world's numbers were
        measured with it)."""
        from comfyui_searchpriors.retrieval.embedding import atomize
        from comfyui_searchpriors.retrieval.search import SearchParams, search

        result = search(self.index, atomize(prompt, self.nlp, self.sentence),
                        SearchParams(mode=mode, top_k=rank, ranking=ranking))
        return result.hits[rank - 1]

    @staticmethod
    def frames(video_path: str):
        from comfyui_searchpriors.distill.video_frames import read_reference_frames

        return read_reference_frames(video_path, 8, 64, 64).frames


def world_clip(shape: str, colour: str, motion: str, seed: int):
    """A ground-truth clip of the world (IMAGE [F, H, W, 3]), for oracle references and controls."""
    from comfyui_searchpriors.distill import toy_world as tw

    spec = tw.sample_specs(1, seed, "library", shape=shape, colour=colour, motion=motion)[0]
    return tw.render([spec])[0], spec


def reference_colour(colour: str, k: int) -> str:
    """The colour of the k-th held-out prompt's reference clips: another colour than the prompt's."""
    from comfyui_searchpriors.distill import toy_world as tw

    return [c for c in tw.COLOURS if c != colour][k % (len(tw.COLOURS) - 1)]


def held_out_references(pipe, count: int):
    """(k, prompt, shape, colour, motion, reference, caption) for the toy world's first ``count`` held-out prompts:
    the reference is a clip of the prompt's motion at ``pipe``'s size in ``reference_colour`` (what Search-T2V's
    retrieval returns on these prompts), the caption the prompt with that colour."""
    from comfyui_searchpriors.distill import toy_world as tw

    for k, (prompt, shape, colour, motion) in enumerate(tw.held_out_prompts(count, seed=0)):
        other = reference_colour(colour, k)
        yield (k, prompt, shape, colour, motion, pipe.reference(shape, other, motion, seed=3000 + k),
               prompt.replace(colour, other, 1))
