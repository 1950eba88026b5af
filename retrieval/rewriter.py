"""Semantic-Preserving Rewriter, text side (POS Sec. 4.3, 5.2): the instruction, the answer, the check.

- ``eq6_references`` takes the references from a retrieval: Eq. 6's top-k are ranked by caption (sentence)
  similarity alone, which is the retriever's ``pos`` mode; a ``search_t2v`` retrieval (ranked by
  Search-T2V's score, after its motion and actor filters) is refused with the fix, unless the user passes
  its captions as text on purpose.
- ``build_instruction`` fills the paper's instruction template IT (Eq. 7) with the top-k reference
  captions (Eq. 6), the prompt, k and the word limit; a custom template names its fields in braces and is
  validated (unknown fields, attribute access and format specs are errors).
- ``clean_answer`` turns what a chat model said into one sentence: reasoning blocks, "Sure, here is ..."
  lines, "Rewritten:" prefixes, list markers, Markdown emphasis and surrounding quotes go; extra lines are
  dropped (and counted).
- ``check_rewrite`` compares the atomized units (``atomizer.parse_doc``) of prompt and rewrite: every
  motion, actor and recipient of the prompt must still be in the rewrite, and the rewrite must be
  non-empty and within the word limit. What is lost is named.
- ``cache_key`` and ``RewriteCache``: results keyed by (backend, model, messages, seed, temperature,
  token limit), in memory and optionally in a JSON file written atomically; never a secret in either.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import string
import tempfile
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Optional, Sequence

from .atomizer import MAX_PROMPT_CHARS, ParsedPrompt, _lemma, _verb_lemma, parse_doc, verb_forms_of
from ..errors import SearchPriorsError

# POS Sec. 5.2, word for word; [Ref1], ..., [Ref5] become {references}, [Input Text Prompt] {prompt}, and
# the two "5"s and the "20" become {k} and {max_words}.
PAPER_TEMPLATE = ("Let me give you {k} examples: {references}, rewrite the sentence {prompt} without changing "
                  "the meaning of the original sentence to a maximum of {max_words} words, imitating/combining "
                  "the adjectives, adverbs or sentence patterns from the {k} examples above")
MAX_REFERENCE_FIELDS = 50
# Nothing longer than the atomizer's cap is ever parsed: the prompt and a manual rewrite are refused above it,
# and a model's answer above it (after cleaning) is not checked (the original prompt is used). An answer
# above MAX_RAW_ANSWER_CHARS is not even cleaned.
MAX_TEXT_CHARS = MAX_PROMPT_CHARS
MAX_RAW_ANSWER_CHARS = 100_000
TEMPLATE_FIELDS = ("prompt", "references", "references_numbered", "k", "max_words")
ROLE_NAMES = ("motion", "actor", "recipient")


# ----------------------------------------------------------------------------------------------- template

def check_text_length(text: str, what: str, fix: str) -> None:
    """Refuse ``text`` (whitespace collapsed) above MAX_TEXT_CHARS, before anything parses it."""
    size = len(" ".join((text or "").split()))
    if size > MAX_TEXT_CHARS:
        raise SearchPriorsError(f"{what} is too long: {size:,} characters, more than the limit of "
                                f"{MAX_TEXT_CHARS:,}. {fix}")


def reference_lines(text: str) -> list[str]:
    """Captions given one per line (blank lines skipped, whitespace collapsed)."""
    return [" ".join(line.split()) for line in (text or "").splitlines() if line.strip()]


def _inline(text: str) -> str:
    """One caption or prompt as it goes between the template's commas: one line, no final full stop."""
    return " ".join(str(text).split()).rstrip(" .;,")


def template_fields(template: str) -> list[str]:
    """The field names a template uses, in order (repeats kept); raises on malformed braces."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise SearchPriorsError(f"The custom template has unbalanced braces ({exc}); write a literal brace "
                                f"as {{{{ or }}}}.") from exc
    names = []
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        if spec or conversion:
            raise SearchPriorsError(f"The custom template's field {{{name}{'!' + conversion if conversion else ''}"
                                    f"{':' + spec if spec else ''}}} has a conversion or format spec; write "
                                    f"plain fields such as {{prompt}}.")
        names.append(name)
    return names


def known_fields(k: int) -> list[str]:
    return list(TEMPLATE_FIELDS) + [f"ref{i}" for i in range(1, max(int(k), 0) + 1)]


def validate_template(template: str, k: int = 5) -> list[str]:
    """The template's fields; an unknown field (or ``{ref7}`` with k = 5) is an error that lists the known ones."""
    names = template_fields(template)
    allowed = set(known_fields(min(int(k), MAX_REFERENCE_FIELDS)))
    unknown = [n for n in dict.fromkeys(names) if n not in allowed]
    if unknown:
        listed = ", ".join("{" + n + "}" for n in TEMPLATE_FIELDS)
        raise SearchPriorsError(
            f"The custom template uses unknown field(s) {', '.join('{' + n + '}' for n in unknown)}. Known "
            f"fields: {listed}, and {{ref1}} ... {{ref{k}}} for the k = {k} references. Write a literal brace "
            f"as {{{{ or }}}}.")
    if "prompt" not in names:
        raise SearchPriorsError("The custom template has no {prompt} field, so the language model would never "
                                "see the prompt it should rewrite: add {prompt}.")
    return names


