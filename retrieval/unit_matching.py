"""Detection captions for the KeyframeExtractor (Search-T2V Sec. 4.3): the retrieved entry's units matched
to the prompt's units, and their noun phrases as GroundingDINO captions.

Matching uses the retriever's own unit similarity (Eq. 8): sim(u_r, u_p) = sim_mot + sim_atr + sim_rec,
cosines of the role vectors, a missing role counting 0. For every prompt unit (the core first, then the
others in order) the entry unit with the highest similarity is its match (ties: the earlier entry unit),
kept when that similarity exceeds ``min_similarity`` (default 0: the units share something). The matched
subset {s_r}' is these entry units; their actor and recipient texts, in match order and without repeats,
are the captions (a verb is not something a detector can box).

No match (the entry has no units, the retrieval carries none, or no unit shares anything with the
prompt): the prompt's own actors and recipients are the captions, with a warning, because the retrieved
video was chosen for showing the prompt's subject and motion; a prompt without any noun is an error.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

from .atomizer import Unit
from ..errors import SearchPriorsError

MAX_CAPTIONS = 8


@dataclass
class UnitMatch:
    prompt_unit: int
    entry_unit: int
    similarity: float


@dataclass
class DetectionCaptions:
    captions: list[str]
    roles: list[str]                       # "actor" / "recipient", one per caption
    matches: list[UnitMatch] = field(default_factory=list)
    source: str = "entry"                  # "entry": matched units; "prompt": the fallback
    warnings: list[str] = field(default_factory=list)

    def text(self) -> str:
        """The captions as GroundingDINO reads them: lower-case phrases, each ended by ' .'."""
        return " . ".join(self.captions) + " ." if self.captions else ""

    def describe(self, entry_units: Sequence[Unit] = (), prompt_units: Sequence[Unit] = ()) -> str:
        lines = []
        for m in self.matches:
            e = entry_units[m.entry_unit].describe() if m.entry_unit < len(entry_units) else f"#{m.entry_unit}"
            p = prompt_units[m.prompt_unit].describe() if m.prompt_unit < len(prompt_units) else f"#{m.prompt_unit}"
            lines.append(f"matched: entry [{e}] ~ prompt [{p}] (similarity {m.similarity:.3f})")
        return "\n".join(lines)


def clean_caption(text: str) -> str:
    """Lower case, no dots (GroundingDINO's phrase separator), single spaces."""
    return " ".join(re.sub(r"[.?!;,]", " ", text.lower()).split())


def unit_similarity_matrix(entry_vectors: np.ndarray, prompt_vectors: np.ndarray) -> np.ndarray:
    """(entry units, prompt units) matrix of sim_mot + sim_atr + sim_rec (float64)."""
    e = np.asarray(entry_vectors, dtype=np.float64)
    p = np.asarray(prompt_vectors, dtype=np.float64)
    if e.ndim != 3 or p.ndim != 3 or e.shape[1] != 3 or p.shape[1] != 3 or e.shape[2] != p.shape[2]:
        raise SearchPriorsError(f"Unit vectors of the entry {e.shape} and of the prompt {p.shape} do not match: "
                                f"atomize the prompt with the index's sentence model.")
    return np.einsum("ird,prd->ip", e, p)


def match_units(entry_vectors: np.ndarray, prompt_vectors: np.ndarray, core_index: int = 0,
                min_similarity: float = 0.0) -> list[UnitMatch]:
    """Each prompt unit's best entry unit (core first), kept above ``min_similarity``."""
    if len(entry_vectors) == 0 or len(prompt_vectors) == 0:
        return []
    sims = unit_similarity_matrix(entry_vectors, prompt_vectors)
    order = [core_index] + [p for p in range(sims.shape[1]) if p != core_index]
    out = []
    for p in order:
        best = int(np.argmax(sims[:, p]))   # argmax returns the first of equal values
        if sims[best, p] > min_similarity:
            out.append(UnitMatch(p, best, float(sims[best, p])))
    return out


# A recipient such as "left" in "moves to the left" is where the motion goes, not a thing a detector can box.
DIRECTION_WORDS = frozenset(
    "left right up down upward upwards downward downwards forward forwards backward backwards away back "
    "around across over under along toward towards inward outward sideways clockwise counterclockwise "
    "anticlockwise north south east west top bottom front behind ahead center centre middle side".split())
_DETERMINERS = frozenset("the a an its their his her to".split())


def is_direction(phrase: str) -> bool:
    """True for a phrase that only names a direction or a place in the frame ("left", "the top right")."""
    words = [w for w in clean_caption(phrase).split() if w not in _DETERMINERS]
    return bool(words) and all(w in DIRECTION_WORDS for w in words)


def _nouns(units: Sequence[Unit], order: Sequence[int]) -> tuple[list[str], list[str]]:
    """The actors and recipients to detect, in order, without repeats or directions."""
    captions, roles = [], []
    for i in order:
        for role, text in (("actor", units[i].actor), ("recipient", units[i].recipient)):
            phrase = clean_caption(text or "")
            if phrase and phrase not in captions and not is_direction(phrase):
                captions.append(phrase)
                roles.append(role)
    return captions[:MAX_CAPTIONS], roles[:MAX_CAPTIONS]


def detection_captions(prompt_units: Sequence[Unit], prompt_vectors: np.ndarray, core_index: int,
                       entry_units: Sequence[Unit], entry_vectors: Optional[np.ndarray],
                       min_similarity: float = 0.0) -> DetectionCaptions:
    """Captions from the entry's units matched to the prompt's, else the prompt's own (with a warning)."""
    warnings: list[str] = []
    if entry_vectors is None or len(entry_units) == 0:
        reason = ("the retrieval carries no atomized units for this entry" if entry_vectors is None
                  else "the entry's caption has no units (no verb or noun)")
        matches = []
    else:
        if len(entry_vectors) != len(entry_units):
            raise SearchPriorsError("The retrieval's entry has units and unit vectors that do not match: run the "
                                    "Motion Retriever again.")
        matches = match_units(entry_vectors, prompt_vectors, core_index, min_similarity)
        reason = "no unit of the entry's caption matches a unit of the prompt"
    if matches:
        captions, roles = _nouns(entry_units, list(dict.fromkeys(m.entry_unit for m in matches)))
        if captions:
            return DetectionCaptions(captions, roles, matches, "entry", warnings)
        reason = "the matched units of the entry have no actor or recipient"
    order = ([core_index] if prompt_units else []) + [i for i in range(len(prompt_units)) if i != core_index]
    captions, roles = _nouns(prompt_units, order)
    if not captions:
        raise SearchPriorsError(f"Nothing to detect: {reason}, and the prompt has no actor or recipient either. "
                                f"Write a prompt that names who or what moves (e.g. 'a dog catches a ball'), or "
                                f"pick another retrieved entry (rank).")
    warnings.append(f"{reason}: detecting the prompt's own nouns instead ({', '.join(captions)})")
    return DetectionCaptions(captions, roles, matches, "prompt", warnings)
