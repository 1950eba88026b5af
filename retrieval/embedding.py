"""Sentence and phrase vectors (Search-T2V Sec. 4.1) and the ATOMIZED_PROMPT value.

All vectors are L2-normalised float32, so a dot product is the cosine similarity. A missing role (no
actor, no recipient, no verb) gets the zero vector, and its similarity to anything is defined as 0: a
missing role neither rewards nor penalises a match. Each distinct phrase is embedded once per call.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Optional, Sequence, Union

import numpy as np

from .atomizer import (MAX_PROMPT_CHARS, ParsedPrompt, Unit, prompt_failure, check_language, clean_prompt, english_words_of,
                       parse_doc, parse_prompts, split_modifiers, verb_forms_of)
from ..errors import SearchPriorsError
from .models import spacy_identity
from .parse_worker import start_parse_worker

ROLES = ("motion", "actor", "recipient")


def sentence_model_identity(model) -> str:
    """The encoder's name and width, recorded in indexes ("all-MiniLM-L6-v2/384")."""
    name = getattr(model, "searchpriors_name", None) or os.path.basename(str(getattr(model, "model_card_data", "")) or "model")
    return f"{name}/{embedding_dim(model)}"


def embedding_dim(model) -> int:
    getter = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    return int(getter())


# Tokens per encoder call (rows x token length). Texts are grouped by token length, so no batch carries
# padding and the encoder runs without an attention mask: on MSR-VTT captions a padded batch of 128 held a
# third more tokens than its texts, and short role phrases over half more (benchmarks/bench_retrieval_speed).
BATCH_TOKENS = 2048


def token_lengths(model, texts: Sequence[str]) -> list[int]:
    """Each text's length in the encoder's tokens (special tokens included, truncated as the model
    truncates). A model without a tokenizer gets words + 2, which only affects how texts are grouped."""
    tokenizer = getattr(model, "tokenizer", None)
    if tokenizer is not None and len(texts) > 0:
        limit = getattr(model, "max_seq_length", None)
        try:
            ids = tokenizer(list(texts), add_special_tokens=True, truncation=limit is not None,
                            max_length=limit)["input_ids"]
            return [len(x) for x in ids]
        except (TypeError, ValueError, KeyError):
            pass  # not a Hugging Face tokenizer: group by words instead
    return [len(t.split()) + 2 for t in texts]


