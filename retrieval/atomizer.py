"""PromptAtomizer, text side (Search-T2V Sec. 4.1): a spaCy dependency parse into atomized units.

Each unit is (motion, actor, recipient), written as lemmas. Verbs are the cues:

- actor: the verb's nominal subject; for a passive verb the agent ("by ..."); a verb coordinated with
  another ("jumps and runs") or an open complement / adverbial clause ("starts to dance") inherits the
  actor of the verb it hangs from; a participle or relative clause modifying a noun ("scissors cutting
  paper", "a man who rides") takes that noun.
- recipient: the direct object; for a passive verb its passive subject; otherwise the object of the first
  non-temporal preposition attached to the verb ("cutting through paper").
- coordinated nouns ("a cat and a dog") give one unit each.
- no verb at all ("clouds over a mountain"): one fallback unit with no motion, the root noun as actor and
  the object of its first non-temporal preposition as recipient (``ParsedPrompt.fallback`` says so).

Before parsing, style, camera and quality phrases ("animated style", "racking focus", "4k", "in slow
motion", "with an intense shaking effect") and leading shot words ("close up of", "a video of") are split
off (``split_modifiers``): they are reported as ``modifiers`` and never form units; only the content is
parsed. Benchmark-style prompts often defeat the small parser where a verb is also a noun ("two kangaroos
box playfully": "box" tagged as a noun). When the root of the parse is not a motion verb, recovery rules
(``RECOVERY_RULES``) read the verb back from the tree and spaCy's own lemmatizer tables; a recovered unit
names its rule in ``Unit.rule``.

Adjectives, adverbs, determiners and temporal phrases are dropped: a role is the lemma of its head noun
with that noun's compound modifiers ("eiffel tower", "fire truck"). The core unit is the one whose motion
is the root predicate (or was recovered from the root); else the one whose actor is the root (a noun with
a participle); else the first. A role that is absent is ``None``; its vector is the zero vector (see
``embedding.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
import re
import unicodedata
from typing import Iterable, Iterator, Optional, Sequence

from ..errors import SearchPriorsError

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
    """One atomized semantic unit; ``None`` marks a missing role.

    ``rule`` names the recovery rule that found the motion (``RECOVERY_RULES``), ``None`` for the plain
    parse; it is an explanation, not a role, so units compare equal whatever found them.
    """

    motion: Optional[str]
    actor: Optional[str]
    recipient: Optional[str]
    rule: Optional[str] = field(default=None, compare=False)

    def roles(self) -> tuple[Optional[str], Optional[str], Optional[str]]:
        return (self.motion, self.actor, self.recipient)

    def describe(self) -> str:
        actor = self.actor or "?"
        motion = self.motion or "(no verb)"
        text = f"{actor} -{motion}->"
        text = f"{text} {self.recipient}" if self.recipient else text
        return f"{text} (recovered: {self.rule})" if self.rule else text


@dataclass
class ParsedPrompt:
    """The parse of one prompt: its units, which one is the core, the split-off modifiers, notes."""

    text: str
    units: list[Unit]
    core_index: int
    fallback: Optional[str] = None
    notes: list[str] = field(default_factory=list)
    modifiers: list[str] = field(default_factory=list)

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
        if self.modifiers:
            lines.append("modifiers: " + "; ".join(self.modifiers))
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
    """Base forms of verbs known to the pipeline's rule lemmatizer (for ``_verb_lemma``), cached."""
    cached = getattr(nlp, "_searchpriors_verb_forms", None)
    if cached is not None:
        return cached
    try:
        table = nlp.get_pipe("lemmatizer").lookups.get_table("lemma_index")
        forms = frozenset(table["verb"])
    except Exception:
        return None
    try:
        nlp._searchpriors_verb_forms = forms
    except AttributeError:
        pass
    return forms


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


# ------------------------------------------------------------------------------------------ modifiers
#
# Public text-to-video prompt lists append style, camera and quality phrases to the content ("..., animated
# style", "..., racking focus", "... in slow motion, 4k") and open with shot words ("Close up of ...").
# The small parser takes such a tail for the sentence's head ("A panda drinking coffee, animated style":
# root "style"), so they are cut off the text before parsing and reported on their own.

