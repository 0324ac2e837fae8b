"""Load a trained run and use it: contextual vectors of a sentence or a sentence pair (the book's
`get_bert_encoding`), the MLM head's guesses for masked words, and the NSP head's verdict on a pair.

    enc = jaxbert.load("runs/d2l-tiny")
    enc.encode("a crane is flying").shape                    # (1, 6, 128)
    enc.encode(["a", "crane", "driver", "came"], ["he", "just", "left"]).shape   # (1, 10, 128)
    enc.encode_many(["a crane is flying", "he just left"])   # [(6, 128), (5, 128)], 64 texts per batch
    enc.fill_mask("a crane is <mask> .")                     # [[(word, probability), ...]] per mask
    enc.next_sentence("a crane driver came", "he just left")  # P(B follows A)
"""

import dataclasses
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxbert import rundir, storage
from jaxbert.config import Config
from jaxbert.data import tokenization
from jaxbert.errors import JaxbertError
from jaxbert.model.bert import BertForPreTraining
from jaxbert.training import checkpoint


def restore_run(run_dir: Path):
    """(config, tokenizer, model with the latest checkpoint's parameters, step) of a run directory."""
    run_dir = rundir.require_run(run_dir)
    cfg = Config.load(run_dir / rundir.CONFIG)
    tok = tokenization.load(run_dir / rundir.TOKENIZER)
    abstract = nnx.eval_shape(lambda: BertForPreTraining(cfg.model, rngs=nnx.Rngs(0)))
    graphdef, abstract_params = nnx.split(abstract, nnx.Param)
    step = rundir.latest_step(run_dir)
    params, _ = checkpoint.restore(checkpoint.manager(run_dir), step, abstract_params)
    return cfg, tok, nnx.merge(graphdef, params), step


class Encoder:
    """A trained BERT encoder with its tokenizer; dropout is off."""

    def __init__(self, run_dir: Path):
        self.config, self.tokenizer, self.model, self.step = restore_run(run_dir)
        self.specials = tokenization.special_ids(self.tokenizer)
        # Written in a text, `<mask>` / `[MASK]` (and the other specials) are that token, as in transformers.
        self.tokenizer.add_special_tokens([self.tokenizer.id_to_token(i) for i in dataclasses.astuple(self.specials)])
        # Jitted over (graph, parameters) split once: nnx.jit would flatten the module on every call, which
        # costs more than a small model's forward pass at batch 1 (benchmarks/encode_speed.py).
        graphdef, params = nnx.split(self.model)
        encode = jax.jit(lambda p, ids, segs, lens: nnx.merge(graphdef, p).encode(ids, segs, lens))
        heads = jax.jit(lambda p, ids, segs, lens, positions: nnx.merge(graphdef, p)(ids, segs, lens, positions)[1:])
        self._encode = lambda *inputs: encode(params, *inputs)
        self._heads = lambda *inputs: heads(params, *inputs)

    def tokens(self, tokens_a, tokens_b=None) -> list[str]:
        """`<cls> A <sep>` or `<cls> A <sep> B <sep>`, as the tokenizer spells its specials."""
        return self.tokenizer.encode(*self._texts(tokens_a, tokens_b)).tokens

    def encode(self, tokens_a, tokens_b=None) -> jax.Array:
        """(1, T, D) vectors, `<cls>` first; tokens are a string or a list of words."""
        ids, segments, lens = self._inputs(tokens_a, tokens_b)
        return self._encode(ids, segments, lens)[:, :int(lens[0])]

    def encode_many(self, texts, pairs=None, *, batch_size: int = 64) -> list[np.ndarray]:
        """One (T_i, D) array per text (or per pair `(texts[i], pairs[i])`), run `batch_size` at a time: each
        batch is padded to its longest member, rounded up to a multiple of 16 positions."""
        if pairs is not None and len(pairs) != len(texts):
            raise JaxbertError(f"{len(texts)} texts but {len(pairs)} second sentences; give one per text")
        if batch_size < 1:
            raise JaxbertError(f"batch_size {batch_size} must be positive")
        out = []
        for start in range(0, len(texts), batch_size):
            inputs = self._batch([self._ids(t, None if pairs is None else pairs[start + i])
                                  for i, t in enumerate(texts[start:start + batch_size])])
            vectors = np.asarray(self._encode(*inputs))
            out.extend(vectors[i, :n] for i, n in enumerate(np.asarray(inputs[2])))
        return out

    def fill_mask(self, text, top_k: int = 5) -> list[list[tuple[str, float]]]:
        """For each mask token in `text`, the MLM head's `top_k` (token, probability), most likely first."""
        ids, segments, lens = self._inputs(text)
        positions = np.flatnonzero(np.asarray(ids[0]) == self.specials.mask)
        if not len(positions):
            mask = self.tokenizer.id_to_token(self.specials.mask)
            raise JaxbertError(f"no {mask} in {text!r}; write {mask} where a word is to be guessed")
        mlm_logits, _ = self._heads(ids, segments, lens, jnp.asarray(positions[None], jnp.int32))
        probs = np.asarray(jax.nn.softmax(mlm_logits[0].astype(jnp.float32), axis=-1))  # (P, V)
        best = np.argsort(-probs, axis=-1, kind="stable")[:, :top_k]
        return [[(self.tokenizer.id_to_token(int(i)), float(p[i])) for i in row] for p, row in zip(probs, best)]

    def next_sentence(self, tokens_a, tokens_b) -> float:
        """The NSP head's probability that B follows A (for a SOP run: that A and B are in order)."""
        inputs = self._inputs(tokens_a, tokens_b)
        _, nsp_logits = self._heads(*inputs, jnp.zeros((1, 1), jnp.int32))
        return float(jax.nn.softmax(nsp_logits[0])[1])  # class 1 = "B follows A", the batch contract's label

    def _inputs(self, tokens_a, tokens_b=None):
        """(ids, segment ids, valid length) of one sentence or pair, as a batch of one."""
        return self._batch([self._ids(tokens_a, tokens_b)])

    def _batch(self, rows: list[tuple[list[int], list[int]]]):
        """(ids, segment ids, valid lengths) of tokenized rows, padded to the longest rounded up to a multiple of
        16 positions, so that texts of similar length share one compiled function (padding is attended by no one)."""
        lens = np.array([len(ids) for ids, _ in rows], np.int32)
        width = min(-(-int(lens.max()) // 16) * 16, self.config.model.max_position_embeddings)
        ids = np.full((len(rows), width), self.specials.pad, np.int32)
        segments = np.zeros_like(ids)
        for i, (row_ids, row_segments) in enumerate(rows):
            ids[i, :lens[i]], segments[i, :lens[i]] = row_ids, row_segments
        return jnp.asarray(ids), jnp.asarray(segments), jnp.asarray(lens)

    def _ids(self, tokens_a, tokens_b=None) -> tuple[list[int], list[int]]:
        enc = self.tokenizer.encode(*self._texts(tokens_a, tokens_b))
        n, max_len = len(enc.ids), self.config.model.max_position_embeddings
        if n > max_len:
            raise JaxbertError(f"{n} tokens exceed the model's {max_len} positions; shorten the text")
        return enc.ids, enc.type_ids

    @staticmethod
    def _texts(tokens_a, tokens_b):
        join = lambda t: t if isinstance(t, str) else " ".join(t)
        return (join(tokens_a),) if tokens_b is None else (join(tokens_a), join(tokens_b))


def load(run_dir: str | Path) -> Encoder:
    return Encoder(storage.path(run_dir))
