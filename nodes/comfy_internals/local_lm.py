"""The rewriter's local language model inside ComfyUI's memory manager.

A transformers causal LM is wrapped in a ``comfy.model_patcher.ModelPatcher`` and loaded fully (it is not
built from comfy's ops, so it cannot be partly offloaded) on the device ``comfy.model_management`` gives.
ComfyUI then evicts it like any other model when the video model needs the VRAM; ``unload_local`` frees
it at once. Loaded once per state of the folder's files. Imports nothing of ``comfy_api``.
"""

from __future__ import annotations

import os
import threading
from typing import Callable, Optional, Sequence

from ...retrieval import llm_backends as llm

_lock = threading.Lock()
_loaded: dict[str, tuple[str, object, object]] = {}   # folder -> (stamp, ModelPatcher, tokenizer)


def folder_stamp(folder: str) -> str:
    """Names, sizes and modification times of the files that define the model: a changed file reloads it."""
    parts = []
    for name in sorted(os.listdir(folder)):
        if name.endswith((".json", ".safetensors", ".bin", ".model", ".txt", ".jinja")):
            try:
                st = os.stat(os.path.join(folder, name))
            except OSError:
                continue
            parts.append(f"{name}:{st.st_mtime_ns}-{st.st_size}")
    return ";".join(parts)


def _holder(model):
    """A plain torch module around the transformers model: ModelPatcher sets bookkeeping attributes such as
    ``device`` on the module it manages, and ``device`` is a read-only property on transformers models."""
    import torch

    class CausalLMHolder(torch.nn.Module):
        def __init__(self, lm):
            super().__init__()
            self.lm = lm

    return CausalLMHolder(model)


def patcher_for(folder: str):
    """(ModelPatcher, tokenizer) for ``folder``; the model is on the offload device until ``generate``."""
    import comfy.model_management as mm
    import comfy.model_patcher
    import torch

    stamp = folder_stamp(folder)
    with _lock:
        hit = _loaded.get(folder)
        if hit and hit[0] == stamp:
            return hit[1], hit[2]
    if hit:
        unload_local(folder)
    load_device = mm.get_torch_device()
    dtype = torch.float32
    if load_device.type != "cpu":
        dtype = torch.bfloat16 if mm.should_use_bf16(load_device) else torch.float16
    model, tokenizer = llm.load_causal_lm(folder, dtype=dtype)
    patcher = comfy.model_patcher.ModelPatcher(_holder(model), load_device=load_device,
                                               offload_device=mm.unet_offload_device())
    with _lock:
        _loaded[folder] = (stamp, patcher, tokenizer)
    return patcher, tokenizer


def generate(folder: str, messages: Sequence[dict], temperature: float, seed: int, max_new_tokens: int,
             on_token: Optional[Callable[[int, int], None]] = None) -> tuple[str, dict]:
    """Loads the model onto ComfyUI's device (evicting others as needed) and answers ``messages``."""
    import comfy.model_management as mm

    patcher, tokenizer = patcher_for(folder)
    mm.load_models_gpu([patcher], force_full_load=True)
    text, facts = llm.generate_local(patcher.model.lm, tokenizer, messages, temperature=temperature, seed=seed,
                                     max_new_tokens=max_new_tokens, device=patcher.load_device, on_token=on_token)
    facts["device"] = str(patcher.load_device)
    return text, facts


def is_loaded(folder: Optional[str] = None) -> bool:
    """Whether the local model (of ``folder``, or any) is among ComfyUI's loaded models."""
    import comfy.model_management as mm

    with _lock:
        patchers = [v[1] for k, v in _loaded.items() if folder is None or k == folder]
    return any(loaded.model is p for loaded in mm.current_loaded_models for p in patchers)


def unload_local(folder: Optional[str] = None) -> int:
    """Takes the local model(s) out of VRAM and out of this module; returns how many were dropped."""
    import comfy.model_management as mm

    with _lock:
        keys = [folder] if folder else list(_loaded)
        dropped = [_loaded.pop(k) for k in keys if k in _loaded]
    for _, patcher, _ in dropped:
        for i in reversed(range(len(mm.current_loaded_models))):
            loaded = mm.current_loaded_models[i]
            if loaded.model is patcher:
                loaded.model_unload()
                mm.current_loaded_models.pop(i)
        patcher.detach()
    if dropped:
        mm.soft_empty_cache()
    return len(dropped)