# A comma-separated segment with one of these words (or phrases) is a modifier, not content.
MODIFIER_WORDS = frozenset("""
    style styled styles aesthetic aesthetics animated animation anime cartoon cinematic cinematography
    4k 8k 16k hd uhd fhd hdr 1080p 720p 60fps 30fps 24fps fps resolution quality masterpiece detailed
    photorealistic photorealism hyperrealistic hyperrealism realistic render rendered rendering octane
    unreal focus bokeh zoom zooming zooms pan panning pans tilt tilting tilts dolly tracking handheld
    steadicam gimbal camera lens fisheye macro shot shots footage close-up closeup lapse time-lapse
    timelapse hyperlapse effect effects lighting film grain vintage retro sepia monochrome watercolor
    painting sketch illustration artstation trending surreal surrealism impressionist impressionism
    pixel pixelated 3d 2d cgi vfx perspective angle pov aerial drone overhead bird's-eye birds-eye
    wide-angle telephoto depth-of-field blur blurry sharp crisp vivid vibrant saturated contrast
    documentary ultra highly frame framing composition
""".split())
MODIFIER_PHRASES = ("slow motion", "slow-motion", "close up", "depth of field", "van gogh", "black and white",
                    "oil painting", "unreal engine", "high definition", "high quality", "wide shot",
                    "camera moves", "camera pans", "in the style of", "studio ghibli", "motion blur")

# Style / camera phrases that end a segment without a comma ("a dog runs on the beach in slow motion").
_TRAILING_MODIFIER = re.compile(
    r"(?:\s*,)?\s+(?:"
    r"in\s+(?:the\s+)?style\s+of\s+[^,.;]+"
    r"|in\s+(?:an?\s+|the\s+)?[\w'-]+(?:\s+[\w'-]+){0,3}\s+style"
    r"|(?:in\s+|with\s+)?slow[-\s]motion"
    r"|in\s+(?:a\s+)?time[-\s]?lapse"
    r"|with\s+(?:an?\s+|the\s+)?(?:[\w'-]+\s+){0,4}(?:effects?|lighting|bokeh|focus)"
    r"|(?:in|at)\s+(?:4k|8k|hd|uhd|high\s+resolution|high\s+definition|high\s+quality)"
    r")\s*[.!]?$", re.IGNORECASE)

# Shot words before the real subject: "close up of", "a cinematic aerial shot of", "footage showing".
_SHOT_ADJECTIVES = frozenset("""
    a an the close extreme wide medium long tight high low angle aerial drone cinematic slow motion
    handheld tracking panning static overhead top-down top down beautiful stunning realistic 4k 8k hd
    short quick side front first-person pov macro time-lapse timelapse time lapse animated vintage black
    and white documentary stock amateur professional nature dramatic detailed bird's-eye birds-eye
    eye-level low-angle high-angle establishing
""".split())
_SHOT_NOUNS = frozenset("""
    shot shots video videos footage clip clips view close-up closeup scene photo image picture film
    time-lapse timelapse hyperlapse animation render rendering sequence montage recording
""".split())
_SHOT_LINKS = frozenset({"of", "showing", "shows", "featuring", "depicting", "capturing", "where", "with"})
_WORD = re.compile(r"[^\s]+")


def _norm_word(word: str) -> str:
    return word.lower().strip(".,;:!?\"'()[]")


def _is_modifier_segment(segment: str) -> bool:
    lowered = " " + " ".join(segment.lower().split()) + " "
    if any(f" {phrase} " in lowered or lowered.strip().startswith(phrase) for phrase in MODIFIER_PHRASES):
        return True
    words = [_norm_word(w) for w in segment.split()]
    return any(w in MODIFIER_WORDS for w in words if w)


def _split_shot_words(text: str) -> tuple[str, Optional[str]]:
    """("Close up of grapes", ...) -> ("grapes", "close up"); unchanged when no shot phrase opens it."""
    words = [(m.start(), m.end(), _norm_word(m.group())) for m in _WORD.finditer(text)]
    i = 0
    while i < len(words) and i < 6 and words[i][2] in _SHOT_ADJECTIVES and words[i][2] not in _SHOT_NOUNS:
        i += 1
    # "close up" is two words; "close" alone is an adjective of the shot noun that follows
    if i < len(words) and words[i][2] in _SHOT_NOUNS:
        noun_end = i
    elif i >= 1 and i < len(words) and words[i - 1][2] == "close" and words[i][2] == "up":
        noun_end = i
    else:
        return text, None
    link = noun_end + 1
    if link >= len(words) - 1 or words[link][2] not in _SHOT_LINKS:
        return text, None
    shot = " ".join(w for _, _, w in words[:noun_end + 1] if w not in ("a", "an", "the"))
    return text[words[link + 1][0]:], shot


