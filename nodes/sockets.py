"""The pack's own socket types, in one place so that node modules never import each other for them.

Core types (MODEL, LATENT, CONDITIONING, IMAGE, ...) come from comfy_api's ``io``; these are the pack's:
"""

from comfy_api.v0_0_2 import io

AtomizedPrompt = io.Custom("ATOMIZED_PROMPT")   # Prompt Atomizer -> Motion Retriever, Keyframe Extractor
MotionIndexType = io.Custom("MOTION_INDEX")     # Motion Index Builder / Loader -> Motion Retriever
RetrievalType = io.Custom("RETRIEVAL")          # Motion Retriever -> Reference Video Frames, Keyframe Extractor, rewriter
MotionLoraType = io.Custom("MOTION_LORA")       # VMC Temporal LoRA -> Save Motion LoRA
