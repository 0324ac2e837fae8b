"""Training instances from documents of tokenized sentences: which token ranges form segments A and B, and the
pair label. One policy per `data.objective`:

    d2l  the book's pairs (d2l `_get_nsp_data_from_paragraph`): each sentence and the next one of its document,
         or, half the time, a random sentence of a random document (which may be the same one); pairs over
         max_len are dropped. A WikiText paragraph is a document here.

The others behave as Google's `create_pretraining_data.py` (our own code): sentences are packed into a chunk
up to a target length (shorter with probability `short_seq_prob`), the chunk is split into segments A and B at
a random sentence boundary, and

    nsp  B follows A (label 1), or, half the time, B is taken from another document (label 0) and the
         chunk's unused sentences are put back for the next instance;
    sop  A and B are consecutive segments of one document, swapped half the time (label 1 = in order);
    mlm  one segment of up to max_len - 2 tokens, no B (RoBERTa's full sentences; label 0, unused).

Pairs over the length limit are truncated from the longer side, at its front or back at random.

An instance is five integers: A = tokens[a_start : a_start + a_len], B likewise (b_len = 0 for `mlm`), and
the label. Segments are runs of consecutive sentences, so each is one contiguous range of the token array.
"""

import dataclasses

import numba
import numpy as np

from jaxbert.config import OBJECTIVES
from jaxbert.errors import JaxbertError

_SOP, _MLM = OBJECTIVES.index("sop"), OBJECTIVES.index("mlm")


@dataclasses.dataclass(frozen=True)
class Instances:
    a_start: np.ndarray  # (N,) int64 offsets into the token array
    a_len: np.ndarray  # (N,) int32
    b_start: np.ndarray
    b_len: np.ndarray
    label: np.ndarray  # (N,) int32
    document: np.ndarray  # (N,) int32, the document A comes from

    def __len__(self) -> int:
        return len(self.label)

    def take(self, idx: np.ndarray) -> "Instances":
        return Instances(*(getattr(self, f.name)[idx] for f in dataclasses.fields(self)))


def create_instances(sentence_lengths: np.ndarray, document_sentences: np.ndarray, *, max_len: int,
                     objective: str, short_seq_prob: float, rng: np.random.Generator) -> Instances:
    """All instances of a corpus given each sentence's length and each document's number of sentences.

    The walk over the documents runs in compiled code (numba) and draws from `rng` itself: numba implements
    `np.random.Generator`'s methods with numpy's own algorithms, so the instances are those a numpy reading of
    `_create` would make with the same generator, whatever numba's version, and `rng` advances as it would.
    """
    if objective not in OBJECTIVES:
        raise JaxbertError(f"data.objective={objective!r} is not supported; use one of {OBJECTIVES}")
    sentence_lengths, document_sentences = np.asarray(sentence_lengths, np.int64), np.asarray(document_sentences,
                                                                                              np.int64)
    if objective == "d2l":
        return _d2l_pairs(sentence_lengths, document_sentences, max_len, rng)
    if objective == "nsp" and len(document_sentences) < 2:
        raise JaxbertError("NSP needs at least two documents to draw random next segments from; "
                           "give a larger corpus or use data.objective=sop or mlm")
    max_tokens = max_len - (2 if objective == "mlm" else 3)
    arrays = _create(sentence_lengths, document_sentences, max_tokens,
                     OBJECTIVES.index(objective), short_seq_prob, rng)
    a_start, a_len, b_start, b_len, label, document = arrays  # the rows of one (6, N) array
    return Instances(a_start=a_start, a_len=a_len.astype(np.int32), b_start=b_start,
                     b_len=b_len.astype(np.int32), label=label.astype(np.int32), document=document.astype(np.int32))


def _d2l_pairs(sentence_lengths, document_sentences, max_len: int, rng: np.random.Generator) -> Instances:
    """The book's pairs, vectorised. Documents are visited in a random order, as the book shuffles its
    paragraphs; a negative draws a document, then one of its sentences, uniformly."""
    sent_start, doc_first = _exclusive_cumsum(sentence_lengths), _exclusive_cumsum(document_sentences)
    order = rng.permutation(len(document_sentences))
    per_doc = np.maximum(document_sentences[order] - 1, 0)  # consecutive pairs in each document
    a = (np.repeat(doc_first[order], per_doc) + np.arange(per_doc.sum())
         - np.repeat(_exclusive_cumsum(per_doc), per_doc))
    is_next = rng.random(len(a)) < 0.5
    random_doc = rng.integers(0, len(document_sentences), len(a))
    random_sentence = doc_first[random_doc] + np.floor(rng.random(len(a)) * document_sentences[random_doc]).astype(
        np.int64)
    b = np.where(is_next, a + 1, random_sentence)
    keep = sentence_lengths[a] + sentence_lengths[b] + 3 <= max_len
    a, b = a[keep], b[keep]
    return Instances(a_start=sent_start[a], a_len=sentence_lengths[a].astype(np.int32), b_start=sent_start[b],
                     b_len=sentence_lengths[b].astype(np.int32), label=is_next[keep].astype(np.int32),
                     document=np.repeat(order, per_doc)[keep].astype(np.int32))