EQ6_MODE = "pos"


def eq6_references(retrieval) -> list[str]:
    """The reference captions of a retrieval, if it is Eq. 6's top-k (ranked by caption similarity)."""
    mode = getattr(retrieval, "mode", None)
    if mode != EQ6_MODE:
        raise SearchPriorsError(
            f"The connected retrieval was made in mode '{mode}', so its captions are ranked by Search-T2V's score "
            f"after its motion and actor filters, not by caption similarity as POS Eq. 6 asks. Set that Motion "
            f"Retriever's mode to '{EQ6_MODE}' (or connect a second Motion Retriever in mode '{EQ6_MODE}' to "
            f"'retrieval'). To use these captions anyway, on purpose, connect its reference_captions output to "
            f"this node's reference_captions input instead of 'retrieval'.")
    return list(retrieval.reference_captions())


def build_instruction(prompt: str, references: Sequence[str], k: int = 5, max_words: int = 20,
                      template: Optional[str] = None) -> tuple[str, list[str]]:
    """The instruction IT{refs, prompt} (Eq. 7) and the references it used (the first ``k`` given).

    With the paper's template (``template`` empty) at least one reference is needed; k in the text is the
    number of references actually used, so that "Let me give you 3 examples" is true when 3 were given.
    """
    if int(k) < 1:
        raise SearchPriorsError(f"k (the number of reference captions) must be at least 1, got {k}.")
    if int(max_words) < 1:
        raise SearchPriorsError(f"max_words must be at least 1, got {max_words}.")
    check_text_length(prompt, "prompt (the text to rewrite)", "Shorten it: the rewriter takes one sentence.")
    prompt_text = _inline(prompt)
    if not prompt_text:
        raise SearchPriorsError("The prompt to rewrite is empty: type a sentence.")
    used = [_inline(r) for r in references if _inline(r)][:int(k)]
    custom = (template or "").strip()
    if custom:
        names = validate_template(custom, k)
        if any(n.startswith("ref") for n in names) and not used:
            raise SearchPriorsError("The custom template uses reference fields but no reference captions were "
                                    "given: connect MotionRetriever's reference_captions (or its retrieval).")
    elif not used:
        raise SearchPriorsError("No reference captions were given, and the paper's template needs at least one: "
                                "connect MotionRetriever's reference_captions (mode 'pos') or its retrieval, or "
                                "type captions one per line.")
    values = {"prompt": prompt_text, "references": ", ".join(used),
              "references_numbered": "\n".join(f"{i}. {r}" for i, r in enumerate(used, 1)),
              "k": len(used), "max_words": int(max_words)}
    values.update({f"ref{i}": "" for i in range(1, min(int(k), MAX_REFERENCE_FIELDS) + 1)})
    values.update({f"ref{i}": r for i, r in enumerate(used, 1)})
    return (custom or PAPER_TEMPLATE).format(**values), used


def chat_messages(instruction: str, system_prompt: str = "") -> list[dict]:
    """The chat the backends send: the instruction as the user's turn (as the paper used ChatGPT)."""
    messages = [{"role": "system", "content": system_prompt.strip()}] if (system_prompt or "").strip() else []
    return messages + [{"role": "user", "content": instruction}]


# ------------------------------------------------------------------------------------------------- answer

_THINK = re.compile(r"<think>.*?(</think>|$)", re.S | re.I)
_LABEL = re.compile(r"^(?:(?:the\s+)?(?:rewritten|rewrite|revised|new|improved|final|enhanced|output|answer|result)"
                    r"(?:\s+(?:sentence|prompt|version|text|caption|answer))?|sentence|prompt)\s*[:\-–—]\s*", re.I)
_PREFACE = re.compile(r"^(?:sure|certainly|of course|okay|ok|here(?:'s| is| are)|absolutely|below is)\b", re.I)
_EMPHASISED_LABEL = re.compile(r"^[*_]{1,2}([^*_]{1,40}?[:\-–—])[*_]{1,2}\s*")
_LIST_MARK = re.compile(r"^(?:[-*•]\s+|\d+[.)]\s+)")
_QUOTES = "\"'`“”‘’«»„"


