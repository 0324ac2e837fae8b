"""A hash table of the distinct words of a byte buffer, for the compiled passes (numba) over text.

A word is a byte range of the buffer; its key is its bytes rotated into 64 bits (7 per byte), with ASCII
letters lower-cased first if `fold`. For a word of up to 9 ASCII bytes the key is the word itself, so equal
keys mean equal words; any other word's key has the top bit set and equal keys are confirmed byte by byte.
The table holds type ids (-1 for empty) under open addressing with linear probing; a type is remembered by
the start, length and key of its first occurrence. Callers start from `empty`, keep the table at most half
full (`fits`) and double it with `doubled`.

numba caches each compiled function beside its own source file and checks only that file: after editing this
module in a source checkout, delete `src/jaxbert/__pycache__/*.nb[ic]` so that the passes that call it
recompile (an install of a new version rewrites every file, so it needs nothing).
"""

import numba
import numpy as np

INEXACT = np.uint64(0x8000000000000000)  # the top bit: never set in the key of a word of up to 9 ASCII bytes
FIRST_CAPACITY = 1 << 16


@numba.njit(cache=True, nogil=True)
def empty():
    """(table, starts, lengths, keys) of FIRST_CAPACITY slots, with room for half as many types."""
    return (np.full(FIRST_CAPACITY, -1, np.int64), np.empty(FIRST_CAPACITY // 2, np.int64),
            np.empty(FIRST_CAPACITY // 2, np.int64), np.empty(FIRST_CAPACITY // 2, np.uint64))


@numba.njit(cache=True, nogil=True)
def doubled(starts, lengths, keys, n_types):
    """(table, starts, lengths, keys) with twice the slots, holding the first `n_types` types."""
    capacity = 4 * len(starts)
    return (rehashed(keys[:n_types], capacity), grown(starts, capacity // 2), grown(lengths, capacity // 2),
            grown(keys, capacity // 2))


@numba.njit(cache=True, nogil=True)
def key(buf, start, end, fold):
    """The key of the word buf[start:end]."""
    h = np.uint64(0)
    high = 0
    for i in range(start, end):
        c = buf[i]
        if fold and 65 <= c <= 90:
            c += 32
        high |= c
        h = ((h << np.uint64(7)) | (h >> np.uint64(57))) ^ np.uint64(c)
    return h if end - start <= 9 and high < 128 else h | INEXACT


@numba.njit(cache=True, nogil=True)
def find(buf, start, length, h, fold, table, starts, lengths, keys, n_types):
    """(type id of the word at `start` with key `h`, number of types): a word not yet seen becomes type
    `n_types`. The table must have room for one more type."""
    mask = np.uint64(len(table) - 1)
    slot = home_slot(h, mask)
    while True:
        t = table[slot]
        if t < 0:
            table[slot] = n_types
            starts[n_types], lengths[n_types], keys[n_types] = start, length, h
            return n_types, n_types + 1
        if keys[t] == h and lengths[t] == length and (h < INEXACT or same_bytes(buf, starts[t], start, length, fold)):
            return t, n_types
        slot = (slot + np.uint64(1)) & mask


@numba.njit(cache=True, nogil=True)
def fits(table, n_types, more) -> bool:
    """Whether `more` new types keep the table at most half full."""
    return 2 * (n_types + more) <= len(table)


@numba.njit(cache=True, nogil=True)
def rehashed(keys, capacity):
    """A table of `capacity` slots holding the types with these keys."""
    table = np.full(capacity, -1, np.int64)
    mask = np.uint64(capacity - 1)
    for t in range(len(keys)):
        slot = home_slot(keys[t], mask)
        while table[slot] >= 0:
            slot = (slot + np.uint64(1)) & mask
        table[slot] = t
    return table


@numba.njit(cache=True, nogil=True)
def grown(a, size):
    b = np.empty(size, a.dtype)
    b[:len(a)] = a
    return b


@numba.njit(cache=True, nogil=True)
def union(buf, fold, starts, lengths, keys, more_starts, more_lengths, more_keys):
    """(type id in the union of each `more` type, then the union's starts, lengths and keys): the types
    (starts, lengths, keys) followed by those of `more` not among them."""
    total = len(starts) + len(more_starts)
    capacity = FIRST_CAPACITY
    while capacity < 2 * total:
        capacity *= 2
    table = rehashed(keys, capacity)
    union_starts, union_lengths, union_keys = grown(starts, total), grown(lengths, total), grown(keys, total)
    n = len(starts)
    to_union = np.empty(len(more_starts), np.int64)
    for u in range(len(more_starts)):
        to_union[u], n = find(buf, more_starts[u], more_lengths[u], more_keys[u], fold, table, union_starts,
                              union_lengths, union_keys, n)
    return to_union, union_starts[:n], union_lengths[:n], union_keys[:n]


def joined(buf: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> str:
    """The words buf[start:start + length], each followed by a newline, decoded as one string (every word in
    `buf` must be followed by some byte, which the newline replaces)."""
    span = lengths + 1
    at = np.repeat(starts - (np.cumsum(span) - span), span) + np.arange(int(span.sum()))
    text = buf[at]
    text[np.cumsum(span) - 1] = 10
    return text.tobytes().decode("utf-8")


@numba.njit(cache=True, nogil=True)
def same_bytes(buf, i, j, length, fold) -> bool:
    """Whether the `length` bytes at i and at j are the same (up to ASCII case if `fold`)."""
    for k in range(length):
        x, y = buf[i + k], buf[j + k]
        if x != y and (not fold or x | 32 != y | 32 or not 97 <= x | 32 <= 122):
            return False
    return True


@numba.njit(cache=True, nogil=True)
def home_slot(h, mask):
    """A key's home slot: the key mixed by a multiply, high bits first."""
    return ((h * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(29)) & mask
