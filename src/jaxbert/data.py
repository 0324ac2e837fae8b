"""Fixed-shape numpy batches for training: `batch = f(seed, step)`, from either data source.

- a WikiText folder (`load_wikitext2`): the book's data, built in memory with the book's semantics;
- a prepared directory (`load_prepared`, written by `jaxbert prepare`): memory-mapped token arrays, BERT-style
  instances (instances.py), and masking drawn per example from a hash of (seed, [epoch,] example), so any
  batch is rebuilt without the ones before it.

Both order examples into batches the same way: epoch e visits a permutation seeded by (seed, e); a resumed
run reads exactly the batches it would have read. With several processes, process p of P reads rows
[p*B/P, (p+1)*B/P) of each global batch, so the global batch is the same whatever the number of processes.
"""

import dataclasses
import functools
import hashlib
import itertools
import json
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer, models

from jaxbert import corpus, example_rows, instances, prepare, pretraining_data, wikitext
from jaxbert import tokenizer as tokenizers
from jaxbert.config import DataConfig
from jaxbert.errors import JaxbertError

Batch = dict[str, np.ndarray]  # the fields of pretraining_data.FIELDS, leading axis B


class _Batches:
    """Batching shared by both sources; subclasses give `__len__` and `take(rows, epoch)`."""

    seed: int

    def batch(self, step: int, batch_size: int, process_index: int = 0, process_count: int = 1) -> Batch:
        if batch_size % process_count:
            raise JaxbertError(f"train.batch_size={batch_size} is not divisible by {process_count} processes")
        epoch, rows = epoch_and_rows(len(self), batch_size, self.seed, step)
        share = batch_size // process_count
        return self.take(rows[process_index * share:(process_index + 1) * share], epoch)

    def eval_batches(self, count: int, batch_size: int) -> list[Batch]:
        """The first `count` full batches in stored order (fewer if the set is small): the same every time."""
        return [self.take(np.arange(i * batch_size, (i + 1) * batch_size), 0)
                for i in range(min(count, len(self) // batch_size))]


@dataclasses.dataclass(frozen=True)
class Examples(_Batches):
    """N examples in the batch contract, masked once (the book's static masking)."""

    arrays: Batch
    seed: int

    def __len__(self) -> int:
        return len(self.arrays["nsp_labels"])

    def take(self, idx: np.ndarray, epoch: int = 0) -> Batch:
        return {k: v[idx] for k, v in self.arrays.items()}


@dataclasses.dataclass(frozen=True)
class InstanceSet(_Batches):
    """Instances over a memory-mapped token array, assembled and masked when a batch is asked for."""

    tokens: np.ndarray
    inst: instances.Instances
    cfg: DataConfig
    specials: tokenizers.SpecialIds
    vocab_size: int
    word_start: np.ndarray | None  # (V,) bool, for whole-word masking
    seed: int
    stream: int  # 0 train, 1 held-out: different masks for the two sets

    def __len__(self) -> int:
        return len(self.inst)

    def take(self, idx: np.ndarray, epoch: int = 0) -> Batch:
        i = self.inst.take(idx)
        # Static masking: the same for an example in every epoch (as BERT); dynamic: drawn afresh (RoBERTa).
        masking_epoch = epoch if self.cfg.dynamic_masking else 0
        if self.word_start is None:
            arrays = example_rows.build(
                self.tokens, i.a_start, i.a_len, i.b_start, i.b_len, idx, max_len=self.cfg.max_len,
                specials=self.specials, vocab_size=self.vocab_size, mask_prob=self.cfg.mask_prob,
                num_predictions=self.cfg.num_predictions, seed=self.seed, stream=self.stream, epoch=masking_epoch)
            return arrays | {"nsp_labels": i.label}
        ids, segments, valid = pretraining_data.assemble(self.tokens, i.a_start, i.a_len, i.b_start, i.b_len,
                                                         self.cfg.max_len, self.specials)
        draws = pretraining_data.hash_draws(ids.shape, self.vocab_size, self.seed, self.stream, masking_epoch,
                                            idx[:, None])
        input_ids, positions, labels, weights = pretraining_data.mask_tokens(
            ids, valid, self.specials, self.vocab_size, self.cfg.mask_prob, self.cfg.num_predictions, draws,
            self.word_start[ids])
        return dict(input_ids=input_ids, segment_ids=segments, valid_lens=valid, masked_positions=positions,
                    masked_ids=labels, masked_weights=weights, nsp_labels=i.label)


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
    """(tokenizer, train examples, held-out examples) from `wiki.train.tokens` and `wiki.valid.tokens`.

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
            tok = tokenizers.word_tokenizer(tokenizers.word_vocab(words.word_counts(), cfg.min_freq))
        vocab = vocab or tok.get_vocab()
        sent = pretraining_data.Sentences.from_arrays(word_ids(words.types, tok, vocab)[words.word_types],
                                                      words.sentence_lengths, words.paragraph_lengths)
        sets.append(_examples(sent, tok, cfg, stream=stream, name=folder / name))
    return tok, sets[0], sets[1]


def word_ids(words: list[str], tok: Tokenizer, vocab: dict[str, int]) -> np.ndarray:
    """The id of each (lower-cased) word: what `tok.encode` gives it, by one look-up in `tok.get_vocab()`."""
    if not isinstance(tok.model, models.WordLevel):
        raise JaxbertError("a WikiText folder needs a word-level tokenizer, and this run's is not one; pass the "
                           "prepared directory (`jaxbert prepare`) the run was trained on")
    unk = tokenizers.special_ids(tok).unk
    return np.fromiter(map(vocab.get, words, itertools.repeat(unk)), np.int32, len(words))


def _examples(sent: pretraining_data.Sentences, tok: Tokenizer, cfg: DataConfig, *, stream: int,
              name: Path) -> Examples:
    arrays = pretraining_data.make_examples(
        sent, tokenizers.special_ids(tok), tok.get_vocab_size(), max_len=cfg.max_len, mask_prob=cfg.mask_prob,
        num_predictions=cfg.num_predictions, seed=cfg.seed, stream=stream)
    if len(arrays["nsp_labels"]) == 0:
        last = np.zeros(len(sent.lengths), bool)
        last[sent.paragraph_starts + sent.paragraph_lengths - 1] = True
        first = np.flatnonzero(~last)
        shortest = int((sent.lengths[first] + sent.lengths[first + 1]).min()) + 3
        raise JaxbertError(f"no sentence pair of {name} fits in data.max_len={cfg.max_len} (the shortest "
                           f"consecutive pair needs {shortest} tokens); raise data.max_len")
    return Examples(arrays=arrays, seed=cfg.seed)


def locate(data: str | Path | None) -> Path:
    """A prepared directory as it is, else the WikiText-2 folder (`corpus.locate_wikitext2`)."""
    return Path(data) if data and prepare.is_prepared(data) else corpus.locate_wikitext2(data)


def fingerprint(data: Path) -> str:
    """SHA-256 of what a run's batches are made from, wherever it lies: a WikiText folder's two files; a prepared
    directory's tokenizer, options, counts and sentence/document lengths (its token array may be huge)."""
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


def load(data: Path, cfg: DataConfig, tok: Tokenizer | None = None):
    """(tokenizer, train set, held-out set or None) from a prepared directory or a WikiText folder."""
    if prepare.is_prepared(data):
        return load_prepared(data, cfg, tok)
    book_only = [name for name, on in (("data.objective=" + cfg.objective, cfg.objective != "nsp"),
                                       ("data.whole_word_masking", cfg.whole_word_masking),
                                       ("data.dynamic_masking", cfg.dynamic_masking)) if on]
    if book_only:
        raise JaxbertError(f"{', '.join(book_only)} needs a prepared directory; run `jaxbert prepare` and pass "
                           "its --out as --data")
    return load_wikitext2(data, cfg, tok)


def load_prepared(folder: Path, cfg: DataConfig, tok: Tokenizer | None = None):
    """Instances of a `jaxbert prepare` directory; `tok` (a resumed run's) must be the one it was made with."""
    manifest = prepare.read_manifest(folder)
    own = tokenizers.load(Path(folder) / "tokenizer.json")
    if tok is not None and tokenizers.fingerprint(tok) != manifest["tokenizer_fingerprint"]:
        raise JaxbertError(f"{folder} was prepared with another tokenizer than this run's; prepare the corpus "
                           "with the run's tokenizer.json, or start a new run")
    specials = tokenizers.special_ids(own)
    word_start = tokenizers.word_starts(own) if cfg.whole_word_masking else None
    sets = []
    for stream, split in enumerate(prepare.SPLITS):
        arrays = prepare.open_split(folder, split, manifest)
        if arrays is None:
            sets.append(None)
            continue
        tokens, sentence_lengths, document_sentences = arrays
        if cfg.objective == "nsp" and len(document_sentences) < 2:
            raise JaxbertError(f"the {split} split of {folder} has one document, and NSP draws random next "
                               "segments from other documents; prepare with more documents there "
                               "(--eval-corpus / --eval-fraction) or use data.objective=sop or mlm")
        inst = instances.create_instances(sentence_lengths, document_sentences, max_len=cfg.max_len,
                                          objective=cfg.objective, short_seq_prob=cfg.short_seq_prob,
                                          rng=np.random.default_rng([cfg.seed, stream]))
        if len(inst) == 0:
            raise JaxbertError(f"{folder} ({split}) yields no {cfg.objective} instance; give documents of two "
                               "or more sentences or use data.objective=mlm")
        sets.append(InstanceSet(tokens=tokens, inst=inst, cfg=cfg, specials=specials,
                                vocab_size=own.get_vocab_size(), word_start=word_start, seed=cfg.seed,
                                stream=stream))
    return own, sets[0], sets[1]
