"""model.scan_layers and model.remat: the same function as the unrolled layers (outputs, gradients, optimizer
updates, a trained run and its transformers export), for every preset, with a compile time that does not grow
with depth."""

import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from conftest import TINY
from jaxbert import config, hf, optim, plan, train
from jaxbert.model import BertForPreTraining
from test_model import expected_params, random_batch


def small(**kw) -> config.ModelConfig:
    return dataclasses.replace(config.preset("bert-tiny").model, vocab_size=50, hidden_size=16, intermediate_size=32,
                               num_hidden_layers=3, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, **kw)


def params(model) -> dict:
    """Flat parameters in the unrolled layout, whichever layout `model` has."""
    flat = hf._flat(nnx.to_pure_dict(nnx.state(model, nnx.Param)))
    return hf.unstack_layers(flat) if model.scan_layers else flat


def test_a_scanned_model_starts_from_the_unrolled_ones_parameters():
    unrolled, scanned = params(BertForPreTraining(small(), rngs=nnx.Rngs(0))), params(
        BertForPreTraining(small(scan_layers=True), rngs=nnx.Rngs(0)))
    assert unrolled.keys() == scanned.keys() and ("layers", 2, "output", "kernel") in scanned
    for k in unrolled:
        np.testing.assert_array_equal(np.asarray(unrolled[k]), np.asarray(scanned[k]), err_msg=str(k))


def loss_and_grads(model, batch):
    ids, segments, valid, positions = batch

    def loss(model):
        x, mlm, nsp = model(ids, segments, valid, positions)
        return jnp.sum(x ** 2) * 1e-3 + jnp.sum(jax.nn.log_softmax(mlm)[..., 7]) + jnp.sum(nsp[:, 1])

    value, grads = nnx.value_and_grad(loss)(model)
    return value, hf._flat(nnx.to_pure_dict(grads))


