"""The speed benchmark's transformers peer (benchmarks/peers.py) computes jaxbert's W1 loss: the same batch and
parameters (a jaxbert run exported to transformers) give the same MLM + NSP loss."""

import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from conftest import REPO, TINY  # noqa: E402
from jaxbert import config, data, hf, losses, train  # noqa: E402
from jaxbert.encode import restore_run  # noqa: E402

sys.path.insert(0, str(REPO / "benchmarks"))
import peers  # noqa: E402


def test_the_transformers_peer_computes_jaxberts_loss(wikitext_slice, tmp_path):
    cfg = config.override(config.preset("d2l-tiny"), TINY + ["train.steps=3", "model.hidden_size=128",
                                                             "model.intermediate_size=256"])
    train.run(cfg, tmp_path / "run", data_dir=wikitext_slice)
    hf.export(tmp_path / "run", tmp_path / "hf")
    theirs_model = transformers.BertForPreTraining.from_pretrained(tmp_path / "hf").eval()
    run_cfg, tok, model, _ = restore_run(tmp_path / "run")
    _, train_set, _ = data.load(data.locate(str(wikitext_slice)), run_cfg.data, tok)
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
