"""MotionRetriever node: ranked reference videos for an atomized prompt (Search-T2V Eqs. 6-9, POS Eq. 3)."""

from __future__ import annotations

from comfy_api.v0_0_2 import io, ui

from ..retrieval.search import (MAX_POOL, MODES, POOL_RANKING, POOL_SUPPORT_WEIGHT, RANKINGS, THRESHOLD_CHOICES,
                                THRESHOLD_PRESETS, THRESHOLDS_CUSTOM, VIDEO_SUPPORT_TOP, VIDEO_SUPPORT_WEIGHT,
                                SearchParams, preset_label, search, thresholds_for_choice)
from .comfy_internals import glue
from .sockets import AtomizedPrompt, MotionIndexType, RetrievalType

_DEFAULTS = SearchParams()
_SEARCH_T2V_ONLY = ". search_t2v mode only: pos ignores it."


def _threshold(name: str, default: float, tooltip: str):
    return io.Float.Input(name, default=default, min=-1.0, max=1.0, step=0.01, tooltip=tooltip)


def _weight(name: str, default: float, tooltip: str):
    return io.Float.Input(name, default=default, min=0.0, max=10.0, step=0.05, tooltip=tooltip)


class MotionRetriever(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SearchPriors_MotionRetriever",
            display_name="Motion Retriever",
            category=glue.CATEGORY,
            description="search_t2v: coarse filtering (t_total, t_mot, t_atr, keeping at least min_keep) "
                        "then Score = sim_total + alpha*sim_mot + beta*sim_atr + gamma*sim' (Search-T2V "
                        "Eqs. 6-9). pos: cosine of sentence vectors (POS Eq. 3).",
            is_output_node=True,
            inputs=[
                AtomizedPrompt.Input("atomized"),
                MotionIndexType.Input("index"),
                io.Combo.Input("mode", options=list(MODES), default="search_t2v",
                               tooltip="search_t2v: motion-aware filtering and ranking (Search-T2V); pos: plain "
                                       "caption similarity (POS). pos ignores every widget below but top_k."),
                io.Int.Input("top_k", default=_DEFAULTS.top_k, min=1, max=1000,
                             tooltip="How many ranked videos to return (both modes)"),
                _threshold("t_total", _DEFAULTS.t_total, "Coarse filter on sentence similarity" + _SEARCH_T2V_ONLY),
                _threshold("t_mot", _DEFAULTS.t_mot, "Coarse filter on the core unit's motion similarity"
                           + _SEARCH_T2V_ONLY),
                _threshold("t_atr", _DEFAULTS.t_atr, "Coarse filter on the core unit's actor similarity"
                           + _SEARCH_T2V_ONLY),
                _weight("alpha", _DEFAULTS.alpha, "Weight of the core motion similarity (Eq. 7)" + _SEARCH_T2V_ONLY),
                _weight("beta", _DEFAULTS.beta, "Weight of the core actor similarity (Eq. 7)" + _SEARCH_T2V_ONLY),
                _weight("gamma", _DEFAULTS.gamma, "Weight of the unit-set similarity sim' (Eqs. 7-8)"
                        + _SEARCH_T2V_ONLY),
                io.Int.Input("min_keep", default=_DEFAULTS.min_keep, min=1, max=10000,
                             tooltip="Fail-safe: each filter round keeps at least this many, its best by that "
                                     "round's similarity, even below the threshold" + _SEARCH_T2V_ONLY),
                io.Combo.Input("thresholds", options=THRESHOLD_CHOICES, default=THRESHOLDS_CUSTOM, optional=True,
                               tooltip="custom: the t_total / t_mot / t_atr widgets (their defaults are the "
                                       "paper's, the best on the MSR-VTT benchmark). " + "; ".join(preset_label(n) for n in THRESHOLD_PRESETS)
                                       + ". paper = Search-T2V's, set for spaCy word vectors (in the pack's MiniLM "
                                       "space t_mot 0.9 passes only the identical verb); calibrated = chosen for "
                                       "the pack's vectors from labelled synonym pairs (benchmarks/README.md). A "
                                       "preset replaces the three widgets" + _SEARCH_T2V_ONLY),
                io.Combo.Input("ranking", options=list(RANKINGS), default=_DEFAULTS.ranking, optional=True,
                               tooltip="paper: Search-T2V's coarse filter and Eq. 9 exactly (Score = sim_total + alpha*sim_mot + "
                                       "beta*sim_atr + gamma*sim'). video_support: that score plus "
                                       f"{VIDEO_SUPPORT_WEIGHT:g} x the mean sentence similarity of the best "
                                       f"{VIDEO_SUPPORT_TOP} captions of the candidate's video, so a "
                                       "video that several of its captions match wins over one caption that "
                                       "shares the verb (for libraries with several captions per video, e.g. "
                                       "MSR-VTT; benchmarks/README.md). "
                                       f"{POOL_RANKING}: replaces the coarse filter too: of the `pool` captions "
                                       "nearest to the prompt by sentence similarity, those whose core verb "
                                       "matches the prompt's (motion similarity >= t_mot) come first, each group "
                                       f"by sentence similarity + {POOL_SUPPORT_WEIGHT:g} x that video support "
                                       "(t_total, t_atr, min_keep, alpha, beta, gamma unused); the default: "
                                       "MSR-VTT R@1 0.300 against paper's 0.200 (benchmarks/README.md)"
                                       + _SEARCH_T2V_ONLY),
                io.Int.Input("pool", default=_DEFAULTS.pool, min=1, max=MAX_POOL, optional=True,
                             tooltip=f"{POOL_RANKING} ranking only: how many captions nearest to the prompt it "
                                     "ranks (at least top_k). Larger: more captions with the prompt's verb to "
                                     "choose from (motion agreement up), fewer near wordings of the right "
                                     "video beaten by them"),
            ],
            outputs=[
                RetrievalType.Output("retrieval", display_name="retrieval"),
                io.String.Output("best_video", display_name="best_video", tooltip="Path of the best entry's video ('' if it has none)"),
                io.String.Output("reference_captions", display_name="reference_captions", tooltip="Top-k captions, one per line"),
                io.String.Output("report", display_name="report", tooltip="Ranked table with every score part"),
            ],
        )

    @classmethod
    def execute(cls, atomized, index, mode: str, top_k: int, t_total: float, t_mot: float, t_atr: float,
                alpha: float, beta: float, gamma: float, min_keep: int,
                thresholds: str = THRESHOLDS_CUSTOM, ranking: str = _DEFAULTS.ranking,
                pool: int = _DEFAULTS.pool) -> io.NodeOutput:
        preset = thresholds_for_choice(thresholds)
        if preset is not None:
            t_total, t_mot, t_atr = preset["t_total"], preset["t_mot"], preset["t_atr"]
        params = SearchParams(mode=mode, top_k=top_k, t_total=t_total, t_mot=t_mot, t_atr=t_atr, alpha=alpha,
                              beta=beta, gamma=gamma, min_keep=min_keep, ranking=ranking, pool=pool)
        result = search(index, atomized, params)
        if preset is not None:
            result.notes.append(f"thresholds from the preset {preset_label(thresholds)}")
        best = result.best
        report = result.report()
        return io.NodeOutput(result, (best.video_path or "") if best else "",
                             "\n".join(result.reference_captions()), report, ui=ui.PreviewText(report))