def split_modifiers(text: str) -> tuple[str, list[str]]:
    """Split style / camera / quality phrases and leading shot words off a prompt.

    Returns (content, modifiers). Segments are the prompt's comma-separated parts: a segment that names a
    style, camera move or quality ("animated style", "racking focus", "4k") is a modifier; a style phrase
    at the end of a content segment ("... in slow motion") is cut off it. When nothing would be left of
    the content, the prompt is kept whole (a prompt of modifiers only has no units to win by splitting).
    """
    modifiers: list[str] = []
    content_parts: list[str] = []
    for k, segment in enumerate(re.split(r"[,;]", text)):
        segment = segment.strip()
        if not segment:
            continue
        stripped = segment.rstrip(".!").strip()
        if k > 0 or content_parts:
            if _is_modifier_segment(stripped):
                modifiers.append(stripped)
                continue
        while True:
            m = _TRAILING_MODIFIER.search(stripped)
            if not m or m.start() == 0:
                break
            modifiers.append(" ".join(m.group().strip(" ,.!").split()))
            stripped = stripped[:m.start()].rstrip()
        if k == 0 or not content_parts:
            rest, shot = _split_shot_words(stripped)
            if shot is not None:
                modifiers.append(shot)
                stripped = rest
            elif _is_modifier_segment(stripped) and len(stripped.split()) <= 4:
                modifiers.append(stripped)  # a leading "Cinematic, ..." or "4k, ..." segment
                continue
        content_parts.append(stripped)
    content = ", ".join(p for p in content_parts if p)
    if not content.strip():
        return text, []
    if content != text and text.rstrip().endswith(".") and not content.endswith("."):
        content += "."
    return content, modifiers


# ------------------------------------------------------------------------------------------ recovery
#
# The small English parser tags a verb as a noun when it can be one ("kangaroos box", "parrots chatter",
# "horse races"), buries a participle in a noun compound ("panda drinking coffee"), or reads a progressive
# as an adjective ("is sweeping floor"). These rules read the verb back, only where the plain parse found
# no motion at the root; each names itself in the unit it makes.

RULE_COMPOUND_VERB = "verb-in-noun-compound"      # spaCy tagged a verb (VBZ/VBP/VBD) but attached it as a compound
RULE_PLURAL_SUBJECT = "noun-after-plural-subject"  # "two kangaroos box": base form after a plural noun
RULE_SINGULAR_SUBJECT = "noun-after-singular-subject"  # "a horse races": -s form after a singular noun
RULE_HIDDEN_PARTICIPLE = "participle-in-noun-compound"  # "a panda drinking coffee", "corgi playing in park"
RULE_PROGRESSIVE = "progressive-read-as-adjective"      # "a person is sweeping floor"
RULE_PARTICIPLE_ADJECTIVE = "participle-adjective"      # "grapes on a rotating table": the table rotates
RULE_COORDINATED = "coordinated-verb-read-as-noun"      # "a glass falls and breaks": "breaks" tagged as a noun
RULE_REPARSE = "second-parse-as-verb"  # "a kitten chases a laser dot": reparsed as "a kitten will chase ..."
RECOVERY_RULES = (RULE_COMPOUND_VERB, RULE_PLURAL_SUBJECT, RULE_SINGULAR_SUBJECT, RULE_HIDDEN_PARTICIPLE,
                  RULE_PROGRESSIVE, RULE_PARTICIPLE_ADJECTIVE, RULE_COORDINATED, RULE_REPARSE)


def _verb_base(word: str, verb_forms: Optional[frozenset]) -> Optional[str]:
    """The base form of ``word`` read as a verb (``None`` when no reading is a verb the lemmatizer knows)."""
    if not verb_forms:
        return None
    w = word.lower()
    candidates = [w]
    if w.endswith("ing") and len(w) > 4:
        stem = w[:-3]
        candidates = [stem, stem + "e"]
        if len(stem) >= 3 and stem[-1] == stem[-2]:
            candidates.append(stem[:-1])           # running -> run
        if stem.endswith("y"):
            candidates.append(stem[:-1] + "ie")    # lying -> lie
        if _ends_cvc(stem):                         # riding -> ride before rid
            candidates.insert(0, stem + "e")
    elif w.endswith("ies") and len(w) > 4:
        candidates = [w[:-3] + "y", w[:-1]]
    elif w.endswith("es") and len(w) > 3:
        candidates = [w[:-2], w[:-1]] if w[:-2].endswith(("s", "x", "z", "ch", "sh", "o")) else [w[:-1], w[:-2]]
    elif w.endswith("s") and not w.endswith("ss") and len(w) > 2:
        candidates = [w[:-1]]
    for c in candidates:
        if c in verb_forms:
            return c
    return None


def _ends_cvc(stem: str) -> bool:
    return (len(stem) >= 3 and stem[-1] not in _VOWELS and stem[-1] not in "wxy" and stem[-2] in _VOWELS
            and stem[-3] not in _VOWELS)


def _is_plural_noun(token) -> bool:
    if token.tag_ in ("NNS", "NNPS"):
        return True
    return any(c.dep_ == "nummod" and c.lower_ not in ("one", "1") for c in token.children)


def _noun_chain(head) -> list:
    """``head`` with the compound nouns (and compound-attached words) in front of it, in text order."""
    chain = [head]
    frontier = [head]
    while frontier:
        tok = frontier.pop()
        for child in tok.lefts:
            if child.dep_ == "compound":
                chain.append(child)
                frontier.append(child)
    return sorted(chain, key=lambda t: t.i)


