"""A tiny randomly initialised GroundingDINO of transformers' real classes, saved in the published folder
layout (config.json, model.safetensors, processor and BERT tokenizer files) for the detector tests."""

from __future__ import annotations

import contextlib

import torch

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", "man", "bike", "square", "red", "ball", "dog", "hand",
         "mountain"]


def save_tiny_grounding_dino(folder) -> str:
    """A GroundingDINO of the real classes with tiny sizes (Swin backbone, BERT text encoder, 2 decoder
    layers), its processor and tokenizer, saved in the published folder layout."""
    from transformers import (BertConfig, BertTokenizer, GroundingDinoConfig, GroundingDinoForObjectDetection,
                              GroundingDinoImageProcessor, GroundingDinoProcessor, SwinConfig)

    backbone = SwinConfig(image_size=32, patch_size=4, embed_dim=8, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1],
                          window_size=2, out_features=["stage2", "stage3", "stage4"])
    text = BertConfig(vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                      intermediate_size=32, max_position_embeddings=64)
    config = GroundingDinoConfig(backbone_config=backbone, text_config=text, d_model=64, num_queries=12,
                                 encoder_layers=1, decoder_layers=2, encoder_ffn_dim=32, decoder_ffn_dim=32,
                                 encoder_attention_heads=2, decoder_attention_heads=2, encoder_n_points=1,
                                 decoder_n_points=1, max_text_len=32)
    torch.manual_seed(0)
    model = GroundingDinoForObjectDetection(config).eval()
    tokenizer = BertTokenizer(vocab={w: i for i, w in enumerate(VOCAB)})
    processor = GroundingDinoProcessor(GroundingDinoImageProcessor(size={"shortest_edge": 64, "longest_edge": 96}),
                                       tokenizer)
    with quiet_transformers():
        model.save_pretrained(str(folder))
        processor.save_pretrained(str(folder))
    return str(folder)


@contextlib.contextmanager
def quiet_transformers():
    """transformers' progress bars off while writing ("Writing model shards" would land in the demo's output)."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def save_random_grounding_dino(folder, size: str = "tiny") -> str:
    """``tiny`` (the test model above) or ``real``: grounding-dino-tiny's sizes (transformers' defaults: Swin-T
    backbone, BERT-base text encoder, 900 queries, 6 + 6 layers, 172 M parameters) with random weights, the
    published processor settings (shortest edge 800, longest 1333) and a BERT vocabulary of the real size
    whose first words are VOCAB. For GPU benchmarks: cost and memory do not depend on the weights' values."""
    if size == "tiny":
        return save_tiny_grounding_dino(folder)
    if size != "real":
        raise ValueError(f"size must be 'tiny' or 'real', not {size!r}")
    from transformers import (BertTokenizer, GroundingDinoConfig, GroundingDinoForObjectDetection,
                              GroundingDinoImageProcessor, GroundingDinoProcessor)

    config = GroundingDinoConfig()
    torch.manual_seed(0)
    model = GroundingDinoForObjectDetection(config).eval()
    words = VOCAB + [f"[unused{i}]" for i in range(config.text_config.vocab_size - len(VOCAB))]
    tokenizer = BertTokenizer(vocab={w: i for i, w in enumerate(words)})
    processor = GroundingDinoProcessor(GroundingDinoImageProcessor(), tokenizer)
    with quiet_transformers():
        model.save_pretrained(str(folder))
        processor.save_pretrained(str(folder))
    return str(folder)
