"""Fixtures of the pure-unit tier: the real small models that packages ship, and a fake encoder."""

from __future__ import annotations

import hashlib
import os

import numpy as np
import pytest

import searchpriors_comfy_server as harness  # scripts/comfy_server.py, loaded by tests/conftest.py

TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.environ.get("SEARCHPRIORS_SHARED_DATA") or os.path.join(TESTS, "..", "..", "shared", "data")


def load_test_module(name: str):
    """Import a helper module of tests/ by path (tests/ is never put on sys.path)."""
    return harness.load_test_helper(name)


class HashEncoder:
    """A deterministic stand-in for a Sentence-Transformers model: hashed words and character trigrams.

    Same interface as the parts of SentenceTransformer the pack uses; similar strings get similar vectors.
    """

    searchpriors_name = "hash-encoder"

    def __init__(self, dim: int = 48):
        self.dim = dim
        self.calls: list[int] = []

    def get_sentence_embedding_dimension(self) -> int:
        return self.dim

    def _vector(self, text: str) -> np.ndarray:
        v = np.zeros(self.dim)
        padded = f"  {text.lower()}  "
        feats = text.lower().split() + [padded[i:i + 3] for i in range(len(padded) - 2)]
        for f in feats:
            h = hashlib.blake2b(f.encode(), digest_size=8).digest()
            v[int.from_bytes(h[:4], "little") % self.dim] += 1.0 if h[4] & 1 else -1.0
        return v

    def encode(self, texts, batch_size=32, convert_to_numpy=True, normalize_embeddings=False, show_progress_bar=False):
        self.calls.append(len(texts))
        out = np.stack([self._vector(t) for t in texts]).astype(np.float32)
        if normalize_embeddings:
            norms = np.linalg.norm(out, axis=1, keepdims=True)
            out = out / np.where(norms == 0, 1, norms)
        return out


@pytest.fixture(scope="session")
def nlp():
    from comfyui_searchpriors.retrieval.models import load_spacy

    return load_spacy("en_core_web_sm")


@pytest.fixture(scope="session")
def minilm():
    from comfyui_searchpriors.retrieval.models import load_sentence_model

    return load_sentence_model("all-MiniLM-L6-v2")


@pytest.fixture()
def hash_encoder():
    return HashEncoder()


@pytest.fixture(scope="session")
def hash_encoder_cls():
    return HashEncoder


@pytest.fixture(scope="session")
def reference():
    return load_test_module("reference_ranking")


@pytest.fixture(scope="session")
def sample_library_path():
    return os.path.join(TESTS, "..", "sample_data", "sample_library", "library.csv")


@pytest.fixture(scope="session")
def shared_data():
    if not os.path.isdir(SHARED_DATA):
        pytest.skip(f"../shared/data not found (looked in {SHARED_DATA}); set SEARCHPRIORS_SHARED_DATA")
    return SHARED_DATA
