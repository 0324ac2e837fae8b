"""What the transformers tests share: the reference comparison on a padded batch, a small WordPiece vocabulary,
and sentence pairs whose NSP answer is known. Imported by the tests after they have checked for torch."""

import jax.numpy as jnp
import numpy as np
import torch

from jaxbert.data import tokenization
from jaxbert.encode import restore_run

RTOL = 1e-4


def rel_err(ours, theirs):
    ours, theirs = np.asarray(ours), np.asarray(theirs)
    return float(np.abs(ours - theirs).max() / np.abs(theirs).max())


def batch(vocab_size, seed=0):
    """Two sentence pairs with padding, and three MLM positions per row."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, vocab_size, (2, 12))
    ids[:, 0], valid = 2, np.array([12, 8])
    ids[1, 8:] = 0
    segments = (np.arange(12)[None] >= np.array([[6], [4]])).astype(np.int64) * (np.arange(12)[None] < valid[:, None])
    positions = np.array([[1, 4, 9], [2, 3, 6]])
    return ids, segments, valid, positions


def compare(model_dir_or_hf, run_dir, heads=("mlm", "nsp")):
    """Max relative errors of hidden states (valid positions), MLM logits (masked positions), NSP logits."""
    hf_model = model_dir_or_hf.eval()
    _, _, ours, _ = restore_run(run_dir)
    v = hf_model.config.vocab_size
    ids, segments, valid, positions = batch(v)
    mask = (np.arange(12)[None] < valid[:, None]).astype(np.int64)
    with torch.no_grad():
        out = hf_model(input_ids=torch.tensor(ids), token_type_ids=torch.tensor(segments),
                       attention_mask=torch.tensor(mask), output_hidden_states=True)
    x, mlm, nsp = ours(jnp.asarray(ids, jnp.int32), jnp.asarray(segments, jnp.int32), jnp.asarray(valid, jnp.int32),
                       jnp.asarray(positions, jnp.int32))
    hidden = out.hidden_states[-1].numpy()
    errors = {"hidden": max(rel_err(np.asarray(x)[r, :n], hidden[r, :n]) for r, n in enumerate(valid))}
    if "mlm" in heads:
        logits = out.prediction_logits.numpy() if hasattr(out, "prediction_logits") else out.logits.numpy()
        errors["mlm"] = rel_err(mlm, np.take_along_axis(logits, positions[..., None], axis=1))
    if "nsp" in heads:  # jaxbert's class 1 is "B follows A", transformers' class 0
        errors["nsp"] = rel_err(np.asarray(nsp)[:, ::-1], out.seq_relationship_logits.numpy())
    return errors


def wordpiece_files(folder, vocab_size):
    tok = tokenization.train_wordpiece([f"the quick brown fox number {i} jumps over it" for i in range(200)],
                                     vocab_size)
    tokenization.save_vocab(tok, folder / "vocab.txt")
    return tok


def pair_sets(wikitext_slice, n=12):
    """(true next-sentence pairs, random pairs): consecutive sentences of one paragraph of the held-out
    WikiText, and a first sentence with the sentence of a paragraph far away."""
    paragraphs = [[s.strip() for s in line.split(" . ") if 3 <= len(s.split()) <= 12]
                  for line in (wikitext_slice / "wiki.valid.tokens").read_text().splitlines()]
    paragraphs = [p for p in paragraphs if len(p) >= 2]
    true = [(p[0], p[1]) for p in paragraphs[:n]]
    random = [(p[0], q[1]) for p, q in zip(paragraphs[:n], paragraphs[-n:])]
    return true, random


def fit_separator(pooled_true, pooled_random) -> np.ndarray:
    """(D + 1,) weights w with [pooled, 1] @ w = +4 on true pairs and -4 on random ones (least squares,
    exact while there are fewer pairs than dimensions)."""
    x = np.concatenate([pooled_true, pooled_random])
    x = np.concatenate([x, np.ones((len(x), 1))], axis=1)
    y = np.r_[np.full(len(pooled_true), 4.0), np.full(len(pooled_random), -4.0)]
    return np.linalg.lstsq(x, y, rcond=None)[0]
