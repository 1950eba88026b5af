"""A test-only ComfyUI custom node, put into the e2e servers' custom_nodes by tests/conftest.py (never shipped).

ComfyUI builds the DiT workflows' text encoders from fixed configs at full size whatever the file holds
(umT5-XXL for Wan: 5.7 B parameters), more than a CPU test can load. ``E2ETinyCLIPLoader`` stands in for
CLIPLoader with the same inputs: its CLIP encodes each text to a fixed random [1, L, width] drawn from the text's
hash (width 4096: what umT5-XXL gives Wan), so equal texts give equal conditionings. Core CLIPTextEncode and
everything else in such a workflow run as shipped.
"""

import hashlib

import torch


class _TinyTextEncoder:
    def __init__(self, width: int):
        self.width = width

    def tokenize(self, text, **_):
        return str(text)

    def encode_from_tokens_scheduled(self, tokens, **_):
        seed = int.from_bytes(hashlib.sha256(tokens.encode("utf-8")).digest()[:8], "little")
        length = 4 + len(tokens.split()) % 8
        cond = torch.randn(1, length, self.width, generator=torch.Generator().manual_seed(seed))
        return [[cond, {"pooled_output": None}]]


class E2ETinyCLIPLoader:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"clip_name": ("STRING", {"default": ""}), "type": ("STRING", {"default": "wan"}),
                             "device": ("STRING", {"default": "default"})}}

    RETURN_TYPES = ("CLIP",)
    FUNCTION = "load"
    CATEGORY = "testing"

    def load(self, clip_name, type, device):
        return (_TinyTextEncoder(4096),)


NODE_CLASS_MAPPINGS = {"E2ETinyCLIPLoader": E2ETinyCLIPLoader}


def tiny_text_graph(graph: dict) -> dict:
    """``graph`` (API format) with every CLIPLoader replaced by E2ETinyCLIPLoader (same inputs)."""
    for node in graph.values():
        if node["class_type"] == "CLIPLoader":
            node["class_type"] = "E2ETinyCLIPLoader"
    return graph
