"""ComfyUI-SearchPriors: registers the pack's nodes with ComfyUI (V3 schema) and its browser script.

The import of ``nodes`` is deferred to ComfyUI's call so that ``comfyui_searchpriors.retrieval`` (and the
``searchpriors`` CLI) import outside ComfyUI.
"""

# web/searchpriors.js: the retriever's report on the node, and previews of the pack's text line by line.
WEB_DIRECTORY = "./web"


async def comfy_entrypoint():
    from .nodes import SearchPriorsExtension

    return SearchPriorsExtension()
