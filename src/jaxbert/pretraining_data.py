"""Sentence pairs for NSP, masked tokens for MLM, padded to the fixed-shape batch contract.

Pure functions of their inputs: pairs drawn from an explicit `np.random.Generator`, masking from hash keys
(`hash_draws`), vectorised over all examples (`example_rows` builds the same rows in compiled code). The
semantics are the book's (d2l `_get_nsp_data_from_paragraph`, `_get_mlm_data_from_tokens`,
`_pad_bert_inputs`): consecutive sentences of a paragraph form a pair, half of them get a random sentence
of a random paragraph as the second part instead, pairs longer than `max_len` are dropped, and
max(1, round(mask_prob * length)) non-special tokens per pair are predicted: 80% replaced by the mask token,
10% by a random token, 10% left as they are.

Shapes: N examples, T = max_len, P = predictions per example, S sentences.
"""

import dataclasses

import numpy as np

from jaxbert import example_rows
from jaxbert.tokenizer import SpecialIds

FIELDS = ("input_ids", "segment_ids", "valid_lens", "masked_positions", "masked_ids", "masked_weights",
          "nsp_labels")


@dataclasses.dataclass(frozen=True)
class Sentences:
    """Every sentence of a corpus as one flat id array; paragraphs are runs of consecutive sentences."""

    ids: np.ndarray  # (total tokens,) int32
    starts: np.ndarray  # (S,) offset of each sentence in `ids`
    lengths: np.ndarray  # (S,) tokens per sentence
    paragraph_starts: np.ndarray  # first sentence of each paragraph
    paragraph_lengths: np.ndarray  # sentences per paragraph

    @classmethod
    def from_arrays(cls, ids: np.ndarray, lengths: np.ndarray, paragraph_lengths: np.ndarray) -> "Sentences":
        """From the flat ids, the tokens per sentence and the sentences per paragraph."""
        return cls(ids=ids, starts=_exclusive_cumsum(lengths), lengths=lengths,
                   paragraph_starts=_exclusive_cumsum(paragraph_lengths), paragraph_lengths=paragraph_lengths)

    @classmethod
    def from_lists(cls, paragraphs: list[list[list[int]]]) -> "Sentences":
        sentences = [s for p in paragraphs for s in p]
        lengths = np.array([len(s) for s in sentences], dtype=np.int64)
        ids = np.fromiter((t for s in sentences for t in s), dtype=np.int32, count=int(lengths.sum()))
        return cls.from_arrays(ids, lengths, np.array([len(p) for p in paragraphs], dtype=np.int64))


def nsp_pairs(sent: Sentences, max_len: int, rng: np.random.Generator):
    """Indices (a, b) of the pairs' sentences and the NSP label, dropping pairs over `max_len` tokens.

    Paragraphs are visited in a random order, as the book shuffles them; negatives draw a paragraph, then
    one of its sentences, uniformly (so, as in the book, a negative may come from the same paragraph).
    """
    order = rng.permutation(len(sent.paragraph_starts))
    per_paragraph = sent.paragraph_lengths[order] - 1  # consecutive pairs in each paragraph
    first = np.repeat(sent.paragraph_starts[order], per_paragraph)
    a = first + np.arange(len(first)) - np.repeat(_exclusive_cumsum(per_paragraph), per_paragraph)
    is_next = rng.random(len(a)) < 0.5
    random_paragraph = rng.integers(0, len(sent.paragraph_starts), len(a))
    random_sentence = sent.paragraph_starts[random_paragraph] + np.floor(
        rng.random(len(a)) * sent.paragraph_lengths[random_paragraph]).astype(np.int64)
    b = np.where(is_next, a + 1, random_sentence)
    keep = sent.lengths[a] + sent.lengths[b] + 3 <= max_len
    return a[keep], b[keep], is_next[keep].astype(np.int32)


def assemble_pairs(sent: Sentences, a: np.ndarray, b: np.ndarray, max_len: int, specials: SpecialIds):
    """`<cls> A <sep> B <sep>` of sentence pairs (a[i], b[i]), padded to (N, T)."""
    return assemble(sent.ids, sent.starts[a], sent.lengths[a], sent.starts[b], sent.lengths[b], max_len, specials)


