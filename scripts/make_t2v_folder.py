"""Write a ModelScope/ZeroScope-family diffusers folder with random weights (no download).

    python scripts/make_t2v_folder.py --size tiny --out ComfyUI/models/diffusers/tiny-t2v
    python scripts/make_t2v_folder.py --size zeroscope --out ComfyUI/models/diffusers/zeroscope-random [--dtype fp16]

tiny is for CI and the demo (plumbing only: it makes noise, not videos); zeroscope has the real
zeroscope_v2_576w configs for GPU benchmarks. The logic is distill/synthetic_t2v.py, loaded by path here
because the repository root must never go on sys.path (its nodes/ would shadow ComfyUI's).
"""

from __future__ import annotations

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def load_writer():
    from comfy_server import load_by_path  # this file's folder is sys.path[0]

    return load_by_path("searchpriors_synthetic_t2v", os.path.join(HERE, "..", "distill", "synthetic_t2v.py"))


if __name__ == "__main__":
    sys.exit(load_writer().main())
