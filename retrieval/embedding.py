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

from .atomizer import (MAX_PROMPT_CHARS, ParsedPrompt, Unit, check_language, clean_prompt, english_words_of,
                       parse_doc, split_modifiers, verb_forms_of, with_second_parses)
from .errors import SearchPriorsError
from .models import spacy_identity

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


def _failure(exc: Exception) -> SearchPriorsError:
    if isinstance(exc, SearchPriorsError):
        return exc
    return SearchPriorsError(f"Could not atomize this prompt ({type(exc).__name__}: {exc}); the other prompts "
                             f"are not affected. Please report it with the prompt.")


def atomize_many(prompts: Iterable[str], nlp, sentence_model, max_chars: Optional[int] = MAX_PROMPT_CHARS,
                 chunk: int = ATOMIZE_CHUNK) -> Iterator[Union[AtomizedPrompt, SearchPriorsError]]:
    """``atomize`` for many prompts, batched, yielding one result per prompt in input order.

    Each result is an ``AtomizedPrompt`` or, for a prompt that ``atomize`` would refuse (empty, too long,
    not English) or that fails in any other way, the ``SearchPriorsError`` that says why: one bad prompt
    never stops the others. Prompts go through in chunks: the contents parsed with ``nlp.pipe`` (second
    parses of the recovery rule too), the sentences and the chunk's new role phrases encoded in the pack's
    length batches (``encode``; each distinct phrase once for the whole run). Results equal ``atomize``'s
    one by one (tested). (Encoding one chunk in a thread while the next is parsed was measured: no gain,
    spaCy holds the GIL that torch's Python-level steps need.)
    """
    verb_forms = verb_forms_of(nlp)
    english_words = english_words_of(nlp)
    spacy_id, sentence_id = spacy_identity(nlp), sentence_model_identity(sentence_model)
    table = PhraseTable(embedding_dim(sentence_model))
    batch: list = []
    for prompt in prompts:
        batch.append(prompt)
        if len(batch) >= chunk:
            yield from _encode_chunk(_parse_chunk(batch, nlp, max_chars, verb_forms, english_words),
                                     sentence_model, table, sentence_id, spacy_id)
            batch = []
    if batch:
        yield from _encode_chunk(_parse_chunk(batch, nlp, max_chars, verb_forms, english_words),
                                 sentence_model, table, sentence_id, spacy_id)


def _parse_chunk(prompts, nlp, max_chars, verb_forms, english_words) -> list:
    """Each prompt's ParsedPrompt or its error, in order (validation, modifiers, parse, language check)."""
    results: list = [None] * len(prompts)
    todo: list[tuple[int, str, str, list]] = []   # (position, text, content, modifiers)
    for i, prompt in enumerate(prompts):
        try:
            text = clean_prompt(prompt, max_chars)   # before any parsing: the length cap protects memory
            content, modifiers = split_modifiers(text)
            todo.append((i, text, content, modifiers))
        except Exception as exc:
            results[i] = _failure(exc)
    try:
        docs = list(nlp.pipe([c for _, _, c, _ in todo]))
    except Exception:
        docs = [None] * len(todo)  # one text broke the batch: parse each alone, so only it fails
    try:
        second = with_second_parses(nlp, docs, verb_forms)  # the recovery rule's second parses, batched
    except Exception:
        second = nlp
    for (i, text, content, modifiers), doc in zip(todo, docs):
        try:
            doc = nlp(content) if doc is None else doc
            check_language(doc, nlp.lang, english_words, modifiers)
            results[i] = parse_doc(doc, verb_forms, text=text, modifiers=modifiers, nlp=second)
        except Exception as exc:
            results[i] = _failure(exc)
    return results


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
                results[i] = _failure(exc)
    return results