def assemble(tokens: np.ndarray, a_start, a_len, b_start, b_len, max_len: int, specials: SpecialIds):
    """`<cls> A <sep> B <sep>` (or `<cls> A <sep>` where b_len is 0) padded to (N, T), from token ranges
    A = tokens[a_start : a_start + a_len] and B likewise; returns (ids, segment ids, valid lengths)."""
    la, lb = np.asarray(a_len, np.int64)[:, None], np.asarray(b_len, np.int64)[:, None]  # (N, 1)
    pos = np.arange(max_len)[None, :]  # (1, T)
    in_a = (pos >= 1) & (pos <= la)
    in_b = (pos >= la + 2) & (pos < la + lb + 2)
    # Clip the gather index so that positions outside A/B read a valid (ignored) token.
    last = len(tokens) - 1
    from_a = tokens[np.clip(np.asarray(a_start)[:, None] + pos - 1, 0, last)]
    from_b = tokens[np.clip(np.asarray(b_start)[:, None] + pos - la - 2, 0, last)]
    valid_lens = (la + 2 + np.where(lb > 0, lb + 1, 0))[:, 0]
    ids = np.full((len(la), max_len), specials.pad, dtype=np.int32)
    ids[(pos == la + 1) | ((pos == la + lb + 2) & (lb > 0))] = specials.sep
    ids[:, 0] = specials.cls
    ids = np.where(in_a, from_a, np.where(in_b, from_b, ids))
    segments = ((pos >= la + 2) & (pos < valid_lens[:, None])).astype(np.int32)
    return ids.astype(np.int32), segments, valid_lens.astype(np.int32)


def mask_tokens(ids: np.ndarray, valid_lens: np.ndarray, specials: SpecialIds, vocab_size: int,
                mask_prob: float, num_predictions: int, draws, word_start: np.ndarray | None = None):
    """Choose and corrupt the MLM positions of each row; returns (input_ids, positions, labels, weights).

    `draws` = (select, action, random_tokens), three (N, T) arrays: uniform [0, 1) keys that order the
    candidates, uniform [0, 1) draws for the 80/10/10 choice, and random token ids. Candidates are the
    non-special tokens before the valid length; each row predicts at most
    min(max(1, round(mask_prob * valid_len)), P) of them (round half to even, as d2l and Google's BERT), taken in
    key order, listed in position order and padded with position 0, label 0 and weight 0 up to P.

    With `word_start` ((N, T) bool, True where a token begins a word), whole words are masked as Google's BERT
    does: words are visited in the order of their first piece's key, and each is taken if all its pieces still
    fit in the budget, or else skipped for the next.
    """
    select, action, random_tokens = draws
    n, t = ids.shape
    pos = np.broadcast_to(np.arange(t)[None, :], (n, t))
    candidate = (pos < valid_lens[:, None]) & (ids != specials.cls) & (ids != specials.sep)
    budget = np.minimum(np.maximum(1, np.round(valid_lens * mask_prob)), num_predictions).astype(np.int64)
    if word_start is not None:
        after_candidate = np.pad(candidate[:, :-1], ((0, 0), (1, 0)))
        begins = candidate & (word_start | ~after_candidate)  # a piece after a special starts a word too
        first = np.maximum.accumulate(np.where(begins, pos, 0), axis=1)  # each token's word start
        select = np.take_along_axis(select, first, axis=1)
    keys = np.where(candidate, select, 2.0)  # non-candidates sort last
    if word_start is None:  # the `budget` smallest keys: a partial sort of each row, then a threshold
        k = min(num_predictions, t)
        smallest = np.sort(np.partition(keys, k - 1, axis=1)[:, :k], axis=1)
        chosen = candidate & (keys <= np.take_along_axis(smallest, budget[:, None] - 1, axis=1))
    else:
        order = np.lexsort((pos, keys), axis=1)  # by key, then position: a word's pieces stay together
        chosen = candidate & _whole_words(candidate, begins, first, order, budget)
    rows, cols = np.nonzero(chosen)  # row by row, in position order
    slot = np.cumsum(chosen, axis=1)[rows, cols] - 1
    positions = np.zeros((n, num_predictions), np.int32)
    real = np.zeros((n, num_predictions), bool)
    positions[rows, slot], real[rows, slot] = cols, True
    labels = np.where(real, np.take_along_axis(ids, positions, axis=1), 0).astype(np.int32)
    act = np.take_along_axis(action, positions, axis=1)
    rand = np.take_along_axis(random_tokens, positions, axis=1)
    replacement = np.where(act < 0.8, specials.mask, np.where(act < 0.9, labels, rand))
    corrupted = ids.copy()
    rows = np.broadcast_to(np.arange(n)[:, None], positions.shape)
    corrupted[rows[real], positions[real]] = replacement[real]
    return corrupted, positions, labels, real.astype(np.float32)


