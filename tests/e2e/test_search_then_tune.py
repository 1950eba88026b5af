"""Search-then-tune end to end on a real server. The bundled workflow (API format) runs through POST /prompt
with the tiny random ModelScope-family model, the tiny random GroundingDINO and an index of real clips from
../shared/data: retrieve (search_t2v), reference frames, keyframes, VAE encode, a few VMC tuning steps, Save
Motion LoRA, DDIM inversion of the keyframes with the tuned model, sampling through core nodes, VAE decode,
Create Video + Save Video. The saved mp4 decodes to the requested frames and the LoRA lies in models/loras."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

API_DIR = Path(__file__).resolve().parents[2] / "workflows" / "api"
FRAMES, SIZE, TUNE_STEPS, SAMPLE_STEPS = 4, 64, 3, 3


def test_search_then_tune_workflow_tunes_saves_a_lora_and_makes_a_video(comfy_server, comfy_harness, tiny_t2v,
                                                                      tiny_grounding_dino, clip_index):
    graph = json.loads((API_DIR / "search_then_tune.json").read_text(encoding="utf-8"))
    graph = comfy_harness.search_then_tune_at_test_size(graph, FRAMES, SIZE, TUNE_STEPS, SAMPLE_STEPS)
    entry = comfy_server.run_prompt(graph, timeout=900)
    comfy_harness.assert_success(entry, "search_then_tune")

    decoded = comfy_harness.saved_video_frames(comfy_server, entry, graph)
    assert len(decoded) == FRAMES
    assert decoded[0].shape == (SIZE, SIZE, 3)

    by_title = {v["_meta"]["title"]: k for k, v in graph.items()}
    texts = {title: "\n".join(comfy_harness.history_texts(entry, by_title[title]))
             for title in ("Retrieval table", "Segment", "VMC report", "Saved motion LoRA")}
    assert any(caption in texts["Retrieval table"] for _, caption in clip_index), texts["Retrieval table"]
    assert f"{TUNE_STEPS} of {TUNE_STEPS} steps" in texts["VMC report"], texts["VMC report"]
    assert texts["Segment"].strip(), "the keyframe segment text is empty"
    # The LoRA the workflow saved lies in the server's models/loras under the name it reported.
    lora_name = texts["Saved motion LoRA"].strip()
    assert lora_name.startswith("motion_lora/search_then_tune") and lora_name.endswith(".safetensors"), lora_name
    assert (comfy_server.models_dir / "loras" / lora_name).is_file(), lora_name
    for title in ("Keyframe preview", "VMC loss curve"):
        assert entry["outputs"].get(by_title[title], {}).get("images"), f"{title} shows no image"
    assert comfy_server.running
