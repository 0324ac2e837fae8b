"""Load a trained run and turn a sentence or a sentence pair into contextual vectors (the book's
`get_bert_encoding`).

    enc = jaxbert.load("runs/d2l-tiny")
    enc.encode("a crane is flying").shape                    # (1, 6, 128)
    enc.encode(["a", "crane", "driver", "came"], ["he", "just", "left"]).shape   # (1, 10, 128)
"""

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxbert import checkpoint, rundir
from jaxbert import tokenizer as tokenizers
from jaxbert.config import Config
from jaxbert.model import BertForPreTraining


def restore_run(run_dir: Path):
    """(config, tokenizer, model with the latest checkpoint's parameters, step) of a run directory."""
    run_dir = rundir.require_run(run_dir)
    cfg = Config.load(run_dir / rundir.CONFIG)
    tok = tokenizers.load(run_dir / rundir.TOKENIZER)
    abstract = nnx.eval_shape(lambda: BertForPreTraining(cfg.model, rngs=nnx.Rngs(0)))
    graphdef, abstract_params = nnx.split(abstract, nnx.Param)
    step = rundir.latest_step(run_dir)
    params, _ = checkpoint.restore(checkpoint.manager(run_dir), step, abstract_params)
    return cfg, tok, nnx.merge(graphdef, params), step


class Encoder:
    """A trained BERT encoder with its tokenizer; dropout is off."""

    def __init__(self, run_dir: Path):
        self.config, self.tokenizer, self.model, self.step = restore_run(run_dir)
        self._encode = nnx.jit(lambda m, ids, segs, lens: m.encode(ids, segs, lens))

    def tokens(self, tokens_a, tokens_b=None) -> list[str]:
        """`<cls> A <sep>` or `<cls> A <sep> B <sep>`, as the tokenizer spells its specials."""
        return self.tokenizer.encode(*self._texts(tokens_a, tokens_b)).tokens

    def encode(self, tokens_a, tokens_b=None) -> jax.Array:
        """(1, T, D) vectors, `<cls>` first; tokens are a string or a list of words."""
        enc = self.tokenizer.encode(*self._texts(tokens_a, tokens_b))
        max_len = self.config.model.max_position_embeddings
        if len(enc.ids) > max_len:
            raise ValueError(f"{len(enc.ids)} tokens exceed the model's {max_len} positions")
        ids = jnp.asarray(np.array([enc.ids], np.int32))
        segments = jnp.asarray(np.array([enc.type_ids], np.int32))
        return self._encode(self.model, ids, segments, jnp.array([len(enc.ids)], jnp.int32))

    @staticmethod
    def _texts(tokens_a, tokens_b):
        join = lambda t: t if isinstance(t, str) else " ".join(t)
        return (join(tokens_a),) if tokens_b is None else (join(tokens_a), join(tokens_b))


def load(run_dir: str | Path) -> Encoder:
    return Encoder(Path(run_dir))
