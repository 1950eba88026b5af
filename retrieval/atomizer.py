"""PromptAtomizer, text side (Search-T2V Sec. 4.1): a spaCy dependency parse into atomized units.

Each unit is (motion, actor, recipient), written as lemmas. Verbs are the cues:

- actor: the verb's nominal subject; for a passive verb the agent ("by ..."); a verb coordinated with
  another ("jumps and runs") or an open complement / adverbial clause ("starts to dance") inherits the
  actor of the verb it hangs from; a participle or relative clause modifying a noun ("scissors cutting
  paper", "a man who rides") takes that noun.
- recipient: the direct object; for a passive verb its passive subject; otherwise the object of the first
  non-temporal preposition attached to the verb ("cutting through paper").
- coordinated nouns ("a cat and a dog") give one unit each.
- no verb at all ("Time-lapse of clouds"): one fallback unit with no motion, the root noun as actor and
  the object of its first non-temporal preposition as recipient (``ParsedPrompt.fallback`` says so).

Adjectives, adverbs, determiners and temporal phrases are dropped: a role is the lemma of its head noun
with that noun's compound modifiers ("eiffel tower", "fire truck"). The core unit is the one whose motion
is the root predicate; else the one whose actor is the root (a noun with a participle); else the first.
A role that is absent is ``None``; its vector is the zero vector (see ``embedding.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Iterator, Optional

from .errors import SearchPriorsError

# Nouns that only say when something happens; a preposition whose object is one of these is a temporal
# state ("at night", "in the morning"), not a recipient.
TEMPORAL_NOUNS = frozenset("""
    time day night morning evening afternoon noon midnight dawn dusk sunset sunrise twilight week month
    year season spring summer autumn fall winter moment second minute hour today tonight yesterday
    tomorrow weekend holiday era age century decade while
""".split())

SUBJECT_DEPS = ("nsubj", "csubj", "expl")
PASSIVE_SUBJECT_DEPS = ("nsubjpass", "csubjpass")
OBJECT_DEPS = ("dobj", "obj")
INHERIT_ACTOR_DEPS = ("conj", "xcomp", "advcl", "ccomp", "pcomp")
NOUN_MODIFIER_CLAUSES = ("acl", "relcl")
RELATIVE_PRONOUNS = frozenset({"who", "which", "that", "whom", "whose"})


@dataclass(frozen=True)
class Unit:
    """One atomized semantic unit; ``None`` marks a missing role."""

    motion: Optional[str]
    actor: Optional[str]
    recipient: Optional[str]

    def roles(self) -> tuple[Optional[str], Optional[str], Optional[str]]:
        return (self.motion, self.actor, self.recipient)

    def describe(self) -> str:
        actor = self.actor or "?"
        motion = self.motion or "(no verb)"
        text = f"{actor} -{motion}->"
        return f"{text} {self.recipient}" if self.recipient else text


@dataclass
class ParsedPrompt:
    """The parse of one prompt: its units, which one is the core, and notes for the user."""

    text: str
    units: list[Unit]
    core_index: int
    fallback: Optional[str] = None
    notes: list[str] = field(default_factory=list)

    @property
    def core(self) -> Optional[Unit]:
        return self.units[self.core_index] if self.units else None

    def phrases(self) -> list[str]:
        """Every role phrase of every unit, in unit order (missing roles left out; repeats kept)."""
        return [x for u in self.units for x in u.roles() if x is not None]

    def describe(self) -> str:
        lines = []
        for i, unit in enumerate(self.units):
            tag = "core" if i == self.core_index else str(i)
            lines.append(f"[{tag}] {unit.describe()}")
        if not self.units:
            lines.append("(no units: the prompt has no verb or noun to match on)")
        lines.extend(f"note: {n}" for n in self.notes)
        return "\n".join(lines)


def _noun_phrase(token) -> str:
    """Lemma of a noun with its compound modifiers, lower case; adjectives and determiners are dropped."""
    parts = [t for t in token.lefts if t.dep_ == "compound"]
    words = []
    for part in parts:
        # compounds can nest ("fixed gear bicycle" -> gear <- fixed is amod, dropped)
        words.extend(_lemma(t) for t in part.lefts if t.dep_ == "compound")
        words.append(_lemma(part))
    words.append(_lemma(token))
    return " ".join(w for w in words if w)


def _lemma(token) -> str:
    lemma = token.lemma_ if token.lemma_ and token.lemma_ != "-PRON-" else token.text
    return lemma.lower().strip()


_VOWELS = frozenset("aeiou")


def _verb_lemma(token, verb_forms: Optional[frozenset]) -> str:
    """The verb's lemma, mending the rule lemmatizer's silent-e slips ("rides"/"riding" -> "rid").

    English doubles a final consonant after a single vowel before -ing/-ed ("ridding" <- rid), so a
    single consonant there marks a stem with a silent e ("riding" <- ride); and -es follows only
    s, x, z, ch, sh, o ("rides" <- ride). The mended form must be a verb the lemmatizer knows.
    """
    lemma = _lemma(token)
    if not verb_forms:
        return lemma
    text = token.lower_
    tag = token.tag_
    if token.pos_ == "NOUN" and text.endswith("ing"):  # a gerund tagged as a noun
        tag = "VBG"
        lemma = text[:-3] if text[:-3] in verb_forms else lemma
    candidate = None
    if tag == "VBZ" and text.endswith("es") and not text[:-2].endswith(("s", "x", "z", "ch", "sh", "o")):
        candidate = text[:-1]
    for suffix in ("ing", "ed"):
        stem = text[:-len(suffix)]
        if (tag in ("VBG", "VBD", "VBN") and text.endswith(suffix) and len(stem) >= 2
                and stem[-1] not in _VOWELS and stem[-1] not in "wxy" and stem[-2] in _VOWELS
                and (len(stem) < 3 or stem[-3] not in _VOWELS)):
            candidate = stem + "e"
    if candidate and lemma + "e" == candidate and candidate in verb_forms:
        return candidate
    return lemma


def verb_forms_of(nlp) -> Optional[frozenset]:
    """Base forms of verbs known to the pipeline's rule lemmatizer (for ``_verb_lemma``)."""
    try:
        table = nlp.get_pipe("lemmatizer").lookups.get_table("lemma_index")
        return frozenset(table["verb"])
    except Exception:
        return None


