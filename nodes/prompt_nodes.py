"""PromptAtomizer node: a prompt into its sentence vector and atomized motion units (Search-T2V 4.1)."""

from __future__ import annotations

from comfy_api.v0_0_2 import io

from ..retrieval.embedding import atomize
from ..retrieval.models import load_sentence_model, load_spacy
from . import comfy_glue as glue

AtomizedPrompt = io.Custom("ATOMIZED_PROMPT")


class PromptAtomizer(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SearchPriors_PromptAtomizer",
            display_name="Prompt Atomizer",
            category=glue.CATEGORY,
            description="Parses the prompt into motion / actor / recipient units (spaCy) and embeds the "
                        "sentence and every unit (Sentence-Transformers). Text models run on the CPU.",
            inputs=[
                io.String.Input("prompt", multiline=True, default="A panda rides a bicycle past the Eiffel Tower"),
                *glue.model_inputs(),
            ],
            outputs=[
                AtomizedPrompt.Output("atomized", display_name="atomized"),
                io.String.Output("units", display_name="units", tooltip="Readable units, e.g. [core] panda -ride-> bicycle"),
            ],
        )

    @classmethod
    def validate_inputs(cls, spacy_model=None, sentence_model=None):
        return glue.check_model_dropdowns(spacy_model, sentence_model)

    @classmethod
    def execute(cls, prompt: str, spacy_model: str, sentence_model: str) -> io.NodeOutput:
        nlp = load_spacy(spacy_model, glue.model_folders(glue.SPACY_FOLDER))
        encoder = load_sentence_model(sentence_model, glue.model_folders(glue.SENTENCE_FOLDER))
        atomized = atomize(prompt, nlp, encoder)
        return io.NodeOutput(atomized, atomized.describe())
