"""The note at the start of each bundled UI workflow (Markdown, shown in a MarkdownNote node), by file stem."""

_CLIPS = ("**Clips**: your videos and a `library.csv` (`video,caption`) in `input/searchpriors_clips/`, indexed "
          "once with **build_sample_index**'s Motion Index Builder set to that CSV and index name "
          "`searchpriors_clips` (or pick another index in Motion Index Loader). `make serve` has the toy world's "
          "index `searchpriors_toy_world` and the toy model `searchpriors-toy-t2v` ready.")
_TEXT_MODELS = ("**Text models** (all workflows): `sentence-transformers/all-MiniLM-L6-v2` in "
                "`models/sentence_transformers/` and spaCy `en_core_web_sm` (`python -m spacy download en_core_web_sm`).")
_MODELSCOPE = ("**Video model**: `ali-vilab/text-to-video-ms-1.7b` (diffusers format) in "
               "`models/diffusers/text-to-video-ms-1.7b/`, or `cerspense/zeroscope_v2_576w` in "
               "`models/diffusers/zeroscope_v2_576w/` (then 24 frames of 576 x 320); pick it in the loader.")
_WAN21 = ("**Video model** (from `Comfy-Org/Wan_2.1_ComfyUI_repackaged`): "
          "`models/diffusion_models/wan2.1_t2v_1.3B_fp16.safetensors`, "
          "`models/text_encoders/umt5_xxl_fp8_e4m3fn_scaled.safetensors`, `models/vae/wan_2.1_vae.safetensors`.")
_POS_SETTINGS = ("**Settings that matter**: the prompt; Frames, Width, Height (one place for the reference frames "
                 "and the latent); **eta** on Gaussian Noise Mix (how much random noise joins the inverted noise: "
                 "0 = the reference's own noise); **gamma** on the guider (the share of steps that use the "
                 "rewritten prompt); the rewriter's **backend** (`manual` types the rewrite by hand; switch to your "
                 "LLM); **rank** on Reference Video Frames (which retrieved clip).")
_POS_STAGES = ("**Stages**, left to right: search the clip library for the video nearest the prompt, decode its "
               "frames, DDIM-invert them into noise, mix that with random noise as the start noise, rewrite the "
               "prompt from the nearest captions, sample with the rewritten prompt first and the original after, "
               "save the mp4. Every report is in a Preview node beside its stage.")