def _verb_phrase(token, verb_forms: Optional[frozenset] = None) -> str:
    # a particle that governs an object is really a preposition ("speeding down the highway")
    particles = [t for t in token.rights if t.dep_ == "prt" and not any(c.dep_ == "pobj" for c in t.children)]
    return " ".join([_verb_lemma(token, verb_forms)] + [_lemma(t) for t in particles])


def _with_conjuncts(token) -> list:
    """The token and the nouns coordinated with it ("a cat and a dog")."""
    out = [token]
    for conj in token.conjuncts:
        if conj.pos_ in ("NOUN", "PROPN", "PRON") and conj not in out:
            out.append(conj)
    return out


def _is_nominal(token) -> bool:
    return token.pos_ in ("NOUN", "PROPN", "PRON", "NUM", "X") or token.dep_ in SUBJECT_DEPS + OBJECT_DEPS


def _is_passive(verb) -> bool:
    if any(c.dep_ in PASSIVE_SUBJECT_DEPS or c.dep_ == "auxpass" for c in verb.children):
        return True
    # "a car driven by a man": a past participle modifying a noun is passive
    return verb.dep_ == "acl" and verb.tag_ == "VBN"


def _agent(verb):
    for child in verb.children:
        if child.dep_ == "agent":
            for pobj in child.children:
                if pobj.dep_ == "pobj":
                    return pobj
    return None


def _prep_object(head):
    """Object of the first non-temporal preposition attached to ``head``."""
    for child in head.children:
        if child.dep_ in ("prep", "dative", "prt") and child.pos_ in ("ADP", "SCONJ"):
            for pobj in child.children:
                if pobj.dep_ == "pobj" and _lemma(pobj) not in TEMPORAL_NOUNS:
                    return pobj
    return None


def _direct_actor(verb):
    if _is_passive(verb):
        agent = _agent(verb)
        if agent is not None:
            return agent
    else:
        for child in verb.children:
            if child.dep_ in SUBJECT_DEPS and child.dep_ != "expl":
                if child.lower_ in RELATIVE_PRONOUNS and verb.dep_ == "relcl":
                    return verb.head
                return child
    if verb.dep_ in NOUN_MODIFIER_CLAUSES and not _is_passive(verb):
        return verb.head
    return None


def _actor(verb, depth: int = 0):
    actor = _direct_actor(verb)
    if actor is None and depth < 8 and verb.dep_ in INHERIT_ACTOR_DEPS and verb.head is not verb:
        return _actor(verb.head, depth + 1)
    return actor


def _recipient(verb):
    for child in verb.children:
        if child.dep_ in OBJECT_DEPS:
            return child
    if _is_passive(verb):
        for child in verb.children:
            if child.dep_ in PASSIVE_SUBJECT_DEPS:
                return child
        if verb.dep_ == "acl":
            return verb.head
    return _prep_object(verb)


# Verbs that state rather than move: "there is a tiger killing an animal" is about killing, not being.
STATIVE_LEMMAS = frozenset({"be", "have"})


def _is_motion_verb(token) -> bool:
    if token.dep_ in ("amod", "compound"):
        return False  # adjectival participles: "fixed gear bicycle"
    if token.lemma_.lower() in STATIVE_LEMMAS:
        return False
    if token.pos_ == "VERB":
        return True
    # a gerund mis-tagged as a noun still governs its direct object ("riding bicycle")
    return token.pos_ == "NOUN" and token.lower_.endswith("ing") and any(c.dep_ == "dobj" for c in token.children)


