"""model.scan_layers and model.remat: the same function as the unrolled layers (outputs, gradients, optimizer
updates, a trained run and its transformers export), for every preset, with a compile time that does not grow
with depth."""

import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from test_model import expected_params, random_batch

from jaxbert import config
from jaxbert.interop import hf
from jaxbert.model.bert import BertForPreTraining
from jaxbert.training import optim, plan, train

from conftest import TINY


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


LR = 1e-2


def opt_config(algorithm: str) -> config.OptimConfig:
    return dataclasses.replace(config.OptimConfig(), algorithm=algorithm, weight_decay=0.1, learning_rate=LR,
                               warmup_steps=0)


def stack_layers(flat: dict) -> dict:
    """The inverse of hf.unstack_layers: per-layer parameters stacked on a leading axis, the scanned layout."""
    out, layers = {}, {}
    for path, value in flat.items():
        if "layers" not in path:
            out[path] = value
            continue
        i = path.index("layers") + 1
        layers.setdefault(path[:i] + path[i + 1:], {})[path[i]] = value
    out.update({path: jnp.stack([by_layer[k] for k in sorted(by_layer)]) for path, by_layer in layers.items()})
    return out


def own_gradients(model) -> dict:
    """The model's gradients of a loss on its MLM and NSP logits, flat, in the unrolled layout whatever its own."""
    def loss(m):
        _, mlm, nsp = m(*random_batch())
        return jnp.sum(mlm ** 2) + jnp.sum(nsp ** 2)

    flat = hf._flat(nnx.to_pure_dict(nnx.grad(loss)(model)))
    return hf.unstack_layers(flat) if model.scan_layers else flat


def one_update(model, grads: dict, algorithm: str) -> dict:
    """The first optimizer update of `model` given `grads` (flat, unrolled layout), in the unrolled layout."""
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    grads = hf._nest(stack_layers(grads) if model.scan_layers else grads)
    tx = optim.optimizer(opt_config(algorithm), 10)
    updates, _ = tx.update(grads, tx.init(params), params)
    flat = hf._flat(updates)
    return hf.unstack_layers(flat) if model.scan_layers else flat


def gradient_tolerance(grads: dict) -> dict:
    """How far each gradient element may move between the layouts, from float32 arithmetic. Each element is a
    sum over the batch and the layers above it; the layouts compile to different programs, so those sums run in
    other orders and fusions, each rounding to 6e-8 of the terms. Allowed: 1e-4 of the element, plus 1e-5 of
    the tensor's largest element (about 160 roundings at the tensor's scale: where terms cancel to a small
    element, their rounding stays), plus 1e-9 of the model's largest gradient for tensors whose exact gradient
    is zero (the key bias: softmax ignores a shift of a row's scores), which hold only the rounding of the
    terms that cancel (a few 1e-12 here, against a largest gradient of order 1). Measured on an AMD Zen 3: every
    difference under a fortieth of this. A layer's gradient dropped or swapped moves whole elements by their
    own size."""
    floor = 1e-9 * max(float(np.abs(np.asarray(g)).max()) for g in grads.values())
    return {k: 1e-4 * np.abs(np.asarray(g, np.float64)) + 1e-5 * float(np.abs(np.asarray(g)).max()) + floor
            for k, g in grads.items()}


