"""`jaxbert plan`: parameter counts against transformers' own, sizes per sharding mode, FLOPs against the
usual estimate, and the compiled step's activation memory."""

import json
import math
import os

import pytest

from jaxbert import cli, config
from jaxbert.errors import JaxbertError
from jaxbert.training import plan, train

from conftest import plausible_summary


# BertForPreTraining's parameter counts at a 30,522-token vocabulary (bert-base-uncased's 110,106,428 is the
# figure transformers reports for it); the compact sizes follow from the same formula.
def bert_for_pretraining(layers, hidden, vocab=30522, positions=512):
    ffn = 4 * hidden
    embeddings = (vocab + positions + 2) * hidden + 2 * hidden
    layer = 4 * (hidden * hidden + hidden) + 2 * hidden + (hidden * ffn + ffn) + (ffn * hidden + hidden) + 2 * hidden
    heads = (hidden * hidden + hidden) + (hidden * hidden + hidden) + 2 * hidden + vocab + (2 * hidden + 2)
    return embeddings + layers * layer + heads


def test_the_formula_matches_transformers_bert_base():
    assert bert_for_pretraining(12, 768) == 110_106_428


@pytest.mark.parametrize("name, layers, hidden", [("bert-tiny", 2, 128), ("bert-mini", 4, 256), ("bert-small", 4, 512),
                                                  ("bert-medium", 8, 512), ("bert-base", 12, 768)])
def test_every_preset_is_planned_without_allocating(name, layers, hidden):
    report = plan.plan(config.preset(name), devices=8, batch=64, compile_step=False)
    assert report["parameters"] == bert_for_pretraining(layers, hidden)
    data, fsdp = report["modes"]["data"], report["modes"]["fsdp"]
    assert data["parameters"] == 4 * report["parameters"] and data["optimizer state"] > 2 * data["parameters"]
    # FSDP: every matrix is split 8 ways; only vectors 8 does not divide stay whole (the 30,522 MLM biases).
    assert data["parameters"] / 8 <= fsdp["parameters"] < data["parameters"] / 8 * 1.06
    assert 0.9 < report["flops_per_step"] / report["flops_estimate"] < 1.2


def test_compiled_activation_memory_grows_with_the_batch():
    small = plan.plan(config.preset("bert-tiny"), devices=1, batch=8)
    large = plan.plan(config.preset("bert-tiny"), devices=1, batch=32)
    assert 0 < small["modes"]["data"]["activations"] < large["modes"]["data"]["activations"]
    assert small["modes"]["fsdp"]["activations"] == small["modes"]["data"]["activations"]


def test_cli_prints_the_table_and_refuses_an_uneven_batch(capsys):
    assert cli.main(["plan", "--preset", "bert-tiny", "--devices", "4", "--batch", "16", "--no-compile"]) == 0
    out = capsys.readouterr().out
    assert "bert-tiny: 4,433,468 parameters" in out and "fsdp" in out and "FLOPs per step" in out
    # the machine's own device and whether each mode fits in it (bert-tiny's few MB fit in any host's memory)
    assert "this machine's CPU device" in out and "data fits, fsdp fits" in out
    assert cli.main(["plan", "--preset", "bert-tiny", "--devices", "3", "--batch", "16"]) == 2
    assert "cannot be split evenly over 3 devices" in capsys.readouterr().err
    with pytest.raises(JaxbertError, match="unknown preset"):
        plan.plan(config.preset("bert-huge"), 1, 8)


@pytest.mark.slow
def test_scanned_layers_plan_the_same_flops_and_remat_saves_activation_memory():
    at = lambda *flags: plan.plan(config.override(config.preset("bert-mini"), list(flags)), devices=1, batch=16)
    unrolled, scanned, remat = at(), at("model.scan_layers=true"), at("model.scan_layers=true", "model.remat=true")
    assert unrolled["parameters"] == scanned["parameters"] == remat["parameters"]
    assert unrolled["flops_per_step"] == scanned["flops_per_step"] == remat["flops_per_step"]
    assert remat["modes"]["data"]["activations"] < 0.8 * scanned["modes"]["data"]["activations"], (scanned, remat)


@pytest.mark.slow
def test_bert_base_trains_a_few_steps_on_this_cpu(wikitext_slice, tmp_path):
    """The preset as planned, at a small batch: finite losses near chance that fall on a repeated batch."""
    cfg = config.override(config.preset("bert-base"), ["train.batch_size=4", "data.max_len=64", "train.steps=6",
                                                       "train.log_every=1", "train.eval_every=100",
                                                       "train.checkpoint_every=100", "optim.warmup_steps=0",
                                                       "optim.learning_rate=1e-4", "data.min_freq=2"])
    summary = train.run(cfg, tmp_path / "run", data_dir=wikitext_slice)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if r.get("split") == "train"]
    assert [r["step"] for r in train_rows] == list(range(1, 7))
    vocab = config.Config.load(tmp_path / "run" / "config.json").model.vocab_size
    losses = plausible_summary(summary[0], vocab)
    assert set(losses) == {"mlm", "nsp"} and all(math.isfinite(r["grad_norm"]) for r in train_rows)
    assert config.Config.load(tmp_path / "run" / "config.json").model.num_hidden_layers == 12


@pytest.mark.parametrize("name", list(config.PRESETS))
def test_presets_closed_form_agrees_with_the_model_and_xla(name):
    """`jaxbert presets`' parameters equal the built model's count; its FLOPs leave out only elementwise work
    (LayerNorm, softmax, activations, the optimizer update), so XLA's count of the step is at most ~15% above."""
    import jax
    import numpy as np

    from jaxbert.model import sizes

    cfg = sizes.with_vocab(config.preset(name))
    _, params, _, _ = plan._abstract_state(cfg)  # shapes only
    assert sizes.parameters(cfg.model) == sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))
    if cfg.model.num_hidden_layers <= 4:  # lowering the deep presets takes a while on 2 cores
        xla = plan.plan(cfg, 1, 4, compile_step=False)["flops_per_step"] / (4 * cfg.data.max_len)
        assert 1.0 <= xla / sizes.train_flops_per_token(cfg) <= 1.15, (xla, sizes.train_flops_per_token(cfg))


def test_presets_command_lists_every_preset(capsys):
    assert cli.main(["presets"]) == 0
    out = capsys.readouterr().out
    assert all(f"\n{name} " in out for name in config.PRESETS) and "110.1M" in out and "336.2M" in out


def test_the_device_capacity_is_this_machines():
    device = plan.device_capacity()
    assert device["platform"] == "cpu"
    assert device["capacity"] == os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") > 2**30
