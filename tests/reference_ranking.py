"""A literal implementation of Search-T2V Sec. 4.2 (Eqs. 6-9) and POS Eq. 3, for checking the fast path.

Written from the papers, loop by loop, with float64 cosines of full vectors: no phrase table, no faiss,
no shortcuts. Conventions shared with the pack (documented in retrieval/search.py): a missing role is the
zero vector and its cosine with anything is 0; a filter round whose prompt role is missing is skipped;
a round that keeps fewer than ``min_keep`` keeps the ``min_keep`` best by that round's similarity (ties:
lower index first); a caption with no units contributes 0 to the max of Eq. 8; ranking ties: lower index.
Used by the unit tests and by benchmarks/ (imported by path).
"""

from __future__ import annotations

import numpy as np


def cosine(a, b) -> float:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    na, nb = np.sqrt((a * a).sum()), np.sqrt((b * b).sum())
    if na == 0.0 or nb == 0.0:
        return 0.0
    return float((a * b).sum() / (na * nb))


class Caption:
    """One library caption: v_total and its units, each unit a (motion, actor, recipient) vector triple."""

    def __init__(self, v_total, units, core_index):
        self.v_total = v_total
        self.units = units            # list of (v_mot, v_atr, v_rec)
        self.core_index = core_index  # -1 when there are no units

    def core(self, dim):
        if self.core_index < 0:
            zero = np.zeros(dim)
            return (zero, zero, zero)
        return self.units[self.core_index]


def sim_prime(caption_units, prompt_units) -> float:
    """Eq. 8."""
    if not prompt_units:
        return 0.0
    total = 0.0
    for s_p in prompt_units:
        best = None
        for s_i in caption_units:
            value = cosine(s_p[0], s_i[0]) + cosine(s_p[1], s_i[1]) + cosine(s_p[2], s_i[2])
            best = value if best is None or value > best else best
        total += 0.0 if best is None else best
    return total / len(prompt_units)


def score(caption: Caption, prompt: Caption, alpha, beta, gamma, dim) -> dict:
    """Eqs. 6-7, with every part."""
    p_core, c_core = prompt.core(dim), caption.core(dim)
    s_total = cosine(caption.v_total, prompt.v_total)
    s_mot = cosine(c_core[0], p_core[0])
    s_atr = cosine(c_core[1], p_core[1])
    s_units = sim_prime(caption.units, prompt.units)
    f = alpha * s_mot + beta * s_atr + gamma * s_units
    return {"total": s_total, "motion": s_mot, "actor": s_atr, "units": s_units, "score": s_total + f}


def _round(candidates, sims, threshold, min_keep):
    passed = [i for i in candidates if sims[i] >= threshold]
    if len(passed) >= min_keep:
        return passed
    ordered = sorted(candidates, key=lambda i: (-sims[i], i))
    return sorted(ordered[:min_keep])


def search_t2v(captions, prompt: Caption, *, top_k=10, t_total=0.3, t_mot=0.9, t_atr=0.4, alpha=1.0, beta=1.0,
               gamma=0.5, min_keep=10):
    """Coarse filtering rounds, then Score ranking; returns [(index, parts)] best first (Eq. 9 = first)."""
    dim = len(prompt.v_total)
    p_core = prompt.core(dim)
    candidates = list(range(len(captions)))
    sims_total = {i: cosine(captions[i].v_total, prompt.v_total) for i in candidates}
    candidates = _round(candidates, sims_total, t_total, min_keep)
    if np.any(p_core[0]):
        sims_mot = {i: cosine(captions[i].core(dim)[0], p_core[0]) for i in candidates}
        candidates = _round(candidates, sims_mot, t_mot, min_keep)
    if np.any(p_core[1]):
        sims_atr = {i: cosine(captions[i].core(dim)[1], p_core[1]) for i in candidates}
        candidates = _round(candidates, sims_atr, t_atr, min_keep)
    scored = [(i, score(captions[i], prompt, alpha, beta, gamma, dim)) for i in candidates]
    scored.sort(key=lambda item: (-item[1]["score"], item[0]))
    return scored[:top_k]


def pos(captions, prompt: Caption, top_k=10):
    """POS Eq. 3: the captions with the highest cosine of sentence vectors."""
    sims = [(i, cosine(c.v_total, prompt.v_total)) for i, c in enumerate(captions)]
    sims.sort(key=lambda item: (-item[1], item[0]))
    return sims[:top_k]


def captions_from_index(index) -> list[Caption]:
    """Rebuild full per-caption vectors from a loaded MotionIndex (for large literal checks)."""
    vectors = index.sentence_vectors()
    out = []
    for i in range(index.count):
        lo, hi = int(index.unit_offsets[i]), int(index.unit_offsets[i + 1])
        units = [tuple(index.phrases[index.units[u, r]] for r in range(3)) for u in range(lo, hi)]
        core = int(index.core_units[i]) - lo if index.core_units[i] >= 0 else -1
        out.append(Caption(vectors[i], units, core))
    return out


def caption_from_atomized(atomized) -> Caption:
    units = [tuple(atomized.unit_vectors[u, r] for r in range(3)) for u in range(len(atomized.units))]
    return Caption(atomized.v_total, units, atomized.core_index if units else -1)


def video_support(captions, videos, prompt: Caption, row: int, top: int = 3) -> float:
    """The "video_support" ranking's extra term: the mean sentence cosine with the prompt of the ``top``
    best captions of row's video (all of them when it has fewer); ``videos[i]`` is caption i's video."""
    sims = sorted((cosine(c.v_total, prompt.v_total) for c, v in zip(captions, videos) if v == videos[row]),
                  reverse=True)
    return sum(sims[:top]) / len(sims[:top])


def pool_video_support(captions, videos, prompt: Caption, *, top_k=10, pool=300, t_mot=0.9, weight=2.0, top=3):
    """The "pool_video_support" ranking: the ``max(pool, top_k)`` captions of the highest sentence cosine
    (POS Eq. 3's order), those whose core motion cosine with the prompt's reaches ``t_mot`` first when the
    prompt has a verb, each tier by sentence cosine + weight * video support (ties: lower index).
    Returns [(index, parts)] best first; parts: total, motion, video, verb, score."""
    dim = len(prompt.v_total)
    p_mot = prompt.core(dim)[0]
    has_verb = bool(np.any(p_mot))
    nearest = pos(captions, prompt, top_k=max(pool, top_k))
    scored = []
    for i, total in nearest:
        motion = cosine(captions[i].core(dim)[0], p_mot)
        video = video_support(captions, videos, prompt, i, top)
        verb = 1.0 if has_verb and motion >= t_mot else 0.0
        scored.append((i, {"total": total, "motion": motion, "video": video, "verb": verb,
                           "score": total + weight * video}))
    scored.sort(key=lambda item: (-item[1]["verb"], -item[1]["score"], item[0]))
    return scored[:top_k]
