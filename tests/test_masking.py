"""The book's pairs, rows and masking (masking.py, instances.py's d2l policy) on a small corpus written here, and
the compiled rows against their readable definition."""

import dataclasses

import numpy as np
import pytest

from jaxbert.data import hashing, instances, masking, tokenization

WORDS = [f"w{i}" for i in range(40)]


def corpus(rng, paragraphs=60):
    """Paragraphs of 2-6 sentences of 1-9 words each, as lists of words."""
    return [[list(rng.choice(WORDS, rng.integers(1, 10))) for _ in range(rng.integers(2, 7))]
            for _ in range(paragraphs)]


@dataclasses.dataclass(frozen=True)
class Sentences:
    """A corpus as batches.py holds it: every sentence's ids in one array, sentence lengths, sentences per paragraph."""

    ids: np.ndarray
    lengths: np.ndarray
    paragraph_lengths: np.ndarray

    @property
    def starts(self) -> np.ndarray:
        return np.cumsum(self.lengths) - self.lengths


@pytest.fixture(scope="module")
def setup():
    paragraphs = corpus(np.random.default_rng(0))
    tok = tokenization.word_tokenizer(tokenization.build_word_vocab([s for p in paragraphs for s in p], 1))
    ids = [[[tok.token_to_id(w) for w in s] for s in p] for p in paragraphs]
    sent = Sentences(ids=np.array([t for p in ids for s in p for t in s], np.int32),
                     lengths=np.array([len(s) for p in ids for s in p]),
                     paragraph_lengths=np.array([len(p) for p in ids]))
    return sent, tokenization.special_ids(tok), tok.get_vocab_size()


def pairs(sent: Sentences, max_len: int, seed) -> instances.Instances:
    return instances.create_instances(sent.lengths, sent.paragraph_lengths, max_len=max_len, objective="d2l",
                                      short_seq_prob=0.0, rng=np.random.default_rng(seed))


def make(setup, seed=0, max_len=16, mask_prob=0.15, p=None):
    """Every pair of the corpus masked as batches.py masks the training split (stream 0) of the book's data."""
    sent, specials, v = setup
    p = p or round(max_len * mask_prob)
    inst = pairs(sent, max_len, [seed, 0])
    return masking.rows(sent.ids, inst.a_start, inst.a_len, inst.b_start, inst.b_len, np.arange(len(inst)),
                        max_len=max_len, specials=specials, vocab_size=v, mask_prob=mask_prob, num_predictions=p,
                        seed=seed, stream=0, epoch=0) | {"nsp_labels": inst.label}


def test_vocab_is_sorted_with_specials_and_min_freq():
    vocab = tokenization.build_word_vocab([["b", "a", "a"], ["c", "a", "b"]], min_freq=2)
    assert vocab == sorted(["<cls>", "<mask>", "<pad>", "<sep>", "<unk>", "a", "b"])
    tok = tokenization.word_tokenizer(vocab)
    assert tok.encode("A zzz", "b").tokens == ["<cls>", "a", "<unk>", "<sep>", "b", "<sep>"]
    assert tok.encode("A zzz", "b").type_ids == [0, 0, 0, 0, 1, 1]


def test_layout_specials_and_segments(setup):
    sent, sp, _ = setup
    ex = make(setup)
    n, t = ex["input_ids"].shape
    assert n > 100 and t == 16
    # Rebuild each row's unmasked tokens from the sentences it came from and compare the layout.
    inst = pairs(sent, 16, [0, 0])  # make's pairs: (seed, stream)
    ids, segments, valid = masking.assemble(sent.ids, inst.a_start, inst.a_len, inst.b_start, inst.b_len, 16, sp)
    for row in range(n):
        la, lb = inst.a_len[row], inst.b_len[row]
        sa = sent.ids[inst.a_start[row]:inst.a_start[row] + la]
        sb = sent.ids[inst.b_start[row]:inst.b_start[row] + lb]
        expected = [sp.cls, *sa, sp.sep, *sb, sp.sep] + [sp.pad] * (16 - la - lb - 3)
        assert list(ids[row]) == expected
        assert list(segments[row]) == [0] * (la + 2) + [1] * (lb + 1) + [0] * (16 - la - lb - 3)
        assert valid[row] == la + lb + 3 <= 16
    np.testing.assert_array_equal(ex["valid_lens"], valid)
    np.testing.assert_array_equal(ex["segment_ids"], segments)