def _strip_wrappers(line: str) -> tuple[str, list[str]]:
    notes = []
    text = line.strip()
    for _ in range(4):  # wrappers nest: - **Rewritten:** "..."
        before = text
        text = _LIST_MARK.sub("", text, count=1)
        text = _EMPHASISED_LABEL.sub(r"\1 ", text, count=1)
        for mark in ("**", "__", "*", "_"):
            if len(text) > 2 * len(mark) and text.startswith(mark) and text.endswith(mark):
                text = text[len(mark):-len(mark)].strip()
        label = _LABEL.match(text)
        if label and text[label.end():].strip():
            notes.append(f"removed the prefix '{label.group(0).strip()}'")
            text = text[label.end():].strip()
        if len(text) >= 2 and text[0] in _QUOTES and text[-1] in _QUOTES:
            text = text[1:-1].strip()
            notes.append("removed surrounding quotes")
        elif len(text) >= 3 and text[0] in _QUOTES and text[-2] in _QUOTES and text[-1] in ".!":
            text = text[1:-2].strip() + text[-1]
            notes.append("removed surrounding quotes")
        if text == before:
            break
    return text, notes


def clean_answer(answer: str) -> tuple[str, list[str]]:
    """One clean sentence from a chat model's answer, and notes saying what was removed."""
    notes: list[str] = []
    text = answer or ""
    if len(text) > MAX_RAW_ANSWER_CHARS:
        notes.append(f"not cleaned: the answer has {len(text):,} characters")
        return " ".join(text.split()), notes
    if _THINK.search(text):
        text = _THINK.sub("", text)
        notes.append("removed a <think> block")
    lines = [ln.strip() for ln in text.replace("\r", "\n").split("\n") if ln.strip()]
    content: list[str] = []
    for line in lines:
        bare = re.sub(r"[*_#>]", "", line).strip()
        if not content and _PREFACE.match(bare) and bare.endswith(":"):
            notes.append(f"dropped the preface '{bare[:60]}'")
            continue
        if not content and _LABEL.match(bare) and not _LABEL.sub("", bare).strip():
            notes.append(f"dropped the heading '{bare[:60]}'")
            continue
        content.append(line)
    if not content:
        return "", notes
    first, more = _strip_wrappers(content[0].lstrip("#> ").strip())
    notes.extend(dict.fromkeys(more))
    if len(content) > 1:
        notes.append(f"dropped {len(content) - 1} extra line(s)")
    return " ".join(first.split()), notes


def word_count(text: str) -> int:
    return len((text or "").split())


# -------------------------------------------------------------------------------------------------- check

@dataclass
class LostRole:
    role: str          # motion / actor / recipient
    phrase: str        # as the atomizer writes it (lemmas)
    unit: str          # the prompt unit it belongs to, e.g. "panda -ride-> bicycle"


@dataclass
class RewriteCheck:
    """What the rewrite kept of the prompt; ``passed`` when nothing is lost, it is non-empty and short enough."""

    words: int
    max_words: int
    prompt_units: list[str]
    rewrite_units: list[str]
    lost: list[LostRole] = field(default_factory=list)
    empty: bool = False
    unchecked: Optional[str] = None   # why the rewrite could not be checked (too long to parse)

    @property
    def too_long(self) -> bool:
        return self.words > self.max_words

    @property
    def kept_every_role(self) -> bool:
        return not self.lost and not self.empty

    @property
    def passed(self) -> bool:
        return self.kept_every_role and not self.too_long and not self.unchecked

    def problems(self) -> list[str]:
        out = [self.unchecked] if self.unchecked else []
        if self.empty:
            out.append("the rewrite is empty")
        if self.too_long:
            out.append(f"the rewrite has {self.words} words, more than the limit of {self.max_words}")
        for lost in self.lost:
            out.append(f"the {lost.role} '{lost.phrase}' of [{lost.unit}] is missing from the rewrite")
        return out


def _lemma_set(doc, verb_forms) -> set[str]:
    words = set()
    for token in doc:
        if token.is_alpha or token.like_num:
            words.update({_lemma(token), token.lower_})
            if token.pos_ in ("VERB", "AUX", "NOUN"):
                words.add(_verb_lemma(token, verb_forms))
    return words


