"""Instances to the batch contract: `<cls> A <sep> B <sep>` rows, padded, with BERT's MLM masking.

`rows` is what training runs: compiled code (numba), row by row, on all cores for large sets. Beside it, the
readable definition it is tested equal to (`assemble`, `mask_tokens`, `hash_draws`), vectorised numpy.

Masking (the book's and Google's): each row predicts min(max(1, round(mask_prob * valid_len)), P) of its
non-special tokens (round half to even), chosen by the smallest selection keys and listed in position order,
padded with position 0, label 0 and weight 0 up to P; each chosen token becomes the mask token (80%), a random
token (10%) or stays (10%). With whole-word masking, words are visited in the order of their first piece's key
and each is taken if all its pieces still fit in the budget, or else skipped for the next (Google's rule).

Every draw is a counter-based hash (SplitMix64, `hash_uniform`) of (seed, stream, epoch, example, draw,
position), so any example's masking is rebuilt alone, in any order, on any number of processes.

Shapes: N rows, T = max_len, P = predictions per row, V vocabulary.
"""

import concurrent.futures

import numba
import numpy as np

from jaxbert.data import cores
from jaxbert.data.hashing import hash_uniform, splitmix64
from jaxbert.data.tokenization import SpecialIds

FIELDS = ("input_ids", "segment_ids", "valid_lens", "masked_positions", "masked_ids", "masked_weights",
          "nsp_labels")


# --- what training runs ----------------------------------------------------------------------------------