def length_batches(model, texts: Sequence[str], batch_tokens: int = BATCH_TOKENS) -> list[list[int]]:
    """Row numbers of ``texts`` in batches of one token length each and about ``batch_tokens`` tokens,
    shortest first. Together the batches hold every row exactly once."""
    by_length: dict[int, list[int]] = {}
    for row, length in enumerate(token_lengths(model, texts)):
        by_length.setdefault(length, []).append(row)
    batches = []
    for length in sorted(by_length):
        rows = by_length[length]
        step = max(1, batch_tokens // max(1, length))
        batches.extend(rows[a:a + step] for a in range(0, len(rows), step))
    return batches


def encode_batch(model, texts: Sequence[str]) -> np.ndarray:
    """Normalised float32 vectors of ``texts`` in one encoder call."""
    vectors = model.encode(list(texts), batch_size=max(1, len(texts)), convert_to_numpy=True,
                           normalize_embeddings=True, show_progress_bar=False)
    return np.ascontiguousarray(vectors, dtype=np.float32)


def encode(model, texts: Sequence[str], batch_tokens: int = BATCH_TOKENS) -> np.ndarray:
    """Normalised float32 vectors, one row per text, encoded in batches of equal token length."""
    out = np.empty((len(texts), embedding_dim(model)), dtype=np.float32)
    for rows in length_batches(model, texts, batch_tokens):
        out[rows] = encode_batch(model, [texts[i] for i in rows])
    return out


class PhraseTable:
    """Distinct role phrases and their vectors; each phrase is embedded once."""

    def __init__(self, dim: int):
        self.dim = dim
        self.ids: dict[str, int] = {}
        self._blocks: list[np.ndarray] = []

    def __len__(self) -> int:
        return len(self.ids)

    def add(self, model, phrases: Iterable[str], batch_tokens: int = BATCH_TOKENS) -> None:
        new = [p for p in dict.fromkeys(phrases) if p not in self.ids]
        if not new:
            return
        vectors = encode(model, new, batch_tokens)
        for phrase in new:
            self.ids[phrase] = len(self.ids)
        self._blocks.append(vectors)

    def seed(self, phrases: Sequence[str], vectors: np.ndarray) -> None:
        """Add phrases whose vectors are already known (from an existing index)."""
        keep = [i for i, p in enumerate(phrases) if p not in self.ids]
        for i in keep:
            self.ids[phrases[i]] = len(self.ids)
        if keep:
            self._blocks.append(np.asarray(vectors[keep], dtype=np.float32))

    def id_of(self, phrase: Optional[str]) -> int:
        return -1 if phrase is None else self.ids[phrase]

    def vectors(self) -> np.ndarray:
        if not self._blocks:
            return np.zeros((0, self.dim), dtype=np.float32)
        if len(self._blocks) > 1:
            self._blocks = [np.concatenate(self._blocks, axis=0)]
        return self._blocks[0]

    def texts(self) -> list[str]:
        return list(self.ids)


@dataclass
class AtomizedPrompt:
    """What PromptAtomizer hands to MotionRetriever: the parse plus every vector of Sec. 4.1."""

    text: str
    units: list[Unit]
    core_index: int
    v_total: np.ndarray            # (d,)
    unit_vectors: np.ndarray       # (m, 3, d): motion, actor, recipient; zero rows for missing roles
    sentence_model: str
    spacy_model: str
    fallback: Optional[str] = None
    notes: list[str] = field(default_factory=list)
    modifiers: list[str] = field(default_factory=list)  # style / camera / quality phrases split off

    @property
    def parsed(self) -> ParsedPrompt:
        return ParsedPrompt(self.text, self.units, self.core_index, self.fallback, self.notes, self.modifiers)

    def describe(self) -> str:
        return self.parsed.describe()

    def to_json(self, with_vectors: bool = False) -> dict:
        out = {
            "prompt": self.text,
            "core": self.core_index,
            "units": [_unit_json(u) for u in self.units],
            "modifiers": list(self.modifiers),
            "fallback": self.fallback,
            "notes": list(self.notes),
            "sentence_model": self.sentence_model,
            "spacy_model": self.spacy_model,
        }
        if with_vectors:
            out["v_total"] = self.v_total.tolist()
            out["unit_vectors"] = self.unit_vectors.tolist()
        return out


def _unit_json(unit: Unit) -> dict:
    out = dict(zip(ROLES, unit.roles()))
    if unit.rule:
        out["rule"] = unit.rule  # only on recovered units, so plain units keep their three keys
    return out


def unit_vectors(units: Sequence[Unit], table: PhraseTable) -> np.ndarray:
    """(m, 3, d) role vectors looked up in ``table``; zeros for missing roles."""
    vectors = table.vectors()
    out = np.zeros((len(units), 3, table.dim), dtype=np.float32)
    for i, unit in enumerate(units):
        for r, phrase in enumerate(unit.roles()):
            if phrase is not None:
                out[i, r] = vectors[table.ids[phrase]]
    return out


def atomize(prompt: str, nlp, sentence_model, max_chars: Optional[int] = MAX_PROMPT_CHARS) -> AtomizedPrompt:
    """Atomize and embed one user prompt (validated: non-empty, at most ``max_chars`` characters,
    English when the parse model is English)."""
    text = clean_prompt(prompt, max_chars)
    content, modifiers = split_modifiers(text)
    doc = nlp(content)
    check_language(doc, nlp.lang, english_words_of(nlp), modifiers)
    parsed = parse_doc(doc, verb_forms_of(nlp), text=text, modifiers=modifiers, nlp=nlp)
    return embed_parsed(parsed, sentence_model, spacy_identity(nlp))


def embed_parsed(parsed: ParsedPrompt, sentence_model, spacy_id: str) -> AtomizedPrompt:
    dim = embedding_dim(sentence_model)
    table = PhraseTable(dim)
    table.add(sentence_model, parsed.phrases())
    v_total = encode(sentence_model, [parsed.text])[0]
    return _atomized(parsed, v_total, table, sentence_model_identity(sentence_model), spacy_id)


def _atomized(parsed: ParsedPrompt, v_total: np.ndarray, table: PhraseTable, sentence_id: str,
              spacy_id: str) -> AtomizedPrompt:
    return AtomizedPrompt(text=parsed.text, units=list(parsed.units), core_index=parsed.core_index,
                          v_total=v_total, unit_vectors=unit_vectors(parsed.units, table),
                          sentence_model=sentence_id, spacy_model=spacy_id, fallback=parsed.fallback,
                          notes=list(parsed.notes), modifiers=list(parsed.modifiers))


# Prompts per step of ``atomize_many``: large enough for nlp.pipe and the length batches to pay, small
# enough that results stream out steadily (a few seconds per chunk on 2 cores).
ATOMIZE_CHUNK = 256


# A batch of at least this many prompts is parsed in a helper process (``parse_worker``) while this one
# encodes: the helper takes ~1.5 s to start, the time to parse ~800 prompts here. SEARCHPRIORS_PARSE_HELPER=0
# turns it off (as for index builds).
ATOMIZE_HELPER_MIN = 1000
ATOMIZE_HELPER_QUEUE = 3  # chunks handed to the helper ahead of the one being encoded


def atomize_many(prompts: Iterable[str], nlp, sentence_model, max_chars: Optional[int] = MAX_PROMPT_CHARS,
                 chunk: Optional[int] = None, parse_helper: Optional[bool] = None
                 ) -> Iterator[Union[AtomizedPrompt, SearchPriorsError]]:
    """``atomize`` for many prompts, batched, yielding one result per prompt in input order.

    Each result is an ``AtomizedPrompt`` or, for a prompt that ``atomize`` would refuse (empty, too long,
    not English) or that fails in any other way, the ``SearchPriorsError`` that says why: one bad prompt
    never stops the others. Prompts go through in chunks: the contents parsed with ``nlp.pipe`` (second
    parses of the recovery rule too; ``atomizer.parse_prompts``), the sentences and the chunk's new role
    phrases encoded in the pack's length batches (``encode``; each distinct phrase once for the whole run).
    Results equal ``atomize``'s one by one (tested). (Encoding one chunk in a thread while the next is parsed
    was measured: no gain, spaCy holds the GIL that torch's Python-level steps need.) A list of at least
    ``ATOMIZE_HELPER_MIN`` prompts (``parse_helper`` None), or any list with ``parse_helper=True``, is parsed
    in a helper process a few chunks ahead while this process encodes; the same function parses there, so
    results are identical, and chunks of a helper that cannot start or dies are parsed here.
    """
    chunk = chunk or ATOMIZE_CHUNK
    verb_forms = verb_forms_of(nlp)
    english_words = english_words_of(nlp)
    spacy_id, sentence_id = spacy_identity(nlp), sentence_model_identity(sentence_model)
    table = PhraseTable(embedding_dim(sentence_model))

    def parse_here(batch: list) -> list:
        return parse_prompts(nlp, batch, max_chars, verb_forms, english_words)

    def encode_chunk(parsed: list) -> list:
        return _encode_chunk(parsed, sentence_model, table, sentence_id, spacy_id)

    if parse_helper is None:
        parse_helper = (isinstance(prompts, Sequence) and len(prompts) >= ATOMIZE_HELPER_MIN
                        and (os.cpu_count() or 1) >= 2 and os.environ.get("SEARCHPRIORS_PARSE_HELPER", "1") != "0")
    wire_safe = parse_helper and isinstance(prompts, Sequence) and all(isinstance(p, str) for p in prompts)
    helper = start_parse_worker(nlp)[0] if wire_safe else None  # (anything else is refused here, as before)
    if helper is None:
        batch: list = []
        for prompt in prompts:
            batch.append(prompt)
            if len(batch) >= chunk:
                yield from encode_chunk(parse_here(batch))
                batch = []
        if batch:
            yield from encode_chunk(parse_here(batch))
        return
    try:
        yield from _atomize_with_helper(list(prompts), chunk, max_chars, helper, parse_here, encode_chunk)
    finally:
        helper.close()


def _atomize_with_helper(prompts: list, chunk: int, max_chars: Optional[int], helper, parse_here, encode_chunk):
    """Chunks in order: the helper parses up to ``ATOMIZE_HELPER_QUEUE`` chunks ahead while this process
    encodes the one before. The first chunk is parsed here while the helper loads its model; chunks of a
    helper that failed are parsed here too."""
    bounds = [(a, min(a + chunk, len(prompts))) for a in range(0, len(prompts), chunk)]
    parsed: dict[int, list] = {}
    handed = 1  # chunks 1..handed-1 went to the helper
    # (The encoder keeps its thread count, unlike in index builds: vectors, and so search scores, stay
    # bit-identical to parsing in-process.)
    for cid in range(len(bounds)):
        while helper.usable and handed < len(bounds) and handed - cid <= ATOMIZE_HELPER_QUEUE:
            helper.submit(handed, prompts[slice(*bounds[handed])], prompts=True, max_chars=max_chars)
            handed += 1
        parsed.update(helper.poll())
        while cid not in parsed and helper.usable and cid in helper.outstanding:
            parsed.update(helper.wait(timeout=0.5))
        if not helper.usable:
            helper.take_back()  # what it still held is parsed here, chunk by chunk
        items = parsed.pop(cid) if cid in parsed else parse_here(prompts[slice(*bounds[cid])])
        yield from encode_chunk(items)


def _encode_chunk(parsed_or_errors, sentence_model, table, sentence_id, spacy_id) -> list:
    """AtomizedPrompts for the chunk's parses (errors passed through), encoded in length batches."""
    results = list(parsed_or_errors)
    parsed = [(i, p) for i, p in enumerate(results) if isinstance(p, ParsedPrompt)]
    if not parsed:
        return results
    try:
        table.add(sentence_model, [x for _, p in parsed for x in p.phrases()])
        totals = encode(sentence_model, [p.text for _, p in parsed])
        for k, (i, p) in enumerate(parsed):
            results[i] = _atomized(p, totals[k], table, sentence_id, spacy_id)
    except Exception:
        for i, p in parsed:  # the encoder failed on the batch: each prompt alone, so only the culprit fails
            try:
                results[i] = embed_parsed(p, sentence_model, spacy_id)
            except Exception as exc:
                results[i] = prompt_failure(exc)
    return results
