"""transformers interop, import side: random-initialised transformers BERTs import with parity (and export back
bit for bit), absent heads are reported, the NSP answer survives the label-order change, an imported run
resumes pretraining, and what jaxbert would compute differently is refused with the difference named."""

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")  # a test dependency (pip install torch==2.13.0), never a runtime one
transformers = pytest.importorskip("transformers")

import jaxbert  # noqa: E402
from jaxbert import cli, config  # noqa: E402
from jaxbert.data import tokenization  # noqa: E402
from jaxbert.errors import JaxbertError  # noqa: E402
from jaxbert.interop import hf
from jaxbert.training import train

from conftest import plausible_summary  # noqa: E402
from hf_reference import RTOL, compare, fit_separator, pair_sets, wordpiece_files  # noqa: E402

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
    from jaxbert.data import prepare

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
    prepare.prepare([tmp_path / "c.txt"], tmp_path / "prep", tokenization.load(tmp_path / "run" / "tokenizer.json"),
                    eval_fraction=0.0)
    saved = config.Config.load(tmp_path / "run" / "config.json")
    resumed = config.override(saved, ["train.steps=2", "train.batch_size=8", "train.eval_batches=0"])
    summary = train.run(resumed, tmp_path / "run", data_dir=str(tmp_path / "prep"), resume=True)
    plausible_summary(summary[0], 70)
    assert (tmp_path / "run" / "checkpoints" / "2").is_dir()


def test_import_keeps_the_pair_task_answer(wikitext_slice, wikitext_dir, tmp_path):
    """A transformers checkpoint whose NSP head says "is next" (its class 0) on true pairs: after import,
    jaxbert's head says "is next" (class 1) on the same pairs, with the same probabilities."""
    torch.manual_seed(3)
    cfg = transformers.BertConfig(vocab_size=30522, hidden_size=64, num_hidden_layers=1, num_attention_heads=2,
                                  intermediate_size=64, max_position_embeddings=64)
    model = transformers.BertForPreTraining(cfg).eval()
    (tmp_path / "hf").mkdir()
    hf._export_tokenizer(tokenization.wordpiece_from_vocab(wikitext_dir.parent / "bert-base-uncased" / "vocab.txt"),
                         tmp_path / "hf", 64)
    tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    true, random = pair_sets(wikitext_slice)
    with torch.no_grad():
        pooled = lambda pairs: np.stack([model.bert(**tok(a, b, return_tensors="pt")).pooler_output[0].numpy()
                                         for a, b in pairs])
        w = fit_separator(pooled(true), pooled(random))
        model.cls.seq_relationship.weight.zero_()
        model.cls.seq_relationship.bias.zero_()
        model.cls.seq_relationship.weight[0] = torch.tensor(w[:-1])  # class 0: "B follows A"
        model.cls.seq_relationship.bias[0] = float(w[-1])
        theirs = [float(model(**tok(a, b, return_tensors="pt")).seq_relationship_logits.softmax(-1)[0, 0])
                  for a, b in true + random]
    assert all(p > 0.9 for p in theirs[:len(true)]) and all(p < 0.1 for p in theirs[len(true):])
    model.save_pretrained(tmp_path / "hf")
    assert hf.import_checkpoint(tmp_path / "hf", tmp_path / "run") == []
    enc = jaxbert.load(tmp_path / "run")
    ours = [enc.next_sentence(a, b) for a, b in true + random]
    assert [p > 0.5 for p in ours] == [p > 0.5 for p in theirs]
    np.testing.assert_allclose(ours, theirs, atol=1e-3)  # large hand-set weights magnify float32 rounding


def small_checkpoint(folder, kind="BertForPreTraining", **config):
    torch.manual_seed(4)
    cfg = transformers.BertConfig(vocab_size=70, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                  intermediate_size=64, max_position_embeddings=64, **config)
    model = getattr(transformers, kind)(cfg)
    model.save_pretrained(folder)
    wordpiece_files(folder, 70)
    return model


def edit_config(folder, **changes):
    path = folder / "config.json"
    path.write_text(json.dumps(json.loads(path.read_text()) | changes))


def edit_tensors(folder, edit):
    from safetensors.numpy import load_file, save_file

    path = folder / "model.safetensors"
    tensors = load_file(str(path))
    edit(tensors)
    save_file(tensors, str(path), metadata={"format": "pt"})


@pytest.mark.parametrize("case, fragments", [
    ("position_embedding_type", ["position_embedding_type='relative_key'", "computes only"]),
    ("is_decoder", ["is_decoder=True"]),
    ("add_cross_attention", ["add_cross_attention=True"]),
    ("hidden_act", ["hidden_act='gelu_new'", "does not compute"]),
    ("classifier", ["no place for (classifier.bias, classifier.weight)"]),
    ("tied decoder differs", ["cls.predictions.decoder.weight differs from the word embeddings"]),
])
def test_import_refuses_what_jaxbert_would_compute_differently(case, fragments, tmp_path, capsys):
    folder = tmp_path / "hf"
    small_checkpoint(folder)
    if case in ("position_embedding_type", "is_decoder", "add_cross_attention", "hidden_act"):
        value = {"position_embedding_type": "relative_key", "hidden_act": "gelu_new"}.get(case, True)
        edit_config(folder, **{case: value})
    elif case == "classifier":
        edit_tensors(folder, lambda t: t.update({"classifier.weight": np.zeros((2, 32), np.float32),
                                                 "classifier.bias": np.zeros(2, np.float32)}))
    else:
        edit_tensors(folder, lambda t: t.update(
            {"cls.predictions.decoder.weight": t["bert.embeddings.word_embeddings.weight"] + 1.0}))
    capsys.readouterr()  # transformers' own progress output while saving
    code = cli.main(["import", str(folder), str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("jaxbert: error: ") and err.count("\n") == 1, err
    assert all(f in err for f in fragments), err
    assert not (tmp_path / "run").exists()


def test_import_accepts_what_is_only_absent_or_renamed(tmp_path):
    """A tied decoder saved twice, the position-ids buffer, and the LayerNorm gamma/beta names of checkpoints
    converted from TensorFlow import to the same model."""
    model = small_checkpoint(tmp_path / "hf")

    def old_style(t):
        t["cls.predictions.decoder.weight"] = t["bert.embeddings.word_embeddings.weight"].copy()
        t["bert.embeddings.position_ids"] = np.arange(64, dtype=np.int64)[None]
        for name in [k for k in t if k.endswith(".LayerNorm.weight")]:
            t[name.removesuffix("weight") + "gamma"] = t.pop(name)
        for name in [k for k in t if k.endswith(".LayerNorm.bias")]:
            t[name.removesuffix("bias") + "beta"] = t.pop(name)

    edit_tensors(tmp_path / "hf", old_style)
    assert hf.import_checkpoint(tmp_path / "hf", tmp_path / "run") == []
    errors = compare(model, tmp_path / "run")
    assert all(e < RTOL for e in errors.values()), errors