def _lemmas(tokens) -> Optional[str]:
    words = [_lemma(t) for t in tokens if t.pos_ != "DET"]
    return " ".join(w for w in words if w) or None


def _chain_verb(chain, k: int, verb_forms) -> Optional[tuple[str, str]]:
    """(verb base, rule) when chain[k] is a verb after the subject noun chain[k-1], else None."""
    subject, tok = chain[k - 1], chain[k]
    if subject.pos_ not in ("NOUN", "PROPN") and not subject.tag_.startswith("NN"):
        return None
    if tok.tag_ in ("VBZ", "VBP", "VBD"):
        base = _verb_base(tok.lower_, verb_forms) or _lemma(tok)
        return (base, RULE_COMPOUND_VERB) if base else None
    if tok.lower_.endswith("ing"):
        base = _verb_base(tok.lower_, verb_forms)
        return (base, RULE_HIDDEN_PARTICIPLE) if base else None
    if not tok.tag_.startswith("NN") or not verb_forms:
        return None
    if _is_plural_noun(subject) and tok.tag_ == "NN" and tok.lower_ in verb_forms:
        return tok.lower_, RULE_PLURAL_SUBJECT
    if not _is_plural_noun(subject) and tok.tag_ == "NNS":
        base = _verb_base(tok.lower_, verb_forms)
        if base and _has_content_after(tok):
            return base, RULE_SINGULAR_SUBJECT
    return None


def _has_content_after(tok) -> bool:
    """Something non-temporal follows: "a horse races alongside a train", not "city lights at night"."""
    head = tok.head if tok.dep_ == "compound" else tok
    if head is not tok:
        return True  # an object noun follows inside the chain
    for child in tok.rights:
        if child.dep_ in ("prep", "advmod", "dobj", "npadvmod", "prt", "acomp", "advcl", "conj"):
            if child.dep_ == "prep" and all(_lemma(p) in TEMPORAL_NOUNS for p in child.children if p.dep_ == "pobj"):
                continue
            return True
    return False


def _recover_chain_units(doc, verb_forms) -> list[tuple]:
    """Verbs hidden in noun chains: (verb token, Unit) pairs, first split of each chain only."""
    out = []
    for head in doc:
        if head.dep_ == "compound" or not (head.pos_ in ("NOUN", "PROPN", "VERB") or head.tag_.startswith("NN")):
            continue
        chain = _noun_chain(head)
        if len(chain) < 2:
            continue
        for k in range(1, len(chain)):
            found = _chain_verb(chain, k, verb_forms)
            if found is None:
                continue
            base, rule = found
            tok = chain[k]
            actor = _lemmas(chain[:k])
            if k < len(chain) - 1:
                recipient = _lemmas(chain[k + 1:])
            else:
                obj = next((c for c in tok.children if c.dep_ in OBJECT_DEPS), None) or _prep_object(tok)
                recipient = _noun_phrase(obj) if obj is not None else None
            particles = [_lemma(t) for t in tok.rights if t.dep_ == "prt" and not any(c.dep_ == "pobj" for c in t.children)]
            out.append((tok, Unit(" ".join([base] + particles), actor, recipient, rule=rule)))
            break
    return out


def _recover_participles(doc, verb_forms, allow_adjective: bool) -> list[tuple]:
    """Present participles read as adjectives: progressive after "be", else (``allow_adjective``) the
    participle describing its noun's motion ("a rotating table")."""
    out = []
    for tok in doc:
        if tok.dep_ != "amod" or tok.tag_ != "VBG" or tok.head.pos_ not in ("NOUN", "PROPN"):
            continue
        base = _verb_base(tok.lower_, verb_forms) or _lemma(tok)
        if not base or base in STATIVE_LEMMAS:
            continue
        noun = tok.head
        be = noun.head
        subject = next((c for c in be.children if c.dep_ in ("nsubj", "expl")), None)
        if noun.dep_ in ("attr", "dobj", "acomp") and be.lemma_ == "be" and subject is not None and subject.dep_ == "nsubj":
            for actor in _with_conjuncts(subject):
                out.append((be, Unit(base, _noun_phrase(actor), _noun_phrase(noun), rule=RULE_PROGRESSIVE)))
        elif allow_adjective:
            out.append((tok, Unit(base, _noun_phrase(noun), None, rule=RULE_PARTICIPLE_ADJECTIVE)))
    return out


