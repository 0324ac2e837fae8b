"""Presets, overrides and the config checks that refuse what cannot work."""

import dataclasses

import pytest

from jaxbert import config
from jaxbert.errors import JaxbertError


def test_d2l_tiny_is_the_book():
    c = config.preset("d2l-tiny")
    m = c.model
    assert (m.num_hidden_layers, m.hidden_size, m.intermediate_size, m.num_attention_heads) == (2, 128, 256, 2)
    assert m.hidden_dropout_prob == m.attention_probs_dropout_prob == 0.2 and m.hidden_act == "relu"
    assert (c.train.batch_size, c.data.max_len, c.data.num_predictions) == (512, 64, 10)
    assert c.optim.weight_decay == 0 and c.data.min_freq == 5


@pytest.mark.parametrize("name, shape", [("bert-tiny", (2, 128, 512, 2)), ("bert-mini", (4, 256, 1024, 4)),
                                         ("bert-small", (4, 512, 2048, 8)), ("bert-medium", (8, 512, 2048, 8)),
                                         ("bert-base", (12, 768, 3072, 12)), ("bert-large", (24, 1024, 4096, 16))])
def test_bert_presets(name, shape):
    m = config.preset(name).model
    assert (m.num_hidden_layers, m.hidden_size, m.intermediate_size, m.num_attention_heads) == shape
    assert m.hidden_act == "gelu" and m.tie_word_embeddings


def test_bert_tiny_cpu_is_the_measured_recipe():
    """The preset is bert-tiny with the --set flags of the runs docs/transfer.md measured, and nothing else."""
    recipe = config.override(config.preset("bert-tiny"), [
        "data.objective=mlm", "data.dynamic_masking=true", "data.max_len=128", "train.batch_size=128",
        "optim.learning_rate=2e-3", "optim.warmup_steps=50", "optim.schedule=linear", "model.hidden_dropout_prob=0",
        "model.attention_probs_dropout_prob=0", "train.log_every=50", "train.eval_every=500", "train.eval_batches=4"])
    cpu = config.preset("bert-tiny-cpu")
    assert (cpu.model, cpu.data, cpu.optim) == (recipe.model, recipe.data, recipe.optim)
    assert dataclasses.replace(cpu.train, steps=recipe.train.steps) == recipe.train and cpu.train.steps == 2000


def test_d2l_tiny_fast_is_the_documented_recipe():
    """The preset is d2l-tiny with the --set flags docs/pretraining.md's 10-minute recipe lists, and nothing else."""
    recipe = config.override(config.preset("d2l-tiny"), [
        "data.objective=mlm", "data.dynamic_masking=true", "train.batch_size=128", "optim.learning_rate=2e-3",
        "optim.warmup_steps=50", "optim.schedule=linear", "optim.clip_norm=1", "model.hidden_dropout_prob=0",
        "model.attention_probs_dropout_prob=0", "train.log_every=50", "train.eval_every=500",
        "train.checkpoint_every=500"])
    fast = config.preset("d2l-tiny-fast")
    assert (fast.model, fast.data, fast.optim) == (recipe.model, recipe.data, recipe.optim)
    assert dataclasses.replace(fast.train, steps=recipe.train.steps) == recipe.train and fast.train.steps == 2000


def test_override_parses_each_type():
    c = config.override(config.preset("d2l-tiny"), ["train.steps=7", "optim.learning_rate=3e-4",
                                                     "model.hidden_act=gelu", "model.tie_word_embeddings=true"])
    assert (c.train.steps, c.optim.learning_rate, c.model.hidden_act, c.model.tie_word_embeddings) == \
        (7, 3e-4, "gelu", True)
    assert config.preset("d2l-tiny").train.steps != 7  # presets are not mutated


def test_roundtrip_through_json(tmp_path):
    c = dataclasses.replace(config.preset("bert-mini"), preset="x")
    c.save(tmp_path / "config.json")
    assert config.Config.load(tmp_path / "config.json") == c


@pytest.mark.parametrize("sets, message", [
    (["train.stpes=3"], "train has no field 'stpes'"),
    (["training.steps=3"], "not section.field=value"),
    (["train.steps"], "not section.field=value"),
    (["train.steps=abc"], "'abc' is not a valid int"),
    (["train.steps=2.5"], "'2.5' is not a valid int"),
    (["model.tie_word_embeddings=maybe"], "not a valid bool"),
    (["model.num_attention_heads=3"], "not divisible by model.num_attention_heads=3"),
    (["model.hidden_act=swish"], "hidden_act='swish' is not supported"),
    (["data.max_len=3"], "cannot hold <cls> A <sep> B <sep>"),
    (["data.max_len=1024"], "exceeds model.max_position_embeddings"),
    (["train.batch_size=0"], "train.batch_size=0 must be positive"),
    (["model.hidden_dropout_prob=1.5"], "must lie in [0, 1)"),
    (["optim.schedule=exponential"], "optim.schedule='exponential' is not supported"),
    (["optim.algorithm=sgd"], "optim.algorithm='sgd' is not supported"),
])
def test_bad_overrides_name_the_problem(sets, message):
    with pytest.raises(JaxbertError, match=None) as e:
        config.override(config.preset("d2l-tiny"), sets)
    assert message in str(e.value)


def test_unknown_preset_lists_the_choices():
    with pytest.raises(JaxbertError, match="unknown preset 'bert-huge'.*d2l-tiny, d2l-tiny-fast, bert-tiny-cpu, bert-tiny"):
        config.preset("bert-huge")