def test_pairs_are_consecutive_or_random_and_long_ones_dropped(setup):
    sent, _, _ = setup
    sentence_of = {int(s): k for k, s in enumerate(sent.starts)}  # token offset -> sentence index
    everything, kept = pairs(sent, 10_000, 1), pairs(sent, 16, 1)
    a_all = np.array([sentence_of[int(s)] for s in everything.a_start])
    b_all = np.array([sentence_of[int(s)] for s in everything.b_start])
    next_all = everything.label
    assert len(a_all) == int((sent.paragraph_lengths - 1).sum())  # every consecutive pair, none dropped
    assert 0.4 < next_all.mean() < 0.6
    assert np.all(b_all[next_all == 1] == a_all[next_all == 1] + 1)
    assert np.array_equal(everything.a_len, sent.lengths[a_all])
    assert np.array_equal(everything.b_len, sent.lengths[b_all])
    assert len(kept) < len(everything) and np.all(kept.a_len + kept.b_len + 3 <= 16)


def test_masking_counts_positions_and_padding(setup):
    _, sp, _ = setup
    ex = make(setup, max_len=16)
    p = ex["masked_positions"].shape[1]
    w = ex["masked_weights"]
    count = w.sum(1).astype(int)
    expected = np.maximum(1, np.round(ex["valid_lens"] * 0.15)).astype(int)
    np.testing.assert_array_equal(count, np.minimum(expected, p))
    for row in range(len(w)):
        real = ex["masked_positions"][row, :count[row]]
        assert list(real) == sorted(set(real))  # distinct, in position order
        assert np.all(real >= 1) and np.all(real < ex["valid_lens"][row])
        assert np.all(ex["masked_positions"][row, count[row]:] == 0)  # padding: position 0, label 0, weight 0
        assert np.all(ex["masked_ids"][row, count[row]:] == 0)
        assert np.all(w[row, :count[row]] == 1) and np.all(w[row, count[row]:] == 0)
    assert not np.isin(ex["masked_ids"][w == 1], [sp.cls, sp.sep, sp.pad]).any()  # specials never predicted


def test_80_10_10_rates_over_many_draws(setup):
    _, sp, v = setup
    masked = kept = randomised = 0
    for seed in range(80):
        ex = make(setup, seed=seed, max_len=32)
        rows = np.arange(len(ex["input_ids"]))[:, None]
        now = ex["input_ids"][rows, ex["masked_positions"]][ex["masked_weights"] == 1]
        label = ex["masked_ids"][ex["masked_weights"] == 1]
        masked += (now == sp.mask).sum()
        kept += (now == label).sum()
        randomised += ((now != sp.mask) & (now != label)).sum()
    total = masked + kept + randomised
    assert total > 20_000
    assert abs(masked / total - 0.8) < 0.01
    # A random token equals the original with probability 1/V, so "kept" is 10% plus a sliver.
    assert abs(kept / total - (0.1 + 0.1 / v)) < 0.01
    assert abs(randomised / total - (0.1 - 0.1 / v)) < 0.01


def test_unmasked_positions_untouched(setup):
    sent, sp, _ = setup
    ex = make(setup, seed=3)
    inst = pairs(sent, 16, [3, 0])
    ids, _, _ = masking.assemble(sent.ids, inst.a_start, inst.a_len, inst.b_start, inst.b_len, 16, sp)
    changed = ex["input_ids"] != ids
    chosen = np.zeros_like(changed)
    rows = np.arange(len(ids))[:, None]
    chosen[rows, ex["masked_positions"]] |= ex["masked_weights"] == 1
    assert not (changed & ~chosen).any()


def test_deterministic_from_seed(setup):
    one, two, other = make(setup, seed=5), make(setup, seed=5), make(setup, seed=6)
    for k in masking.FIELDS:
        np.testing.assert_array_equal(one[k], two[k])
    assert not np.array_equal(one["input_ids"], other["input_ids"])