def _recover_coordinated(doc, verb_forms) -> list[tuple]:
    """A verb coordinated with a verb but tagged as a noun: it shares that verb's actor."""
    out = []
    for tok in doc:
        if tok.dep_ != "conj" or not tok.tag_.startswith("NN") or tok.head.pos_ != "VERB" or not _is_motion_verb(tok.head):
            continue
        base = _verb_base(tok.lower_, verb_forms)
        if not base or (tok.tag_ == "NN" and tok.lower_ != base):
            continue
        actor = _actor(tok.head)
        obj = next((c for c in tok.children if c.dep_ in OBJECT_DEPS), None) or _prep_object(tok)
        for a in (_with_conjuncts(actor) if actor is not None else [None]):
            out.append((tok, Unit(base, _noun_phrase(a) if a is not None else None,
                                  _noun_phrase(obj) if obj is not None else None, rule=RULE_COORDINATED)))
    return out


# Words that open a subject noun phrase without being its noun.
_DETERMINERS = frozenset("""
    a an the this that these those my his her its our their your some several many few dozens hundreds
    one two three four five six seven eight nine ten eleven twelve twenty fifty hundred
""".split())


# Nouns made of a gerund and a noun: "a cozy living room" has no verb.
_ING_COMPOUNDS = frozenset(tuple(pair.split("_")) for pair in """
    living_room dining_room dining_table swimming_pool washing_machine sleeping_bag parking_lot frying_pan
    rolling_pin boxing_ring climbing_wall shopping_mall shopping_cart running_shoes fishing_rod fishing_boat
    sewing_machine waiting_room dressing_room walking_stick cutting_board baking_sheet racing_car
    diving_board skating_rink landing_strip training_ground
""".split())


def _noun_forms_of(nlp) -> frozenset:
    cached = getattr(nlp, "_searchpriors_noun_forms", None)
    if cached is not None:
        return cached
    try:
        lookups = nlp.get_pipe("lemmatizer").lookups
        forms = set(lookups.get_table("lemma_index")["noun"])
        for form, lemmas in lookups.get_table("lemma_exc")["noun"].items():
            forms.add(form)
            forms.update(lemmas)
        forms = frozenset(forms)
    except Exception:
        forms = frozenset()
    try:
        nlp._searchpriors_noun_forms = forms
    except AttributeError:
        pass
    return forms


def _nounish(tok, nouns: frozenset) -> bool:
    if tok.is_punct or tok.lower_ in _DETERMINERS or tok.lower_ in _ENGLISH_FUNCTION_WORDS:
        return False
    w = tok.lower_
    return (tok.tag_.startswith("NN") or tok.pos_ == "PROPN" or w in nouns or _lemma(tok) in nouns
            or (w.endswith("s") and w[:-1] in nouns) or (w.endswith("es") and w[:-2] in nouns))


def _plural(tok, nouns: frozenset) -> bool:
    w = tok.lower_
    return tok.tag_ in ("NNS", "NNPS") or (w.endswith("s") and not w.endswith("ss") and w[:-1] in nouns
                                           and w not in nouns)


def _verb_reading(doc, verb_forms, nouns) -> Optional[tuple[int, str, str]]:
    """The first word after the opening subject noun phrase that reads as its verb: (index, base form,
    'ing' or 'finite'). The subject may hold adjectives, compounds, "X of Y" and "X and Y"."""
    toks = list(doc)
    i = 0
    while i < len(toks) and toks[i].lower_ in _DETERMINERS:
        i += 1
    plural = i > 0 and toks[i - 1].lower_ not in ("a", "an", "one", "this", "that", "its", "his", "her")
    seen_noun = False
    for j in range(i, min(len(toks), i + 8)):
        tok = toks[j]
        w = tok.lower_
        if tok.is_punct or (tok.pos_ == "VERB" and tok.dep_ not in ("compound", "amod") and not w.endswith("ing")):
            return None
        if w in ("of", "and") and seen_noun:
            plural = plural or w == "and"
            continue
        if w in _DETERMINERS:
            continue
        if seen_noun and (w in _ENGLISH_FUNCTION_WORDS or tok.pos_ in ("ADP", "AUX", "PRON", "SCONJ", "CCONJ")):
            return None  # the subject noun phrase ended without a verb after it ("a clear sky with ...")
        if seen_noun and j > i:
            prev = toks[j - 1]
            base = _verb_base(w, verb_forms)
            following = toks[j + 1].lower_ if j + 1 < len(toks) else ""
            if base and _nounish(prev, nouns) and (w, following) not in _ING_COMPOUNDS:
                if w.endswith("ing"):
                    return j, base, "ing"
                subject_plural = plural or _plural(prev, nouns)
                if w == base and subject_plural:
                    return j, base, "finite"
                if w != base and w.endswith("s") and not subject_plural:
                    return j, base, "finite"
        if _nounish(tok, nouns):
            seen_noun = True
    return None


