"""Model shapes for every preset (no allocation), padding invariance, and the MLM head's gathering."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxbert import config
from jaxbert.model.bert import BertForPreTraining


def expected_params(m: config.ModelConfig) -> int:
    """`transformers.BertForPreTraining`'s parameter count, written out from its layer list."""
    d, f, v = m.hidden_size, m.intermediate_size, m.vocab_size
    embeddings = (v + m.max_position_embeddings + m.type_vocab_size) * d + 2 * d
    layer = 4 * (d * d + d) + 2 * d + (d * f + f) + (f * d + d) + 2 * d
    heads = (d * d + d) + (d * d + d + 2 * d + v) + (2 * d + 2)  # pooler, MLM transform + bias, NSP
    return embeddings + m.num_hidden_layers * layer + heads + (0 if m.tie_word_embeddings else d * v)


def abstract_params(m: config.ModelConfig):
    return nnx.state(nnx.eval_shape(lambda: BertForPreTraining(m, rngs=nnx.Rngs(0))), nnx.Param)


@pytest.mark.parametrize("name", list(config.PRESETS))
def test_every_preset_builds_with_the_right_shapes(name):
    m = dataclasses.replace(config.preset(name).model, vocab_size=30522)
    params = abstract_params(m)
    leaves = jax.tree.leaves(params)
    assert all(isinstance(x, jax.ShapeDtypeStruct) for x in leaves)  # nothing was allocated
    assert sum(int(np.prod(x.shape)) for x in leaves) == expected_params(m)
    layer = params["layers"][m.num_hidden_layers - 1]
    assert layer["attention"]["query"]["kernel"].shape == (m.hidden_size, m.hidden_size)
    assert layer["intermediate"]["kernel"].shape == (m.hidden_size, m.intermediate_size)
    assert params["embeddings"]["word_embeddings"]["embedding"].shape == (30522, m.hidden_size)


def test_bert_base_has_the_published_parameter_count():
    m = dataclasses.replace(config.preset("bert-base").model, vocab_size=30522)
    assert sum(int(np.prod(x.shape)) for x in jax.tree.leaves(abstract_params(m))) == 110_106_428


def tiny_model(**kw):
    m = dataclasses.replace(config.preset("d2l-tiny").model, vocab_size=50, hidden_size=16, intermediate_size=32,
                            **kw)
    return BertForPreTraining(m, rngs=nnx.Rngs(0))


