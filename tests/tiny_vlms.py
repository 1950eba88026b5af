"""Vision-language model folders of the real transformers classes with random weights, built in code.

``write_qwen2_5_vl(folder, size="tiny")`` and ``write_florence2(folder, size="tiny")`` save a model, its
processor (image / video processor, a byte-level BPE tokenizer with the family's special tokens, the chat
template) and config to ``folder`` exactly as ``from_pretrained`` reads them, so the pack loads them through
``retrieval.captioner.load_captioner`` like a downloaded model. ``size="real"`` gives the published models'
shapes (Qwen2.5-VL-3B-Instruct, Florence-2-large) for the GPU benchmark; weights are random either way.

No download: the tokenizer's vocabulary is the 256 byte symbols plus the family's special tokens.
"""

from __future__ import annotations

import os

# A chat template in the shape Qwen2.5-VL's uses (written here, not copied): a video or image part becomes
# <|vision_start|><|video_pad|><|vision_end|>, which the processor expands to the video's tokens.
QWEN_CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}{% for c in m['content'] %}"
    "{% if c['type'] == 'video' %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
QWEN_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                 "<|image_pad|>", "<|video_pad|>"]

QWEN_SIZES = {
    # Qwen2.5-VL-3B-Instruct's published shapes
    "real": dict(text=dict(hidden_size=2048, intermediate_size=11008, num_hidden_layers=36, num_attention_heads=16,
                           num_key_value_heads=2, mrope_section=[16, 24, 24], vocab=151936),
                 vision=dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=2048,
                             fullatt_block_indexes=[7, 15, 23, 31])),
    "tiny": dict(text=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                           num_key_value_heads=2, mrope_section=[1, 1, 2], vocab=None),
                 vision=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=32,
                             fullatt_block_indexes=[1])),
}


def _byte_vocab(first: list[str]) -> dict[str, int]:
    from tokenizers import pre_tokenizers

    return {t: i for i, t in enumerate(first + sorted(pre_tokenizers.ByteLevel.alphabet()))}


def write_qwen2_5_vl(folder: str, size: str = "tiny", seed: int = 0, max_pixels: int = 28 * 28 * 16,
                     dtype=None, device=None) -> str:
    from transformers import (Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor,
                              Qwen2Tokenizer, Qwen2VLImageProcessor, Qwen2VLVideoProcessor)

    tok = Qwen2Tokenizer(vocab=_byte_vocab([]), merges=[], unk_token=None, bos_token=None,
                         eos_token="<|im_end|>", pad_token="<|endoftext|>")
    tok.add_special_tokens({"additional_special_tokens": QWEN_SPECIALS[1:]})
    ids = dict(zip(QWEN_SPECIALS, tok.convert_tokens_to_ids(QWEN_SPECIALS)))
    pixels = dict(min_pixels=28 * 28 * 4, max_pixels=max_pixels)
    processor = Qwen2_5_VLProcessor(image_processor=Qwen2VLImageProcessor(**pixels), tokenizer=tok,
                                    video_processor=Qwen2VLVideoProcessor(**pixels), chat_template=QWEN_CHAT_TEMPLATE)
    s = QWEN_SIZES[size]
    t = dict(s["text"])
    mrope = t.pop("mrope_section")
    vocab = t.pop("vocab") or len(tok)
    config = Qwen2_5_VLConfig(
        text_config=dict(vocab_size=vocab, max_position_embeddings=4096, rope_scaling={"type": "mrope",
                         "mrope_section": mrope}, bos_token_id=None, eos_token_id=ids["<|im_end|>"],
                         pad_token_id=ids["<|endoftext|>"], **t),
        vision_config=dict(patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=112,
                           **s["vision"]),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"], tie_word_embeddings=size == "real")
    if size == "real":
        pixels = dict(min_pixels=56 * 56, max_pixels=28 * 28 * 1280)   # the published processor's limits
        processor.image_processor.min_pixels, processor.image_processor.max_pixels = pixels.values()
        processor.video_processor.min_pixels, processor.video_processor.max_pixels = 128 * 28 * 28, 768 * 28 * 28
    model = _build(Qwen2_5_VLForConditionalGeneration, config, seed, dtype, device)
    _save(model, processor, folder)
    return folder


FLORENCE_SIZES = {
    # Florence-2-large's published shapes (DaViT 256..2048, BART-large 12+12 layers of 1024)
    "real": dict(vision=dict(depths=[1, 1, 9, 1], embed_dim=[256, 512, 1024, 2048], num_heads=[8, 16, 32, 64],
                             num_groups=[8, 16, 32, 64], window_size=12, projection_dim=1024),
                 text=dict(d_model=1024, encoder_layers=12, decoder_layers=12, encoder_attention_heads=16,
                           decoder_attention_heads=16, encoder_ffn_dim=4096, decoder_ffn_dim=4096, vocab=51289),
                 image=768),
    "tiny": dict(vision=dict(depths=[1, 1, 1, 1], embed_dim=[8, 16, 32, 32], num_heads=[1, 1, 2, 2],
                             num_groups=[1, 1, 2, 2], window_size=2, projection_dim=32),
                 text=dict(d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                           decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, vocab=None),
                 image=64),
}


def write_florence2(folder: str, size: str = "tiny", seed: int = 0, dtype=None, device=None) -> str:
    import torch
    from transformers import (BartTokenizer, CLIPImageProcessor, Florence2Config, Florence2ForConditionalGeneration,
                              Florence2Processor)

    tok = BartTokenizer(vocab=_byte_vocab(["<s>", "<pad>", "</s>", "<unk>"]), merges=[],
                        extra_special_tokens={"image_token": "<image>"})
    s = FLORENCE_SIZES[size]
    side = s["image"]
    image_processor = CLIPImageProcessor(size={"height": side, "width": side}, do_center_crop=False,
                                         crop_size={"height": side, "width": side},
                                         image_seq_length=(side // 32) ** 2 + 1)
    processor = Florence2Processor(image_processor=image_processor, tokenizer=tok)
    t = dict(s["text"])
    vocab = t.pop("vocab") or len(tok)
    config = Florence2Config(
        text_config=dict(model_type="bart", vocab_size=max(vocab, len(tok)), max_position_embeddings=1024,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                         decoder_start_token_id=tok.eos_token_id, **t),
        vision_config=dict(drop_path_rate=0.0, **s["vision"]), image_token_id=tok.image_token_id)
    model = _build(Florence2ForConditionalGeneration, config, seed, dtype, device)
    if size == "tiny":
        with torch.no_grad():   # random weights that stop at once give empty captions; keep EOS unlikely
            model.get_output_embeddings().weight[tok.eos_token_id].zero_()
    _save(model, processor, folder)
    return folder


def _build(cls, config, seed: int, dtype, device):
    """The model with random weights, made in ``dtype`` on ``device`` (fast for real sizes on a GPU)."""
    import torch

    torch.manual_seed(seed)
    before = torch.get_default_dtype()
    if dtype is not None:
        torch.set_default_dtype(dtype)
    try:
        with torch.device(device or "cpu"):
            model = cls(config)
    finally:
        torch.set_default_dtype(before)
    return model.eval()


def _save(model, processor, folder: str) -> None:
    from transformers.utils import logging as hf_logging

    os.makedirs(folder, exist_ok=True)
    was = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        model.save_pretrained(folder)
        processor.save_pretrained(folder)
    finally:
        if was:
            hf_logging.enable_progress_bar()


WRITERS = {"qwen2_5_vl": write_qwen2_5_vl, "florence2": write_florence2}