def rows(tokens: np.ndarray, a_start, a_len, b_start, b_len, example, *, max_len: int, specials: SpecialIds,
         vocab_size: int, mask_prob: float, num_predictions: int, seed: int, stream: int, epoch: int,
         word_start: np.ndarray | None = None) -> dict:
    """The batch contract's fields (nsp_labels aside) of rows A = tokens[a_start : a_start + a_len], B likewise
    (b_len 0: `<cls> A <sep>`), masked with hash keys (seed, stream, epoch, example[i]); `word_start` ((V,) bool,
    True for tokens that begin a word) turns on whole-word masking."""
    n, t, p = len(a_start), max_len, num_predictions
    out = dict(input_ids=np.full((n, t), specials.pad, np.int32), segment_ids=np.zeros((n, t), np.int32),
               valid_lens=np.zeros(n, np.int32), masked_positions=np.zeros((n, p), np.int32),
               masked_ids=np.zeros((n, p), np.int32), masked_weights=np.zeros((n, p), np.float32))
    whole_words = word_start is not None
    starts = np.ascontiguousarray(word_start, np.bool_) if whole_words else np.zeros(1, np.bool_)
    args = (np.asarray(tokens), *(np.ascontiguousarray(x, np.int64) for x in (a_start, a_len, b_start, b_len, example)),
            specials.cls, specials.sep, specials.mask, vocab_size, mask_prob, np.uint64(seed), np.uint64(stream),
            np.uint64(epoch), whole_words, starts, *out.values())
    # Rows are independent: large sets are split into ranges, one per core (the compiled code drops the GIL).
    threads = min(cores.THREADS, max(1, n // 4096))
    if threads == 1:  # a training batch: no thread to start
        _rows(*args, 0, n)
        return out
    bounds = [n * k // threads for k in range(threads + 1)]
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda lo, hi: _rows(*args, lo, hi), bounds[:-1], bounds[1:]))
    return out


@numba.njit(cache=True, nogil=True)
def _bits(key, position):
    """`hash_uniform(..., position)` times 2**53, from the hash `key` of the keys before it."""
    return splitmix64(key ^ np.uint64(position)) >> np.uint64(11)


@numba.njit(cache=True, nogil=True)
def _uniform(key, position):
    """`hash_uniform(..., position)`."""
    return np.float64(_bits(key, position)) * 2.0 ** -53


@numba.njit(cache=True, nogil=True)
def _rows(tokens, a_start, a_len, b_start, b_len, example, cls, sep, mask, vocab_size, mask_prob, seed, stream,
          epoch, whole_words, word_start, ids, segments, valid_lens, positions, labels, weights, lo, hi):
    """Fill rows [lo, hi) of the output arrays (ids pre-filled with the pad id, the others with zeros)."""
    t, p = ids.shape[1], positions.shape[1]
    keys = np.empty(t, np.uint64)  # each candidate's selection key (draw 1): its word's first piece's if whole
    chosen = np.zeros(t, np.bool_)
    first = np.zeros(t, np.int64)  # whole words: the position of each candidate's word's first piece
    begins = np.empty(t, np.int64)  # whole words: positions where a word begins, then their visiting order
    smallest = np.empty(p, np.uint64)  # the `budget` smallest keys so far, ascending
    for r in range(lo, hi):
        row = ids[r]
        la, lb = a_len[r], b_len[r]
        row[0] = cls
        row[1:1 + la] = tokens[a_start[r]:a_start[r] + la]
        row[la + 1] = sep
        valid = la + 2
        if lb > 0:
            row[valid:valid + lb] = tokens[b_start[r]:b_start[r] + lb]
            row[valid + lb] = sep
            segments[r, valid:valid + lb + 1] = 1
            valid += lb + 1
        valid_lens[r] = valid

        key = splitmix64(splitmix64(splitmix64(splitmix64(seed) ^ stream) ^ epoch) ^ np.uint64(example[r]))
        select, action, replace = splitmix64(key ^ np.uint64(1)), splitmix64(key ^ np.uint64(2)), \
            splitmix64(key ^ np.uint64(3))
        budget = min(max(1, int(np.rint(valid * mask_prob))), p)
        chosen[:valid] = False
        if not whole_words:
            # The `budget` candidates with the smallest keys: one pass keeping them sorted, then a threshold.
            found = 0
            for j in range(valid):
                if row[j] == cls or row[j] == sep:
                    continue
                u = keys[j] = _bits(select, j)  # the uniform draw's 53 bits: the same order, no float
                if found < budget or u < smallest[budget - 1]:
                    k = min(found, budget - 1)
                    while k > 0 and smallest[k - 1] > u:
                        smallest[k] = smallest[k - 1]
                        k -= 1
                    smallest[k] = u
                found += 1
            threshold = smallest[min(found, budget) - 1] if found else np.uint64(0)
            for j in range(valid):
                chosen[j] = row[j] != cls and row[j] != sep and keys[j] <= threshold
        else:
            # A word begins at a candidate that starts a word, or follows a non-candidate (a special).
            n_words, previous = 0, False
            for j in range(valid):
                candidate = row[j] != cls and row[j] != sep
                if candidate and (word_start[row[j]] or not previous):
                    begins[n_words] = j
                    keys[n_words] = _bits(select, j)
                    n_words += 1
                if candidate:
                    first[j] = begins[n_words - 1]
                previous = candidate
            order = np.argsort(keys[:n_words], kind="mergesort")  # by key, ties by position (stable)
            taken = 0
            for w in order:
                start = begins[w]
                size = 1
                while start + size < valid and row[start + size] != cls and row[start + size] != sep \
                        and first[start + size] == start:
                    size += 1
                if taken + size <= budget:
                    chosen[start:start + size] = True
                    taken += size
        slot = 0
        for j in range(valid):
            if not chosen[j] or slot == p:
                continue
            label = row[j]
            positions[r, slot], labels[r, slot], weights[r, slot] = j, label, 1.0
            # 80% the mask token, 10% a random token (draw 3), 10% unchanged (draw 2 decides).
            a = _uniform(action, j)
            if a < 0.8:
                row[j] = mask
            elif a >= 0.9:
                row[j] = np.int32(_uniform(replace, j) * vocab_size)
            slot += 1


# --- the readable definition `rows` is tested equal to -----------------------------------------------------

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


def hash_draws(shape: tuple[int, int], vocab_size: int, *keys) -> tuple:
    """`mask_tokens`' draws as a pure function of integer keys (broadcast against the (N, T) positions):
    keys are (seed, stream, epoch, example index (N, 1)), then the draw (1, 2, 3) and the position."""
    pos = np.arange(shape[1], dtype=np.uint64)[None, :]
    draws = [hash_uniform(*keys, draw, pos) for draw in (1, 2, 3)]
    return draws[0], draws[1], (draws[2] * vocab_size).astype(np.int32)


def mask_tokens(ids: np.ndarray, valid_lens: np.ndarray, specials: SpecialIds, vocab_size: int,
                mask_prob: float, num_predictions: int, draws, word_start: np.ndarray | None = None):
    """Choose and corrupt the MLM positions of each row, as the module docstring says; returns (input_ids,
    positions, labels, weights). `draws` = (select, action, random_tokens), three (N, T) arrays (`hash_draws`);
    `word_start` ((N, T) bool, True where a token begins a word) turns on whole-word masking."""
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
    rows_, cols = np.nonzero(chosen)  # row by row, in position order
    slot = np.cumsum(chosen, axis=1)[rows_, cols] - 1
    positions = np.zeros((n, num_predictions), np.int32)
    real = np.zeros((n, num_predictions), bool)
    positions[rows_, slot], real[rows_, slot] = cols, True
    labels = np.where(real, np.take_along_axis(ids, positions, axis=1), 0).astype(np.int32)
    act = np.take_along_axis(action, positions, axis=1)
    rand = np.take_along_axis(random_tokens, positions, axis=1)
    replacement = np.where(act < 0.8, specials.mask, np.where(act < 0.9, labels, rand))
    corrupted = ids.copy()
    rows_ = np.broadcast_to(np.arange(n)[:, None], positions.shape)
    corrupted[rows_[real], positions[real]] = replacement[real]
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