def reparse_request(doc, verb_forms, nouns) -> Optional[tuple[tuple[int, str, str], str]]:
    """Whether ``parse_doc`` parses ``doc`` a second time, and the text it parses: ((index, base, form),
    rewritten text) or None. Asked apart from ``parse_doc`` so that batches parse the rewrites together.

    A second parse is tried when the first word after the subject reads as its verb and either the root is
    a motion verb but that word was parsed into the subject ("a woman dances flamenco": root "flamenco"),
    or the root is no motion verb and no tree rule recovered one at the root.
    """
    roots = [t for t in doc if t.dep_ == "ROOT"]
    if not verb_forms or not roots:
        return None
    root = roots[0]
    found = _verb_reading(doc, verb_forms, nouns)
    if found is None:
        return None
    if _is_motion_verb(doc[found[0]]):
        return None  # the parse already has that verb ("a man playing tennis": "playing" modifies "man")
    if _is_motion_verb(root):
        if found[0] >= root.i:
            return None
    else:
        tree = _recover_chain_units(doc, verb_forms) + _recover_participles(doc, verb_forms, allow_adjective=False)
        if any(_in_root_chain(v, root) for v, _ in tree):
            return None
    j, base, form = found
    toks = list(doc)
    before = "".join(t.text_with_ws for t in toks[:j])
    after = "".join(t.text_with_ws for t in toks[j + 1:])
    verb = f"is {toks[j].text}" if form == "ing" else f"will {base}"
    return found, f"{before}{verb}{toks[j].whitespace_}{after}"


def _reparse_with_verb_reading(doc, second_doc, verb_forms, text, modifiers, request) -> Optional[ParsedPrompt]:
    """The second parse ("kitten chases" -> "kitten will chase", "top spinning" -> "top is spinning");
    it stands only when that verb becomes a motion unit."""
    (j, base, _), rewritten = request
    second = parse_doc(second_doc, verb_forms, text=text if text is not None else doc.text, modifiers=modifiers)
    if not any(u.motion and u.motion.split()[0] == base for u in second.units):
        return None
    units = [Unit(u.motion, u.actor, u.recipient, rule=RULE_REPARSE) for u in second.units]
    notes = [n for n in second.notes if not n.startswith("motion recovered")]
    notes.append(f"motion recovered by rule {RULE_REPARSE}: parsed again as {rewritten!r} (the parser had "
                 f"read {doc[j].text!r} as another word class)")
    return ParsedPrompt(second.text, units, second.core_index, second.fallback, notes, list(modifiers))


class _PreParsed:
    """Stands in for the pipeline inside ``parse_doc``: hands out second parses made in one batch."""

    def __init__(self, nlp, docs: dict):
        self._nlp = nlp
        self._docs = docs

    def __call__(self, text):
        doc = self._docs.get(text)
        return doc if doc is not None else self._nlp(text)

    def __getattr__(self, name):
        return getattr(self._nlp, name)


def with_second_parses(nlp, docs: Sequence, verb_forms, batch_size: int = 256):
    """A stand-in for ``nlp`` in ``parse_doc`` that holds the second parses ``docs`` need, parsed together
    with ``nlp.pipe`` (so a batch with many recovered verbs still parses in batches)."""
    nouns = _noun_forms_of(nlp)
    texts = []
    for doc in docs:
        request = reparse_request(doc, verb_forms, nouns) if doc is not None else None
        if request is not None:
            texts.append(request[1])
    texts = list(dict.fromkeys(texts))
    return _PreParsed(nlp, dict(zip(texts, nlp.pipe(texts, batch_size=batch_size))) if texts else {})


# ------------------------------------------------------------------------------------------ parse

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


def _in_root_chain(token, root) -> bool:
    """``token`` is the root or a compound word hanging from it (a recovered verb at the top)."""
    seen = 0
    while token is not None and seen < 8:
        if token.i == root.i:
            return True
        if token.dep_ != "compound":
            return False
        token, seen = token.head, seen + 1
    return False


