"""A WikiText file read as the book reads it, straight into word-type arrays.

The book's `_read_wiki` keeps the lines that contain " . ", strips and lower-cases them and splits them
into sentences on " . "; `d2l.tokenize` then splits each sentence into words on white space, and `d2l.Vocab`
counts the words. `corpus.read_wiki_paragraphs` does this with Python strings, one object per word. Here one
compiled pass over the file's bytes (`_scan`, numba) does the same and gives each word the index of its
distinct word, so that only the distinct words (about 29,000 in WikiText-2) ever become Python strings.

The pass covers text whose only white space is spaces and newlines, which is every WikiText file. A file
with a tab, carriage return, other ASCII control space or a Unicode space in a paragraph is read by
`corpus.read_wiki_paragraphs` instead, with the same result, more slowly.
"""

import collections
import concurrent.futures
import dataclasses
import itertools
from pathlib import Path

import numba
import numpy as np

from jaxbert.data import cores, corpus, word_table
from jaxbert.errors import JaxbertError

_THREADS = cores.THREADS  # the tests vary it
_OTHER_SPACE = (b"\t", b"\r", b"\x0b", b"\x0c", b"\x1c", b"\x1d", b"\x1e", b"\x1f")


@dataclasses.dataclass(frozen=True)
class Words:
    """The words of a WikiText file's paragraphs: each occurrence as an index into `types`.

    A word may be listed more than once in `types`, if the file spells it more than one way (É, é): look
    words up entry by entry, and count them with `word_counts`.
    """

    types: list[str]  # lower-cased words
    counts: np.ndarray  # (len(types),) occurrences of each entry
    word_types: np.ndarray  # (W,) every word in text order
    sentence_lengths: np.ndarray  # (S,) words per sentence
    paragraph_lengths: np.ndarray  # (P,) sentences per paragraph

    def word_counts(self) -> dict[str, int]:
        """Occurrences of each distinct word."""
        counts = dict(zip(self.types, self.counts.tolist()))
        if len(counts) < len(self.types):  # some word has several entries: add them up
            counts = collections.Counter()
            for word, n in zip(self.types, self.counts.tolist()):
                counts[word] += n
        return dict(counts)