NOTES = {
    "clip_library_pos": (
        "## Index your own clips, then POS from them\n\n"
        "**Clip Library Builder** cuts every video in `input/searchpriors_my_clips/` (mp4, webm, mov, mkv; "
        "subfolders too) into shots, captions each shot with a local vision-language model and indexes the "
        "shots with their times into **searchpriors_my_clips**; the POS stages then search it, invert the "
        "nearest shot (only its own seconds) and sample. Run again after adding clips: only new or changed "
        "clips are cut and captioned, deleted ones leave the index.\n\n"
        "**Captioner** (pick it in the builder): a transformers folder under `models/vlm/`, e.g. "
        "`Qwen/Qwen2.5-VL-3B-Instruct` in `models/vlm/Qwen2.5-VL-3B-Instruct/` (config.json, the safetensors "
        "shards, preprocessor_config.json, tokenizer files) or `microsoft/Florence-2-large`. `make serve` has "
        "the toy world's reels and the `toy` captioner ready (workflow **toy_world_clips_pos**).\n\n"
        "**Settings that matter**: `clips_folder` (under ComfyUI's input folder) and `index_name` on the builder; its `prompt` (how shots are captioned: one subject, its motion, its object reads best); `cut_threshold` / `cut_ratio` / `min_shot_seconds` if shots are cut too often or too rarely; then the POS settings: the prompt, frames / width / height, eta on Gaussian Noise Mix and gamma on the sampler.\n\n"
        + _MODELSCOPE + " " + _TEXT_MODELS),
    "build_sample_index": (
        "## Build the sample index: run this first\n\n"
        "Indexes the 40 captioned sample clips in `input/searchpriors_sample/library.csv` into the motion index "
        "**searchpriors_sample** (`models/motion_index/searchpriors_sample/`), in a few seconds on a CPU. Then "
        "press **R** so the loaders list it and open **search_t2v_retrieval**.\n\n"
        "**Settings that matter**: `library` (a CSV or JSONL of `video,caption`, relative to ComfyUI's input "
        "folder; your own clips go in `input/searchpriors_clips/`), `index_name` (the name the loaders list). "
        "Run again after adding rows: only new rows are indexed.\n\n" + _TEXT_MODELS +
        " `make serve` has them and copies the sample library into the input folder."),
    "search_t2v_retrieval": (
        "## Search a video library for a prompt's motion\n\n"
        "Prompt Atomizer splits the prompt into motion / actor / recipient units; two Motion Retrievers rank "
        "the index's clips side by side: **search_t2v** (Search-T2V's filtering and score, Eqs. 6-9) and "
        "**pos** (caption cosine, POS Eq. 3). Each shows its ranked table on the node; the previews show the "
        "units, the reference captions and why each video ranks where it does.\n\n"
        "**Settings that matter**: the prompt; `index_name` on Motion Index Loader (build one with "
        "**build_sample_index** first); `top_k`; the thresholds `t_mot`, `t_atr`, `t_total` and the weights "
        "`alpha`, `beta`, `gamma` of the search_t2v score.\n\n" + _TEXT_MODELS + " No video model."),
    "pos_rewrite": (
        "## POS prompt rewriting alone\n\n"
        "Retrieves the 5 clips whose captions are nearest the prompt (POS Eq. 3) and has a language model "
        "rewrite the prompt in their style (POS Eq. 7), then checks that no motion, actor or recipient was "
        "lost. The previews show the rewrite, the exact instruction sent and the check.\n\n"
        "**Settings that matter**: `backend` on the rewriter: `manual` (ships: the text in `manual_rewrite` "
        "is used), `openai_compatible` (`base_url`, `model`, and `api_key_env`, the *name* of the variable "
        "that holds the key, e.g. Ollama at `http://127.0.0.1:11434/v1`) or `local_transformers` (a model "
        "folder in `models/LLM/`); `max_words`; `on_failed_check`.\n\n" + _TEXT_MODELS +
        " Index: `searchpriors_sample` (run **build_sample_index** first)."),
    "pos_modelscope": (
        "## POS on ModelScope / ZeroScope\n\n" + _POS_STAGES + "\n\n" + _POS_SETTINGS +
        " The paper's ModelScope settings: eta 0.2, gamma 0.04 (MSR-VTT), 50 DDIM steps, cfg 9.\n\n"
        + _MODELSCOPE + "\n\n" + _CLIPS + "\n\n" + _TEXT_MODELS),
    "pos_wan21": (
        "## POS on Wan 2.1 T2V 1.3B\n\n" + _POS_STAGES + "\n\n" + _POS_SETTINGS +
        " Wan has no published POS settings: eta 0.2, gamma 0.1, 30 steps, cfg 6, shift 8 are starting "
        "points.\n\n" + _WAN21 + "\n\n" + _CLIPS + "\n\n" + _TEXT_MODELS),
    "pos_wan22_a14b": (
        "## POS on Wan 2.2 T2V A14B (two experts)\n\n" + _POS_STAGES + " The inversion runs through both "
        "experts (`boundary` 0.875 on DDIM Video Invert); its `boundary_step` splits the sigmas so the high-"
        "noise expert samples first and the low-noise expert finishes (second stage: Disable Noise).\n\n"
        + _POS_SETTINGS + "\n\n"
        "**Video model** (from `Comfy-Org/Wan_2.2_ComfyUI_Repackaged`): "
        "`models/diffusion_models/wan2.2_t2v_high_noise_14B_fp16.safetensors` and "
        "`models/diffusion_models/wan2.2_t2v_low_noise_14B_fp16.safetensors`; from "
        "`Comfy-Org/Wan_2.1_ComfyUI_repackaged`: `models/text_encoders/umt5_xxl_fp8_e4m3fn_scaled.safetensors`, "
        "`models/vae/wan_2.1_vae.safetensors`.\n\n" + _CLIPS + "\n\n" + _TEXT_MODELS),
    "pos_hunyuan15": (
        "## POS on HunyuanVideo 1.5\n\n" + _POS_STAGES + "\n\n" + _POS_SETTINGS + "\n\n"
        "**Video model** (from `Comfy-Org/HunyuanVideo_1.5_repackaged`): "
        "`models/diffusion_models/hunyuanvideo1.5_720p_t2v_fp16.safetensors`, "
        "`models/text_encoders/qwen_2.5_vl_7b_fp8_scaled.safetensors` and "
        "`models/text_encoders/byt5_small_glyphxl_fp16.safetensors`, "
        "`models/vae/hunyuanvideo15_vae_fp16.safetensors`.\n\n" + _CLIPS + "\n\n" + _TEXT_MODELS),
    "pos_ltxv": (
        "## POS on LTX-Video 0.9.5\n\n" + _POS_STAGES + " LTXVConditioning sets the frame rate on both prompt "
        "pairs; LTXVScheduler gives the sigmas of inversion and sampling.\n\n" + _POS_SETTINGS + "\n\n"
        "**Video model**: `Lightricks/LTX-Video`'s `ltx-video-2b-v0.9.5.safetensors` (VAE inside) in "
        "`models/checkpoints/`; T5 `t5xxl_fp16.safetensors` from `comfyanonymous/flux_text_encoders` in "
        "`models/text_encoders/`.\n\n" + _CLIPS + "\n\n" + _TEXT_MODELS),
    "search_then_tune": (
        "## Search-then-tune on ModelScope / ZeroScope (Search-T2V)\n\n"
        "**Stages**, left to right: search the clip library for a video that performs the prompt's motion, "
        "cut keyframes around the objects that move (GroundingDINO), distil their motion into the model with a "
        "small LoRA (VMC, saved to `models/loras/motion_lora/`), invert the keyframes with the tuned model as "
        "start noise, sample with the tuned model, save the mp4.\n\n"
        "**Settings that matter**: the prompt; Keyframes (the video has as many frames), Width, Height; "
        "`steps`, `lr` and `rank` on VMC Temporal LoRA (400 / 1e-4 / 32: minutes on a GPU); `detector` and "
        "`full_frame_above` on the Keyframe Extractor; eta on Gaussian Noise Mix. To sample from plain noise, "
        "connect the spare Plain noise node to the sampler's `noise`.\n\n" + _MODELSCOPE + "\n\n"
        "**Detector**: `IDEA-Research/grounding-dino-tiny` in `models/grounding-dino/grounding-dino-tiny/` "
        "(`config.json`, `model.safetensors`, processor and tokenizer files).\n\n" + _CLIPS + "\n\n" + _TEXT_MODELS),
    "search_then_tune_wan21": (
        "## Search-then-tune on Wan 2.1 T2V 1.3B\n\n"
        "**Stages**, left to right: search the clip library, cut keyframes around the moving objects "
        "(GroundingDINO), encode them with the Wan VAE (4k+1 frames), distil their motion into LoRAs on the "
        "self-attention of the Wan blocks (VMC, saved to `models/loras/motion_lora/`), sample with the tuned "
        "model (KSampler), save the mp4.\n\n"
        "**Settings that matter**: the prompt; Keyframes (must be 4k+1: 5, 9, 13, 17 ...); `steps`, `lr`, "
        "`rank` and `blocks` on VMC Temporal LoRA; `detector` on the Keyframe Extractor; KSampler's steps and "
        "cfg.\n\n" + _WAN21 + "\n\n"
        "**Detector**: `IDEA-Research/grounding-dino-tiny` in `models/grounding-dino/grounding-dino-tiny/`.\n\n"
        + _CLIPS + "\n\n" + _TEXT_MODELS),
    "motion_lora_apply": (
        "## Reuse a saved motion LoRA\n\n"
        "Loads a motion LoRA that **search_then_tune** saved (Load Motion LoRA refuses one made for another "
        "base model) and samples a new prompt with the one-node Hybrid Semantic Sampler: the rewritten prompt "
        "for the first `gamma` share of the steps, the prompt after; the schedule is in the preview.\n\n"
        "**Settings that matter**: `lora_name` (press **R** after a search_then_tune run so it is listed) and "
        "`strength`; the two prompts; Frames, Width, Height; `steps`, `cfg`, `gamma` (0 = the prompt alone).\n\n"
        + _MODELSCOPE + " The LoRA must have been tuned on the same model."),
}

