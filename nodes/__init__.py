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
from .pos_nodes import DDIMVideoInvert, GaussianNoiseMix, HybridSemanticGuider, HybridSemanticSampler
from .prompt_nodes import PromptAtomizer
from .reference_frames_nodes import ReferenceFrames
from .retrieval_nodes import MotionRetriever
from .rewriter_nodes import ReferenceRewriter
from .vmc_nodes import LoadMotionLoRA, SaveMotionLoRA, VMCTemporalLoRA

NODES: list[type[io.ComfyNode]] = [PromptAtomizer, MotionIndexBuilder, MotionIndexLoader, MotionRetriever]
NODES.append(ReferenceFrames)
NODES += [ModelScopeLoader, DiffusersSchedulerSigmas]
NODES += [DDIMVideoInvert, GaussianNoiseMix, HybridSemanticGuider, HybridSemanticSampler]
NODES.append(ReferenceRewriter)
NODES += [VMCTemporalLoRA, SaveMotionLoRA, LoadMotionLoRA]
NODES.append(KeyframeExtractor)


class SearchPriorsExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        register_model_folders()
        return list(NODES)