def read_words(path: Path) -> Words:
    """The book's paragraphs, sentences and words of a WikiText file (see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise JaxbertError(f"corpus file {path} does not exist; check --data")
    raw = path.read_bytes()
    fast = not any(c in raw for c in _OTHER_SPACE)
    buf = np.frombuffer(raw if raw.endswith(b"\n") else raw + b"\n", np.uint8)
    # Pieces of whole lines, one compiled pass each, run without the GIL on every core while this thread
    # checks that the text is UTF-8.
    cuts = sorted({0, len(buf)} | {raw.find(b"\n", len(raw) * k // _THREADS) + 1 for k in range(1, _THREADS)})
    with concurrent.futures.ThreadPoolExecutor(_THREADS) as pool:
        scans = [(lo, pool.submit(_scan, buf[lo:hi])) for lo, hi in itertools.pairwise(cuts)] if fast else []
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise JaxbertError(f"{path} is not UTF-8 text (byte {e.start}); give a UTF-8 WikiText file") from None
        if not text or text.isspace():
            raise JaxbertError(f"corpus file {path} is empty; give a WikiText file with text in it")
        words = _from_scans(buf, [(lo, scan.result()) for lo, scan in scans]) if fast else None
    return words if words is not None else _from_paragraphs(corpus.read_wiki_paragraphs(path))


def _from_paragraphs(paragraphs: list[list[str]]) -> Words:
    """The same arrays from Python strings: the reference, and the route for a file the compiled pass declines."""
    index: dict[str, int] = {}
    words = [w for p in paragraphs for s in p for w in s.split()]
    word_types = np.fromiter((index.setdefault(w, len(index)) for w in words), np.int32, len(words))
    return Words(types=list(index), counts=np.bincount(word_types, minlength=len(index)), word_types=word_types,
                 sentence_lengths=np.array([len(s.split()) for p in paragraphs for s in p], np.int64),
                 paragraph_lengths=np.array([len(p) for p in paragraphs], np.int64))


def _from_scans(buf: np.ndarray, scans: list) -> Words | None:
    """`Words` from the `_scan`s of consecutive pieces of `buf` (each with its offset), or None if a paragraph
    holds a Unicode space (a split the pass did not make: then the caller takes the string route)."""
    (offset, (first_types, *lengths, start, length, key, counts)), *rest = scans
    start, word_types, sentence_lengths, paragraph_lengths = start + offset, [first_types], [lengths[0]], [lengths[1]]
    for offset, (piece_types, piece_sentences, piece_paragraphs, piece_start, piece_length, piece_key,
                 piece_counts) in rest:
        # The types of each further piece, looked up among those so far (new ones appended).
        to_union, start, length, key = word_table.union(buf, True, start, length, key, piece_start + offset,
                                                        piece_length, piece_key)
        counts = np.bincount(to_union, weights=piece_counts, minlength=len(start)).astype(np.int64) + np.pad(
            counts, (0, len(start) - len(counts)))
        word_types.append(to_union.astype(np.int32)[piece_types])
        sentence_lengths.append(piece_sentences)
        paragraph_lengths.append(piece_paragraphs)
    text = word_table.joined(buf, start, length).lower()
    types = text.split("\n")[:-1]
    if text.split() != types:
        return None
    return Words(types=types, counts=counts, word_types=np.concatenate(word_types),
                 sentence_lengths=np.concatenate(sentence_lengths),
                 paragraph_lengths=np.concatenate(paragraph_lengths))


_SPACE, _NEWLINE, _DOT = 32, 10, 46


@numba.njit(cache=True, nogil=True)
def _scan(buf):
    """One pass over the lines of `buf` (every line ends in a newline): the book's paragraphs, sentences and
    words, and the distinct words (`word_table`, compared up to ASCII case).

    Returns (type of each word, words per sentence, sentences per paragraph, start, length and key of each
    type's first occurrence, occurrences of each type).
    """
    bound = len(buf) // 2 + 1  # at most this many words, sentences or paragraphs
    word_types, sentence_lengths, paragraph_lengths = (np.empty(bound, np.int32), np.empty(bound, np.int64),
                                                       np.empty(bound, np.int64))
    table, starts, lengths, keys = word_table.empty()
    counts = np.empty(len(starts), np.int64)
    at = np.zeros(5, np.int64)  # next line's start, words, sentences, paragraphs, types so far
    # _lines stops at a line that might overfill the table; it resumes there after the table doubles.
    while not _lines(buf, at, table, starts, lengths, keys, counts, word_types, sentence_lengths,
                     paragraph_lengths):
        table, starts, lengths, keys = word_table.doubled(starts, lengths, keys, at[4])
        counts = word_table.grown(counts, len(starts))
    words, sentences, paragraphs, types = at[1], at[2], at[3], at[4]
    return (word_types[:words], sentence_lengths[:sentences], paragraph_lengths[:paragraphs], starts[:types],
            lengths[:types], keys[:types], counts[:types])


@numba.njit(cache=True, nogil=True)
def _lines(buf, at, table, starts, lengths, keys, counts, word_types, sentence_lengths, paragraph_lengths) -> bool:
    """Scan lines from at[0] on, into the arrays (their counts in `at`); False if it stopped early, at a line
    whose words could fill the table past half its capacity."""
    n = len(buf)
    mask = np.uint64(len(table) - 1)
    line_start, n_words, n_sentences, n_paragraphs, n_types = at[0], at[1], at[2], at[3], at[4]
    while line_start < n:
        line_end = line_start
        while buf[line_end] != _NEWLINE:
            line_end += 1
        if not word_table.fits(table, n_types, (line_end - line_start) // 2 + 1):
            at[:] = line_start, n_words, n_sentences, n_paragraphs, n_types
            return False
        # The book's test, on the raw line: does it contain " . "?
        paragraph = False
        for i in range(line_start, line_end - 2):
            if buf[i] == _SPACE and buf[i + 1] == _DOT and buf[i + 2] == _SPACE:
                paragraph = True
                break
        if paragraph:
            # line.strip(): [a, b) from the first to the last byte that is not a space.
            a, b = line_start, line_end
            while buf[a] == _SPACE:
                a += 1
            while buf[b - 1] == _SPACE:
                b -= 1
            # .split(" . ") into sentences and .split() of each into words, in one pass: at each space, a
            # " . " that fits in [a, b) ends the sentence (leftmost first, so without overlap, as str.split).
            sentences_here = words_here = 0
            i = a
            while i < b:
                if buf[i] == _SPACE:
                    if i + 3 <= b and buf[i + 1] == _DOT and buf[i + 2] == _SPACE:
                        sentence_lengths[n_sentences] = words_here
                        n_sentences += 1
                        sentences_here += 1
                        words_here = 0
                        i += 3
                    else:
                        i += 1
                    continue
                start = i
                h = np.uint64(0)  # word_table.key(buf, start, i, True), computed while finding the word's end
                high = 0
                while i < b and buf[i] != _SPACE:
                    c = buf[i]
                    if 65 <= c <= 90:
                        c += 32
                    high |= c
                    h = ((h << np.uint64(7)) | (h >> np.uint64(57))) ^ np.uint64(c)
                    i += 1
                length = i - start
                exact = length <= 9 and high < 128
                if not exact:
                    h |= word_table.INEXACT
                # word_table.find, written out: as a call it made this pass a third slower.
                slot = word_table.home_slot(h, mask)
                while True:
                    t = table[slot]
                    if t < 0:  # a new type
                        t = n_types
                        table[slot] = t
                        starts[t], lengths[t], keys[t], counts[t] = start, length, h, 0
                        n_types += 1
                        break
                    if keys[t] == h and lengths[t] == length and (
                            exact or word_table.same_bytes(buf, starts[t], start, length, True)):
                        break
                    slot = (slot + np.uint64(1)) & mask
                counts[t] += 1
                word_types[n_words] = t
                n_words += 1
                words_here += 1
            sentence_lengths[n_sentences] = words_here
            n_sentences += 1
            sentences_here += 1
            paragraph_lengths[n_paragraphs] = sentences_here
            n_paragraphs += 1
        line_start = line_end + 1
    at[:] = line_start, n_words, n_sentences, n_paragraphs, n_types
    return True