def check_rewrite(nlp, prompt: str, rewrite: str, max_words: int) -> RewriteCheck:
    """Atomize prompt and rewrite with ``nlp`` and name every prompt role the rewrite lost.

    A role phrase is kept when it is a role of one of the rewrite's units, or when each of its words is a
    word (lemma or surface form) of the rewrite: "a panda riding a bicycle" keeps "panda -ride-> bicycle"
    however the parser attaches it. Synonyms are not matched ("pedals" loses "ride"): the check is meant
    to be strict, and the report says which word went.
    """
    check_text_length(prompt, "prompt (the text to rewrite)", "Shorten it: the rewriter takes one sentence.")
    verb_forms = verb_forms_of(nlp)
    prompt_parsed: ParsedPrompt = parse_doc(nlp(" ".join((prompt or "").split())), verb_forms)
    text = " ".join((rewrite or "").split())
    if len(text) > MAX_TEXT_CHARS:   # never parsed: a runaway answer costs seconds and memory in spaCy
        return RewriteCheck(words=word_count(text), max_words=int(max_words),
                            prompt_units=[u.describe() for u in prompt_parsed.units], rewrite_units=[],
                            unchecked=f"the rewrite has {len(text):,} characters, more than the {MAX_TEXT_CHARS:,} "
                                      f"the check parses, so it was not checked (lower max_new_tokens, or ask "
                                      f"for one sentence in system_prompt)")
    doc = nlp(text) if text else None
    rewrite_parsed = parse_doc(doc, verb_forms) if doc is not None else None
    rewrite_phrases = set(rewrite_parsed.phrases()) if rewrite_parsed else set()
    words = _lemma_set(doc, verb_forms) if doc is not None else set()
    lost: list[LostRole] = []
    seen = set()
    for unit in prompt_parsed.units:
        for role, phrase in zip(ROLE_NAMES, unit.roles()):
            if phrase is None or (role, phrase) in seen:
                continue
            seen.add((role, phrase))
            parts = [p for p in re.split(r"[\s\-]+", phrase) if p]
            if phrase in rewrite_phrases or (parts and all(p in words for p in parts)):
                continue
            lost.append(LostRole(role, phrase, unit.describe()))
    return RewriteCheck(words=word_count(text), max_words=int(max_words),
                        prompt_units=[u.describe() for u in prompt_parsed.units],
                        rewrite_units=[u.describe() for u in rewrite_parsed.units] if rewrite_parsed else [],
                        lost=lost, empty=not text)


# -------------------------------------------------------------------------------------------------- cache

def cache_key(backend: str, model: str, messages: Sequence[dict], seed: int, temperature: float,
              max_new_tokens: int) -> str:
    """sha256 of what decides the answer. Never give it a secret: the API key is not part of it."""
    payload = json.dumps({"backend": backend, "model": model, "messages": list(messages), "seed": int(seed),
                          "temperature": round(float(temperature), 6), "max_new_tokens": int(max_new_tokens)},
                         sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


class RewriteCache:
    """Raw answers by ``cache_key``: in memory, and in ``path`` (JSON, atomic replace) when one is given.

    The file keeps the newest ``limit`` answers; a damaged file is ignored (and replaced on the next put).
    """

    def __init__(self, path: Optional[str] = None, limit: int = 2000):
        self.path = path
        self.limit = int(limit)
        self._memory: "OrderedDict[str, dict]" = OrderedDict()
        self._lock = threading.Lock()
        self._loaded = False

    def _load(self) -> None:
        if self._loaded or not self.path:
            return
        self._loaded = True
        try:
            with open(self.path, encoding="utf-8") as fh:
                data = json.load(fh)
            entries = data.get("entries", {}) if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return
        for key, value in entries.items():
            if isinstance(value, dict) and isinstance(value.get("answer"), str):
                self._memory.setdefault(key, value)

    def get(self, key: str, use_disk: bool = True) -> Optional[dict]:
        with self._lock:
            if use_disk:
                self._load()
            hit = self._memory.get(key)
            if hit is not None:
                self._memory.move_to_end(key)
            return dict(hit) if hit else None

    def put(self, key: str, entry: dict, use_disk: bool = True) -> None:
        with self._lock:
            if use_disk:
                self._load()
            self._memory[key] = dict(entry)
            self._memory.move_to_end(key)
            while len(self._memory) > self.limit:
                self._memory.popitem(last=False)
            if use_disk and self.path:
                self._write()

    def _write(self) -> None:
        folder = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".rewrite_cache-", suffix=".tmp", dir=folder)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump({"format": "searchpriors-rewrite-cache", "version": 1, "entries": self._memory}, fh,
                          ensure_ascii=False)
            os.replace(tmp, self.path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise

    def clear_memory(self) -> None:
        with self._lock:
            self._memory.clear()
            self._loaded = False
