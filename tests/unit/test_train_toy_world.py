"""scripts/train_toy_world.py: checkpoint shards (the lent GPU returns files of at most 16 MiB) and resume."""

from __future__ import annotations

import json
import os

import torch

import searchpriors_comfy_server as harness  # scripts/comfy_server.py, loaded by tests/conftest.py

SCRIPT = os.path.join(os.path.dirname(__file__), "..", "..", "scripts", "train_toy_world.py")


def _trainer():
    return harness.load_by_path("searchpriors_train_toy_world", SCRIPT)


def test_shards_stay_under_the_limit_and_round_trip(tmp_path):
    tt = _trainer()
    g = torch.Generator().manual_seed(0)
    state = {f"layer{i}.weight": torch.randn(1024, 1024, generator=g) for i in range(9)}   # 36 MiB of fp32
    state["small.bias"] = torch.randn(7, generator=g)
    meta = {"meta": json.dumps({"unet_steps": 12.0})}
    tt.save_sharded(state, str(tmp_path), "ckpt", meta)
    files = sorted(os.listdir(tmp_path))
    assert len(files) >= 3 and all(f.startswith("ckpt-") and f.endswith(".safetensors") for f in files)
    assert all(os.path.getsize(tmp_path / f) <= 16 * 1024 * 1024 for f in files)
    loaded, stored = tt.load_sharded(str(tmp_path), "ckpt")
    assert stored == meta and loaded.keys() == state.keys()
    assert all(torch.equal(loaded[k], state[k]) for k in state)
    # a smaller checkpoint written over a larger one leaves no stale shard behind
    tt.save_sharded({"only": torch.zeros(3)}, str(tmp_path), "ckpt", meta)
    assert sorted(os.listdir(tmp_path)) == ["ckpt-00.safetensors"]


def test_models_have_the_toy_configs_and_ema_follows_the_weights():
    tt = _trainer()
    unet, vae, te = tt.build_models(0)
    assert list(unet.config.block_out_channels) == [48, 96, 96]
    assert len(vae.config.block_out_channels) == 4          # SD-style: ComfyUI's VAE conversion needs 4 levels
    assert te.config.vocab_size == 49408
    ema = tt.EMA({"te": te}, 0.5)
    with torch.no_grad():
        for p in te.parameters():
            p.add_(1.0)
    key = next(k for k in te.state_dict() if k.endswith("final_layer_norm.weight"))
    before = te.state_dict()[key].clone()
    ema.update()
    shadow = ema.shadow[f"te.{key}"]
    assert torch.allclose(shadow, before - 0.5)              # halfway from the old weights (before - 1) to the new
