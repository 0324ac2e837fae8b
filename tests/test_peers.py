"""The speed benchmark's transformers peer (benchmarks/peers.py) computes jaxbert's W1 loss: the same batch and
parameters (a jaxbert run exported to transformers) give the same MLM + NSP loss."""

import os
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from jaxbert import config  # noqa: E402
from jaxbert.data import batches
from jaxbert.encode import restore_run  # noqa: E402
from jaxbert.interop import hf
from jaxbert.model import losses
from jaxbert.training import train

from conftest import REPO, TINY  # noqa: E402

sys.path.insert(0, str(REPO / "benchmarks"))
import peers  # noqa: E402


def test_the_transformers_peer_computes_jaxberts_loss(wikitext_slice, tmp_path):
    cfg = config.override(config.preset("d2l-tiny"), TINY + ["train.steps=3", "model.hidden_size=128",
                                                             "model.intermediate_size=256"])
    train.run(cfg, tmp_path / "run", data_dir=wikitext_slice)
    hf.export(tmp_path / "run", tmp_path / "hf")
    theirs_model = transformers.BertForPreTraining.from_pretrained(tmp_path / "hf").eval()
    run_cfg, tok, model, _ = restore_run(tmp_path / "run")
    _, train_set, _ = batches.load(batches.locate(str(wikitext_slice)), run_cfg.data, tok)
    batch = train_set.batch(0, 16)
    assert 0 < batch["masked_weights"].sum() < batch["masked_weights"].size  # padding slots are in play

    def ours(b):
        _, mlm, nsp = model(b["input_ids"], b["segment_ids"], b["valid_lens"], b["masked_positions"])
        return float(losses.pretraining_metrics(mlm, nsp, b)["loss"])

    def theirs(b):
        with torch.no_grad():
            return float(peers.transformers_loss(theirs_model, {k: torch.from_numpy(v) for k, v in b.items()}))

    np.testing.assert_allclose(theirs(batch), ours(batch), rtol=1e-5)
    # The NSP label order crosses the boundary: flipped labels change both losses, and they still agree.
    flipped = dict(batch, nsp_labels=1 - batch["nsp_labels"])
    assert abs(ours(flipped) - ours(batch)) > 1e-3
    np.testing.assert_allclose(theirs(flipped), ours(flipped), rtol=1e-5)


def head_logits(seed: int = 0, b: int = 8, p: int = 5, v: int = 50):
    """MLM and NSP logits and a batch whose prediction slots are partly padding (weight 0)."""
    rng = np.random.default_rng(seed)
    weights = (np.arange(p)[None] < rng.integers(1, p, b)[:, None]).astype(np.float32)
    batch = {"masked_ids": rng.integers(0, v, (b, p)).astype(np.int32), "masked_weights": weights,
             "nsp_labels": rng.integers(0, 2, b).astype(np.int32)}
    return (rng.normal(size=(b, p, v)) * 3).astype(np.float32), (rng.normal(size=(b, 2)) * 3).astype(np.float32), batch


def jaxbert_loss(mlm, nsp, batch) -> float:
    return float(losses.pretraining_metrics(mlm, nsp, batch)["loss"])


def test_the_book_jax_peer_computes_jaxberts_loss_from_the_same_logits():
    pytest.importorskip("d2l")
    mlm, nsp, batch = head_logits()
    # Two programs compute the same cross-entropies (log-softmax over 50 logits, a weighted mean over 40 slots)
    # in other orders: a few hundred float32 roundings of 6e-8 at worst, under 1e-5 of the loss; a label flipped
    # moves it by over 1e-2.
    np.testing.assert_allclose(float(peers.d2l_jax_batch_loss(mlm, nsp, batch)), jaxbert_loss(mlm, nsp, batch),
                               rtol=1e-5)
    flipped = dict(batch, nsp_labels=1 - batch["nsp_labels"])
    assert abs(jaxbert_loss(mlm, nsp, flipped) - jaxbert_loss(mlm, nsp, batch)) > 1e-2
    np.testing.assert_allclose(float(peers.d2l_jax_batch_loss(mlm, nsp, flipped)), jaxbert_loss(mlm, nsp, flipped),
                               rtol=1e-5)
    # The peer's model runs on a real W1-shaped batch and gives a loss near chance at initialisation.
    import jax

    model = peers.d2l_jax_model(50)
    b, t = 4, 16
    full = dict(batch, input_ids=np.ones((8, t), np.int32), segment_ids=np.zeros((8, t), np.int32),
                valid_lens=np.full(8, t, np.int32), masked_positions=np.tile(np.arange(5, dtype=np.int32), (8, 1)))
    params = model.init(jax.random.key(0), full["input_ids"][:b], full["segment_ids"][:b],
                        full["valid_lens"][:b].astype(np.float32), full["masked_positions"][:b])["params"]
    loss = float(peers.d2l_jax_loss(model, params, full))
    assert np.isfinite(loss) and np.log(50) - 1 < loss < np.log(50) + np.log(2) + 3