def parse_doc(doc, verb_forms: Optional[frozenset] = None, *, text: Optional[str] = None,
              modifiers: Sequence[str] = (), nlp=None) -> ParsedPrompt:
    """Atomize one parsed spaCy ``Doc``; ``verb_forms`` (see ``verb_forms_of``) mends verb lemmas and
    enables the recovery rules. ``doc`` is the parse of the content; ``text`` the whole prompt (default
    the doc's text) and ``modifiers`` what ``split_modifiers`` cut off it. With ``nlp`` (the pipeline that
    made ``doc``), a sentence whose verb the parser missed is parsed a second time with the verb reading
    made explicit (``RULE_REPARSE``)."""
    units: list[Unit] = []
    unit_verbs: list = []  # the verb token of each unit, to pick the core
    unit_actors: list = []

    def add(unit: Unit, verb, actor) -> None:
        if unit not in units:
            units.append(unit)
            unit_verbs.append(verb)
            unit_actors.append(actor)

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
                add(Unit(motion, _noun_phrase(a) if a is not None else None,
                         _noun_phrase(r) if r is not None else None), token, a)
    notes: list[str] = []
    fallback = None
    roots = [t for t in doc if t.dep_ == "ROOT"]
    root = roots[0] if roots else None
    recovered: list[tuple] = []
    if verb_forms and root is not None:
        recovered = _recover_coordinated(doc, verb_forms)
        if nlp is not None:
            request = reparse_request(doc, verb_forms, _noun_forms_of(nlp))
            if request is not None:
                reparsed = _reparse_with_verb_reading(doc, nlp(request[1]), verb_forms, text, modifiers, request)
                if reparsed is not None:
                    return reparsed
        if not _is_motion_verb(root):
            tree = _recover_chain_units(doc, verb_forms) + _recover_participles(doc, verb_forms, allow_adjective=False)
            recovered += tree
            if not units and not recovered:
                recovered = _recover_participles(doc, verb_forms, allow_adjective=True)
        recovered.sort(key=lambda pair: (not _in_root_chain(pair[0], root), pair[0].i))
        for verb, unit in recovered:
            add(unit, verb, None)
    if recovered:
        rules = sorted({u.rule for _, u in recovered})
        notes.append(f"motion recovered by rule {', '.join(rules)} (the parser read the verb as another word class)")
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
        by_chain = [i for i, v in enumerate(unit_verbs) if v is not None and units[i].rule and _in_root_chain(v, root)]
        by_actor = [i for i, a in enumerate(unit_actors) if a is not None and a.i == root.i]
        if by_verb:
            core_index = by_verb[0]
        elif by_chain:
            core_index = by_chain[0]
        elif by_actor:
            core_index = by_actor[0]
    return ParsedPrompt(text=doc.text if text is None else text, units=units, core_index=core_index,
                        fallback=fallback, notes=notes, modifiers=list(modifiers))


def parse_text(nlp, text: str, verb_forms: Optional[frozenset] = None) -> ParsedPrompt:
    """Split the modifiers off one text, parse its content and atomize it (no validation)."""
    content, modifiers = split_modifiers(text)
    return parse_doc(nlp(content), verb_forms if verb_forms is not None else verb_forms_of(nlp),
                     text=text, modifiers=modifiers, nlp=nlp)


def parse_texts(nlp, texts: Iterable[str], batch_size: int = 256, n_process: int = 1) -> Iterator[ParsedPrompt]:
    """Atomize many texts with ``nlp.pipe`` in batches (library captions; no language check)."""
    verb_forms = verb_forms_of(nlp)
    texts = list(texts)
    splits = [split_modifiers(t) for t in texts]
    docs = nlp.pipe((c for c, _ in splits), batch_size=batch_size, n_process=n_process)
    for start in range(0, len(texts), batch_size):
        chunk = [next(docs) for _ in range(min(batch_size, len(texts) - start))]
        second = with_second_parses(nlp, chunk, verb_forms, batch_size)
        for k, doc in enumerate(chunk):
            text, (_, modifiers) = texts[start + k], splits[start + k]
            yield parse_doc(doc, verb_forms, text=text, modifiers=modifiers, nlp=second)


def prompt_failure(exc: Exception) -> SearchPriorsError:
    """A prompt's error for a batch: the pack's own errors as they are, anything else wrapped."""
    if isinstance(exc, SearchPriorsError):
        return exc
    return SearchPriorsError(f"Could not atomize this prompt ({type(exc).__name__}: {exc}); the other prompts "
                             f"are not affected. Please report it with the prompt.")


def parse_prompts(nlp, prompts: Sequence, max_chars: Optional[int] = None, verb_forms=None,
                  english_words=None) -> list:
    """Each user prompt's ParsedPrompt or its SearchPriorsError, in order: validation, modifiers, one
    ``nlp.pipe`` over the batch, the language check, the recovery rule's second parses batched. One bad
    prompt never fails the others. (``embedding.atomize_many``, in-process or in the parse helper.)"""
    verb_forms = verb_forms_of(nlp) if verb_forms is None else verb_forms
    english_words = english_words_of(nlp) if english_words is None else english_words
    results: list = [None] * len(prompts)
    todo: list[tuple[int, str, str, list]] = []   # (position, text, content, modifiers)
    for i, prompt in enumerate(prompts):
        try:
            text = clean_prompt(prompt, max_chars)   # before any parsing: the length cap protects memory
            content, modifiers = split_modifiers(text)
            todo.append((i, text, content, modifiers))
        except Exception as exc:
            results[i] = prompt_failure(exc)
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
            results[i] = prompt_failure(exc)
    return results


# ------------------------------------------------------------------------------------------ validation

# Far above any real prompt (benchmark lists stay under 500 characters), far below what hurts: spaCy needs
# about 1 GB per 100,000 characters to parse, and a shared workflow is untrusted input.
MAX_PROMPT_CHARS = 2000


