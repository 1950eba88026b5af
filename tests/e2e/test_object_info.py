"""The running server lists every node of the pack with the sockets the node contract promises.

Saved workflows address inputs by name and outputs by position, so names, order and types here are a
compatibility promise: a change that breaks this test breaks users' workflows.
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.e2e

CATEGORY = "SearchPriors/retrieval"

# node id -> required inputs, optional inputs and outputs, each in order as (name, type), and whether it is
# an output node. COMBO_OPTIONS below pins the options of fixed dropdowns.
NODE_SPEC = {
    "SearchPriors_PromptAtomizer": {
        "required": [("prompt", "STRING"), ("spacy_model", "COMBO"), ("sentence_model", "COMBO")],
        "optional": [("one_prompt_per_line", "BOOLEAN"), ("max_prompt_chars", "INT")],
        "outputs": [("atomized", "ATOMIZED_PROMPT"), ("units", "STRING")],
        "output_node": False,
    },
    "SearchPriors_MotionIndexBuilder": {
        "required": [("library", "STRING"), ("format", "COMBO"), ("index_name", "STRING"),
                     ("spacy_model", "COMBO"), ("sentence_model", "COMBO")],
        "optional": [("videos_folder", "STRING"), ("lock_timeout", "INT")],
        "outputs": [("index", "MOTION_INDEX"), ("report", "STRING")],
        "output_node": True,
    },
    "SearchPriors_ClipLibraryBuilder": {
        "required": [("clips_folder", "STRING"), ("index_name", "STRING"), ("captioner", "COMBO"), ("prompt", "STRING"),
                     ("spacy_model", "COMBO"), ("sentence_model", "COMBO")],
        "optional": [("frames_per_shot", "INT"), ("cut_threshold", "FLOAT"), ("cut_ratio", "FLOAT"),
                     ("min_shot_seconds", "FLOAT"), ("batch_size", "INT"), ("lock_timeout", "INT")],
        "outputs": [("index", "MOTION_INDEX"), ("library", "STRING"), ("report", "STRING")],
        "output_node": True,
    },
    "SearchPriors_MotionIndexLoader": {
        "required": [("index_name", "COMBO")],
        "optional": [],
        "outputs": [("index", "MOTION_INDEX"), ("summary", "STRING")],
        "output_node": False,
    },
    "SearchPriors_MotionRetriever": {
        "required": [("atomized", "ATOMIZED_PROMPT"), ("index", "MOTION_INDEX"), ("mode", "COMBO"),
                     ("top_k", "INT"), ("t_total", "FLOAT"), ("t_mot", "FLOAT"), ("t_atr", "FLOAT"),
                     ("alpha", "FLOAT"), ("beta", "FLOAT"), ("gamma", "FLOAT"), ("min_keep", "INT")],
        "optional": [("thresholds", "COMBO"), ("ranking", "COMBO"), ("pool", "INT")],
        "outputs": [("retrieval", "RETRIEVAL"), ("best_video", "STRING"), ("reference_captions", "STRING"),
                    ("report", "STRING")],
        "output_node": True,
    },
    "SearchPriors_ReferenceFrames": {
        "category": "SearchPriors/video",
        "required": [("frame_count", "INT"), ("width", "INT"), ("height", "INT"), ("start_seconds", "FLOAT"),
                     ("stride", "INT"), ("fps", "FLOAT"), ("crop", "COMBO")],
        "optional": [("retrieval", "RETRIEVAL"), ("rank", "INT"), ("video_path", "STRING")],
        "outputs": [("frames", "IMAGE"), ("info", "STRING"), ("caption", "STRING")],
        "output_node": False,
    },
    "SearchPriors_ModelScopeLoader": {
        "required": [("folder", "COMBO"), ("dtype", "COMBO")],
        "optional": [],
        "outputs": [("MODEL", "MODEL"), ("CLIP", "CLIP"), ("VAE", "VAE")],
        "output_node": False,
        "category": "SearchPriors/models",
    },
    "SearchPriors_DiffusersSchedulerSigmas": {
        "required": [("model", "MODEL"), ("steps", "INT")],
        "optional": [],
        "outputs": [("SIGMAS", "SIGMAS")],
        "output_node": False,
        "category": "SearchPriors/models",
    },
    # POS generation (category SearchPriors/pos)
    "SearchPriors_DDIMVideoInvert": {
        "category": "SearchPriors/pos",
        "required": [("model", "MODEL"), ("latent", "LATENT"), ("conditioning", "CONDITIONING"), ("steps", "INT"),
                     ("scheduler", "COMBO"), ("refine_iterations", "INT"), ("cfg", "FLOAT")],
        "optional": [("negative", "CONDITIONING"), ("sigmas", "SIGMAS"), ("check_reconstruction", "BOOLEAN"),
                     ("high_noise_model", "MODEL"), ("boundary", "FLOAT")],
        "outputs": [("inverted_noise", "LATENT"), ("report", "STRING"), ("boundary_step", "INT")],
        "output_node": False,
    },
    "SearchPriors_GaussianNoiseMix": {
        "category": "SearchPriors/pos",
        "required": [("inverted", "LATENT"), ("eta", "FLOAT"), ("seed", "INT")],
        "optional": [("noise", "NOISE"), ("preset", "COMBO")],
        "outputs": [("noise", "NOISE"), ("report", "STRING")],
        "output_node": False,
    },
    "SearchPriors_HybridSemanticGuider": {
        "category": "SearchPriors/pos",
        "required": [("model", "MODEL"), ("positive_rewritten", "CONDITIONING"), ("positive_original", "CONDITIONING"),
                     ("negative", "CONDITIONING"), ("cfg", "FLOAT"), ("gamma", "FLOAT")],
        "optional": [("switch_step", "INT"), ("preset", "COMBO"), ("full_sigmas", "SIGMAS")],
        "outputs": [("guider", "GUIDER")],
        "output_node": False,
    },
    "SearchPriors_HybridSemanticSampler": {
        "category": "SearchPriors/pos",
        "required": [("model", "MODEL"), ("seed", "INT"), ("steps", "INT"), ("cfg", "FLOAT"), ("sampler_name", "COMBO"),
                     ("scheduler", "COMBO"), ("positive_rewritten", "CONDITIONING"),
                     ("positive_original", "CONDITIONING"), ("negative", "CONDITIONING"), ("latent_image", "LATENT"),
                     ("gamma", "FLOAT"), ("denoise", "FLOAT")],
        "optional": [("noise", "NOISE"), ("switch_step", "INT"), ("preset", "COMBO"), ("add_noise", "BOOLEAN"),
                     ("start_at_step", "INT"), ("end_at_step", "INT"), ("return_with_leftover_noise", "BOOLEAN")],
        "outputs": [("LATENT", "LATENT"), ("schedule", "STRING")],
        "output_node": False,
    },
    "SearchPriors_ReferenceRewriter": {
        "category": "SearchPriors/pos",
        "required": [("prompt", "STRING"), ("reference_captions", "STRING"), ("k", "INT"), ("backend", "COMBO"),
                     ("base_url", "STRING"), ("model", "STRING"), ("api_key_env", "STRING"),
                     ("local_model", "COMBO"), ("max_words", "INT"), ("seed", "INT"), ("temperature", "FLOAT"),
                     ("on_failed_check", "COMBO"), ("spacy_model", "COMBO")],
        "optional": [("retrieval", "RETRIEVAL"), ("manual_rewrite", "STRING"), ("custom_template", "STRING"),
                     ("system_prompt", "STRING"), ("timeout_s", "FLOAT"), ("retries", "INT"),
                     ("max_new_tokens", "INT"), ("cache", "COMBO"), ("unload_after", "BOOLEAN")],
        "outputs": [("rewritten", "STRING"), ("instruction", "STRING"), ("report", "STRING")],
        "output_node": True,
    },
    "SearchPriors_VMCTemporalLoRA": {
        "required": [("model", "MODEL"), ("keyframes", "LATENT"), ("conditioning", "CONDITIONING"), ("steps", "INT"),
                     ("lr", "FLOAT"), ("rank", "INT"), ("targets", "COMBO"), ("loss", "COMBO"), ("seed", "INT"),
                     ("gradient_checkpointing", "COMBO")],
        "optional": [("caption", "STRING"), ("blocks", "STRING"), ("high_noise_model", "MODEL"),
                     ("boundary", "FLOAT")],
        "outputs": [("MODEL", "MODEL"), ("MOTION_LORA", "MOTION_LORA"), ("loss_curve", "IMAGE"),
                    ("report", "STRING"), ("MODEL_HIGH_NOISE", "MODEL")],
        "output_node": False,
        "category": "SearchPriors/search_t2v",
    },
    "SearchPriors_SaveMotionLoRA": {
        "required": [("motion_lora", "MOTION_LORA"), ("filename_prefix", "STRING")],
        "optional": [],
        "outputs": [("lora_name", "STRING"), ("lora_name_high_noise", "STRING")],
        "output_node": True,
        "category": "SearchPriors/search_t2v",
    },
    "SearchPriors_EncodeKeyframes": {
        "required": [("keyframes", "IMAGE"), ("vae", "VAE")],
        "optional": [],
        "outputs": [("LATENT", "LATENT")],
        "output_node": False,
        "category": "SearchPriors/search_t2v",
    },
    "SearchPriors_LoadMotionLoRA": {
        "required": [("model", "MODEL"), ("lora_name", "COMBO"), ("strength", "FLOAT")],
        "optional": [],
        "outputs": [("MODEL", "MODEL")],
        "output_node": False,
        "category": "SearchPriors/search_t2v",
    },
    "SearchPriors_KeyframeExtractor": {
        "required": [("atomized", "ATOMIZED_PROMPT"), ("retrieval", "RETRIEVAL"), ("frames", "IMAGE"),
                     ("detector", "COMBO"), ("keyframe_count", "INT"), ("width", "INT"), ("height", "INT"),
                     ("box_threshold", "FLOAT"), ("text_threshold", "FLOAT"), ("keep_together", "BOOLEAN"),
                     ("full_frame_above", "FLOAT")],
        "optional": [("rank", "INT"), ("search_whole_clip", "BOOLEAN"), ("scan_fps", "FLOAT")],
        "outputs": [("keyframes", "IMAGE"), ("preview", "IMAGE"), ("segment", "STRING")],
        "output_node": False,
        "category": "SearchPriors/search_t2v",
    },
}

COMBO_OPTIONS = {
    ("SearchPriors_MotionIndexBuilder", "format"): ["auto", "csv", "jsonl", "webvid", "msrvtt", "openvid", "panda70m"],
    ("SearchPriors_MotionRetriever", "mode"): ["search_t2v", "pos"],
    ("SearchPriors_MotionRetriever", "thresholds"): ["custom", "paper", "calibrated"],
    ("SearchPriors_MotionRetriever", "ranking"): ["paper", "video_support", "pool_video_support"],
    ("SearchPriors_ReferenceFrames", "crop"): ["center", "pad", "stretch"],
    ("SearchPriors_ModelScopeLoader", "dtype"): ["auto", "fp32", "fp16", "bf16"],
    ("SearchPriors_ReferenceRewriter", "backend"): ["openai_compatible", "local_transformers", "manual"],
    ("SearchPriors_ReferenceRewriter", "on_failed_check"): ["warn", "use_original_prompt"],
    ("SearchPriors_VMCTemporalLoRA", "targets"): ["qkv", "qkv+out", "full_qkv"],
    ("SearchPriors_VMCTemporalLoRA", "loss"): ["vmc_abs", "eq10_pairs"],
    ("SearchPriors_VMCTemporalLoRA", "gradient_checkpointing"): ["all", "outer", "outermost", "off", "compiled"],
}


def socket_type(spec) -> str:
    """The type of an /object_info input: V3 schema nodes say "COMBO" with an options list; V1 nodes give
    the options list itself in the type's place."""
    kind = spec[0]
    return "COMBO" if isinstance(kind, list) else kind


