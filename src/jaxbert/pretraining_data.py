"""Sentence pairs for NSP, masked tokens for MLM, padded to the fixed-shape batch contract.

Pure functions of their inputs and an explicit `np.random.Generator`, vectorised over all examples. The
semantics are the book's (d2l `_get_nsp_data_from_paragraph`, `_get_mlm_data_from_tokens`,
`_pad_bert_inputs`): consecutive sentences of a paragraph form a pair, half of them get a random sentence
of a random paragraph as the second part instead, pairs longer than `max_len` are dropped, and
max(1, round(mask_prob * length)) non-special tokens per pair are predicted: 80% replaced by the mask token,
10% by a random token, 10% left as they are.

Shapes: N examples, T = max_len, P = predictions per example, S sentences.
"""

import dataclasses

import numpy as np

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
    def from_lists(cls, paragraphs: list[list[list[int]]]) -> "Sentences":
        sentences = [s for p in paragraphs for s in p]
        lengths = np.array([len(s) for s in sentences], dtype=np.int64)
        p_lengths = np.array([len(p) for p in paragraphs], dtype=np.int64)
        ids = np.fromiter((t for s in sentences for t in s), dtype=np.int32, count=int(lengths.sum()))
        return cls(ids=ids, starts=_exclusive_cumsum(lengths), lengths=lengths,
                   paragraph_starts=_exclusive_cumsum(p_lengths), paragraph_lengths=p_lengths)


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
    """`<cls> A <sep> B <sep>` padded to (N, T), with segment ids and valid lengths."""
    la, lb = sent.lengths[a][:, None], sent.lengths[b][:, None]  # (N, 1)
    pos = np.arange(max_len)[None, :]  # (1, T)
    in_a = (pos >= 1) & (pos <= la)
    in_b = (pos >= la + 2) & (pos < la + lb + 2)
    # Clip the gather index so that positions outside A/B read a valid (ignored) token.
    last = len(sent.ids) - 1
    from_a = sent.ids[np.clip(sent.starts[a][:, None] + pos - 1, 0, last)]
    from_b = sent.ids[np.clip(sent.starts[b][:, None] + pos - la - 2, 0, last)]
    valid_lens = (la + lb + 3)[:, 0]
    ids = np.full((len(a), max_len), specials.pad, dtype=np.int32)
    ids[(pos == la + 1) | (pos == la + lb + 2)] = specials.sep
    ids[:, 0] = specials.cls
    ids = np.where(in_a, from_a, np.where(in_b, from_b, ids))
    segments = ((pos >= la + 2) & (pos < valid_lens[:, None])).astype(np.int32)
    return ids.astype(np.int32), segments, valid_lens.astype(np.int32)


def mask_tokens(ids: np.ndarray, valid_lens: np.ndarray, specials: SpecialIds, vocab_size: int,
                mask_prob: float, num_predictions: int, rng: np.random.Generator):
    """Choose and corrupt the MLM positions of each row; returns (input_ids, positions, labels, weights).

    Candidates are the non-special tokens before the valid length; each row predicts
    min(max(1, round(mask_prob * valid_len)), candidates, P) of them, chosen uniformly without replacement
    and listed in position order, padded with position 0, label 0 and weight 0 up to P.
    """
    n, t = ids.shape
    pos = np.arange(t)[None, :]
    candidate = (pos < valid_lens[:, None]) & (ids != specials.cls) & (ids != specials.sep)
    wanted = np.maximum(1, np.round(valid_lens * mask_prob)).astype(np.int64)  # round half to even, as d2l
    count = np.minimum(np.minimum(wanted, candidate.sum(1)), num_predictions)  # (N,)
    keys = np.where(candidate, rng.random((n, t)), 2.0)  # non-candidates sort last
    chosen = np.argsort(keys, axis=1, kind="stable")[:, :num_predictions]  # (N, P), random candidates first
    real = np.arange(num_predictions)[None, :] < count[:, None]
    positions = np.sort(np.where(real, chosen, t), axis=1)  # position order, padding (t) last
    real = positions < t
    positions = np.where(real, positions, 0).astype(np.int32)
    labels = np.where(real, np.take_along_axis(ids, positions, axis=1), 0).astype(np.int32)

    draw = rng.random((n, num_predictions))
    random_tokens = rng.integers(0, vocab_size, (n, num_predictions), dtype=np.int32)
    replacement = np.where(draw < 0.8, specials.mask, np.where(draw < 0.9, labels, random_tokens))
    corrupted = ids.copy()
    rows = np.broadcast_to(np.arange(n)[:, None], positions.shape)
    corrupted[rows[real], positions[real]] = replacement[real]
    return corrupted, positions, labels, real.astype(np.float32)


def make_examples(sent: Sentences, specials: SpecialIds, vocab_size: int, *, max_len: int, mask_prob: float,
                  num_predictions: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """All NSP pairs of a corpus, masked once (static masking, as the book), as the batch contract's fields."""
    a, b, is_next = nsp_pairs(sent, max_len, rng)
    ids, segments, valid_lens = assemble_pairs(sent, a, b, max_len, specials)
    input_ids, positions, labels, weights = mask_tokens(ids, valid_lens, specials, vocab_size, mask_prob,
                                                        num_predictions, rng)
    return dict(input_ids=input_ids, segment_ids=segments, valid_lens=valid_lens, masked_positions=positions,
                masked_ids=labels, masked_weights=weights, nsp_labels=is_next)


def _exclusive_cumsum(x: np.ndarray) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(x)[:-1]]).astype(np.int64) if len(x) else np.zeros(0, np.int64)
