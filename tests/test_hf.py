"""transformers interop: import random-initialised HF BERTs, export trained runs, parity to 1e-4 (float32)."""

import itertools
import json
import re
import shutil

import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")  # a test dependency (pip install torch==2.13.0), never a runtime one
transformers = pytest.importorskip("transformers")

import jaxbert  # noqa: E402
from conftest import REPO, TINY, plausible_summary  # noqa: E402
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
    if "nsp" in heads:  # jaxbert's class 1 is "B follows A", transformers' class 0
        errors["nsp"] = rel_err(np.asarray(nsp)[:, ::-1], out.seq_relationship_logits.numpy())
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
    cfg = config.override(config.preset("d2l-tiny"), TINY + ["train.steps=30", "model.hidden_size=128",
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
    plausible_summary(summary[0], 70)
    assert (tmp_path / "run" / "checkpoints" / "2").is_dir()


# --- what a transformers user meets: AutoTokenizer, the README's snippet, NSP's label order, fill-mask ---------

def readme_snippet() -> str:
    """The README's transformers snippet, as written."""
    text = (REPO / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    return next(b for b in blocks if "from transformers import" in b)


def test_readme_snippet_gives_jaxberts_pair_encoding(trained_run, tmp_path):
    """Sentence B of a pair is segment 1 in transformers too: hidden states equal jaxbert's encode(a, b)."""
    export_dir = tmp_path / "hf" / "tiny"
    hf.export(trained_run, export_dir)
    code = readme_snippet()
    assert '"hf/tiny"' in code and "token_type_ids" in code
    scope = {}
    exec(code.replace('"hf/tiny"', repr(str(export_dir))).replace('"runs/tiny"', repr(str(trained_run))), scope)
    enc, out = scope["enc"], scope["out"]
    assert enc["token_type_ids"].tolist() == [[0] * 6 + [1] * 4]
    ours = np.asarray(jaxbert.load(trained_run).encode("a crane driver came", "he just left"))
    theirs = out.hidden_states[-1].detach().numpy()
    assert ours.shape == theirs.shape == (1, 10, 128)
    assert np.linalg.norm(ours - theirs) / np.linalg.norm(theirs) <= 1e-5
    # The snippet's NSP line: transformers' class 0 is "B follows A", jaxbert's next_sentence the same number.
    assert abs(float(scope["is_next"].detach()) - jaxbert.load(trained_run).next_sentence("a crane driver came",
                                                                                  "he just left")) < 1e-5


@pytest.fixture(scope="module")
def bert_vocab_run(wikitext_slice, wikitext_dir, tmp_path_factory):
    """A WordPiece run (bert-base-uncased's vocab.txt) with the SOP objective, trained a few steps."""
    from jaxbert import prepare

    folder = tmp_path_factory.mktemp("sop")
    tok = tokenizers.wordpiece_from_vocab(wikitext_dir.parent / "bert-base-uncased" / "vocab.txt")
    prepare.prepare([wikitext_slice / "wiki.train.tokens"], folder / "prep", tok,
                    eval_files=[wikitext_slice / "wiki.valid.tokens"])
    cfg = config.override(config.preset("bert-tiny"), TINY + [
        "train.steps=40", "optim.warmup_steps=0", "optim.schedule=constant", "data.objective=sop",
        "model.intermediate_size=128"])
    train.run(cfg, folder / "run", data_dir=str(folder / "prep"))
    return folder / "run"


@pytest.mark.parametrize("which", ["word-level", "WordPiece"])
def test_exported_tokenizers_give_segments_padding_and_truncation(which, trained_run, bert_vocab_run, tmp_path,
                                                                  wikitext_slice):
    run = trained_run if which == "word-level" else bert_vocab_run
    hf.export(run, tmp_path / "hf")
    theirs = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    ours = tokenizers.load(run / "tokenizer.json")
    lines = [line for line in (wikitext_slice / "wiki.valid.tokens").read_text().splitlines() if line.strip()][:40]
    a, b = lines[::2], lines[1::2]
    single = theirs("a crane is flying")
    assert set(single) == {"input_ids", "token_type_ids", "attention_mask"} and set(single["token_type_ids"]) == {0}
    for kwargs in ({}, {"padding": True}, {"padding": "max_length", "truncation": True, "max_length": 24}):
        batch = theirs(a, b, **kwargs)
        reference = tokenizers.load(run / "tokenizer.json")  # jaxbert's own tokenizer, padded the same way
        if "max_length" in kwargs:
            reference.enable_truncation(24)
        if kwargs:
            pad = tokenizers.special_ids(ours).pad
            reference.enable_padding(pad_id=pad, pad_token=ours.id_to_token(pad),
                                     length=24 if "max_length" in kwargs else None)
        expected = reference.encode_batch(list(zip(a, b)))
        assert batch["input_ids"] == [e.ids for e in expected]
        assert batch["token_type_ids"] == [e.type_ids for e in expected]
        assert batch["attention_mask"] == [e.attention_mask for e in expected]
        assert all(1 in row for row in batch["token_type_ids"])  # every pair has a segment B


def pair_sets(wikitext_slice, n=12):
    """(true next-sentence pairs, random pairs): consecutive sentences of one paragraph of the held-out
    WikiText, and a first sentence with the sentence of a paragraph far away."""
    paragraphs = [[s.strip() for s in line.split(" . ") if 3 <= len(s.split()) <= 12]
                  for line in (wikitext_slice / "wiki.valid.tokens").read_text().splitlines()]
    paragraphs = [p for p in paragraphs if len(p) >= 2]
    true = [(p[0], p[1]) for p in paragraphs[:n]]
    random = [(p[0], q[1]) for p, q in zip(paragraphs[:n], paragraphs[-n:])]
    return true, random


def fit_separator(pooled_true, pooled_random) -> np.ndarray:
    """(D + 1,) weights w with [pooled, 1] @ w = +4 on true pairs and -4 on random ones (least squares,
    exact while there are fewer pairs than dimensions)."""
    x = np.concatenate([pooled_true, pooled_random])
    x = np.concatenate([x, np.ones((len(x), 1))], axis=1)
    y = np.r_[np.full(len(pooled_true), 4.0), np.full(len(pooled_random), -4.0)]
    return np.linalg.lstsq(x, y, rcond=None)[0]


def set_pair_head(run_dir, pairs_true, pairs_random, *, separate: bool = True):
    """Set the run's NSP head by hand (a new checkpoint). `separate`: it answers "is next" (jaxbert's class 1)
    on `pairs_true` and "random" on `pairs_random`. Otherwise it reads the direction that best separates them
    (ridge) and answers class 1 on the half of all pairs that lie furthest along it."""
    from flax import nnx

    from jaxbert import checkpoint, optim

    cfg, _, model, step = restore_run(run_dir)
    enc = jaxbert.load(run_dir)
    pooled = lambda pairs: np.stack([np.tanh(np.asarray(model.pooler(enc.encode(x, y)[:, 0]))[0]) for x, y in pairs])
    x_true, x_random = pooled(pairs_true), pooled(pairs_random)
    if separate:
        w = fit_separator(x_true, x_random)
    else:  # a moderate weight vector, scaled to spread the pairs' logits (std 2), split at the widest gap
        x = np.concatenate([x_true, x_random])  # among the middle third
        xc = x - x.mean(0)
        y = np.r_[np.ones(len(x_true)), -np.ones(len(x_random))]
        direction = np.linalg.solve(xc.T @ xc + 1e-6 * np.eye(x.shape[1]), xc.T @ y)
        direction *= 2 / (x @ direction).std()
        v = np.sort(x @ direction)
        i = len(v) // 3 + int(np.argmax(np.diff(v[len(v) // 3:2 * len(v) // 3 + 1])))
        w = np.r_[direction, -(v[i] + v[i + 1]) / 2]
    kernel, bias = np.zeros((cfg.model.hidden_size, 2), np.float32), np.zeros(2, np.float32)
    kernel[:, 1], bias[1] = w[:-1], w[-1]
    model.nsp.kernel[...], model.nsp.bias[...] = jnp.asarray(kernel), jnp.asarray(bias)
    params = nnx.state(model, nnx.Param)
    mngr = checkpoint.manager(run_dir)
    checkpoint.save(mngr, step + 1, params, optim.optimizer(cfg.optim, cfg.train.steps).init(params))
    mngr.wait_until_finished()


@pytest.mark.parametrize("objective", ["nsp", "sop"])
def test_export_keeps_the_pair_task_answer(objective, trained_run, bert_vocab_run, wikitext_slice, tmp_path):
    """After export, BertForNextSentencePrediction says "is next" (class 0) exactly where jaxbert does (class 1);
    for a SOP run, "in order" in place of "is next" (ALBERT's sentence_order_label 0).

    NSP: a head set to separate true next sentences from random ones. SOP: the pooled vectors of a pair and its
    swap differ by about 1e-4 in a briefly trained model, so a head that separates them needs weights so large
    that float32 rounding decides; the head instead answers "in order" on half of the pairs, by a margin."""
    run = tmp_path / "run"
    shutil.copytree(trained_run if objective == "nsp" else bert_vocab_run, run)
    true, random = pair_sets(wikitext_slice)
    if objective == "sop":
        true, random = true, [(b, a) for a, b in true]  # in order, and swapped
    set_pair_head(run, true, random, separate=objective == "nsp")
    enc = jaxbert.load(run)
    ours = [enc.next_sentence(a, b) for a, b in true + random]
    if objective == "nsp":
        assert all(p > 0.9 for p in ours[:len(true)]) and all(p < 0.1 for p in ours[len(true):])
    else:
        assert len(ours) / 3 <= sum(p > 0.5 for p in ours) <= 2 * len(ours) / 3
        assert all(abs(p - 0.5) > 0.01 for p in ours)
    hf.export(run, tmp_path / "hf")
    tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    model = transformers.BertForNextSentencePrediction.from_pretrained(tmp_path / "hf").eval()
    with torch.no_grad():
        theirs = [float(model(**tok(a, b, return_tensors="pt")).logits.softmax(-1)[0, 0]) for a, b in true + random]
    assert [p > 0.5 for p in theirs] == [p > 0.5 for p in ours]
    # The hand-set heads have large weights, which magnify float32 rounding of the pooled vector.
    np.testing.assert_allclose(theirs, ours, atol=1e-3)


def test_import_keeps_the_pair_task_answer(wikitext_slice, wikitext_dir, tmp_path):
    """A transformers checkpoint whose NSP head says "is next" (its class 0) on true pairs: after import,
    jaxbert's head says "is next" (class 1) on the same pairs, with the same probabilities."""
    torch.manual_seed(3)
    cfg = transformers.BertConfig(vocab_size=30522, hidden_size=64, num_hidden_layers=1, num_attention_heads=2,
                                  intermediate_size=64, max_position_embeddings=64)
    model = transformers.BertForPreTraining(cfg).eval()
    (tmp_path / "hf").mkdir()
    hf._export_tokenizer(tokenizers.wordpiece_from_vocab(wikitext_dir.parent / "bert-base-uncased" / "vocab.txt"),
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


@pytest.mark.parametrize("which, text", [("word-level", "the <mask> of the city ."),
                                         ("WordPiece", "the [MASK] of the city .")])
def test_fill_mask_matches_the_transformers_pipeline(which, text, trained_run, bert_vocab_run, tmp_path):
    run = trained_run if which == "word-level" else bert_vocab_run
    hf.export(run, tmp_path / "hf")
    ours = jaxbert.load(run).fill_mask(text, top_k=5)[0]
    fill = transformers.pipeline("fill-mask", model=str(tmp_path / "hf"))
    theirs = fill(text, top_k=5)
    assert [t for t, _ in ours] == [fill.tokenizer.convert_ids_to_tokens(r["token"]) for r in theirs]
    np.testing.assert_allclose([p for _, p in ours], [r["score"] for r in theirs], rtol=1e-4)
    assert ours[0][1] > 1.5 * ours[-1][1]  # trained: the first guess stands out, so the order is not a tie


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
