"""Threshold calibration for the coarse filter (Search-T2V Sec. 4.2) in the pack's own vector space.

The paper sets t_mot = 0.9 and t_atr = 0.4 for spaCy word vectors. The pack embeds lemma phrases with a
Sentence-Transformers model (all-MiniLM-L6-v2 by default), where synonyms sit much lower (run/jog 0.62),
so 0.9 passes only the identical verb. Here thresholds are chosen from a small labelled set of role-phrase
pairs (``tests/data/role_synonym_pairs.tsv``: verb pairs for t_mot, noun pairs for t_atr; 1 = the same
thing seen, 0 = a different motion or actor):

- every threshold on a grid of 0.01 from -1 to 1 is scored by balanced accuracy (the mean of the share of
  synonym pairs at or above it and the share of non-synonym pairs below it), so the two classes weigh the
  same whatever their counts;
- the best score can hold over a run of grid values; the middle of the longest such run is taken (ties:
  the higher run), which keeps the threshold as far as the data allow from the pairs on either side.

Pure numpy; the vectors come from the caller (``benchmarks/calibrate_thresholds.py`` embeds the pairs
with the pack's encoder, and with spaCy word vectors where a vectors model is installed). The result is
the ``calibrated`` preset of ``retrieval.search``; the paper's values stay the default there (see why).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from ..errors import SearchPriorsError

ROLES = ("motion", "actor")
GRID_STEP = 0.01


@dataclass(frozen=True)
class LabelledPair:
    role: str
    a: str
    b: str
    label: int


@dataclass
class Calibration:
    role: str
    threshold: float
    balanced_accuracy: float
    synonyms_passed: float        # share of label-1 pairs with cosine >= threshold
    others_refused: float         # share of label-0 pairs with cosine < threshold
    pairs: int

    def describe(self) -> str:
        return (f"{self.role}: threshold {self.threshold:.2f} (balanced accuracy {self.balanced_accuracy:.3f}: "
                f"{self.synonyms_passed:.3f} of synonym pairs pass, {self.others_refused:.3f} of other pairs "
                f"are refused; {self.pairs} pairs)")


def read_pairs(path: str) -> list[LabelledPair]:
    """Rows ``role<TAB>a<TAB>b<TAB>label``; lines starting with '#' and blank lines are skipped."""
    pairs = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line.strip() or line.startswith("#"):
                continue
            fields = line.split("\t")
            if len(fields) != 4 or fields[0] not in ROLES or fields[3] not in ("0", "1"):
                raise SearchPriorsError(f"{path}:{number}: expected 'role<TAB>a<TAB>b<TAB>label' with role one of "
                                        f"{', '.join(ROLES)} and label 0 or 1, got {line!r}.")
            pairs.append(LabelledPair(fields[0], fields[1].strip(), fields[2].strip(), int(fields[3])))
    return pairs


def pair_cosines(pairs: Sequence[LabelledPair], embed: Callable[[list[str]], np.ndarray]) -> np.ndarray:
    """Cosine of each pair; ``embed(texts)`` gives one row per text. A zero vector (a word without a vector)
    has cosine 0 with anything, as a missing role has in the search."""
    texts = list(dict.fromkeys([p.a for p in pairs] + [p.b for p in pairs]))
    vectors = np.asarray(embed(texts), dtype=np.float64)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    vectors = np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)
    row = {t: i for i, t in enumerate(texts)}
    return np.array([float(vectors[row[p.a]] @ vectors[row[p.b]]) for p in pairs])


def balanced_accuracy(scores: np.ndarray, labels: np.ndarray, threshold: float) -> tuple[float, float, float]:
    """(balanced accuracy, share of positives >= threshold, share of negatives < threshold)."""
    scores, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels)
    pos, neg = scores[labels == 1], scores[labels == 0]
    if not len(pos) or not len(neg):
        raise SearchPriorsError("calibration needs pairs of both labels (1 = synonyms, 0 = different).")
    tpr = float(np.mean(pos >= threshold - 1e-12))
    tnr = float(np.mean(neg < threshold - 1e-12))
    return (tpr + tnr) / 2, tpr, tnr


def choose_threshold(scores: Sequence[float], labels: Sequence[int], role: str = "") -> Calibration:
    """The grid threshold of best balanced accuracy, the middle of the longest best run (see module doc)."""
    scores, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels)
    steps = int(round(2 / GRID_STEP))
    grid = [round(-1 + k * GRID_STEP, 10) for k in range(steps + 1)]
    values = [balanced_accuracy(scores, labels, t)[0] for t in grid]
    best = max(values)
    runs, start = [], None
    for k, v in enumerate(values + [-math.inf]):
        if v >= best - 1e-12 and start is None:
            start = k
        elif v < best - 1e-12 and start is not None:
            runs.append((start, k - 1))
            start = None
    first, last = max(runs, key=lambda r: (r[1] - r[0], r[0]))
    threshold = round(grid[(first + last + 1) // 2], 2)
    acc, tpr, tnr = balanced_accuracy(scores, labels, threshold)
    return Calibration(role, threshold, acc, tpr, tnr, int(len(scores)))


def calibrate(pairs: Sequence[LabelledPair], embed: Callable[[list[str]], np.ndarray]) -> dict[str, Calibration]:
    """role -> its calibration, for every role present in ``pairs``."""
    out = {}
    for role in ROLES:
        chosen = [p for p in pairs if p.role == role]
        if chosen:
            out[role] = choose_threshold(pair_cosines(chosen, embed), [p.label for p in chosen], role)
    return out