def assert_same_gradients(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k, tol in gradient_tolerance(a).items():
        diff = np.abs(np.asarray(a[k], np.float64) - np.asarray(b[k], np.float64))
        assert (diff <= tol).all(), (k, float(diff.max()), float(tol.flat[np.argmax(diff - tol)]))


def assert_adam_updates_within_bound(grads_a, upd_a, upd_b) -> None:
    """The bound Adam's arithmetic allows, element by element, given gradients within gradient_tolerance of
    grads_a. At its first step Adam moves a parameter by lr * g / (|g| + eps) (both moments are bias-corrected
    to g and g**2), plus the decoupled weight decay, the same in both layouts. Between two gradients that map's
    slope is at most 1 / (min(|g_a|, |g_b|) + eps), so a gradient element near zero (of the order of
    eps = 1e-6) turns float noise into a large share of lr: 2e-4 of lr was seen on an AMD Zen 3 and a Zen 4.
    With t the gradient tolerance and c the global-norm clip factor:
    |u_a - u_b| <= lr * c * t / (c * max(|g_a| - t, 0) + eps) + 1e-6 * lr,
    the last term for about 16 float32 roundings of an update no larger than lr. Swapping or dropping a layer
    flips or zeroes whole updates of size lr, far outside this."""
    ocfg = opt_config("adam")
    norm = float(np.sqrt(sum(np.sum(np.square(np.asarray(g, np.float64))) for g in grads_a.values())))
    c = min(1.0, ocfg.clip_norm / norm) if ocfg.clip_norm > 0 else 1.0
    for k, t in gradient_tolerance(grads_a).items():
        g = np.abs(np.asarray(grads_a[k], np.float64))
        bound = LR * c * t / (c * np.maximum(g - t, 0.0) + ocfg.eps) + 1e-6 * LR
        diff = np.abs(np.asarray(upd_a[k], np.float64) - np.asarray(upd_b[k], np.float64))
        assert (diff <= bound).all(), (k, float(diff.max()), float(bound.flat[np.argmax(diff - bound)]))


@pytest.mark.parametrize("algorithm", ["adam", "lamb"])
def test_optimizer_updates_are_the_same_in_both_layouts(algorithm):
    """Same gradients in both layouts, the same update from the same gradients (weight decay spares stacked
    biases and LayerNorm scales too, LAMB's trust ratio is per layer), and for Adam the update each layout takes
    from its own gradients, within the bound its arithmetic allows."""
    unrolled = BertForPreTraining(small(), rngs=nnx.Rngs(0))
    scanned = BertForPreTraining(small(scan_layers=True), rngs=nnx.Rngs(0))
    grads_u, grads_s = own_gradients(unrolled), own_gradients(scanned)
    assert_same_gradients(grads_u, grads_s)
    # One set of gradients through both layouts: what differs is only how the optimizer sees the tree (global
    # norm, decay mask, trust-ratio norms over other reductions), so the updates agree to float32 rounding of
    # values no larger than lr (LAMB: lr times a trust ratio near 1 here).
    same_u, same_s = one_update(unrolled, grads_u, algorithm), one_update(scanned, grads_u, algorithm)
    for k in same_u:
        np.testing.assert_allclose(np.asarray(same_s[k]), np.asarray(same_u[k]), rtol=1e-5, atol=1e-6 * LR,
                                   err_msg=str(k))
    if algorithm == "adam":
        assert_adam_updates_within_bound(grads_u, same_u, one_update(scanned, grads_s, algorithm))


def swapped(grads: dict, a: int, b: int) -> dict:
    out = dict(grads)
    for k in grads:
        if "layers" in k and k[k.index("layers") + 1] == a:
            i = k.index("layers") + 1
            other = k[:i] + (b,) + k[i + 1:]
            out[k], out[other] = grads[other], grads[k]
    return out


def test_the_layout_checks_fail_on_a_swapped_dropped_or_unstacked_layer(monkeypatch):
    """The tolerances above are loose only where the arithmetic says so: a layer's gradient swapped with
    another's or dropped, or a trust ratio taken over the whole stack, fails them."""
    unrolled = BertForPreTraining(small(), rngs=nnx.Rngs(0))
    scanned = BertForPreTraining(small(scan_layers=True), rngs=nnx.Rngs(0))
    grads_u, grads_s = own_gradients(unrolled), own_gradients(scanned)
    dropped = {k: (jnp.zeros_like(v) if k[:3] == ("layers", 1, "attention") else v) for k, v in grads_s.items()}
    upd_u = one_update(unrolled, grads_u, "adam")
    for bad in (swapped(grads_s, 0, 2), dropped):
        with pytest.raises(AssertionError):
            assert_same_gradients(grads_u, bad)
        with pytest.raises(AssertionError):
            assert_adam_updates_within_bound(grads_u, upd_u, one_update(scanned, bad, "adam"))
    # LAMB with one trust ratio for the whole stack, as optax's own would take it.
    lamb_u = one_update(unrolled, grads_u, "lamb")
    monkeypatch.setattr(optim, "_stacked", lambda path: False)
    lamb_s = one_update(scanned, grads_u, "lamb")
    assert any(not np.allclose(np.asarray(lamb_s[k]), np.asarray(lamb_u[k]), rtol=1e-5, atol=1e-6 * LR)
               for k in lamb_u)


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
