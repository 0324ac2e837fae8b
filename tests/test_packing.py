"""The MLM head on real predictions only (`train.forward(..., mlm_capacity=K)`): the same loss, accuracy and
gradients as on every slot, whether the batch's real predictions fit in K rows (packed) or not (the unpacked
fallback). `jaxbert pretrain` does not pack: on CPU it measured slower (docs/performance.md)."""

import jax
import numpy as np
import pytest
from flax import nnx

from jaxbert import config
from jaxbert.data import batches
from jaxbert.training import optim, train

from conftest import TINY


@pytest.fixture(scope="module")
def setup(wikitext_slice):
    cfg = config.override(config.preset("d2l-tiny"), TINY + ["model.hidden_dropout_prob=0",
                                                             "model.attention_probs_dropout_prob=0"])
    tok, train_set, _ = batches.load(batches.locate(str(wikitext_slice)), cfg.data)
    cfg = config.override(cfg, [f"model.vocab_size={tok.get_vocab_size()}"])
    graphdef, state = train.init_state(cfg, optim.optimizer(cfg.optim, 10))
    return graphdef, state.params, train_set


def metrics_and_grads(graphdef, params, batch, capacity):
    def loss(p):
        m = train.forward(graphdef, p, batch, deterministic=True, with_nsp=True, mlm_capacity=capacity)
        return m["loss"], m

    (_, m), g = jax.value_and_grad(loss, has_aux=True)(params)
    return m, g


@pytest.mark.parametrize("fits", [True, False])
def test_packed_predictions_give_the_same_loss_and_gradients(setup, fits):
    graphdef, params, train_set = setup
    batch = train_set.batch(3, 16)
    real = int((batch["masked_weights"] > 0).sum())
    assert real < batch["masked_weights"].size  # some slots are padding: packing has work to leave out
    capacity = real + 3 if fits else real - 1  # packed, or the unpacked fallback
    want, want_g = metrics_and_grads(graphdef, params, batch, None)
    got, got_g = metrics_and_grads(graphdef, params, batch, capacity)
    assert want.keys() == got.keys()
    for k in want:
        np.testing.assert_allclose(float(got[k]), float(want[k]), rtol=1e-5, err_msg=k)
    for a, b in zip(jax.tree.leaves(nnx.to_pure_dict(want_g)), jax.tree.leaves(nnx.to_pure_dict(got_g)),
                    strict=True):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-4, atol=1e-7)


def test_the_capacity_covers_the_probed_batches(setup):
    _, _, train_set = setup
    k = train.pack_capacity(train_set, 64)
    assert k is not None and k % 8 == 0 and k <= 0.9 * 64 * train_set.cfg.num_predictions
    assert all((train_set.batch(s, 64)["masked_weights"] > 0).sum() <= k for s in range(16))