def parse_doc(doc, verb_forms: Optional[frozenset] = None) -> ParsedPrompt:
    """Atomize one parsed spaCy ``Doc``; ``verb_forms`` (see ``verb_forms_of``) mends verb lemmas."""
    text = doc.text
    units: list[Unit] = []
    unit_verbs: list = []  # the verb token of each unit, to pick the core
    unit_actors: list = []
    for token in doc:
        if not _is_motion_verb(token):
            continue
        motion = _verb_phrase(token, verb_forms)
        actor_tok = _actor(token)
        recipient_tok = _recipient(token)
        actors = _with_conjuncts(actor_tok) if actor_tok is not None else [None]
        recipients = _with_conjuncts(recipient_tok) if recipient_tok is not None else [None]
        for a in actors:
            for r in recipients:
                unit = Unit(motion, _noun_phrase(a) if a is not None else None,
                            _noun_phrase(r) if r is not None else None)
                if unit not in units:
                    units.append(unit)
                    unit_verbs.append(token)
                    unit_actors.append(a)
    notes: list[str] = []
    fallback = None
    roots = [t for t in doc if t.dep_ == "ROOT"]
    root = roots[0] if roots else None
    if not units:
        fallback = "no-verb"
        head = root
        if head is not None and not _is_nominal(head):
            nouns = [t for t in doc if t.pos_ in ("NOUN", "PROPN")]
            head = nouns[0] if nouns else None
        if head is not None:
            rec = _prep_object(head)
            units.append(Unit(None, _noun_phrase(head), _noun_phrase(rec) if rec is not None else None))
            unit_verbs.append(None)
            unit_actors.append(head)
            notes.append("no verb found: one fallback unit without motion (actor = main noun, "
                         "recipient = its prepositional object); motion filtering is skipped")
    core_index = 0
    if root is not None and units:
        by_verb = [i for i, v in enumerate(unit_verbs) if v is not None and v.i == root.i]
        by_actor = [i for i, a in enumerate(unit_actors) if a is not None and a.i == root.i]
        if by_verb:
            core_index = by_verb[0]
        elif by_actor:
            core_index = by_actor[0]
    return ParsedPrompt(text=text, units=units, core_index=core_index, fallback=fallback, notes=notes)


def clean_prompt(prompt) -> str:
    """Validate a prompt: a non-empty string; collapses whitespace."""
    if not isinstance(prompt, str):
        raise SearchPriorsError(f"The prompt must be text, got {type(prompt).__name__}.")
    cleaned = " ".join(prompt.split())
    if not cleaned:
        raise SearchPriorsError("The prompt is empty: type a sentence that describes a motion, "
                                "e.g. 'A panda rides a bicycle'.")
    return cleaned


# A small closed class of English function words: every English prompt of more than three words has one
# of these or a verb; a prompt with neither is almost surely another language.
_ENGLISH_FUNCTION_WORDS = frozenset("""
    a an the of in on at to from by with into onto over under through across along around behind beside
    between near past toward towards up down out off and or but is are was were be been being am it its
    his her their this that these those while as for about after before above below against during
    he she they we you i
""".split())


def check_language(doc, lang: str) -> None:
    """Reject prompts that an English model cannot parse (other scripts or other languages)."""
    if lang != "en":
        return
    letters = [ch for ch in doc.text if ch.isalpha()]
    if letters:
        non_ascii = sum(1 for ch in letters if not ch.isascii())
        if non_ascii / len(letters) > 0.3:
            raise SearchPriorsError(
                "The prompt does not look like English (mostly non-Latin letters), and the chosen spaCy "
                "model parses English only: translate the prompt to English, or pick a spaCy model for "
                "the prompt's language.")
    words = [t for t in doc if t.is_alpha]
    if len(words) >= 4:
        has_function_word = any(t.lower_ in _ENGLISH_FUNCTION_WORDS for t in words)
        has_verb = any(t.pos_ in ("VERB", "AUX") for t in words)
        if not has_function_word and not has_verb:
            raise SearchPriorsError(
                "The prompt does not look like English (no English function word and no verb found), "
                "and the chosen spaCy model parses English only: translate the prompt to English, or "
                "pick a spaCy model for the prompt's language.")


def parse_texts(nlp, texts: Iterable[str], batch_size: int = 256, n_process: int = 1) -> Iterator[ParsedPrompt]:
    """Atomize many texts with ``nlp.pipe`` in batches (library captions; no language check)."""
    verb_forms = verb_forms_of(nlp)
    for doc in nlp.pipe(texts, batch_size=batch_size, n_process=n_process):
        yield parse_doc(doc, verb_forms)