@pytest.mark.parametrize("scan, remat", [(True, False), (False, True), (True, True)])
def test_scan_and_remat_compute_what_the_unrolled_layers_do(scan, remat):
    unrolled = BertForPreTraining(small(), rngs=nnx.Rngs(0))
    other = BertForPreTraining(small(scan_layers=scan, remat=remat), rngs=nnx.Rngs(0))
    batch = random_batch()
    for a, b in zip(unrolled(*batch), other(*batch), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
    (va, ga), (vb, gb) = loss_and_grads(unrolled, batch), loss_and_grads(other, batch)
    np.testing.assert_allclose(float(va), float(vb), rtol=1e-5)
    gb = hf.unstack_layers(gb) if scan else gb
    assert ga.keys() == gb.keys()
    for k in ga:
        np.testing.assert_allclose(np.asarray(ga[k]), np.asarray(gb[k]), rtol=1e-4, atol=1e-6, err_msg=str(k))
    # Flipping the layer order must show: the check above is not blind to which layer is which.
    if scan:
        flipped = jax.tree.map(lambda x: x[::-1], nnx.state(other.layers, nnx.Param))
        nnx.update(other.layers, flipped)
        assert not np.allclose(np.asarray(unrolled(*batch)[0]), np.asarray(other(*batch)[0]), rtol=1e-5, atol=1e-6)


def test_dropout_runs_inside_the_scan():
    cfg = dataclasses.replace(small(scan_layers=True, remat=True), hidden_dropout_prob=0.2)
    model = BertForPreTraining(cfg, rngs=nnx.Rngs(0))
    batch = random_batch()
    a = model(*batch, deterministic=False, rngs=nnx.Rngs(dropout=1))[0]
    b = model(*batch, deterministic=False, rngs=nnx.Rngs(dropout=2))[0]
    c = model(*batch)[0]
    assert np.isfinite(np.asarray(a)).all() and not np.allclose(a, b) and not np.allclose(a, c)


@pytest.mark.parametrize("name", list(config.PRESETS))
def test_every_preset_builds_scanned_without_allocating(name):
    m = dataclasses.replace(config.preset(name).model, vocab_size=30522, scan_layers=True)
    params = nnx.state(nnx.eval_shape(lambda: BertForPreTraining(m, rngs=nnx.Rngs(0))), nnx.Param)
    leaves = jax.tree.leaves(params)
    assert all(isinstance(x, jax.ShapeDtypeStruct) for x in leaves)
    assert sum(int(np.prod(x.shape)) for x in leaves) == expected_params(m)
    assert params["layers"]["attention"]["query"]["kernel"].shape == (m.num_hidden_layers, m.hidden_size,
                                                                       m.hidden_size)


@pytest.mark.parametrize("algorithm", ["adam", "lamb"])
def test_optimizer_updates_are_the_same_in_both_layouts(algorithm):
    """Weight decay spares stacked biases and LayerNorm scales too, and LAMB's trust ratio is per layer."""
    ocfg = dataclasses.replace(config.OptimConfig(), algorithm=algorithm, weight_decay=0.1, learning_rate=1e-2,
                               warmup_steps=0)
    unrolled = BertForPreTraining(small(), rngs=nnx.Rngs(0))
    scanned = BertForPreTraining(small(scan_layers=True), rngs=nnx.Rngs(0))
    new = {}
    for name, model in (("unrolled", unrolled), ("scanned", scanned)):
        _, grads = nnx.value_and_grad(lambda m: jnp.sum(m(*random_batch())[1] ** 2))(model)
        params = nnx.state(model, nnx.Param)
        tx = optim.optimizer(ocfg, 10)
        updates, _ = tx.update(nnx.state(grads, nnx.Param), tx.init(params), params)
        flat = hf._flat(nnx.to_pure_dict(optax.apply_updates(params, updates)))
        new[name] = hf.unstack_layers(flat) if name == "scanned" else flat
    for k in new["unrolled"]:
        # Adam divides by |gradient|: float noise in a near-zero gradient moves its update by up to 1e-4 of lr.
        np.testing.assert_allclose(np.asarray(new["unrolled"][k]), np.asarray(new["scanned"][k]), rtol=1e-5,
                                   atol=1e-6, err_msg=str(k))


def compile_seconds(layers: int) -> float:
    cfg = config.override(config.preset("bert-large"), ["model.scan_layers=true", "model.remat=true",
                                                        f"model.num_hidden_layers={layers}", "data.max_len=128"])
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, vocab_size=30522))
    start = time.perf_counter()
    plan.lowered_step(cfg, 2).compile()
    return time.perf_counter() - start


@pytest.mark.slow
def test_bert_large_compiles_in_about_the_time_of_two_of_its_layers():
    """With the layers scanned, 24 layers compile in about the time of 2 (unrolled, 12 times the code)."""
    two, large = compile_seconds(2), compile_seconds(24)
    assert large < 2.0 * two + 2.0, (two, large)


@pytest.mark.slow
def test_a_scanned_run_trains_like_an_unrolled_one_and_exports(wikitext_slice, tmp_path):
    transformers = pytest.importorskip("transformers")
    from hf_reference import RTOL, compare

    extra = TINY + ["train.steps=6", "model.hidden_dropout_prob=0", "model.attention_probs_dropout_prob=0"]
    curves = {}
    for name, flags in (("unrolled", []), ("scanned", ["model.scan_layers=true", "model.remat=true"])):
        train.run(config.override(config.preset("d2l-tiny"), extra + flags), tmp_path / name, data_dir=wikitext_slice)
        rows = [r for r in map(__import__("json").loads, (tmp_path / name / "metrics.jsonl").read_text().splitlines())
                if r.get("split") == "train"]
        curves[name] = np.array([(r["mlm_loss"], r["nsp_loss"]) for r in rows])
    np.testing.assert_allclose(curves["unrolled"], curves["scanned"], rtol=2e-5)
    hf.export(tmp_path / "scanned", tmp_path / "hf")
    model = transformers.BertForPreTraining.from_pretrained(tmp_path / "hf")
    errors = compare(model, tmp_path / "scanned")
    assert all(e < RTOL for e in errors.values()), errors