def test_whole_word_masking_follows_googles_rule():
    """Visit words in key order; take a word if all its pieces still fit, else skip it (reference loop)."""
    rng = np.random.default_rng(7)
    sp = tokenization.SpecialIds(pad=0, unk=1, cls=2, sep=3, mask=4)
    n, t = 300, 24
    valid = rng.integers(8, t + 1, n)
    ids = rng.integers(5, 50, (n, t))
    ids[:, 0] = sp.cls
    ids[np.arange(n), valid - 1] = sp.sep
    ids[np.arange(t)[None] >= valid[:, None]] = sp.pad
    word_start = rng.random((n, t)) < 0.4  # long words, so budgets get exceeded often
    draws = masking.hash_draws((n, t), 50, 7, np.arange(n)[:, None])
    _, positions, _, weights = masking.mask_tokens(ids, valid, sp, 50, 0.3, 8, draws, word_start)
    for r in range(n):
        words, current = [], None  # reference: the book-keeping of create_pretraining_data.py
        for i in range(1, valid[r] - 1):
            if word_start[r, i] or current is None:
                current = [i]
                words.append(current)
            else:
                current.append(i)
        words.sort(key=lambda w: draws[0][r, w[0]])
        budget = min(max(1, round(valid[r] * 0.3)), 8)
        taken = []
        for w in words:
            if len(taken) + len(w) <= budget:
                taken += w
        assert sorted(taken) == list(positions[r][weights[r] == 1]), r


@pytest.mark.parametrize("whole_words", [False, True])
@pytest.mark.parametrize("t, p, mask_prob, n", [(64, 10, 0.15, 3000), (16, 3, 0.5, 3000), (128, 20, 0.15, 3000),
                                               (8, 8, 0.9, 3000), (64, 10, 0.15, 20_000)])
def test_compiled_rows_equal_the_vectorised_definition(t, p, mask_prob, n, whole_words):
    """masking.rows gives exactly assemble + mask_tokens with hash_draws, specials inside A/B included
    (20,000 rows: split over the cores), with and without whole-word masking (words of 1 to about 6 pieces)."""
    rng = np.random.default_rng(t)
    sp = tokenization.SpecialIds(pad=0, unk=1, cls=2, sep=3, mask=4)
    v = 1000
    tokens = rng.integers(5, v, 100_000).astype(np.int32)
    tokens[rng.integers(0, len(tokens), 300)] = sp.sep
    la = rng.integers(0, t - 3, n)
    lb = np.minimum(rng.integers(0, t, n), t - 3 - la)
    lb[rng.random(n) < 0.2] = 0  # single segments (MLM only)
    a0, b0 = rng.integers(0, len(tokens) - t, n), rng.integers(0, len(tokens) - t, n)
    example = rng.integers(0, 10**6, n)
    word_start = rng.random(v) < 0.4 if whole_words else None
    got = masking.rows(tokens, a0, la, b0, lb, example, max_len=t, specials=sp, vocab_size=v,
                       mask_prob=mask_prob, num_predictions=p, seed=7, stream=1, epoch=3, word_start=word_start)
    ids, segments, valid = masking.assemble(tokens, a0, la, b0, lb, t, sp)
    draws = masking.hash_draws(ids.shape, v, 7, 1, 3, example[:, None])
    input_ids, positions, labels, weights = masking.mask_tokens(ids, valid, sp, v, mask_prob, p, draws,
                                                                None if word_start is None else word_start[ids])
    want = dict(input_ids=input_ids, segment_ids=segments, valid_lens=valid, masked_positions=positions,
                masked_ids=labels, masked_weights=weights)
    assert set(got) == set(want)
    for k in want:
        assert got[k].dtype == want[k].dtype, k
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)


def test_the_hash_is_splitmix64_on_arrays_and_scalars():
    """hash_uniform against SplitMix64 written out in Python integers (Vigna's constants), for scalar keys (as
    prepare's held-out split uses it) and broadcast arrays (as the masking draws do)."""
    def splitmix(x):
        x = (x + 0x9E3779B97F4A7C15) % 2**64
        x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) % 2**64
        x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) % 2**64
        return x ^ (x >> 31)

    def reference(*keys):
        x = 0
        for k in keys:
            x = splitmix(x ^ k)
        return (x >> 11) * 2.0 ** -53

    assert hashing.hash_uniform(0, 1) == reference(0, 1)
    assert hashing.hash_uniform(2**63 + 5, 7, 3) == reference(2**63 + 5, 7, 3)
    got = hashing.hash_uniform(7, np.arange(4)[:, None], 2, np.arange(5)[None, :])
    assert got.shape == (4, 5)
    assert all(got[i, j] == reference(7, i, 2, j) for i in range(4) for j in range(5))
    assert 0 <= got.min() and got.max() < 1 and len(np.unique(got)) == 20