# The notes of make serve's demo variants of the DiT workflows (scripts/comfy_server.py DEMO_USER_WORKFLOWS): the
# bundled graph at demo size on demo files (their names say so), with the demo-only text encoder.
_DEMO_TEXT = ("**Demo-only nodes** (`make serve` installs them; scripts/demo_nodes.py): *Demo text encoder* "
              "stands in for the real text encoder, which ComfyUI only builds at full size (umT5-XXL 5.7 B, T5-XXL "
              "4.8 B, Qwen2.5-VL 7B): it is the toy world's CLIP, its states zero-padded to the width the video "
              "model takes.")
_DEMO_WAN = ("**Model**: the Wan toy (`sample_data/models/searchpriors-toy-wan`, docs/toy_world.md): ComfyUI's own "
             "WanModel (5.4 M parameters) and Wan 2.1 VAE, trained here on the toy world at 17 frames of 128 x 128, "
             "linked as `models/diffusion_models/searchpriors-demo-toy-wan-t2v.safetensors` and "
             "`models/vae/searchpriors-demo-toy-wan-vae.safetensors`; shift 3, cfg 5, 10 steps, eta 1. It draws "
             "the prompt's colour and shape and most of its motions (held-out motion 0.66 base, 0.72 with POS on the "
             "GPU benchmark; it draws a red square as a circle, so this demo's square is blue). Prompts the toy "
             "knows: a colour (red, green, blue, yellow, purple, cyan), a shape "
             "(circle, square, triangle) and a motion (moves left / right / up / down, grows, circles).")
