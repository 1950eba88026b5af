"""ComfyUI adapters of ComfyUI-SearchPriors: thin nodes over ``retrieval`` and ``distill``.

Each module is one stage group; a node validates its inputs, calls one function of the pure packages,
and converts types. Registration uses ComfyUI's V3 schema from the versioned ``comfy_api.v0_0_2``.
"""

from __future__ import annotations

import logging

from comfy_api.v0_0_2 import ComfyExtension, io

from .comfy_internals.glue import install_number_checks, register_model_folders
from .index_nodes import MotionIndexBuilder, MotionIndexLoader
from .clip_library_nodes import ClipLibraryBuilder
from .keyframe_nodes import KeyframeExtractor
from .modelscope_nodes import DiffusersSchedulerSigmas, ModelScopeLoader
from .pos_nodes import DDIMVideoInvert, GaussianNoiseMix, HybridSemanticGuider, HybridSemanticSampler
from .prompt_nodes import PromptAtomizer
from .reference_frames_nodes import ReferenceFrames
from .retrieval_nodes import MotionRetriever
from .rewriter_nodes import ReferenceRewriter
from .vmc_nodes import EncodeKeyframes, LoadMotionLoRA, SaveMotionLoRA, VMCTemporalLoRA

NODES: list[type[io.ComfyNode]] = [PromptAtomizer, MotionIndexBuilder, MotionIndexLoader, MotionRetriever]
NODES.append(ReferenceFrames)
NODES += [ModelScopeLoader, DiffusersSchedulerSigmas]
NODES += [DDIMVideoInvert, GaussianNoiseMix, HybridSemanticGuider, HybridSemanticSampler]
NODES.append(ReferenceRewriter)
NODES += [VMCTemporalLoRA, EncodeKeyframes, SaveMotionLoRA, LoadMotionLoRA]
NODES.append(KeyframeExtractor)
NODES.append(ClipLibraryBuilder)
for _node in NODES:   # every INT/FLOAT input: finite and within its declared range (comfy_internals/glue.py says why)
    install_number_checks(_node)


def loadable_nodes(nodes=None) -> list[type[io.ComfyNode]]:
    """The nodes whose schema ComfyUI accepts. One node with a bad schema would otherwise make ComfyUI drop
    the whole pack; it is left out with an error in the log instead, and the others load."""
    good = []
    for node in NODES if nodes is None else nodes:
        try:
            node.GET_SCHEMA()
        except Exception as exc:  # noqa: BLE001 (any schema error: keep the other nodes)
            logging.error("ComfyUI-SearchPriors: node %s left out, its schema is invalid: %s", node.__name__, exc)
            continue
        good.append(node)
    return good


class SearchPriorsExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        register_model_folders()
        return loadable_nodes()
