"""Batched encoding: texts grouped by token length give the same vectors as one text at a time."""

from __future__ import annotations

import numpy as np

from comfyui_searchpriors.retrieval.embedding import PhraseTable, encode, length_batches, token_lengths

TEXTS = [
    "a man is riding a horse on the beach",
    "dog",
    "a cat",
    "two people are dancing in a big room while a crowd of people watch them and cheer",
    "run",
    "a woman slices a tomato",
    "a man is riding a horse on the beach",  # a repeat keeps its own row
    "kids play football",
    "a chef cooks pasta in a kitchen",
    "the car",
    "the " + "very " * 300 + "long caption",  # past MiniLM's 256-token limit: truncated like the model does
]


def test_batches_hold_every_row_once_one_length_each_within_the_budget(minilm):
    lengths = token_lengths(minilm, TEXTS)
    want = [len(minilm.tokenizer(t, truncation=True, max_length=minilm.max_seq_length)["input_ids"])
            for t in TEXTS]
    assert lengths == want and max(lengths) == minilm.max_seq_length
    for budget in (1, 8, 24, 2048):
        batches = length_batches(minilm, TEXTS, budget)
        assert sorted(r for b in batches for r in b) == list(range(len(TEXTS)))
        assert all(len({lengths[r] for r in b}) == 1 for b in batches)
        assert all(len(b) == 1 or len(b) * lengths[b[0]] <= budget for b in batches)
        firsts = [lengths[b[0]] for b in batches]
        assert firsts == sorted(firsts)  # shortest first


def test_encode_matches_one_text_at_a_time_in_input_order(minilm):
    one_by_one = np.stack([minilm.encode([t], normalize_embeddings=True)[0] for t in TEXTS])
    for budget in (8, 2048):
        got = encode(minilm, TEXTS, budget)
        assert got.dtype == np.float32 and got.shape == one_by_one.shape
        np.testing.assert_allclose(got, one_by_one, atol=2e-6)
    assert encode(minilm, []).shape == (0, 384)


def test_a_model_without_a_tokenizer_is_grouped_by_words(hash_encoder):
    assert token_lengths(hash_encoder, ["a b c", "x"]) == [5, 3]
    got = encode(hash_encoder, TEXTS, 10)
    assert len(hash_encoder.calls) > 1 and sum(hash_encoder.calls) == len(TEXTS)
    np.testing.assert_array_equal(got, hash_encoder.encode(TEXTS, normalize_embeddings=True))


def test_phrase_table_embeds_each_phrase_once(hash_encoder):
    table = PhraseTable(hash_encoder.dim)
    table.add(hash_encoder, ["run", "dog", "run"])
    table.add(hash_encoder, ["dog", "cat"])
    assert table.texts() == ["run", "dog", "cat"] and sum(hash_encoder.calls) == 3
    want = hash_encoder.encode(["run", "dog", "cat"], normalize_embeddings=True)
    np.testing.assert_array_equal(table.vectors(), want)
