"""Write toy-world clips (mp4, 8 fps) and a captions CSV that Motion Index Builder reads.

    python scripts/make_toy_world.py --out /tmp/toy_train --count 10000 --split train --seed 0
    python scripts/make_toy_world.py --out sample_data/toy_world --count 288 --cover --seed 0 --overwrite

The logic is distill/toy_world_writer.py (with distill/toy_world.py), loaded by path here because the
repository root must never go on sys.path (its nodes/ would shadow ComfyUI's).
"""

from __future__ import annotations

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def load_writer():
    from comfy_server import load_by_path  # this file's folder is sys.path[0]

    # kept in sys.modules: the forked writer processes find their functions by module name
    return load_by_path("searchpriors_toy_world_writer", os.path.join(HERE, "..", "distill", "toy_world_writer.py"))


if __name__ == "__main__":
    sys.exit(load_writer().main())
