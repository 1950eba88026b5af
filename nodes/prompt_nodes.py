"""PromptAtomizer node: a prompt into its sentence vector and atomized motion units (Search-T2V 4.1)."""

from __future__ import annotations

from comfy_api.v0_0_2 import io

from ..retrieval.atomizer import MAX_PROMPT_CHARS, clean_prompt
from ..retrieval.embedding import atomize, atomize_many
from ..retrieval.errors import SearchPriorsError
from ..retrieval.models import load_sentence_model, load_spacy
from .comfy_internals import glue
from .sockets import AtomizedPrompt


# The widget's ceiling for max_prompt_chars: spaCy needs about 1 GB per 100,000 characters it parses.
MAX_PROMPT_CHARS_CEILING = 100_000


class PromptAtomizer(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SearchPriors_PromptAtomizer",
            display_name="Prompt Atomizer",
            category=glue.CATEGORY,
            description="Parses the prompt into motion / actor / recipient units (spaCy) and embeds the "
                        "sentence and every unit (Sentence-Transformers). Style, camera and quality phrases "
                        "are split off as modifiers. Text models run on the CPU.",
            inputs=[
                io.String.Input("prompt", multiline=True, default="A panda rides a bicycle past the Eiffel Tower"),
                *glue.model_inputs(),
                io.Boolean.Input("one_prompt_per_line", default=False, optional=True,
                                 tooltip="Atomize every non-empty line as its own prompt (batched). A line that "
                                         "fails is reported in 'units' in its place and the others go on; "
                                         "'atomized' is the first line that succeeded."),
                io.Int.Input("max_prompt_chars", default=MAX_PROMPT_CHARS, min=1, max=MAX_PROMPT_CHARS_CEILING,
                             optional=True,
                             tooltip="Longer prompts (per line in one-prompt-per-line mode) are refused "
                                     "before parsing: parsing costs about 1 GB per 100,000 characters."),
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
    def execute(cls, prompt: str, spacy_model: str, sentence_model: str, one_prompt_per_line: bool = False,
                max_prompt_chars: int = MAX_PROMPT_CHARS) -> io.NodeOutput:
        max_chars = int(max_prompt_chars) if max_prompt_chars else MAX_PROMPT_CHARS
        if not one_prompt_per_line:
            clean_prompt(prompt, max_chars)  # empty or oversized: refused before any model loads
            nlp = load_spacy(spacy_model, glue.model_folders(glue.SPACY_FOLDER))
            encoder = load_sentence_model(sentence_model, glue.model_folders(glue.SENTENCE_FOLDER))
            atomized = atomize(prompt, nlp, encoder, max_chars)
            return io.NodeOutput(atomized, atomized.describe())
        lines = [line for line in (prompt or "").splitlines() if line.strip()]
        if not lines:
            raise SearchPriorsError("The prompt is empty: type one prompt per line, e.g. 'A panda rides a bicycle'.")
        nlp = load_spacy(spacy_model, glue.model_folders(glue.SPACY_FOLDER))
        encoder = load_sentence_model(sentence_model, glue.model_folders(glue.SENTENCE_FOLDER))
        first = None
        report, failed = [], 0
        for number, (line, result) in enumerate(zip(lines, atomize_many(lines, nlp, encoder, max_chars)), start=1):
            if isinstance(result, Exception):
                failed += 1
                report.append(f"line {number}: error: {result}")
                continue
            first = first if first is not None else result
            body = result.describe().replace("\n", "\n    ")
            report.append(f"line {number}: {result.text}\n    {body}")
        if first is None:
            raise SearchPriorsError(f"No line of the prompt could be atomized ({failed} of {len(lines)} failed):\n"
                                    + "\n".join(report))
        report.append(f"{len(lines) - failed} of {len(lines)} lines atomized, {failed} failed; 'atomized' "
                      f"carries the first that succeeded.")
        return io.NodeOutput(first, "\n".join(report))
