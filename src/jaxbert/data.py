"""From a WikiText folder to fixed-shape numpy batches: `batch = f(seed, step)`.

`load_wikitext2` builds (or reuses) the tokenizer on the training split, then the training and held-out
examples, each from its own random stream. `Examples.batch(step)` is a pure function of the data seed and
the step: the epoch's order is a permutation seeded by (seed, epoch), so a resumed run reads exactly the
batches it would have read, without replaying the ones before.
"""

import dataclasses
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from jaxbert import corpus, pretraining_data, tokenizer as tokenizers
from jaxbert.config import DataConfig
from jaxbert.errors import JaxbertError

Batch = dict[str, np.ndarray]  # the fields of pretraining_data.FIELDS, leading axis B


@dataclasses.dataclass(frozen=True)
class Examples:
    """N examples in the batch contract, plus the seed that orders them into batches."""

    arrays: Batch
    seed: int

    def __len__(self) -> int:
        return len(self.arrays["nsp_labels"])

    def take(self, idx: np.ndarray) -> Batch:
        return {k: v[idx] for k, v in self.arrays.items()}

    def batch(self, step: int, batch_size: int) -> Batch:
        return self.take(batch_indices(len(self), batch_size, self.seed, step))

    def eval_batches(self, count: int, batch_size: int) -> list[Batch]:
        """The first `count` full batches in file order (fewer if the set is small): the same every time."""
        return [self.take(np.arange(i * batch_size, (i + 1) * batch_size))
                for i in range(min(count, len(self) // batch_size))]


def batch_indices(n: int, batch_size: int, seed: int, step: int) -> np.ndarray:
    """Rows of step `step`: epoch e = step // (n // B) visits a permutation seeded by (seed, e); the
    remainder of each epoch is dropped so that every batch is full."""
    per_epoch = n // batch_size
    if per_epoch == 0:
        raise JaxbertError(f"only {n} sentence pairs, fewer than one batch of {batch_size}; "
                           "lower train.batch_size or use a larger corpus")
    epoch, index = divmod(step, per_epoch)
    order = np.random.default_rng([seed, epoch]).permutation(n)
    return order[index * batch_size:(index + 1) * batch_size]


def encode_paragraphs(paragraphs: list[list[str]], tok: Tokenizer) -> pretraining_data.Sentences:
    flat = [s for p in paragraphs for s in p]
    encoded = tok.encode_batch(flat, add_special_tokens=False)  # Rust, all cores
    it = iter(encoded)
    return pretraining_data.Sentences.from_lists([[next(it).ids for _ in p] for p in paragraphs])


def load_wikitext2(folder: Path, cfg: DataConfig, tok: Tokenizer | None = None):
    """(tokenizer, train examples, held-out examples) from `wiki.train.tokens` and `wiki.valid.tokens`.

    Without `tok`, a word-level vocabulary is built on the training split (the book's, `min_freq`).
    """
    folder = Path(folder)
    train_paragraphs = corpus.read_wiki_paragraphs(folder / "wiki.train.tokens")
    valid_paragraphs = corpus.read_wiki_paragraphs(folder / "wiki.valid.tokens")
    if tok is None:
        words = [s.split() for p in train_paragraphs for s in p]
        tok = tokenizers.word_tokenizer(tokenizers.build_word_vocab(words, cfg.min_freq))
    train = _examples(train_paragraphs, tok, cfg, stream=0, name=folder / "wiki.train.tokens")
    held_out = _examples(valid_paragraphs, tok, cfg, stream=1, name=folder / "wiki.valid.tokens")
    return tok, train, held_out


def _examples(paragraphs, tok: Tokenizer, cfg: DataConfig, *, stream: int, name: Path) -> Examples:
    if not paragraphs:
        raise JaxbertError(f"{name} has no line with two or more sentences (' . '), so no sentence pairs; "
                           "give a WikiText-format corpus")
    sent = encode_paragraphs(paragraphs, tok)
    rng = np.random.default_rng([cfg.seed, stream])
    arrays = pretraining_data.make_examples(
        sent, tokenizers.special_ids(tok), tok.get_vocab_size(), max_len=cfg.max_len, mask_prob=cfg.mask_prob,
        num_predictions=cfg.num_predictions, rng=rng)
    if len(arrays["nsp_labels"]) == 0:
        last = np.zeros(len(sent.lengths), bool)
        last[sent.paragraph_starts + sent.paragraph_lengths - 1] = True
        first = np.flatnonzero(~last)
        shortest = int((sent.lengths[first] + sent.lengths[first + 1]).min()) + 3
        raise JaxbertError(f"no sentence pair of {name} fits in data.max_len={cfg.max_len} (the shortest "
                           f"consecutive pair needs {shortest} tokens); raise data.max_len")
    return Examples(arrays=arrays, seed=cfg.seed)
