"""transformers interop: import random-initialised HF BERTs, export trained runs, parity to 1e-4 (float32)."""

import itertools
import json

import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")  # a test dependency (pip install torch==2.13.0), never a runtime one
transformers = pytest.importorskip("transformers")

from conftest import TINY  # noqa: E402
from jaxbert import cli, config, hf, train  # noqa: E402
from jaxbert import tokenizer as tokenizers  # noqa: E402
from jaxbert.encode import restore_run  # noqa: E402
from jaxbert.errors import JaxbertError  # noqa: E402

RTOL = 1e-4


def rel_err(ours, theirs):
    ours, theirs = np.asarray(ours), np.asarray(theirs)
    return float(np.abs(ours - theirs).max() / np.abs(theirs).max())


def batch(vocab_size, seed=0):
    """Two sentence pairs with padding, and three MLM positions per row."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, vocab_size, (2, 12))
    ids[:, 0], valid = 2, np.array([12, 8])
    ids[1, 8:] = 0
    segments = (np.arange(12)[None] >= np.array([[6], [4]])).astype(np.int64) * (np.arange(12)[None] < valid[:, None])
    positions = np.array([[1, 4, 9], [2, 3, 6]])
    return ids, segments, valid, positions


def compare(model_dir_or_hf, run_dir, heads=("mlm", "nsp")):
    """Max relative errors of hidden states (valid positions), MLM logits (masked positions), NSP logits."""
    hf_model = model_dir_or_hf.eval()
    _, _, ours, _ = restore_run(run_dir)
    v = hf_model.config.vocab_size
    ids, segments, valid, positions = batch(v)
    mask = (np.arange(12)[None] < valid[:, None]).astype(np.int64)
    with torch.no_grad():
        out = hf_model(input_ids=torch.tensor(ids), token_type_ids=torch.tensor(segments),
                       attention_mask=torch.tensor(mask), output_hidden_states=True)
    x, mlm, nsp = ours(jnp.asarray(ids, jnp.int32), jnp.asarray(segments, jnp.int32), jnp.asarray(valid, jnp.int32),
                       jnp.asarray(positions, jnp.int32))
    hidden = out.hidden_states[-1].numpy()
    errors = {"hidden": max(rel_err(np.asarray(x)[r, :n], hidden[r, :n]) for r, n in enumerate(valid))}
    if "mlm" in heads:
        logits = out.prediction_logits.numpy() if hasattr(out, "prediction_logits") else out.logits.numpy()
        errors["mlm"] = rel_err(mlm, np.take_along_axis(logits, positions[..., None], axis=1))
    if "nsp" in heads:
        errors["nsp"] = rel_err(nsp, out.seq_relationship_logits.numpy())
    return errors


def wordpiece_files(folder, vocab_size):
    tok = tokenizers.train_wordpiece([f"the quick brown fox number {i} jumps over it" for i in range(200)],
                                     vocab_size)
    tokenizers.save_vocab(tok, folder / "vocab.txt")
    return tok


CONFIGS = {
    "gelu-tied": dict(hidden_act="gelu", tie_word_embeddings=True),
    "relu-untied (d2l-tiny)": dict(hidden_act="relu", tie_word_embeddings=False, layer_norm_eps=1e-6),
}


@pytest.mark.parametrize("name", CONFIGS)
def test_import_random_bert_for_pretraining(name, tmp_path):
    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=70, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                  intermediate_size=64, max_position_embeddings=64, **CONFIGS[name])
    model = transformers.BertForPreTraining(cfg)
    with torch.no_grad():  # a non-zero MLM bias, so that a wrong bias mapping shows
        model.cls.predictions.bias.normal_()
        model.cls.predictions.decoder.bias.copy_(model.cls.predictions.bias)
    model.save_pretrained(tmp_path / "hf")
    wordpiece_files(tmp_path / "hf", 70)
    assert hf.import_checkpoint(tmp_path / "hf", tmp_path / "run") == []
    errors = compare(model, tmp_path / "run")
    assert all(e < RTOL for e in errors.values()), errors
    # Export after import gives back the very same tensors.
    hf.export(tmp_path / "run", tmp_path / "again")
    from safetensors.numpy import load_file

    before, after = load_file(str(tmp_path / "hf" / "model.safetensors")), load_file(str(tmp_path / "again" /
                                                                                         "model.safetensors"))
    assert set(before) == set(after) and all(np.array_equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("kind, missing", [("BertForMaskedLM", ["bert.pooler.dense", "cls.seq_relationship"]),
                                           ("BertModel", ["cls.predictions", "cls.predictions.transform.LayerNorm",
                                                          "cls.predictions.transform.dense",
                                                          "cls.seq_relationship"])])
def test_import_models_without_some_heads_reports_them(kind, missing, tmp_path):
    torch.manual_seed(1)
    cfg = transformers.BertConfig(vocab_size=70, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                  intermediate_size=64, max_position_embeddings=64)
    model = getattr(transformers, kind)(cfg)
    model.save_pretrained(tmp_path / "hf", safe_serialization=(kind == "BertModel"))  # .bin for one of them
    wordpiece_files(tmp_path / "hf", 70)
    assert hf.import_checkpoint(tmp_path / "hf", tmp_path / "run") == missing
    heads = ("mlm",) if kind == "BertForMaskedLM" else ()
    errors = compare(model, tmp_path / "run", heads=heads)
    assert all(e < RTOL for e in errors.values()), errors


@pytest.fixture(scope="module")
def trained_run(wikitext_slice, tmp_path_factory):
    """The d2l-tiny architecture (ReLU, untied decoder, word-level vocabulary), trained a few steps."""
    out = tmp_path_factory.mktemp("hf") / "run"
    cfg = config.override(config.preset("d2l-tiny"), TINY + ["train.steps=6", "model.hidden_size=128",
                                                             "model.intermediate_size=256"])
    train.run(cfg, out, data_dir=wikitext_slice)
    return out


def test_export_a_trained_run_loads_in_transformers_with_parity(trained_run, tmp_path, wikitext_slice):
    assert cli.main(["export", str(trained_run), str(tmp_path / "hf")]) == 0
    model, info = transformers.BertForPreTraining.from_pretrained(tmp_path / "hf", output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    errors = compare(model, trained_run)
    assert all(e < RTOL for e in errors.values()), errors
    base, info = transformers.AutoModel.from_pretrained(tmp_path / "hf", output_loading_info=True)
    assert not info["missing_keys"] and type(base).__name__ == "BertModel"
    # The word-level tokenizer gives jaxbert's ids through AutoTokenizer.
    ours = tokenizers.load(trained_run / "tokenizer.json")
    theirs = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    lines = (wikitext_slice / "wiki.valid.tokens").read_text().splitlines()[:300]
    for a, b in zip(lines[::2], lines[1::2]):
        assert theirs(a, b)["input_ids"] == ours.encode(a, b).ids
    tokens = theirs.convert_ids_to_tokens(theirs("a crane is flying")["input_ids"])
    assert tokens == ours.encode("a crane is flying").tokens and tokens[0] == "<cls>"


def test_exported_bert_vocab_gives_berts_ids(tmp_path, wikitext_dir):
    """bert-base-uncased's vocab.txt: jaxbert's tokenizer and the exported one through AutoTokenizer agree."""
    tok = tokenizers.wordpiece_from_vocab(wikitext_dir.parent / "bert-base-uncased" / "vocab.txt")
    hf._export_tokenizer(tok, tmp_path, 512)
    theirs = transformers.AutoTokenizer.from_pretrained(tmp_path)
    assert type(theirs).__name__.startswith("BertTokenizer")
    with open(wikitext_dir / "wiki.train.tokens", encoding="utf-8") as f:
        lines = [line.strip() for line in itertools.islice(f, 6000) if line.strip()][:3000]
    ours = tok.encode_batch(lines)
    assert [e.ids for e in ours] == theirs(lines)["input_ids"]


def test_import_refuses_what_is_not_bert(tmp_path, capsys):
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    wordpiece_files(tmp_path / "hf", 70)
    (tmp_path / "hf" / "model.safetensors").write_bytes(b"")
    assert cli.main(["import", str(tmp_path / "hf"), str(tmp_path / "run")]) == 2
    assert "model_type 'gpt2'" in capsys.readouterr().err and not (tmp_path / "run").exists()
    with pytest.raises(JaxbertError, match="neither model.safetensors nor pytorch_model.bin"):
        hf.read_weights(tmp_path)


def test_an_imported_checkpoint_resumes_pretraining(tmp_path):
    from jaxbert import prepare

    torch.manual_seed(2)
    cfg = transformers.BertConfig(vocab_size=70, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                  intermediate_size=64, max_position_embeddings=64)
    transformers.BertForPreTraining(cfg).save_pretrained(tmp_path / "hf")
    wordpiece_files(tmp_path / "hf", 70)
    hf.import_checkpoint(tmp_path / "hf", tmp_path / "run")
    # Data prepared with the run's own tokenizer, then two more steps from step 0.
    text = "\n\n".join("\n".join(f"the quick brown fox number {i + j} jumps over it" for j in range(4))
                       for i in range(80))
    (tmp_path / "c.txt").write_text(text + "\n")
    prepare.prepare([tmp_path / "c.txt"], tmp_path / "prep", tokenizers.load(tmp_path / "run" / "tokenizer.json"),
                    eval_fraction=0.0)
    saved = config.Config.load(tmp_path / "run" / "config.json")
    resumed = config.override(saved, ["train.steps=2", "train.batch_size=8", "train.eval_batches=0"])
    summary = train.run(resumed, tmp_path / "run", data_dir=str(tmp_path / "prep"), resume=True)
    assert summary[0].startswith("MLM loss ") and (tmp_path / "run" / "checkpoints" / "2").is_dir()
