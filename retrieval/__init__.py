"""Text side of ComfyUI-SearchPriors, pure Python with no ComfyUI import.

Stages, each in its own module: ``atomizer`` (PromptAtomizer parse), ``embedding`` (vectors and the
ATOMIZED_PROMPT value), ``library`` (CSV / JSONL / WebVid / MSR-VTT readers), ``index`` (the on-disk motion
index; ``index_files``: its locks, checked writes and checksums), ``search`` (MotionRetriever: Search-T2V
Eqs. 6-9 and POS Eq. 3), ``models`` (finding and loading the spaCy and Sentence-Transformers models),
``cli`` (the ``searchpriors`` command).
"""