def combo_options(spec) -> list:
    kind = spec[0]
    if isinstance(kind, list):
        return kind
    return list((spec[1] if len(spec) > 1 else {}).get("options", []))


def input_order(info: dict, section: str) -> list[str]:
    order = info.get("input_order", {}).get(section)
    return list(order) if order is not None else list(info["input"].get(section, {}))


@pytest.fixture(scope="module")
def object_info(comfy_server):
    return comfy_server.object_info(refresh=True)


def test_every_pack_node_is_registered(object_info):
    pack_nodes = sorted(name for name in object_info if name.startswith("SearchPriors_"))
    missing = sorted(set(NODE_SPEC) - set(pack_nodes))
    assert not missing, f"nodes missing from /object_info: {missing}; registered: {pack_nodes}"


@pytest.mark.parametrize("node_id", sorted(NODE_SPEC))
def test_node_sockets_match_the_contract(object_info, node_id):
    expected = NODE_SPEC[node_id]
    info = object_info.get(node_id)
    assert info is not None, f"{node_id} is not in /object_info"
    assert info["category"] == expected.get("category", CATEGORY)
    assert bool(info.get("output_node")) == expected["output_node"]

    for section in ("required", "optional"):
        declared = info["input"].get(section, {})
        names = input_order(info, section)
        assert names == [name for name, _ in expected[section]], f"{node_id} {section} inputs"
        for name, kind in expected[section]:
            assert socket_type(declared[name]) == kind, f"{node_id}.{name}: {declared[name]!r}"

    assert list(info["output"]) == [kind for _, kind in expected["outputs"]], f"{node_id} output types"
    assert list(info["output_name"]) == [name for name, _ in expected["outputs"]], f"{node_id} output names"


@pytest.mark.parametrize("node_id,input_name", sorted(COMBO_OPTIONS))
def test_fixed_combo_options(object_info, node_id, input_name):
    inputs = object_info[node_id]["input"]
    spec = inputs["required"].get(input_name) or inputs.get("optional", {})[input_name]
    assert combo_options(spec) == COMBO_OPTIONS[(node_id, input_name)]


def test_index_loader_lists_built_indexes(comfy_server, sample_index, comfy_harness):
    """Folders under models/motion_index show up in the loader's dropdown once built."""
    info = comfy_server.object_info("SearchPriors_MotionIndexLoader")
    options = combo_options(info["input"]["required"]["index_name"])
    assert comfy_harness.SAMPLE_INDEX_NAME in options
