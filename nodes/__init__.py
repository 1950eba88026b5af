"""ComfyUI adapters of ComfyUI-SearchPriors: thin nodes over ``retrieval`` and ``distill``.

Each module is one stage group; a node validates its inputs, calls one function of the pure packages,
and converts types. Registration uses ComfyUI's V3 schema from the versioned ``comfy_api.v0_0_2``.
"""

from __future__ import annotations

from comfy_api.v0_0_2 import ComfyExtension, io

from .comfy_glue import register_model_folders
from .index_nodes import MotionIndexBuilder, MotionIndexLoader
from .keyframe_nodes import KeyframeExtractor
from .modelscope_nodes import DiffusersSchedulerSigmas, ModelScopeLoader
from .prompt_nodes import PromptAtomizer
from .reference_frames_nodes import ReferenceFrames
from .retrieval_nodes import MotionRetriever

NODES: list[type[io.ComfyNode]] = [PromptAtomizer, MotionIndexBuilder, MotionIndexLoader, MotionRetriever]
NODES.append(ReferenceFrames)
NODES += [ModelScopeLoader, DiffusersSchedulerSigmas]
NODES.append(KeyframeExtractor)


class SearchPriorsExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        register_model_folders()
        return list(NODES)
