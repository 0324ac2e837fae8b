"""Pretraining examples built row by row in compiled code (numba): the same arrays as the vectorised
`pretraining_data.assemble` + `mask_tokens` with `hash_draws`, without their (N, T) temporaries.

Each row is `<cls> A <sep> B <sep>` padded to T (or `<cls> A <sep>` where B is empty); its masking is drawn
from a hash of (seed, stream, epoch, example index, draw, position), so any example's masking can be rebuilt
alone. Whole-word masking is not here: `mask_tokens` does it.
"""

import concurrent.futures

import numba
import numpy as np

from jaxbert import cores
from jaxbert.tokenizer import SpecialIds


def build(tokens: np.ndarray, a_start, a_len, b_start, b_len, example, *, max_len: int, specials: SpecialIds,
          vocab_size: int, mask_prob: float, num_predictions: int, seed: int, stream: int, epoch: int) -> dict:
    """The batch contract's fields (nsp_labels aside) of examples A = tokens[a_start : a_start + a_len], B
    likewise, with example indices `example` (the hash key of their masking)."""
    n, t, p = len(a_start), max_len, num_predictions
    out = dict(input_ids=np.full((n, t), specials.pad, np.int32), segment_ids=np.zeros((n, t), np.int32),
               valid_lens=np.zeros(n, np.int32), masked_positions=np.zeros((n, p), np.int32),
               masked_ids=np.zeros((n, p), np.int32), masked_weights=np.zeros((n, p), np.float32))
    args = (np.asarray(tokens), *(np.ascontiguousarray(x, np.int64) for x in (a_start, a_len, b_start, b_len, example)),
            specials.cls, specials.sep, specials.mask, vocab_size, mask_prob, np.uint64(seed), np.uint64(stream),
            np.uint64(epoch), *out.values())
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
def _splitmix64(x):
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


@numba.njit(cache=True, nogil=True)
def _bits(key, position):
    """`pretraining_data.hash_uniform(..., position)` times 2**53, from the hash `key` of the keys before it."""
    return _splitmix64(key ^ np.uint64(position)) >> np.uint64(11)


@numba.njit(cache=True, nogil=True)
def _uniform(key, position):
    """`pretraining_data.hash_uniform(..., position)`."""
    return np.float64(_bits(key, position)) * 2.0 ** -53


@numba.njit(cache=True, nogil=True)
def _rows(tokens, a_start, a_len, b_start, b_len, example, cls, sep, mask, vocab_size, mask_prob, seed, stream,
          epoch, ids, segments, valid_lens, positions, labels, weights, lo, hi):
    """Fill rows [lo, hi) of the output arrays (ids pre-filled with the pad id, the others with zeros)."""
    p = positions.shape[1]
    keys = np.empty(ids.shape[1], np.uint64)  # the row's selection keys (draw 1)
    smallest = np.empty(p, np.uint64)  # its `budget` smallest so far, ascending
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

        # Mask the `budget` candidates with the smallest selection keys (draw 1), listed in position order.
        key = _splitmix64(_splitmix64(_splitmix64(_splitmix64(seed) ^ stream) ^ epoch) ^ np.uint64(example[r]))
        select, action, replace = _splitmix64(key ^ np.uint64(1)), _splitmix64(key ^ np.uint64(2)), \
            _splitmix64(key ^ np.uint64(3))
        budget = min(max(1, int(np.rint(valid * mask_prob))), p)
        found = 0
        for j in range(valid):
            if row[j] == cls or row[j] == sep:
                continue
            u = keys[j] = _bits(select, j)  # the uniform draw's 53 bits: the same order, no float
            if found < budget or u < smallest[budget - 1]:  # insert u, keeping the `budget` smallest
                k = min(found, budget - 1)
                while k > 0 and smallest[k - 1] > u:
                    smallest[k] = smallest[k - 1]
                    k -= 1
                smallest[k] = u
            found += 1
        threshold = smallest[min(found, budget) - 1] if found else np.uint64(0)
        slot = 0
        for j in range(valid):
            if slot == p or row[j] == cls or row[j] == sep or keys[j] > threshold:
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