def _whole_words(candidate, begins, first, order, budget):
    """(N, T) bool: the pieces of the words taken, visiting words in `order` and skipping those that no longer
    fit. A loop over the T visiting slots, each step vectorised over the N rows."""
    n, t = candidate.shape
    words = (np.arange(n)[:, None] * t + first)[candidate]
    size = np.bincount(words, minlength=n * t).reshape(n, t)  # pieces of the word starting at each position
    size_in_order = np.take_along_axis(np.where(begins, size, 0), order, axis=1)  # 0 for non-first pieces
    taken_in_order = np.zeros((n, t), bool)
    total = np.zeros(n, np.int64)
    for j in range(t):
        s = size_in_order[:, j]
        taken_in_order[:, j] = (s > 0) & (total + s <= budget)
        total += np.where(taken_in_order[:, j], s, 0)
    taken_first = np.zeros((n, t), bool)
    np.put_along_axis(taken_first, order, taken_in_order, axis=1)
    return np.take_along_axis(taken_first, first, axis=1)


def hash_draws(shape: tuple[int, int], vocab_size: int, *keys) -> tuple:
    """`mask_tokens` draws as a pure function of integer keys (broadcast against the (N, T) positions), so
    any example's masking can be rebuilt alone: keys are e.g. (seed, epoch, example index (N, 1))."""
    pos = np.arange(shape[1], dtype=np.uint64)[None, :]
    streams = [hash_uniform(*keys, stream, pos) for stream in (1, 2, 3)]
    return streams[0], streams[1], (streams[2] * vocab_size).astype(np.int32)


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    x = x + _GOLDEN
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def hash_uniform(*keys) -> np.ndarray:
    """Uniform [0, 1) floats from integer keys (arrays broadcast together), by chained SplitMix64."""
    with np.errstate(over="ignore"):
        x = np.zeros((), dtype=np.uint64)
        for k in keys:
            x = _splitmix64(x ^ np.asarray(k).astype(np.uint64))
    return (x >> np.uint64(11)).astype(np.float64) * 2.0 ** -53


def make_examples(sent: Sentences, specials: SpecialIds, vocab_size: int, *, max_len: int, mask_prob: float,
                  num_predictions: int, seed: int, stream: int = 0) -> dict[str, np.ndarray]:
    """All NSP pairs of a corpus, masked once (static masking, as the book), as the batch contract's fields.
    The pairs come from a generator seeded by (seed, stream), the masking from the hash keys (seed, stream,
    epoch 0, example index), built row by row by `example_rows.build`."""
    a, b, is_next = nsp_pairs(sent, max_len, np.random.default_rng([seed, stream]))
    arrays = example_rows.build(sent.ids, sent.starts[a], sent.lengths[a], sent.starts[b], sent.lengths[b],
                                np.arange(len(a)), max_len=max_len, specials=specials, vocab_size=vocab_size,
                                mask_prob=mask_prob, num_predictions=num_predictions, seed=seed, stream=stream,
                                epoch=0)
    return arrays | {"nsp_labels": is_next}


def _exclusive_cumsum(x: np.ndarray) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(x)[:-1]]).astype(np.int64) if len(x) else np.zeros(0, np.int64)
