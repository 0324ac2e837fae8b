"""Sentences to token ids, tokenizing each distinct word once.

A tokenizer that splits text at every space and tokenizes the pieces independently (BERT's normaliser and
pre-tokenizer, or the book's word level) gives a sentence the ids of its space-separated words, one after
another. So a chunk of sentences is tokenized as: one compiled pass (numba) that finds its words and their
distinct types (`word_table`, case kept); the tokenizer on the distinct words only (about 30,000 for
WikiText-2's 2 million words), in as many groups as there are cores; and a second pass that copies each word's
ids into place. Any other tokenizer, or a sentence holding a newline, goes through `encode_batch_fast` as is.
The two routes give the same ids (tests/test_sentence_ids.py).
"""

import numba
import numpy as np
from tokenizers import Tokenizer, normalizers, pre_tokenizers

from jaxbert.data import cores, word_table

_SPACE, _NEWLINE = 32, 10


def splits_at_spaces(tok: Tokenizer) -> bool:
    """Whether `tok` tokenizes the space-separated pieces of a text independently."""
    return isinstance(tok.pre_tokenizer, (pre_tokenizers.BertPreTokenizer, pre_tokenizers.WhitespaceSplit)) and (
        tok.normalizer is None or isinstance(tok.normalizer, (normalizers.BertNormalizer, normalizers.Lowercase)))


def encode(tok: Tokenizer, sentences: list[str], dtype) -> tuple[np.ndarray, np.ndarray]:
    """(ids of all sentences one after another, as `dtype`; tokens per sentence), as
    `tok.encode_batch_fast(sentences, add_special_tokens=False)` gives them."""
    if not sentences or not splits_at_spaces(tok) or any("\n" in s for s in sentences):
        encodings = tok.encode_batch_fast(sentences, add_special_tokens=False)
        lengths = np.fromiter((len(e.ids) for e in encodings), np.int64, len(encodings))
        ids = np.fromiter((i for e in encodings for i in e.ids), dtype, int(lengths.sum()))
        return ids, lengths
    buf = np.frombuffer(("\n".join(sentences) + "\n").encode("utf-8"), np.uint8)
    word_types, sentence_words, starts, lengths = _scan(buf)
    types = word_table.joined(buf, starts, lengths).split("\n")[:-1]
    # The distinct words in one pre-tokenized input per core: each token's word_ids says whose it is.
    bounds = np.linspace(0, len(types), cores.THREADS + 1).astype(int)
    groups = [types[lo:hi] for lo, hi in zip(bounds[:-1], bounds[1:]) if hi > lo]
    encodings = tok.encode_batch(groups, is_pretokenized=True, add_special_tokens=False)
    type_ids = np.fromiter((i for e in encodings for i in e.ids), np.int64)
    type_sizes = np.concatenate([np.bincount(np.asarray(e.word_ids, np.int64), minlength=len(g))
                                 for e, g in zip(encodings, groups)])
    return _expand(word_types, sentence_words, type_ids.astype(dtype), type_sizes)


@numba.njit(cache=True, nogil=True)
def _scan(buf):
    """(type of each word, words per line, start and length of each type's first occurrence) of the
    space-separated words of the newline-terminated lines of `buf` (case kept)."""
    bound = len(buf) // 2 + 1
    word_types, line_words = np.empty(bound, np.int64), np.zeros(bound, np.int64)
    table, starts, lengths, keys = word_table.empty()
    n_words = n_lines = n_types = 0
    i = 0
    while i < len(buf):
        line_end = i
        while buf[line_end] != _NEWLINE:
            line_end += 1
        while not word_table.fits(table, n_types, (line_end - i) // 2 + 1):  # room for the line's words
            table, starts, lengths, keys = word_table.doubled(starts, lengths, keys, n_types)
        while i < line_end:
            if buf[i] == _SPACE:
                i += 1
                continue
            start = i
            while i < line_end and buf[i] != _SPACE:
                i += 1
            t, n_types = word_table.find(buf, start, i - start, word_table.key(buf, start, i, False), False, table,
                                         starts, lengths, keys, n_types)
            word_types[n_words] = t
            n_words += 1
            line_words[n_lines] += 1
        n_lines += 1
        i = line_end + 1
    return word_types[:n_words], line_words[:n_lines], starts[:n_types], lengths[:n_types]


@numba.njit(cache=True, nogil=True)
def _expand(word_types, sentence_words, type_ids, type_sizes):
    """(each word's type ids in order, tokens per sentence)."""
    type_starts = np.zeros(len(type_sizes) + 1, np.int64)
    type_starts[1:] = np.cumsum(type_sizes)
    sentence_lengths = np.zeros(len(sentence_words), np.int64)
    w = 0
    for s in range(len(sentence_words)):
        for _ in range(sentence_words[s]):
            sentence_lengths[s] += type_sizes[word_types[w]]
            w += 1
    ids = np.empty(sentence_lengths.sum(), type_ids.dtype)
    at = 0
    for w in range(len(word_types)):
        t = word_types[w]
        ids[at:at + type_sizes[t]] = type_ids[type_starts[t]:type_starts[t + 1]]
        at += type_sizes[t]
    return ids, sentence_lengths
