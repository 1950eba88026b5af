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


def test_wan_text_whitening_folds_in_and_out_of_the_text_embedding():
    """The Wan toy trains its text path on whitened CLIP states and is folded back to raw states: the folded
    layer on whitened input equals the raw layer on raw input, the fold back is exact, and the whitened states
    have unit covariance."""
    tt = _trainer()
    g = torch.Generator().manual_seed(0)
    width = 8
    basis = torch.randn(width, width, generator=g)
    states = torch.randn(400, width, generator=g) * torch.tensor([5.0, 3, 1, 1, 0.3, 0.2, 0.1, 0.05]) @ basis
    m = states.mean(0)
    e, v = torch.linalg.eigh(torch.cov((states - m).T))
    a = v @ torch.diag(e.rsqrt()) @ v.T
    layer = torch.nn.Linear(width + 4, 6)   # the zero-padded text width beyond the CLIP's is left alone
    w0, b0 = layer.weight.detach().clone(), layer.bias.detach().clone()
    x = torch.cat([states[:5], torch.zeros(5, 4)], dim=1)
    raw = layer(x).detach()
    tt._refold_text_input([(layer.weight.data, layer.bias.data)], m, a, to_whitened=True)
    whitened = x.clone()
    whitened[:, :width] = (x[:, :width] - m) @ a
    assert torch.allclose(layer(whitened), raw, atol=1e-4)
    assert not torch.allclose(layer.weight.data, w0)
    tt._refold_text_input([(layer.weight.data, layer.bias.data)], m, a, to_whitened=False)
    assert torch.allclose(layer.weight.data, w0, atol=1e-5) and torch.allclose(layer.bias.data, b0, atol=1e-5)
    assert torch.allclose(((states - m) @ a).T.cov(), torch.eye(width), atol=1e-3)
