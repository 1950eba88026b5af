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
    spec = importlib.util.spec_from_file_location("searchpriors_comfy_server", REPO / "scripts" / "comfy_server.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, module)
    spec.loader.exec_module(module)
    return str(module.default_comfyui_dir())


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

    def __init__(self, folder: str | os.PathLike = TOY_MODEL, steps: int = 20, cfg: float = 7.5, dtype: str = "fp32"):
        import torch

        from comfyui_searchpriors.nodes.modelscope_model import load_modelscope_folder, modelscope_ddim_sigmas

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

        from comfyui_searchpriors.nodes.hybrid_guider import make_guider

        original = self.encode(prompt)
        guider = make_guider(model, self.encode(rewritten) if rewritten else original, original, self.negative,
                             self.cfg, gamma)
        out = guider.sample(noise, self.empty.clone(), comfy.samplers.sampler_object("ddim"), self.sigmas, seed=0,
                            disable_pbar=True)
        return self.vae.decode(out)

    def base(self, prompt: str, seed: int, model=None) -> Generated:
        from comfyui_searchpriors.nodes.noise_objects import SeededRandomNoise

        t0 = time.perf_counter()
        noise = SeededRandomNoise(seed).generate_noise({"samples": self.empty})
        video = self._sample(model or self.model, prompt, noise)
        return Generated(video, time.perf_counter() - t0)

    def invert(self, reference, key: str | None = None):
        """DDIM Video Invert of a reference clip (IMAGE [F, H, W, 3]) with the empty prompt, cfg 1 (POS Eq. 2)."""
        from comfyui_searchpriors.nodes.inversion_sampler import invert_latent

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
        from comfyui_searchpriors.nodes.noise_objects import MixedInvertedNoise

        t0 = time.perf_counter()
        noise = MixedInvertedNoise(inverted, eta, seed=seed).generate_noise({"samples": self.empty})
        video = self._sample(model or self.model, prompt, noise, rewritten=rewritten, gamma=gamma)
        return Generated(video, time.perf_counter() - t0)

    def tune(self, reference, caption: str, loss: str = "vmc_abs", steps: int = 100, lr: float = 1e-3,
             rank: int = 8, seed: int = 0):
        """VMC motion LoRA (Eq. 10) on the reference's latents with its caption: (tuned MODEL, losses, seconds)."""
        from comfyui_searchpriors.nodes.motion_lora import train_motion_lora

        t0 = time.perf_counter()
        latent = {"samples": self.vae.encode(reference[..., :3])}
        tuned, _lora, losses, stopped = train_motion_lora(self.model, latent, self.encode(caption), steps=steps,
                                                          lr=lr, rank=rank, targets="qkv", loss=loss, seed=seed,
                                                          gradient_checkpointing="off", caption=caption)
        if stopped:
            raise RuntimeError(f"VMC stopped: {stopped}")
        return tuned, losses, time.perf_counter() - t0


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

    def search(self, prompt: str, mode: str = "pos", rank: int = 1):
        from comfyui_searchpriors.retrieval.embedding import atomize
        from comfyui_searchpriors.retrieval.search import SearchParams, search

        result = search(self.index, atomize(prompt, self.nlp, self.sentence), SearchParams(mode=mode, top_k=rank))
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
