"""The optimizer and its schedules, by their defining properties."""

import math

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxbert.config import OptimConfig
from jaxbert.training import optim


@pytest.mark.parametrize("name, at_half_of_decay", [("constant", 1.0), ("linear", 0.5), ("cosine", 0.5)])
def test_warmup_then_decay(name, at_half_of_decay):
    lr = optim.schedule(OptimConfig(learning_rate=2e-3, warmup_steps=10, schedule=name), total_steps=110)
    assert float(lr(0)) == 0 and float(lr(5)) == pytest.approx(1e-3) and float(lr(10)) == pytest.approx(2e-3)
    assert float(lr(60)) == pytest.approx(2e-3 * at_half_of_decay, rel=1e-5)
    if name == "cosine":  # (1 + cos(pi t)) / 2 of the way through the decay
        assert float(lr(35)) == pytest.approx(1e-3 * (1 + math.cos(math.pi / 4)), rel=1e-5)
    assert float(lr(110)) == pytest.approx(0 if name != "constant" else 2e-3, abs=1e-9)


def test_wsd_holds_the_peak_then_decays_over_the_cooldown():
    lr = optim.schedule(OptimConfig(learning_rate=2e-3, warmup_steps=10, schedule="wsd", cooldown=0.2),
                        total_steps=110)  # 100 steps after warmup: stable to step 90, then 20 steps down to 0
    assert float(lr(5)) == pytest.approx(1e-3) and float(lr(10)) == pytest.approx(2e-3)
    assert float(lr(90)) == pytest.approx(2e-3) and float(lr(100)) == pytest.approx(1e-3, rel=1e-5)
    assert float(lr(110)) == pytest.approx(0, abs=1e-9)
    with pytest.raises(Exception, match=r"optim.cooldown=0.0 must lie in \(0, 1\]"):
        OptimConfig(schedule="wsd", cooldown=0.0)


def params():
    rng = np.random.default_rng(0)
    return {"kernel": jnp.asarray(3 * rng.normal(size=(8, 4)), jnp.float32), "bias": jnp.asarray(rng.normal(size=4),
                                                                                             jnp.float32)}


@pytest.mark.parametrize("algo", ["lamb", pytest.param("adam", marks=pytest.mark.xfail(strict=True))])
def test_lamb_scales_each_update_to_the_rate_times_the_tensors_norm(algo):
    """LAMB's trust ratio: a tensor's step has norm lr * ||tensor||, whatever the gradient's scale (Adam's
    does not: the check can fail)."""
    p = params()
    tx = optim.optimizer(OptimConfig(algorithm=algo, learning_rate=0.01, weight_decay=0.01, clip_norm=0), 10)
    for scale in (1e-3, 1e3):
        grads = {k: scale * jnp.ones_like(v) for k, v in p.items()}
        updates, _ = tx.update(grads, tx.init(p), p)
        for k in p:
            assert float(optax.tree.norm(updates[k])) == pytest.approx(0.01 * float(optax.tree.norm(p[k])), rel=1e-4)


@pytest.mark.parametrize("algorithm", ["adam", "lamb"])
def test_weight_decay_spares_biases(algorithm):
    """With a zero gradient only weight decay moves a parameter: matrices shrink, vectors stay."""
    p = params()
    tx = optim.optimizer(OptimConfig(algorithm=algorithm, learning_rate=0.1, weight_decay=0.5, clip_norm=0), 10)
    updates, _ = tx.update({k: jnp.zeros_like(v) for k, v in p.items()}, tx.init(p), p)
    assert float(jnp.abs(updates["bias"]).max()) == 0
    assert float(jnp.sum(updates["kernel"] * p["kernel"])) < 0  # towards zero
