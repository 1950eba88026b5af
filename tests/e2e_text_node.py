"""A test-only ComfyUI custom node, put into the e2e servers' custom_nodes by tests/conftest.py (never shipped).

ComfyUI builds the DiT workflows' text encoders from fixed configs at full size whatever the file holds
(umT5-XXL for Wan: 5.7 B parameters; T5-XXL for LTX-Video: 4.8 B; Qwen2.5-VL 7B for HunyuanVideo 1.5), more than a
CPU test can load. Stand-ins with the same inputs, whose CLIP encodes each text to a fixed random tensor drawn from
the text's hash (equal texts give equal conditionings), shaped as the real encoder's output:

- ``E2ETinyCLIPLoader`` for CLIPLoader: type ``ltxv`` gives what T5-XXL gives LTX-Video ([1, L, 4096] padded to at
  least 128 tokens, with its attention mask: 1 for the words and the end token, 0 for the padding); any other type
  (``wan``) gives [1, L, 4096] as umT5-XXL gives Wan.
- ``E2ETinyDualCLIPLoader`` for DualCLIPLoader type ``hunyuan_video_15``: Qwen2.5-VL hidden states [1, L, 3584]
  (no pooled vector, no attention mask: ComfyUI drops an all-ones one) and, for text in double quotes, byT5 glyph
  tokens [1, n, 1472] under ``conditioning_byt5small``, as ComfyUI's tokenizer adds them.

The HunyuanVideo 1.5 VAE, which ComfyUI builds at full size whatever the file holds, is loaded by make serve's demo
VAE loader (``SearchPriorsDemo_VAELoader``, scripts/demo_nodes.py, which tests/conftest.py puts in the same servers):
``tiny_vae_graph`` swaps it in.

Core CLIPTextEncode and everything else in such a workflow run as shipped.
"""

import hashlib
import re

import torch

def _seed(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "little")


class _TinyTextEncoder:
    """Wan (umT5-XXL) unless ``kind`` says otherwise: 'ltxv' (T5-XXL), 'hunyuan_video_15' (Qwen2.5-VL + byT5)."""

    def __init__(self, width: int, kind: str = "wan"):
        self.width = width
        self.kind = kind

    def tokenize(self, text, **_):
        return str(text)

    def encode_from_tokens_scheduled(self, tokens, **_):
        if self.kind == "ltxv":
            return [self._t5_ltxv(tokens)]
        if self.kind == "hunyuan_video_15":
            return [self._qwen_byt5(tokens)]
        length = 4 + len(tokens.split()) % 8
        cond = torch.randn(1, length, self.width, generator=torch.Generator().manual_seed(_seed(tokens)))
        return [[cond, {"pooled_output": None}]]

    def _t5_ltxv(self, text):
        """T5-XXL as ComfyUI runs it for LTX-Video: the tokenizer pads to at least 128 tokens, the encoder returns
        every token's state and the attention mask."""
        words = len(text.split()) + 1   # + the end token
        length = max(128, words)
        cond = torch.randn(1, length, self.width, generator=torch.Generator().manual_seed(_seed(text)))
        mask = torch.zeros(1, length, dtype=torch.long)
        mask[:, :words] = 1
        return [cond, {"pooled_output": None, "attention_mask": mask}]

    def _qwen_byt5(self, text):
        generator = torch.Generator().manual_seed(_seed(text))
        length = 4 + len(text.split()) % 8
        extra = {"pooled_output": None}
        cond = torch.randn(1, length, self.width, generator=generator)
        quoted = re.findall(r'"(.*?)"', text) + re.findall(r"‘(.*?)’", text) + re.findall(r"“(.*?)”", text)
        if quoted:
            glyph_text = "".join(f'Text "{q}". ' for q in quoted)
            extra["conditioning_byt5small"] = torch.randn(1, len(glyph_text.encode("utf-8")) + 1, 1472,
                                                          generator=generator)
        return [cond, extra]


class E2ETinyCLIPLoader:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"clip_name": ("STRING", {"default": ""}), "type": ("STRING", {"default": "wan"}),
                             "device": ("STRING", {"default": "default"})}}

    RETURN_TYPES = ("CLIP",)
    FUNCTION = "load"
    CATEGORY = "testing"

    def load(self, clip_name, type, device):
        return (_TinyTextEncoder(4096, "ltxv" if type == "ltxv" else "wan"),)


class E2ETinyDualCLIPLoader:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"clip_name1": ("STRING", {"default": ""}), "clip_name2": ("STRING", {"default": ""}),
                             "type": ("STRING", {"default": "hunyuan_video_15"}),
                             "device": ("STRING", {"default": "default"})}}

    RETURN_TYPES = ("CLIP",)
    FUNCTION = "load"
    CATEGORY = "testing"

    def load(self, clip_name1, clip_name2, type, device):
        if type != "hunyuan_video_15":
            raise ValueError(f"E2ETinyDualCLIPLoader stands in for type hunyuan_video_15 only, not {type!r}")
        return (_TinyTextEncoder(3584, "hunyuan_video_15"),)


NODE_CLASS_MAPPINGS = {"E2ETinyCLIPLoader": E2ETinyCLIPLoader, "E2ETinyDualCLIPLoader": E2ETinyDualCLIPLoader}


def tiny_text_graph(graph: dict) -> dict:
    """``graph`` (API format) with every CLIPLoader replaced by E2ETinyCLIPLoader and every DualCLIPLoader by
    E2ETinyDualCLIPLoader (same inputs)."""
    for node in graph.values():
        if node["class_type"] == "CLIPLoader":
            node["class_type"] = "E2ETinyCLIPLoader"
        elif node["class_type"] == "DualCLIPLoader":
            node["class_type"] = "E2ETinyDualCLIPLoader"
    return graph


def tiny_vae_graph(graph: dict) -> dict:
    """``graph`` (API format) with every VAELoader replaced by the demo VAE loader of scripts/demo_nodes.py (same
    input; it builds a HunyuanVideo 1.5 VAE at the widths its file holds)."""
    for node in graph.values():
        if node["class_type"] == "VAELoader":
            node["class_type"] = "SearchPriorsDemo_VAELoader"
    return graph