def _exclusive_cumsum(x: np.ndarray) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(x)[:-1]]).astype(np.int64) if len(x) else np.zeros(0, np.int64)


@numba.njit(cache=True, nogil=True)
def _create(sentence_lengths, document_sentences, max_tokens, objective, short_seq_prob, rng):
    """The instances' (a_start, a_len, b_start, b_len, label, document) as the rows of one (6, N) array;
    objective is the index of nsp, sop or mlm in config.OBJECTIVES; every draw comes from `rng`."""
    sent_start = np.zeros(len(sentence_lengths) + 1, np.int64)
    sent_start[1:] = np.cumsum(sentence_lengths)
    doc_first = np.zeros(len(document_sentences) + 1, np.int64)
    doc_first[1:] = np.cumsum(document_sentences)
    n_docs = len(document_sentences)
    bound = len(sentence_lengths)  # each instance uses up at least one sentence
    out = np.zeros((6, bound), np.int64)
    n = 0
    for doc in range(n_docs):
        first, last = doc_first[doc], doc_first[doc + 1]  # sentences [first, last)
        target = max_tokens
        if rng.random() < short_seq_prob:
            target = rng.integers(2, max_tokens + 1)
        chunk_start, length, i = first, 0, first
        while i < last:
            length += sentence_lengths[i]
            if i == last - 1 or length >= target:
                chunk_end = i + 1  # chunk = sentences [chunk_start, chunk_end)
                size = chunk_end - chunk_start
                # A = sentences [a0, a1), B = sentences [b0, b1); label; emit = whether to keep the instance
                a0, a1, b0, b1, label, emit = chunk_start, chunk_end, chunk_end, chunk_end, 0, True
                if objective != _MLM:
                    a1 = chunk_start + (rng.integers(1, size) if size >= 2 else 1)
                    if objective == _SOP:
                        emit = size >= 2
                        if emit:
                            if rng.random() < 0.5:
                                a0, a1, b0, b1 = a1, chunk_end, chunk_start, a1  # swapped
                            else:
                                b0, b1, label = a1, chunk_end, 1
                    elif size == 1 or rng.random() < 0.5:
                        other = rng.integers(0, n_docs - 1)
                        other += other >= doc  # never the same document
                        o_first, o_last = doc_first[other], doc_first[other + 1]
                        b0 = rng.integers(o_first, o_last)
                        want = target - (sent_start[a1] - sent_start[chunk_start])
                        # Take sentences from b0 until the target B length is reached (or the document ends).
                        reach = np.searchsorted(sent_start, sent_start[b0] + max(want, 1))
                        b1 = min(max(reach, b0 + 1), o_last)
                        i = a1 - 1  # put the unused sentences back
                    else:
                        b0, b1, label = a1, chunk_end, 1
                if emit:
                    sa, la = sent_start[a0], sent_start[a1] - sent_start[a0]
                    sb, lb = sent_start[b0], sent_start[b1] - sent_start[b0]
                    sa, la, sb, lb = _truncate_pair(sa, la, sb, lb, max_tokens, rng)
                    if la > 0 and (objective == _MLM or lb > 0):
                        out[0, n], out[1, n], out[2, n], out[3, n], out[4, n], out[5, n] = sa, la, sb, lb, label, doc
                        n += 1
                chunk_start, length = i + 1, 0
            i += 1
    return out[:, :n].copy()


@numba.njit(cache=True, nogil=True)
def _truncate_pair(sa, la, sb, lb, max_tokens, rng):
    """Google's truncate_seq_pair in closed form: trim the longer segment (B on ties) one token at a time until
    the pair fits; each trimmed token comes off the front or the back at random. Returns (sa, la, sb, lb)."""
    excess = la + lb - max_tokens
    if excess <= 0:
        return sa, la, sb, lb
    longer, shorter = max(la, lb), min(la, lb)
    from_longer = min(excess, longer - shorter)
    rest = excess - from_longer  # then alternately, so the two end within one token of each other
    # Once equal, B is trimmed first (ties go to B), so B takes the odd token.
    cut_a = (from_longer if la > lb else 0) + rest // 2
    cut_b = (from_longer if la <= lb else 0) + (rest + 1) // 2
    front_a, front_b = rng.binomial(cut_a, 0.5), rng.binomial(cut_b, 0.5)
    return sa + front_a, la - cut_a, sb + front_b, lb - cut_b
