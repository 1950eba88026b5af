"""Coarse-filter thresholds (t_mot, t_atr) chosen from labelled role-phrase pairs, per vector space.

Reads tests/data/role_synonym_pairs.tsv (verb pairs for t_mot, noun pairs for t_atr; 1 = synonyms for what
a clip shows, 0 = different), embeds every phrase as the index does (the pack's Sentence-Transformers
model on lemma phrases; and spaCy's word vectors where a vectors model is installed), and prints each
pair's cosine and the threshold ``retrieval.calibration.choose_threshold`` picks. The "calibrated" preset of
``retrieval.search.THRESHOLD_PRESETS`` is this script's MiniLM choice (a unit test holds them equal).

Usage: ``python benchmarks/calibrate_thresholds.py [--pairs]`` (``--pairs``: list every pair's cosine).
Results: ``bench_out/calibrate_thresholds.json``.
"""

from __future__ import annotations

import argparse
import sys

import _common as C

NAME = "calibrate_thresholds"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pairs", action="store_true", help="print every pair's cosine")
    args = ap.parse_args(argv)

    from comfyui_searchpriors.retrieval.calibration import pair_cosines, read_pairs
    from comfyui_searchpriors.retrieval.embedding import encode
    from comfyui_searchpriors.retrieval.models import load_sentence_model
    from comfyui_searchpriors.retrieval.search import THRESHOLD_PRESETS

    pairs = read_pairs(str(C.PAIRS_PATH))
    model = load_sentence_model(C.SENTENCE_MODEL)
    spaces = {f"{C.SENTENCE_MODEL} lemma phrases (the pack)": lambda texts: encode(model, texts)}
    vectors, why = C.load_spacy_word_vectors()
    if vectors is not None:
        spaces[f"spaCy word vectors ({vectors.name})"] = vectors.embed
    else:
        print(f"spaCy word vectors: skipped ({why})")
    out = {}
    for space, embed in spaces.items():
        result = C.calibrate_pairs(embed)
        out[space] = {role: vars(c) for role, c in result.items()}
        print(f"== {space}")
        for c in result.values():
            print("  " + c.describe())
        paper = THRESHOLD_PRESETS["paper"]
        for role, key in (("motion", "t_mot"), ("actor", "t_atr")):
            chosen = [p for p in pairs if p.role == role]
            cos = pair_cosines(chosen, embed)
            pos = [c for c, p in zip(cos, chosen) if p.label == 1]
            neg = [c for c, p in zip(cos, chosen) if p.label == 0]
            passed = sum(c >= paper[key] for c in pos) / len(pos)
            refused = sum(c < paper[key] for c in neg) / len(neg)
            print(f"  {role}: the paper's {key} {paper[key]:g} passes {passed:.3f} of synonym pairs and refuses "
                  f"{refused:.3f} of the others")
            out[space][f"paper_{role}"] = {"synonyms_passed": passed, "others_refused": refused}
            if args.pairs:
                for c, p in sorted(zip(cos, chosen), key=lambda x: -x[0]):
                    print(f"    {c:6.3f}  {p.label}  {p.a} / {p.b}")
    path = C.write_result(NAME, out)
    print(f"results: {path.relative_to(C.REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
