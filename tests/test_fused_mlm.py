"""The fused MLM output layer (model/fused_mlm.py) against the plain one: the same loss, accuracy and gradients.

Tolerances: the fused form sums the same float32 terms in another order (the logsumexp chunk by chunk, the
gradients of the kernel and bias chunk by chunk), so the two differ by at most about n * 2**-24 of the summed
magnitude, n the number of terms in the longest sum (the vocabulary, or the rows). The bounds below use
n * 2**-23 of the largest value; a dropped or doubled term (the label's gradient, a padded column) is off by
order one.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxbert import config
from jaxbert.data import batches
from jaxbert.model import fused_mlm, losses
from jaxbert.model.bert import mixed_matmul
from jaxbert.training import optim, train

from conftest import TINY

EPS32 = 2.0**-23


def problem(rows=96, d=32, v=1000, seed=0, dtype=jnp.float32):
    rng = np.random.default_rng(seed)
    h = rng.normal(size=(rows, d))
    kernel = rng.normal(size=(d, v)) * 0.3
    labels = rng.integers(0, v, rows)
    # A third of the rows point at their label's column: those predict it, so the accuracy has something to count.
    third = kernel[:, labels[: rows // 3]].T
    h[: rows // 3] += 8 * third / np.linalg.norm(third, axis=1, keepdims=True)
    bias = rng.normal(size=v) * 0.1
    weights = (rng.random(rows) < 0.75).astype(np.float32)
    return (jnp.asarray(h, dtype), jnp.asarray(kernel, dtype), jnp.asarray(bias, jnp.float32),
            jnp.asarray(labels, jnp.int32), jnp.asarray(weights))


def plain(h, kernel, bias, labels, weights):
    logits = (h @ kernel if h.dtype == jnp.float32 else mixed_matmul(h, kernel)) + bias
    return losses.mlm_metrics(logits[None], labels[None], weights[None])


def value_and_grads(fn, h, kernel, bias, labels, weights):
    def loss(h, kernel, bias):
        m = fn(h, kernel, bias, labels, weights)
        return m["mlm_loss"], m

    (_, m), g = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))(h, kernel, bias)
    return m, g


@pytest.mark.parametrize("chunk", [128, 300, 1000, 4096])  # several slabs, a padded last slab, one, one padded
def test_fused_float32_equals_plain(chunk):
    args = problem()
    want, want_g = value_and_grads(plain, *args)
    got, got_g = value_and_grads(lambda *a: fused_mlm.mlm_metrics(*a, chunk=chunk), *args)
    v, rows = args[1].shape[1], args[0].shape[0]
    assert 0.2 < float(want["mlm_acc"]) < 0.6  # the bias makes about a third right
    assert float(got["mlm_acc"]) == float(want["mlm_acc"])  # a count of exact comparisons: no tolerance
    np.testing.assert_allclose(float(got["mlm_loss"]), float(want["mlm_loss"]), rtol=v * EPS32)
    for name, a, b in zip(("h", "kernel", "bias"), want_g, got_g, strict=True):
        bound = max(v, rows) * EPS32 * float(jnp.abs(a).max())
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=0, atol=bound, err_msg=name)


def test_fused_counts_a_label_tied_with_the_max_as_correct():
    h, kernel, bias, labels, weights = problem(rows=8, v=64)
    kernel = kernel.at[:, :].set(0.0)
    bias = jnp.zeros_like(bias)  # every logit 0: every label ties with the max, as the plain form counts it
    got = fused_mlm.mlm_metrics(h, kernel, bias, labels, weights, chunk=16)
    assert float(got["mlm_acc"]) == 1.0
    np.testing.assert_allclose(float(got["mlm_loss"]), np.log(64), rtol=64 * EPS32)


def test_fused_bfloat16_equals_the_plain_bfloat16_layer():
    """bf16 operands with float32 sums in both; each side rounds its backward products to bf16 (2**-8)."""
    args = problem(dtype=jnp.bfloat16)
    want, want_g = value_and_grads(plain, *args)
    got, got_g = value_and_grads(lambda *a: fused_mlm.mlm_metrics(*a, chunk=256), *args)
    np.testing.assert_allclose(float(got["mlm_loss"]), float(want["mlm_loss"]), rtol=1000 * EPS32)
    assert abs(float(got["mlm_acc"]) - float(want["mlm_acc"])) <= 1 / 72  # one row of 72 weighted may flip
    for name, a, b in zip(("h", "kernel", "bias"), want_g, got_g, strict=True):
        a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
        np.testing.assert_allclose(b, a, rtol=0, atol=2**-6 * np.abs(a).max(), err_msg=name)


@pytest.fixture(scope="module")
def setup(wikitext_slice):
    cfg = config.override(config.preset("d2l-tiny"), TINY + ["model.hidden_dropout_prob=0",
                                                             "model.attention_probs_dropout_prob=0"])
    tok, train_set, _ = batches.load(batches.locate(str(wikitext_slice)), cfg.data)
    cfg = config.override(cfg, [f"model.vocab_size={tok.get_vocab_size()}"])
    graphdef, state = train.init_state(cfg, optim.optimizer(cfg.optim, 10))
    return graphdef, state.params, train_set


@pytest.mark.parametrize("capacity", [None, "fits"])
def test_the_train_step_forward_is_the_same_fused(setup, capacity):
    graphdef, params, train_set = setup
    batch = train_set.batch(2, 16)
    capacity = None if capacity is None else int((batch["masked_weights"] > 0).sum()) + 5

    def run(chunk):
        def loss(p):
            m = train.forward(graphdef, p, batch, deterministic=True, with_nsp=True, mlm_capacity=capacity,
                              mlm_chunk=chunk)
            return m["loss"], m

        (_, m), g = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
        return m, jax.tree.leaves(nnx.to_pure_dict(g))

    (want, want_g), (got, got_g) = run(0), run(256)
    v = int(params["embeddings"]["word_embeddings"]["embedding"].shape[0])
    assert want.keys() == got.keys()
    assert float(got["mlm_acc"]) == float(want["mlm_acc"])
    for k in ("loss", "mlm_loss", "nsp_loss"):
        np.testing.assert_allclose(float(got[k]), float(want[k]), rtol=v * EPS32, err_msg=k)
    # A leaf whose gradient cancels to about 0 (a LayerNorm bias before a mean) keeps rounding noise of the size of
    # the terms that cancelled: the bound is scaled by the largest gradient of all, not the leaf's own.
    scale = max(float(np.abs(a).max()) for a in want_g)
    for a, b in zip(want_g, got_g, strict=True):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=0, atol=v * EPS32 * scale)
