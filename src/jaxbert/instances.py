"""BERT-style training instances from documents of tokenized sentences, as Google's
`create_pretraining_data.py` behaves (our own code): sentences are packed into a chunk up to a target length
(shorter with probability `short_seq_prob`), the chunk is split into segments A and B at a random sentence
boundary, and for each objective

    nsp  B follows A (label 1), or, half the time, B is taken from another document (label 0) and the
         chunk's unused sentences are put back for the next instance;
    sop  A and B are consecutive segments of one document, swapped half the time (label 1 = in order);
    mlm  one segment of up to max_len - 2 tokens, no B (RoBERTa's full sentences; label 0, unused).

Pairs over the length limit are truncated from the longer side, at its front or back at random.

An instance is five integers: A = tokens[a_start : a_start + a_len], B likewise (b_len = 0 for `mlm`), and
the label. Segments are runs of consecutive sentences, so each is one contiguous range of the token array.
"""

import dataclasses

import numpy as np

from jaxbert.config import OBJECTIVES
from jaxbert.errors import JaxbertError


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
    """All instances of a corpus given each sentence's length and each document's number of sentences."""
    if objective not in OBJECTIVES:
        raise JaxbertError(f"data.objective={objective!r} is not supported; use one of {OBJECTIVES}")
    sent_start = np.concatenate([[0], np.cumsum(sentence_lengths, dtype=np.int64)])
    doc_first = np.concatenate([[0], np.cumsum(document_sentences, dtype=np.int64)])
    n_docs = len(document_sentences)
    if objective == "nsp" and n_docs < 2:
        raise JaxbertError("NSP needs at least two documents to draw random next segments from; "
                           "give a larger corpus or use data.objective=sop or mlm")
    max_tokens = max_len - (2 if objective == "mlm" else 3)
    out = {k: [] for k in ("a_start", "a_len", "b_start", "b_len", "label", "document")}

    def emit(a0, a1, b0, b1, label, doc):
        """A = sentences [a0, a1), B = sentences [b0, b1), truncated to max_tokens together."""
        sa, la = sent_start[a0], sent_start[a1] - sent_start[a0]
        sb, lb = sent_start[b0], sent_start[b1] - sent_start[b0]
        (sa, la), (sb, lb) = _truncate_pair(sa, la, sb, lb, max_tokens, rng)
        if la == 0 or (objective != "mlm" and lb == 0):
            return
        for key, value in zip(out, (sa, la, sb, lb, label, doc)):
            out[key].append(value)

    for doc in range(n_docs):
        first, last = doc_first[doc], doc_first[doc + 1]  # sentences [first, last)
        target = max_tokens
        if rng.random() < short_seq_prob:
            target = int(rng.integers(2, max_tokens + 1))
        chunk_start, length, i = first, 0, first
        while i < last:
            length += sentence_lengths[i]
            if i == last - 1 or length >= target:
                chunk_end = i + 1  # chunk = sentences [chunk_start, chunk_end)
                n = chunk_end - chunk_start
                if objective == "mlm":
                    emit(chunk_start, chunk_end, chunk_end, chunk_end, 0, doc)
                else:
                    a_end = chunk_start + (int(rng.integers(1, n)) if n >= 2 else 1)
                    if objective == "sop":
                        if n >= 2:
                            if rng.random() < 0.5:
                                emit(a_end, chunk_end, chunk_start, a_end, 0, doc)  # swapped
                            else:
                                emit(chunk_start, a_end, a_end, chunk_end, 1, doc)
                    elif n == 1 or rng.random() < 0.5:
                        other = int(rng.integers(0, n_docs - 1))
                        other += other >= doc  # never the same document
                        o_first, o_last = doc_first[other], doc_first[other + 1]
                        b0 = int(rng.integers(o_first, o_last))
                        want = target - (sent_start[a_end] - sent_start[chunk_start])
                        # Take sentences from b0 until the target B length is reached (or the document ends).
                        reach = np.searchsorted(sent_start, sent_start[b0] + max(want, 1), side="left")
                        b1 = int(min(max(reach, b0 + 1), o_last))
                        emit(chunk_start, a_end, b0, b1, 0, doc)
                        i = a_end - 1  # put the unused sentences back
                    else:
                        emit(chunk_start, a_end, a_end, chunk_end, 1, doc)
                chunk_start, length = i + 1, 0
            i += 1
    return Instances(a_start=np.array(out["a_start"], np.int64), a_len=np.array(out["a_len"], np.int32),
                     b_start=np.array(out["b_start"], np.int64), b_len=np.array(out["b_len"], np.int32),
                     label=np.array(out["label"], np.int32), document=np.array(out["document"], np.int32))


def _truncate_pair(sa, la, sb, lb, max_tokens, rng):
    """Google's truncate_seq_pair in closed form: trim the longer segment (B on ties) one token at a time until
    the pair fits; each trimmed token comes off the front or the back at random."""
    excess = la + lb - max_tokens
    if excess <= 0:
        return (sa, la), (sb, lb)
    longer, shorter = max(la, lb), min(la, lb)
    from_longer = min(excess, longer - shorter)
    rest = excess - from_longer  # then alternately, so the two end within one token of each other
    # Once equal, B is trimmed first (ties go to B), so B takes the odd token.
    cut_a = (from_longer if la > lb else 0) + rest // 2
    cut_b = (from_longer if la <= lb else 0) + (rest + 1) // 2
    front_a, front_b = rng.binomial(cut_a, 0.5), rng.binomial(cut_b, 0.5)
    return (sa + front_a, la - cut_a), (sb + front_b, lb - cut_b)