_DEMO_RANDOM = ("**Model**: no toy exists for this family, so `make serve` wrote a tiny model of ComfyUI's own "
                "classes with **random weights**: **the video is noise**. It shows that the graph runs end to "
                "end (retrieval, inversion, mix, hybrid guidance, decoding) at 9 frames of 128 x 128 and 8 steps.")


_WAN_PROMPT = "a blue square moves to the left"   # scripts/comfy_server.py TOY_WAN_PROMPT


def _demo_note(title: str, bundled: str, model: str, extra: str = "",
               prompt: str = "a red square moves to the left") -> str:
    return (f"## Demo: {title}\n\n"
            f"The bundled **{bundled}** workflow (Templates dialog) set for demo models: the same graph and nodes, "
            f"the toy world's index `searchpriors_toy_world` and the held-out prompt \"{prompt}\", at demo "
            "size. " + extra + "\n\n" + model + "\n\n" + _DEMO_TEXT + "\n\n"
            f"**For real videos** open **{bundled}** from the Templates dialog: its note names the model files, "
            "where to get them and where they go.")


DEMO_NOTES = {
    "toy_world_pos_wan21": _demo_note("POS on the Wan toy", "pos_wan21", _DEMO_WAN,
                                      "One to two minutes on 2 CPU cores.", prompt=_WAN_PROMPT),
    "toy_world_pos_wan22_a14b": _demo_note(
        "POS with two experts, on the Wan toy", "pos_wan22_a14b", _DEMO_WAN,
        "**Both experts are the Wan toy** (the same file in both loaders): no two-expert toy exists, so the "
        "inversion and the two sampling stages split at the boundary as with Wan 2.2 A14B, but the video is the "
        "one-model toy's.", prompt=_WAN_PROMPT),
    "toy_world_search_then_tune_wan21": _demo_note(
        "Search-then-tune on the Wan toy", "search_then_tune_wan21", _DEMO_WAN,
        "The keyframe detector is a tiny **random** GroundingDINO (`grounding-dino-tiny-test`); on the world's "
        "clips it keeps the full frame (`full_frame_above` 0). VMC runs 10 steps at lr 1e-3, rank 8 (the real "
        "workflow: 400 / 1e-4 / 32): too few to change this video much; 200-400 steps lift the toy's held-out "
        "motion by 0.03-0.06 on the GPU benchmark (docs/toy_world.md).", prompt=_WAN_PROMPT),
    "demo_random_pos_hunyuan15": _demo_note(
        "POS on HunyuanVideo 1.5 (random demo model: noise)", "pos_hunyuan15", _DEMO_RANDOM,
        "*Load VAE (demo size)* stands in for Load VAE: ComfyUI builds the HunyuanVideo 1.5 VAE at full size "
        "(1.26 B parameters) whatever the file holds."),
    "demo_random_pos_ltxv": _demo_note("POS on LTX-Video (random demo model: noise)", "pos_ltxv", _DEMO_RANDOM),
}


