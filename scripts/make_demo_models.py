"""Writes the random demo models of `make serve` under their demo names (scripts/comfy_server.py
install_demo_models runs this with the server's Python):

    python scripts/make_demo_models.py --models-dir <base>/models [--comfyui DIR]

- diffusion_models/searchpriors-demo-random-hunyuan15.safetensors: a tiny HunyuanVideo 1.5 (ComfyUI's own class,
  random weights; tests/tiny_models.py tiny_hunyuan15_state_dict), for Load Diffusion Model;
- vae/searchpriors-demo-random-hunyuan15-vae.safetensors: a tiny HunyuanVideo 1.5 VAE (widths 8..64), for the demo
  VAE loader (scripts/demo_nodes.py: ComfyUI builds this VAE at full size whatever the file holds);
- checkpoints/searchpriors-demo-random-ltxv.safetensors: a tiny LTX-Video checkpoint (transformer and VAE, its VAE
  config in the metadata), for core Load Checkpoint.

No toy exists for these two families, so their videos are noise: the files show that the graphs run. Each file
is written whole or not at all (a .partial file renamed), and one already there is kept.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    import comfy_server as harness  # this file's folder is sys.path[0]

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models-dir", type=Path, required=True, help="ComfyUI's models folder")
    parser.add_argument("--comfyui", type=Path, default=None, help="the ComfyUI checkout (default: as the tests find it)")
    args = parser.parse_args(argv)
    comfyui = str(args.comfyui or harness.default_comfyui_dir())
    if comfyui not in sys.path:
        sys.path.insert(0, comfyui)
    import comfy.cli_args

    comfy.cli_args.args.cpu = True
    import safetensors.torch

    tiny = harness.load_test_helper("tiny_models")
    makers = {
        f"diffusion_models/{harness.DEMO_RANDOM_HUNYUAN15}": lambda: tiny.tiny_hunyuan15_state_dict(seed=0),
        f"vae/{harness.DEMO_RANDOM_HUNYUAN15_VAE}": lambda: tiny.tiny_hunyuan15_vae_state_dict(seed=0),
        f"checkpoints/{harness.DEMO_RANDOM_LTXV}": lambda: tiny.tiny_ltxv_checkpoint(seed=0),
    }
    for name, make in makers.items():
        target = args.models_dir / name
        if target.is_file():
            continue
        made = make()
        state, metadata = made if isinstance(made, tuple) else (made, None)
        metadata = {**(metadata or {}), "searchpriors.demo": "random weights: the output is noise"}
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".partial")
        safetensors.torch.save_file({k: v.contiguous() for k, v in state.items()}, str(partial), metadata=metadata)
        os.replace(partial, target)
        print(f"wrote {target} ({target.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
