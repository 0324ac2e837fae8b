"""Fixed-shape numpy batches for training: `batch = f(seed, step)`, from either data source.

A source is read into one form, a split's token ids with each sentence's length and each document's number of
sentences:

- a WikiText folder (`load_wikitext2`): read as the book reads it (wikitext.py), a paragraph per document, word
  ids from the run's word-level vocabulary;
- a prepared directory (`load_prepared`, written by `jaxbert prepare`): memory-mapped arrays.

From there the path is one: `data.objective`'s instances (instances.py: d2l, nsp, sop, mlm), then rows masked
on demand (masking.py) from a hash of (seed, [epoch,] example), so any batch is rebuilt without the ones before
it. Epoch e visits a permutation seeded by (seed, e); a resumed run reads exactly the batches it would have
read. With several processes, process p of P reads rows [p*B/P, (p+1)*B/P) of each global batch, so the global
batch is the same whatever the number of processes.
"""

import dataclasses
import functools
import hashlib
import itertools
import json
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer, models

from jaxbert.config import DataConfig
from jaxbert.data import corpus, instances, masking, prepare, tokenization, wikitext
from jaxbert.errors import JaxbertError

Batch = dict[str, np.ndarray]  # the fields of masking.FIELDS, leading axis B


@dataclasses.dataclass(frozen=True)
class Parts:
    """The token arrays of several prepared directories, numbered as one concatenated array; a batch copies out
    only the segments it needs."""

    arrays: tuple[np.ndarray, ...]  # memory-mapped
    starts: np.ndarray  # (parts + 1,) where each part begins in the joint numbering, then the total

    def gather(self, *spans: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        """(buffer, each span set's starts in it) for (start, length) arrays in the joint numbering; a
        document, hence a segment, never crosses parts."""
        pieces, new_starts, at = [], [], 0
        for start, length in spans:
            part = np.searchsorted(self.starts, start, side="right") - 1
            local = start - self.starts[part]
            out = np.zeros_like(start)
            for k in np.flatnonzero(length > 0):
                pieces.append(self.arrays[part[k]][local[k]:local[k] + length[k]])
                out[k], at = at, at + length[k]
            new_starts.append(out)
        dtype = self.arrays[0].dtype
        return (np.concatenate(pieces).astype(dtype, copy=False) if pieces else np.zeros(0, dtype)), new_starts


@dataclasses.dataclass(frozen=True)
class InstanceSet:
    """A split's instances over its token array, turned into rows and masked when a batch is asked for."""

    tokens: "np.ndarray | Parts"  # (total tokens,) every sentence's ids, document after document (memory-mapped)
    inst: instances.Instances
    cfg: DataConfig
    specials: tokenization.SpecialIds
    vocab_size: int
    word_start: np.ndarray | None  # (V,) bool, for whole-word masking
    seed: int
    stream: int  # 0 train, 1 held-out: different masks for the two sets

    def __len__(self) -> int:
        return len(self.inst)

    def take(self, idx: np.ndarray, epoch: int = 0) -> Batch:
        """Instances `idx` in the batch contract, masked as in `epoch`."""
        i = self.inst.take(idx)
        tokens, a_start, b_start = self.tokens, i.a_start, i.b_start
        if isinstance(tokens, Parts):  # only these rows' segments are read, from the parts that hold them
            tokens, (a_start, b_start) = tokens.gather((i.a_start, i.a_len), (i.b_start, i.b_len))
        # Static masking: the same for an example in every epoch (as BERT); dynamic: drawn afresh (RoBERTa).
        arrays = masking.rows(tokens, a_start, i.a_len, b_start, i.b_len, idx, max_len=self.cfg.max_len,
                              specials=self.specials, vocab_size=self.vocab_size, mask_prob=self.cfg.mask_prob,
                              num_predictions=self.cfg.num_predictions, seed=self.seed, stream=self.stream,
                              epoch=epoch if self.cfg.dynamic_masking else 0, word_start=self.word_start)
        return arrays | {"nsp_labels": i.label}

    def batch(self, step: int, batch_size: int, process_index: int = 0, process_count: int = 1) -> Batch:
        """Global batch `step` (`epoch_and_rows`), or process `process_index`'s share of it."""
        if batch_size % process_count:
            raise JaxbertError(f"train.batch_size={batch_size} is not divisible by {process_count} processes")
        epoch, rows = epoch_and_rows(len(self), batch_size, self.seed, step)
        share = batch_size // process_count
        return self.take(rows[process_index * share:(process_index + 1) * share], epoch)

    def eval_batches(self, count: int, batch_size: int) -> list[Batch]:
        """The first `count` full batches in stored order (fewer if the set is small): the same every time."""
        return [self.take(np.arange(i * batch_size, (i + 1) * batch_size), 0)
                for i in range(min(count, len(self) // batch_size))]


def batch_indices(n: int, batch_size: int, seed: int, step: int) -> np.ndarray:
    """Rows of step `step`: epoch e = step // (n // B) visits a permutation seeded by (seed, e); the
    remainder of each epoch is dropped so that every batch is full."""
    return epoch_and_rows(n, batch_size, seed, step)[1]


def epoch_and_rows(n: int, batch_size: int, seed: int, step: int) -> tuple[int, np.ndarray]:
    """(epoch, rows) of step `step`, as `batch_indices` describes."""
    per_epoch = n // batch_size
    if per_epoch == 0:
        raise JaxbertError(f"only {n} sentence pairs, fewer than one batch of {batch_size}; "
                           "lower train.batch_size or use a larger corpus")
    epoch, index = divmod(step, per_epoch)
    return epoch, _epoch_order(n, seed, epoch)[index * batch_size:(index + 1) * batch_size]


@functools.lru_cache(maxsize=2)
def _epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The epoch's permutation, drawn once per epoch rather than at every step (read-only: it is shared)."""
    order = np.random.default_rng([seed, epoch]).permutation(n)
    order.flags.writeable = False
    return order


def load_wikitext2(folder: Path, cfg: DataConfig, tok: Tokenizer | None = None):
    """(tokenizer, train set, held-out set) from `wiki.train.tokens` and `wiki.valid.tokens`, read as the book
    reads them: each paragraph (a line of two or more sentences) is a document of word-id sentences.

    Without `tok`, a word-level vocabulary is built on the training split (the book's, `min_freq`).
    """
    folder = Path(folder)
    sets, vocab = [], None
    for stream, name in enumerate(("wiki.train.tokens", "wiki.valid.tokens")):
        words = wikitext.read_words(folder / name)
        if not len(words.paragraph_lengths):
            raise JaxbertError(f"{folder / name} has no line with two or more sentences (' . '), so no sentence "
                               "pairs; give a WikiText-format corpus")
        if tok is None:
            tok = tokenization.word_tokenizer(tokenization.word_vocab(words.word_counts(), cfg.min_freq))
        vocab = vocab or tok.get_vocab()
        tokens = word_ids(words.types, tok, vocab)[words.word_types]
        sets.append(_instance_set(tokens, words.sentence_lengths, words.paragraph_lengths, tok, cfg, stream=stream,
                                  name=str(folder / name)))
    return tok, sets[0], sets[1]


def word_ids(words: list[str], tok: Tokenizer, vocab: dict[str, int]) -> np.ndarray:
    """The id of each (lower-cased) word: what `tok.encode` gives it, by one look-up in `tok.get_vocab()`."""
    if not isinstance(tok.model, models.WordLevel):
        raise JaxbertError("a WikiText folder needs a word-level tokenizer, and this run's is not one; pass the "
                           "prepared directory (`jaxbert prepare`) the run was trained on")
    unk = tokenization.special_ids(tok).unk
    return np.fromiter(map(vocab.get, words, itertools.repeat(unk)), np.int32, len(words))


def _instance_set(tokens: np.ndarray, sentence_lengths: np.ndarray, document_sentences: np.ndarray, tok: Tokenizer,
                  cfg: DataConfig, *, stream: int, name: str) -> "InstanceSet":
    """The instances of one split (train: stream 0, held-out: stream 1), or a clear error if there are none."""
    if cfg.objective == "nsp" and len(document_sentences) < 2:
        raise JaxbertError(f"{name} has one document, and NSP draws random next segments from other documents; "
                           "give more documents (prepare: --eval-corpus / --eval-fraction) or use "
                           "data.objective=sop or mlm")
    inst = instances.create_instances(sentence_lengths, document_sentences, max_len=cfg.max_len,
                                      objective=cfg.objective, short_seq_prob=cfg.short_seq_prob,
                                      rng=np.random.default_rng([cfg.seed, stream]))
    if len(inst) == 0 and cfg.objective == "d2l" and (document_sentences > 1).any():
        first = np.cumsum(document_sentences) - document_sentences  # each document's first sentence
        a = np.concatenate([np.arange(f, f + n - 1) for f, n in zip(first, document_sentences)])
        shortest = int((sentence_lengths[a] + sentence_lengths[a + 1]).min()) + 3
        raise JaxbertError(f"no sentence pair of {name} fits in data.max_len={cfg.max_len} (the shortest "
                           f"consecutive pair needs {shortest} tokens); raise data.max_len")
    if len(inst) == 0:
        raise JaxbertError(f"{name} yields no {cfg.objective} instance; give documents of two or more sentences "
                           "or use data.objective=mlm")
    specials = tokenization.special_ids(tok)
    word_start = tokenization.word_starts(tok) if cfg.whole_word_masking else None
    return InstanceSet(tokens=tokens, inst=inst, cfg=cfg, specials=specials, vocab_size=tok.get_vocab_size(),
                       word_start=word_start, seed=cfg.seed, stream=stream)


Source = Path | tuple[Path, ...]  # one folder, or several prepared directories trained on as one


def locate(data: str | Path | list | tuple | None) -> Source:
    """A prepared directory as it is, several prepared directories as a tuple in the order given, else the
    WikiText-2 folder (`corpus.locate_wikitext2`)."""
    if isinstance(data, (list, tuple)):
        if len(data) > 1:
            for folder in data:
                if not prepare.is_prepared(folder):
                    raise JaxbertError(f"several --data folders must each be a `jaxbert prepare` directory, and "
                                       f"{folder} is not one; prepare it, or pass one folder")
            if len({Path(f).resolve() for f in data}) < len(data):
                raise JaxbertError("a --data directory is given twice; pass each prepared part once")
            return tuple(Path(f) for f in data)
        data = data[0] if data else None
    return Path(data) if data and prepare.is_prepared(data) else corpus.locate_wikitext2(data)


def describe(source: Source) -> str:
    return " ".join(map(str, source)) if isinstance(source, tuple) else str(source)


def fingerprint(data: Source) -> str:
    """SHA-256 of what a run's batches are made from, wherever it lies: a WikiText folder's two files; a prepared
    directory's tokenizer, options, counts and sentence/document lengths (its token array may be huge); for
    several directories, theirs in order."""
    if isinstance(data, tuple):
        return hashlib.sha256(" ".join(["parts", *map(fingerprint, data)]).encode()).hexdigest()
    digest = hashlib.sha256()
    if prepare.is_prepared(data):
        manifest = prepare.read_manifest(data)
        digest.update(json.dumps([manifest[k] for k in ("tokenizer_fingerprint", "options", "counts")]).encode())
        names = [f"{split}/{name}" for split in prepare.SPLITS
                 for name in ("sentence_lengths.bin", "document_sentences.bin")]
    else:
        names = ["wiki.train.tokens", "wiki.valid.tokens"]
    for name in names:  # a missing file is reported by `load`; here it only counts as missing
        path = Path(data) / name
        if path.is_file():
            with open(path, "rb") as f:
                digest.update(hashlib.file_digest(f, "sha256").digest())
        else:
            digest.update(f"no {name}".encode())
    return digest.hexdigest()


def load(data: Source, cfg: DataConfig, tok: Tokenizer | None = None):
    """(tokenizer, train set, held-out set or None) from prepared directories or a WikiText folder."""
    if isinstance(data, tuple):
        return load_parts(data, cfg, tok)
    return load_prepared(data, cfg, tok) if prepare.is_prepared(data) else load_wikitext2(data, cfg, tok)


def load_parts(folders: tuple[Path, ...], cfg: DataConfig, tok: Tokenizer | None = None):
    """Several prepared directories (a corpus prepared in parts, by file) as one: their documents in the order
    given, one global order over all their instances, every part made with one tokenizer."""
    manifests = [prepare.read_manifest(f) for f in folders]
    for folder, manifest in zip(folders[1:], manifests[1:]):
        if manifest["tokenizer_fingerprint"] != manifests[0]["tokenizer_fingerprint"]:
            raise JaxbertError(f"{folder} was prepared with another tokenizer than {folders[0]}; prepare every part "
                               "with one tokenizer (jaxbert prepare --tokenizer)")
    own = _tokenizer_of(folders[0], manifests[0], tok)
    sets = []
    for stream, split in enumerate(prepare.SPLITS):
        opened = [a for a in (prepare.open_split(f, split, m) for f, m in zip(folders, manifests)) if a is not None]
        if not opened:
            sets.append(None)
            continue
        sizes = np.cumsum([0] + [len(tokens) for tokens, _, _ in opened])
        tokens = Parts(tuple(t for t, _, _ in opened), sizes)
        lengths, documents = (np.concatenate([a[k] for a in opened]) for k in (1, 2))
        sets.append(_instance_set(tokens, lengths, documents, own, cfg, stream=stream,
                                  name=f"the {split} split of {len(folders)} prepared directories"))
    return own, sets[0], sets[1]


def _tokenizer_of(folder: Path, manifest: dict, tok: Tokenizer | None) -> Tokenizer:
    """The directory's tokenizer; `tok` (a resumed run's) must be the one it was made with."""
    own = tokenization.load(Path(folder) / "tokenizer.json")
    if tok is not None and tokenization.fingerprint(tok) != manifest["tokenizer_fingerprint"]:
        raise JaxbertError(f"{folder} was prepared with another tokenizer than this run's; prepare the corpus "
                           "with the run's tokenizer.json, or start a new run")
    return own


def load_prepared(folder: Path, cfg: DataConfig, tok: Tokenizer | None = None):
    """Instances of a `jaxbert prepare` directory; `tok` (a resumed run's) must be the one it was made with."""
    manifest = prepare.read_manifest(folder)
    own = _tokenizer_of(folder, manifest, tok)
    sets = []
    for stream, split in enumerate(prepare.SPLITS):
        arrays = prepare.open_split(folder, split, manifest)
        sets.append(None if arrays is None else _instance_set(*arrays, own, cfg, stream=stream,
                                                               name=f"the {split} split of {folder}"))
    return own, sets[0], sets[1]