def random_batch(seed=0, b=3, t=12, p=3):
    rng = np.random.default_rng(seed)
    valid = np.array([5, 12, 8])
    ids = rng.integers(5, 50, (b, t))
    segments = (np.arange(t)[None] >= valid[:, None] // 2).astype(np.int32)
    positions = np.stack([rng.choice(np.arange(1, v), p, replace=False) for v in valid])
    return jnp.asarray(ids), jnp.asarray(segments), jnp.asarray(valid), jnp.asarray(positions)


@pytest.mark.parametrize("tied", [False, True])
def test_padding_does_not_change_any_output(tied):
    model = tiny_model(tie_word_embeddings=tied)
    ids, segments, valid, positions = random_batch()
    past = jnp.arange(ids.shape[1])[None] >= valid[:, None]
    ids2 = jnp.where(past, (ids + 7) % 50, ids)  # other tokens and segments after the valid length
    segments2 = jnp.where(past, 1 - segments, segments)
    x1, mlm1, nsp1 = model(ids, segments, valid, positions)
    x2, mlm2, nsp2 = model(ids2, segments2, valid, positions)
    assert not jnp.allclose(x1, x2)  # padded positions themselves differ ...
    for row, v in enumerate(np.asarray(valid)):  # ... but nothing before the valid length does
        np.testing.assert_allclose(x1[row, :v], x2[row, :v], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(mlm1, mlm2, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(nsp1, nsp2, rtol=1e-5, atol=1e-6)
    assert mlm1.shape == (3, 3, 50) and nsp1.shape == (3, 2)


def test_fused_attention_is_the_written_out_form(monkeypatch):
    """`jax.nn.dot_product_attention` (what GPUs and TPUs run) gives the written-out attention's outputs and
    gradients, padded keys masked out; the CPU default is the written-out form. float32: the two differ only in
    scaling the scores by 1/sqrt(H) before or after the products, an ulp or so per score."""
    from jaxbert.model.bert import Attention

    model = tiny_model(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    ids, segments, valid, positions = random_batch()
    graphdef, params = nnx.split(model, nnx.Param)

    def run(fused):
        monkeypatch.setattr(Attention, "fused", fused)
        f = lambda p: nnx.merge(graphdef, p)(ids, segments, valid, positions)
        grads = jax.grad(lambda p: sum(jnp.sum(jnp.sin(o)) for o in f(p)))(params)
        return f(params), grads

    (outs_w, grads_w), (outs_f, grads_f) = run(False), run(True)
    for a, b in zip(outs_w, outs_f):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    for a, b in zip(jax.tree.leaves(grads_w), jax.tree.leaves(grads_f)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    monkeypatch.undo()
    assert Attention.fused is None  # by backend: the written-out form here, on a CPU


def test_mlm_logits_are_those_of_the_gathered_positions():
    model = tiny_model()
    ids, segments, valid, positions = random_batch()
    x, mlm, _ = model(ids, segments, valid, positions)
    h = x[1, positions[1, 2]][None, None]  # row 1, third prediction, computed by hand from the encoder output
    np.testing.assert_allclose(model.mlm(h, model.embeddings.word_embeddings.embedding[...])[0, 0], mlm[1, 2],
                               rtol=1e-5, atol=1e-6)


def test_dropout_is_active_only_in_training():
    model = tiny_model()
    ids, segments, valid, _ = random_batch()
    a = model.encode(ids, segments, valid)
    assert jnp.array_equal(a, model.encode(ids, segments, valid))
    b = model.encode(ids, segments, valid, deterministic=False, rngs=nnx.Rngs(dropout=1))
    assert not jnp.allclose(a, b)


@pytest.mark.parametrize("rate", [0.1, 0.2, 0.5])
def test_dropout_drops_at_its_rate_and_keeps_the_mean(rate):
    from jaxbert.model.bert import Dropout

    x = jnp.ones((64, 64, 128)) * 3.0
    y = np.asarray(Dropout(rate)(x, deterministic=False, rngs=nnx.Rngs(dropout=0)))
    dropped = (y == 0).mean()
    assert abs(dropped - rate) < 4 * np.sqrt(rate * (1 - rate) / y.size), dropped  # 4 standard errors
    assert np.allclose(y[y != 0], 3.0 / (1 - rate), rtol=1e-4)
    assert abs(y.mean() - 3.0) < 0.02
    # Neighbouring elements share a 32-bit word but not their bits: drops are not paired.
    pairs = (y.reshape(-1, 2) == 0).sum(axis=1)
    assert abs((pairs == 2).mean() - rate ** 2) < 0.01
    other = np.asarray(Dropout(rate)(x, deterministic=False, rngs=nnx.Rngs(dropout=1)))
    assert not np.array_equal(y == 0, other == 0)
    assert np.array_equal(np.asarray(Dropout(rate)(x, deterministic=True, rngs=None)), np.asarray(x))


def test_mixed_matmul_sums_bfloat16_products_in_float32():
    """model.dtype=bfloat16 runs its dense layers and MLM decoder through `mixed_matmul`: bf16 operands, float32
    sums on the forward pass and on both backward matmuls."""
    from jaxbert.model.bert import mixed_matmul

    rng = np.random.default_rng(0)
    f32, bf16 = jnp.float32, jnp.bfloat16
    x, w = jnp.asarray(rng.normal(size=(64, 512)), bf16), jnp.asarray(rng.normal(size=(512, 40)), bf16)
    exact = lambda a, b: a.astype(f32) @ b.astype(f32)  # the bf16 values' products, summed in float32

    def float32_sums(a, b):
        """Two float32 sums of the same n products in other orders (XLA's kernels differ by CPU: AVX2,
        AVX-512, AMX) each stray from the exact sum by about sqrt(n) roundings of 2**-24 times the sum of the
        terms' sizes; four times that as the bound. With n = 512 it stays under 2e-3 of outputs of order 20,
        far below the 0.06 a bf16 output loses, which the check after it must see."""
        terms = np.abs(np.asarray(a, np.float64)) @ np.abs(np.asarray(b, np.float64))
        return 4 * np.sqrt(a.shape[1]) * 2 ** -24 * terms

    y = mixed_matmul(x, w)
    assert y.dtype == f32
    assert (np.abs(np.asarray(y, np.float64) - np.asarray(exact(x, w), np.float64)) <= float32_sums(x, w)).all()
    assert float(jnp.abs((x @ w).astype(f32) - exact(x, w)).max()) > 1e-2  # a bf16 result would be told apart
    g = jnp.asarray(rng.normal(size=(64, 40)), f32)
    dx, dw = jax.vjp(mixed_matmul, x, w)[1](g)
    assert dx.dtype == bf16 and dw.dtype == bf16
    gb = g.astype(bf16)
    # Rounded to bf16 after the float32 sum: one bf16 step (2**-8 relative, so rtol 2**-7) on top of the sums'.
    for got, a, b in ((dx, gb, w.T), (dw, x.T, gb)):
        want = np.asarray(exact(a, b).astype(bf16).astype(f32), np.float64)
        assert (np.abs(np.asarray(got.astype(f32), np.float64) - want)
                <= 2 ** -7 * np.abs(want) + float32_sums(a, b)).all()


def test_accelerators_run_plain_bfloat16_dots_and_the_same_function(monkeypatch):
    """On GPUs and TPUs a bf16 model takes no CPU workaround: plain bf16 dots in its dense layers and
    `jax.nn.dot_product_attention`. Built as on a GPU (here on the CPU), it computes what the CPU build computes
    from the same parameters, to bf16's rounding."""
    from jaxbert.model import bert

    m = dataclasses.replace(config.preset("bert-tiny").model, vocab_size=500, dtype="bfloat16",
                            hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    on_cpu = BertForPreTraining(m, rngs=nnx.Rngs(0))
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    on_gpu = BertForPreTraining(m, rngs=nnx.Rngs(0))
    assert on_cpu.layers[0].intermediate.dot_general is bert._mixed_dot_general
    assert on_gpu.layers[0].intermediate.dot_general is not bert._mixed_dot_general
    rng = np.random.default_rng(0)
    ids = jnp.asarray(rng.integers(5, 500, (4, 32)), jnp.int32)
    args = (ids, jnp.zeros_like(ids), jnp.asarray([32, 20, 9, 3]), jnp.asarray(rng.integers(0, 9, (4, 5))))
    gpu_out = on_gpu(*args)  # the accelerator path: jax.nn.dot_product_attention, plain dots
    monkeypatch.undo()
    cpu_out = on_cpu(*args)
    for got, want in zip(gpu_out, cpu_out, strict=True):
        got, want = np.asarray(got, np.float32), np.asarray(want, np.float32)
        assert np.isfinite(got).all()
        # Each side rounds every layer's outputs to bf16 (2**-8) at different points: a few such steps of the
        # values' scale through two layers.
        np.testing.assert_allclose(got, want, rtol=0, atol=2**-4 * np.abs(want).max())