# The notes of make serve's toy-world variants of the ModelScope workflows (scripts/comfy_server.py
# TOY_USER_WORKFLOWS): the bundled graph set for the trained toy model and the world's library.
_TOY_MODEL = ("**Model**: the toy text-to-video model (`sample_data/models/searchpriors-toy-t2v`, docs/toy_world.md): "
              "the real ModelScope classes trained here on the toy world, 8 frames of 64 x 64, linked into "
              "`models/diffusers/`; 20 DDIM steps, eta 1. Prompts it knows: a colour (red, green, blue, yellow, purple, "
              "cyan), a shape (circle, square, triangle) and a motion (moves left / right / up / down, grows, "
              "circles). **Index**: `searchpriors_toy_world`, the world's 288 captioned clips, built on the first start.")


def _toy_note(title: str, bundled: str, extra: str = "") -> str:
    return (f"## Toy world: {title}\n\n"
            f"The bundled **{bundled}** workflow (Templates dialog) set for the toy world: the same graph and nodes "
            "at the toy's size, with the held-out prompt \"a red square moves to the left\" (a pair the model never "
            "saw in training). " + extra + "\n\n" + _TOY_MODEL + "\n\n"
            f"**For real videos** open **{bundled}** from the Templates dialog: its note names the model files, "
            "where to get them and where they go.")


TOY_NOTES = {
    "toy_world_pos": _toy_note("POS", "pos_modelscope", "A few seconds a video on 2 CPU cores."),
    "toy_world_search_then_tune": _toy_note(
        "search-then-tune", "search_then_tune",
        "The keyframe detector is a tiny **random** GroundingDINO (`grounding-dino-tiny-test`); on the world's clips "
        "it keeps the full frame. VMC runs 40 steps here (the real workflow: 400); on the toy 100-300 steps are "
        "needed before the tuned model follows the clip (docs/toy_world.md)."),
    "toy_world_clips_pos": _toy_note(
        "POS from your own clips", "clip_library_pos",
        "The Clip Library Builder cuts the reels of toy-world clips in `input/searchpriors_toy_clips/` into shots "
        "and captions each with the toy captioner (`models/vlm/toy`: the world's probe, which reads colour, shape "
        "and motion), then POS searches that index."),
}