def test_the_keras_hub_peer_computes_jaxberts_loss_from_the_same_logits():
    os.environ.setdefault("KERAS_BACKEND", "jax")  # read when keras is first imported
    pytest.importorskip("keras_hub")
    mlm, nsp, batch = head_logits(1)
    model = peers.keras_compile(peers.keras_hub_model(50))

    def theirs(b):
        y, weights = peers.keras_targets(b)
        return float(model.compute_loss(y=y, y_pred={"mlm": mlm, "nsp": nsp}, sample_weight=weights))

    np.testing.assert_allclose(theirs(batch), jaxbert_loss(mlm, nsp, batch), rtol=1e-5)
    flipped = dict(batch, nsp_labels=1 - batch["nsp_labels"])
    assert abs(jaxbert_loss(mlm, nsp, flipped) - jaxbert_loss(mlm, nsp, batch)) > 1e-2
    np.testing.assert_allclose(theirs(flipped), jaxbert_loss(mlm, nsp, flipped), rtol=1e-5)


def test_the_books_pytorch_loss_averages_over_every_slot_padding_included():
    """The book's `_get_batch_loss_bert` with its `nn.CrossEntropyLoss()` (mean reduction) multiplies a scalar
    by the weights, so its MLM term is the mean over every slot: the peer does the same work as jaxbert, and its
    loss is jaxbert's with every slot weighted 1, which differs wherever slots are padding."""
    pytest.importorskip("d2l")
    mlm, nsp, batch = head_logits(2)
    d2l = peers.d2l_torch()
    t = {k: torch.from_numpy(v) for k, v in batch.items()}

    def book(loss):
        net = lambda *args: (None, torch.from_numpy(mlm), torch.from_numpy(nsp))
        return float(d2l._get_batch_loss_bert(net, loss, mlm.shape[-1], None, None, torch.zeros(1), None,
                                              t["masked_weights"], t["masked_ids"].long(), t["nsp_labels"].long())[2])

    every_slot = dict(batch, masked_weights=np.ones_like(batch["masked_weights"]))
    np.testing.assert_allclose(book(torch.nn.CrossEntropyLoss()), jaxbert_loss(mlm, nsp, every_slot), rtol=1e-5)
    assert abs(jaxbert_loss(mlm, nsp, every_slot) - jaxbert_loss(mlm, nsp, batch)) > 1e-2


@pytest.mark.slow
def test_the_device_check_runs_end_to_end_on_a_cpu(wikitext_dir, tmp_path):
    """benchmarks/device_check.py as a GPU session will run it, its W1 part on the CPU with one timed step per
    system: every system reports a finite, positive rate, and the JSON holds the devices and the MFU column."""
    import json
    import math
    import subprocess

    shared = wikitext_dir.parent
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "device_check.py"), "--device", "cpu",
                           "--parts", "w1", "--steps", "1", "--out", str(tmp_path), "--shared", str(shared),
                           "--slack", "5"], capture_output=True, text=True, timeout=900, cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "device_check.json").read_text())
    assert report["devices"]["backend"] == "cpu" and report["devices"]["devices"]
    rows = {row["system"]: row for row in report["w1"]["rows"] if "system" in row}
    assert set(rows) == {"jaxbert", "jaxbert-bf16", "transformers", "transformers-bf16"}, report["w1"]
    for row in rows.values():
        assert float(row["median pairs/s"]) > 0 and math.isfinite(float(row["first loss"]))
        assert 0 < row["MFU"] < 1
