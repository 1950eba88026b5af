"""ComfyUI-SearchPriors: registers the pack's nodes with ComfyUI (V3 schema) and nothing else.

The import of ``nodes`` is deferred to ComfyUI's call so that ``comfyui_searchpriors.retrieval`` (and the
``searchpriors`` CLI) import outside ComfyUI.
"""


async def comfy_entrypoint():
    from .nodes import SearchPriorsExtension

    return SearchPriorsExtension()