def clean_prompt(prompt, max_chars: Optional[int] = MAX_PROMPT_CHARS) -> str:
    """Validate a prompt: a non-empty string of at most ``max_chars`` characters; collapses whitespace.

    Checked before anything is parsed (``None`` turns the length cap off)."""
    if not isinstance(prompt, str):
        raise SearchPriorsError(f"The prompt must be text, got {type(prompt).__name__}.")
    cleaned = " ".join(prompt.split())
    if not cleaned:
        raise SearchPriorsError("The prompt is empty: type a sentence that describes a motion, "
                                "e.g. 'A panda rides a bicycle'.")
    if max_chars is not None and len(cleaned) > max_chars:
        raise SearchPriorsError(
            f"The prompt is too long: {len(cleaned):,} characters, more than the limit of {max_chars:,}. "
            f"Shorten it, or raise the limit (max_prompt_chars on the node, --max-chars on the command "
            f"line) if such a prompt is really meant.")
    return cleaned


# English function words: with the lemmatizer's word lists they tell English words from others.
_ENGLISH_FUNCTION_WORDS = frozenset("""
    a an the of in on at to from by with into onto over under through across along around behind beside
    between near past toward towards up down out off and or but is are was were be been being am it its
    his her their this that these those while as for about after before above below against during
    he she they we you i
""".split())

_NOT_ENGLISH_SCRIPT = (
    "The prompt does not look like English (it has no Latin-script English: it is written in another "
    "script), and the chosen spaCy model parses English only: translate the prompt to English, or pick a spaCy model for the prompt's "
    "language.")
_NOT_ENGLISH_WORDS = (
    "The prompt does not look like English (few of its words are English words), and the chosen spaCy "
    "model parses English only: translate the prompt to English, or pick a spaCy model for the prompt's "
    "language.")


def english_words_of(nlp) -> Optional[frozenset]:
    """Every word form the pipeline's rule lemmatizer lists (base forms and irregular forms), cached."""
    cached = getattr(nlp, "_searchpriors_english_words", None)
    if cached is not None:
        return cached
    try:
        lookups = nlp.get_pipe("lemmatizer").lookups
        index, exc = lookups.get_table("lemma_index"), lookups.get_table("lemma_exc")
        words = set(_ENGLISH_FUNCTION_WORDS)
        for pos in ("noun", "verb", "adj", "adv"):
            words.update(index[pos])
            words.update(exc[pos])
        words = frozenset(w for w in words if isinstance(w, str))
    except Exception:
        return None
    try:
        nlp._searchpriors_english_words = words
    except AttributeError:
        pass
    return words


def _is_latin_letter(ch: str) -> bool:
    return ch.isascii() or unicodedata.name(ch, "").startswith("LATIN")


def check_language(doc, lang: str, english_words: Optional[frozenset] = None, modifiers: Sequence[str] = ()) -> None:
    """Refuse only prompts with no Latin-script English in them (English models only).

    A prompt with no Latin letters at all (Chinese, Cyrillic, Arabic, Devanagari, ...) is refused. With
    ``english_words`` (see ``english_words_of``), a prompt whose words are almost all unknown to English
    (fewer than a quarter of four or more Latin words; none of fewer) is refused too. Short English
    sentences always pass: "cats fight", "waves crash", "two kangaroos box playfully". ``modifiers`` (the
    phrases ``split_modifiers`` cut off the parsed content) count as words of the prompt too: "an animated
    clip of spongebob squarepants" is English.
    """
    if lang != "en":
        return
    letters = [ch for ch in doc.text if ch.isalpha()]
    if letters and not any(_is_latin_letter(ch) for ch in letters):
        raise SearchPriorsError(_NOT_ENGLISH_SCRIPT)
    words = [t for t in doc if t.is_alpha and all(_is_latin_letter(ch) for ch in t.text)]
    if not letters or not words:
        return  # digits and punctuation only: nothing to judge; the parse finds no units and says so
    if english_words is not None:
        known = sum(1 for t in words if t.lower_ in english_words or _lemma(t) in english_words)
        extra = [w.lower() for w in re.findall(r"[^\W\d_]+", " ".join(modifiers)) if all(_is_latin_letter(c) for c in w)]
        known += sum(1 for w in extra if w in english_words)
        total = len(words) + len(extra)
        if known == 0 or (total >= 4 and known / total < 0.25):
            raise SearchPriorsError(_NOT_ENGLISH_WORDS)
        return
    if len(words) >= 4 and not any(t.lower_ in _ENGLISH_FUNCTION_WORDS for t in words) \
            and not any(t.pos_ in ("VERB", "AUX") for t in words):
        raise SearchPriorsError(_NOT_ENGLISH_WORDS)
