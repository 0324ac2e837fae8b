"""BERT-style instances: lengths, documents of the random next segment, SOP order, truncation, determinism."""

import hashlib

import numpy as np
import pytest

from jaxbert.data import instances


def corpus(seed=0, docs=40):
    """Sentence lengths (1-40 tokens, a few over 100) and sentences per document (1-12)."""
    rng = np.random.default_rng(seed)
    per_doc = rng.integers(1, 13, docs)
    lengths = rng.integers(1, 41, per_doc.sum())
    lengths[rng.random(len(lengths)) < 0.02] = 150  # lines longer than max_len
    return lengths, per_doc


def doc_of_token(lengths, per_doc):
    sent_start = np.concatenate([[0], np.cumsum(lengths)])
    return sent_start[np.concatenate([[0], np.cumsum(per_doc)])]  # token offset where each document starts


def make(objective, seed=0, max_len=64, short=0.1):
    lengths, per_doc = corpus()
    return instances.create_instances(lengths, per_doc, max_len=max_len, objective=objective,
                                      short_seq_prob=short, rng=np.random.default_rng(seed))


@pytest.mark.parametrize("objective", instances.OBJECTIVES)
def test_never_longer_than_max_len(objective):
    inst = make(objective)
    assert len(inst) > 50
    specials = 2 if objective == "mlm" else 3
    assert np.all(inst.a_len + inst.b_len + specials <= 64) and np.all(inst.a_len > 0)
    assert np.all(inst.b_len == 0) if objective == "mlm" else np.all(inst.b_len > 0)


def test_nsp_random_next_segment_comes_from_another_document():
    lengths, per_doc = corpus()
    inst = make("nsp")
    starts = doc_of_token(lengths, per_doc)
    doc_a = np.searchsorted(starts, inst.a_start, side="right") - 1
    doc_b = np.searchsorted(starts, inst.b_start, side="right") - 1
    doc_b_end = np.searchsorted(starts, inst.b_start + inst.b_len - 1, side="right") - 1
    assert np.array_equal(doc_a, inst.document) and np.array_equal(doc_b, doc_b_end)  # B stays in one document
    assert np.all(doc_b[inst.label == 0] != doc_a[inst.label == 0])
    assert np.all(doc_b[inst.label == 1] == doc_a[inst.label == 1])
    assert np.all(inst.b_start[inst.label == 1] >= inst.a_start[inst.label == 1] + inst.a_len[inst.label == 1])
    assert 0.3 < inst.label.mean() < 0.7


def test_sop_pairs_are_one_document_in_or_out_of_order():
    lengths, per_doc = corpus()
    inst = make("sop")
    starts = doc_of_token(lengths, per_doc)
    doc_b = np.searchsorted(starts, inst.b_start, side="right") - 1
    assert np.all(doc_b == inst.document)
    in_order = inst.b_start >= inst.a_start + inst.a_len
    assert np.array_equal(in_order, inst.label == 1) and 0.3 < inst.label.mean() < 0.7


def test_unused_sentences_are_put_back():
    # With no truncation (max_len above any document), the sentences a random next segment displaced go
    # back and start the next chunk, so every token ends up in some A, or in a B that really follows its A.
    lengths, per_doc = corpus()
    inst = make("nsp", max_len=4096, short=0.0)
    covered = np.zeros(lengths.sum(), bool)
    for s, n, t, m, label in zip(inst.a_start, inst.a_len, inst.b_start, inst.b_len, inst.label):
        covered[s:s + n] = True
        covered[t:t + m] |= label == 1
    assert covered.all()


def test_deterministic_from_the_seed():
    a, b, c = make("nsp", seed=3), make("nsp", seed=3), make("nsp", seed=4)
    assert all(np.array_equal(getattr(a, f), getattr(b, f)) for f in ("a_start", "a_len", "b_start", "label"))
    assert not np.array_equal(a.a_len, c.a_len)


def test_truncation_matches_trimming_one_token_at_a_time():
    rng = np.random.default_rng(0)
    for _ in range(500):
        la, lb, limit = (int(x) for x in rng.integers(0, 80, 3))
        a, b = la, lb
        while a + b > limit:  # Google's truncate_seq_pair, lengths only
            if a > b:
                a -= 1
            else:
                b -= 1
        sa, la2, sb, lb2 = instances._truncate_pair(100, la, 500, lb, limit, rng)
        assert (la2, lb2) == (a, b)
        assert 100 <= sa <= 100 + la - la2 and 500 <= sb <= 500 + lb - lb2  # cut from the front, back or both


@pytest.mark.parametrize("objective, expected", [("nsp", "713eff35d9909acc"), ("sop", "15743c7745cae58c"),
                                                 ("mlm", "45a19b0be2aacb51")])
def test_instances_of_a_fixed_seed_are_pinned(objective, expected):
    # Every draw comes from the generator passed in (numba runs numpy's Generator algorithms), so these stay
    # the same across numba versions; the generator is left advanced, as a numpy reading would leave it.
    rng = np.random.default_rng(7)
    inst = instances.create_instances(*corpus(), max_len=64, objective=objective, short_seq_prob=0.1, rng=rng)
    h = hashlib.sha256()
    for name in ("a_start", "a_len", "b_start", "b_len", "label", "document"):
        h.update(np.ascontiguousarray(getattr(inst, name), np.int64).tobytes())
    assert h.hexdigest()[:16] == expected
    untouched = np.random.default_rng(7)
    assert rng.random() != untouched.random()


@pytest.mark.parametrize("objective", instances.OBJECTIVES)
def test_compiled_walk_equals_its_python_reading(objective):
    lengths, per_doc = corpus()
    args = (np.asarray(lengths, np.int64), np.asarray(per_doc, np.int64), 61, instances.OBJECTIVES.index(objective),
            0.1)
    compiled = instances._create(*args, np.random.default_rng(5))
    python = instances._create.py_func(*args, np.random.default_rng(5))
    assert np.array_equal(compiled, python)
