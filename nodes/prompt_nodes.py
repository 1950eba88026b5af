"""PromptAtomizer node: a prompt into its sentence vector and atomized motion units (Search-T2V 4.1)."""

from __future__ import annotations

from comfy_api.v0_0_2 import io

from ..retrieval.embedding import atomize
from ..retrieval.models import DEFAULT_SENTENCE_MODEL, DEFAULT_SPACY_MODEL, load_sentence_model, load_spacy
from . import comfy_glue as glue

AtomizedPrompt = io.Custom("ATOMIZED_PROMPT")


class PromptAtomizer(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        spacy_models, sentence_models = glue.spacy_choices(), glue.sentence_choices()
        return io.Schema(
            node_id="SearchPriors_PromptAtomizer",
            display_name="Prompt Atomizer (Search-T2V)",
            category=glue.CATEGORY,
            description="Parses the prompt into motion / actor / recipient units (spaCy) and embeds the "
                        "sentence and every unit (Sentence-Transformers). Text models run on the CPU.",
            inputs=[
                io.String.Input("prompt", multiline=True, default="A panda rides a bicycle past the Eiffel Tower"),
                io.Combo.Input("spacy_model", options=spacy_models,
                               default=DEFAULT_SPACY_MODEL if DEFAULT_SPACY_MODEL in spacy_models else spacy_models[0],
                               tooltip="spaCy pipeline with a parser; installed packages and models/spacy/"),
                io.Combo.Input("sentence_model", options=sentence_models,
                               default=DEFAULT_SENTENCE_MODEL if DEFAULT_SENTENCE_MODEL in sentence_models else sentence_models[0],
                               tooltip="Sentence-Transformers model; folders in models/sentence_transformers/"),
            ],
            outputs=[
                AtomizedPrompt.Output("atomized", display_name="atomized"),
                io.String.Output("units", display_name="units", tooltip="Readable units, e.g. [core] panda -ride-> bicycle"),
            ],
        )

    @classmethod
    def execute(cls, prompt: str, spacy_model: str, sentence_model: str) -> io.NodeOutput:
        nlp = load_spacy(spacy_model, glue.model_folders(glue.SPACY_FOLDER))
        encoder = load_sentence_model(sentence_model, glue.model_folders(glue.SENTENCE_FOLDER))
        atomized = atomize(prompt, nlp, encoder)
        return io.NodeOutput(atomized, atomized.describe())
