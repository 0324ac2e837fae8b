"""Fine-tuning: the classifier starts from the run's encoder, learns a task that allows it, keeps the best
epoch, and refuses bad input before writing anything."""

import io
import json
import math

import jax
import numpy as np
import pytest
from flax import nnx

import jaxbert
from jaxbert import cli, config
from jaxbert.encode import restore_run
from jaxbert.errors import JaxbertError
from jaxbert.finetuning import finetune, runs, tasks

from conftest import DATA_ROOT


@pytest.fixture(scope="module")
def run_dir(tiny_run):
    return tiny_run


@pytest.fixture(scope="module")
def word_task(run_dir, tmp_path_factory):
    """SST-2's layout; the label is whether 'good' or 'bad' appears among common words (both in the run's
    vocabulary), so a classifier that learns at all reaches full dev accuracy."""
    tok = jaxbert.load(run_dir).tokenizer
    filler = "the city river house music game road team war king school film song army church ship".split()
    assert all(tok.token_to_id(w) is not None for w in filler + ["good", "bad"])
    rng, folder = np.random.default_rng(0), tmp_path_factory.mktemp("task")
    for split, n in (("train", 512), ("dev", 96)):
        lines = ["sentence\tlabel"]
        for _ in range(n):
            y, words = int(rng.integers(0, 2)), list(rng.choice(filler, 6))
            words.insert(int(rng.integers(0, 7)), ["bad", "good"][y])
            lines.append(f"{' '.join(words)}\t{y}")
        (folder / f"{split}.tsv").write_text("\n".join(lines) + "\n")
    return folder


def classifier(run_dir, pretrained=True, **settings):
    cfg = config.FinetuneConfig(task="sst2", **settings)
    return finetune.from_run(run_dir, cfg, lambda m: finetune.Classifier(m, 2, rngs=nnx.Rngs(params=cfg.seed)),
                             pretrained=pretrained)[2]


def test_the_classifier_starts_from_the_runs_encoder(run_dir):
    """Every parameter of the pretrained arm's `bert`, the pooler and the pretraining heads included, is the
    run's; the random arm shares none of its weight matrices; the outputs follow."""
    ids, segments, lens = jaxbert.load(run_dir)._inputs("a crane driver came", "he just left")
    expected = np.asarray(jaxbert.load(run_dir).encode("a crane driver came", "he just left"))
    _, _, run_model, _ = restore_run(run_dir)
    ours = jax.tree.leaves(nnx.state(run_model, nnx.Param))
    model = classifier(run_dir)
    got = jax.tree.leaves(nnx.state(model.bert, nnx.Param))
    assert len(got) == len(ours) and all(np.array_equal(a, b) for a, b in zip(got, ours))
    assert np.array_equal(model.bert.pooler.kernel[...], run_model.pooler.kernel[...])
    np.testing.assert_allclose(np.asarray(model.bert.encode(ids, segments, lens))[:, :int(lens[0])], expected,
                               atol=1e-5)  # eager here, compiled there
    fresh = classifier(run_dir, pretrained=False)
    flat = lambda m: {k: np.asarray(v) for k, v in nnx.to_flat_state(nnx.state(m.bert, nnx.Param))}
    pretrained, random = flat(model), flat(fresh)
    matrices = [k for k, v in pretrained.items() if v.ndim == 2]
    assert matrices and not any(np.array_equal(pretrained[k], random[k]) for k in matrices)
    assert not np.allclose(np.asarray(fresh.bert.encode(ids, segments, lens))[:, :int(lens[0])], expected)


def test_fine_tuning_dropout_is_its_own_not_the_runs(run_dir):
    """BERT fine-tunes with dropout 0.1, whatever the run pretrained with (--dropout)."""
    assert config.FinetuneConfig(task="sst2").dropout == 0.1
    from jaxbert.model.bert import Dropout

    for rate in (0.0, 0.1, 0.3):
        model = classifier(run_dir, dropout=rate)
        rates = [m.rate for _, m in nnx.iter_graph(model) if isinstance(m, Dropout)]
        assert len(rates) > 4 and set(rates) == {rate}  # embeddings, attention, every layer's outputs, the head
    with pytest.raises(JaxbertError, match="--dropout 1.0 must be in"):
        config.FinetuneConfig(task="sst2", dropout=1.0)


@pytest.fixture(scope="module")
def finetuned(run_dir, word_task, tmp_path_factory):
    out = tmp_path_factory.mktemp("sst2") / "ft"
    code = cli.main(["finetune", "--task", "sst2", "--data", str(word_task), "--init", str(run_dir),
                     "--out", str(out), "--epochs", "5", "--batch-size", "32", "--max-len", "16",
                     "--learning-rate", "2e-3"])
    assert code == 0
    return out


def test_finetune_learns_a_task_and_keeps_the_best_epoch(finetuned, run_dir):
    out = finetuned
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4, 5]
    # Each epoch is scored on the validation slice only: the reported split (dev.tsv) never chooses.
    assert all(math.isfinite(r["train_loss"]) and 0 <= r["val_accuracy"] <= 1 for r in rows)
    assert not any(k.startswith("dev_") for r in rows for k in r)
    assert rows[-1]["train_loss"] < rows[0]["train_loss"] and max(r["val_accuracy"] for r in rows) == 1.0
    best = max(rows, key=lambda r: r["val_accuracy"])  # the first epoch that reached the best score
    assert sorted(p.name for p in (out / "checkpoints").iterdir())[-1] == str(best["step"])
    scores = json.loads((out / "scores.json").read_text())
    assert scores["epoch"] == best["epoch"] and scores["val_accuracy"] == best["val_accuracy"]
    assert 0.9 <= scores["dev_accuracy"] <= 1  # dev.tsv scored once, with the chosen epoch
    settings = json.loads((out / "finetune.json").read_text())
    assert settings["labels"] == ["0", "1"] and settings["init"] == str(run_dir) and not settings["random_init"]
    assert (settings["train_examples"], settings["validation_examples"]) == (461, 51)  # 512 less a tenth
    assert settings["label_names"] == ["negative", "positive"] and not settings["pair"]


def test_fine_tuning_keeps_the_pretraining_heads_as_they_were(finetuned, run_dir):
    """The MLM and NSP heads are not trained (no task reads them); the encoder is."""
    _, _, _, model = runs.restore(finetuned)
    _, _, run_model, _ = restore_run(run_dir)
    for head in ("mlm", "nsp"):
        kept, before = (jax.tree.leaves(nnx.state(getattr(m, head), nnx.Param)) for m in (model.bert, run_model))
        assert kept and all(np.array_equal(a, b) for a, b in zip(kept, before, strict=True)), head
    assert not np.array_equal(model.bert.pooler.kernel[...], run_model.pooler.kernel[...])


TEXTS = ["the city good river house", "bad king school film", "music game road team war",
         "good good", "the bad army church ship song"]


def test_predict_labels_stdin_and_files(finetuned, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("sys.stdin", io.StringIO(TEXTS[0] + "\n\n  \n" + TEXTS[1] + "\n"))
    assert cli.main(["predict", str(finetuned)]) == 0
    # One output line per input line, blank ones included, so the output lines up with the input.
    lines = [line.split("\t") for line in capsys.readouterr().out.splitlines()]
    assert [line[0] for line in lines] == ["positive", "", "", "negative"]  # the task learned the cue
    assert [line[2] for line in lines] == [TEXTS[0], "", "  ", TEXTS[1]]
    assert float(lines[0][1]) > 0.5 and float(lines[3][1]) > 0.5 and lines[1][1] == lines[2][1] == ""
    (tmp_path / "in.txt").write_text("\n".join(TEXTS))
    assert cli.main(["predict", str(finetuned), "--file", str(tmp_path / "in.txt")]) == 0
    assert len(capsys.readouterr().out.splitlines()) == len(TEXTS)
    (tmp_path / "pairs.txt").write_text("good city\tbad city\n")
    for args, fragment in ((["--file", str(tmp_path / "pairs.txt")], "classifies single sentences"),
                           (["--file", str(tmp_path / "none.txt")], "does not exist")):
        assert cli.main(["predict", str(finetuned)] + args) == 2
        assert fragment in capsys.readouterr().err
    assert cli.main(["predict", str(tmp_path), "--file", str(tmp_path / "in.txt")]) == 2
    assert "holds no finetune.json" in capsys.readouterr().err


def test_a_fine_tuned_model_where_a_run_is_expected_is_refused_in_one_line(finetuned, run_dir, word_task, tmp_path,
                                                                          capsys):
    """--init, encode and fill-mask take a pretraining run; given a fine-tuned model they name it and the run it
    came from, write nothing, and exit 2 (no traceback)."""
    commands = [["finetune", "--task", "sst2", "--data", str(word_task), "--init", str(finetuned),
                 "--out", str(tmp_path / "again")],
                ["encode", str(finetuned), "a crane is flying"], ["fill-mask", str(finetuned), "a <mask> is flying"]]
    for argv in commands:
        assert cli.main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("jaxbert: error: ") and err.count("\n") == 1, err
        assert "is a fine-tuned model" in err and f"({run_dir})" in err
    assert not (tmp_path / "again").exists()


@pytest.fixture(scope="module")
def pair_model(run_dir, tmp_path_factory):
    """An RTE-layout model trained one epoch: its parity with transformers, not its quality, is what is tested."""
    rng, folder = np.random.default_rng(1), tmp_path_factory.mktemp("rte")
    words = "the city river house music game road team war king school film".split()
    for split in ("train", "dev"):
        rows = ["index\tsentence1\tsentence2\tlabel"] + [
            f"{i}\t{' '.join(rng.choice(words, 5))}\t{' '.join(rng.choice(words, 3))}\t"
            f"{['entailment', 'not_entailment'][i % 2]}" for i in range(64)]
        (folder / f"{split}.tsv").write_text("\n".join(rows) + "\n")
    out = tmp_path_factory.mktemp("rte-ft") / "ft"
    assert cli.main(["finetune", "--task", "rte", "--data", str(folder), "--init", str(run_dir), "--out", str(out),
                     "--epochs", "1", "--max-len", "16", "--learning-rate", "1e-2"]) == 0
    return out


def test_exported_classifiers_match_in_the_transformers_pipeline(finetuned, pair_model, tmp_path):
    import transformers

    long_text = " ".join(["bad"] * 3 + ["good"] * 30)  # cut at the model's 16 tokens, only its start is seen
    # Real long texts: SQuAD v1.1 dev contexts (87 to 283 words here), far past the model's 16 tokens.
    real = [p["context"] for a in json.loads((DATA_ROOT / "squad" / "dev-v1.1.json").read_text())["data"][:3]
            for p in a["paragraphs"][:2]]
    assert all(len(text.split()) > 50 for text in real)
    for model_dir, inputs in ((finetuned, TEXTS + [long_text] + real), (pair_model, [("the city river", "war king"),
                                                               ("war king", "the city river"),
                                                               ("school film game", "school")])):
        hf_dir = tmp_path / model_dir.parent.name
        assert cli.main(["export", str(model_dir), str(hf_dir)]) == 0
        hf_config = json.loads((hf_dir / "config.json").read_text())
        assert hf_config["architectures"] == ["BertForSequenceClassification"]
        clf = transformers.pipeline("text-classification", model=str(hf_dir))
        theirs = clf([{"text": a, "text_pair": b} if isinstance(a, str) and b else a
                      for a, b in ((x if isinstance(x, tuple) else (x, None)) for x in inputs)], truncation=True)
        ours = runs.classify(model_dir, inputs)
        np.testing.assert_allclose([t["score"] for t in theirs], [p for _, p in ours], atol=1e-5)
        # The same label wherever the winning probability clears 1/2 by more than that tolerance (the pair model
        # learnt random labels, so some of its answers are near ties that float32 rounding may decide).
        decided = [p - 0.5 > 1e-5 for _, p in ours]
        assert any(decided)
        assert ([t["label"] for t, d in zip(theirs, decided) if d]
                == [label for (label, _), d in zip(ours, decided) if d])
    # The pair model must see B as segment 1 in transformers too: with segments flipped its answers change.
    tok = transformers.AutoTokenizer.from_pretrained(str(tmp_path / pair_model.parent.name))
    enc = tok("the city river", "war king", return_tensors="pt")
    assert enc["token_type_ids"].tolist()[0] == [0] * 5 + [1] * 3
    model = transformers.AutoModelForSequenceClassification.from_pretrained(str(tmp_path / pair_model.parent.name))
    logits = model(**enc).logits.detach().numpy()
    flipped = model(**{**enc, "token_type_ids": 1 - enc["token_type_ids"]}).logits.detach().numpy()
    assert not np.allclose(logits, flipped, atol=1e-4)


def test_finetune_refuses_bad_input_and_writes_nothing(run_dir, word_task, tmp_path, capsys):
    base = ["finetune", "--data", str(word_task), "--init", str(run_dir)]
    with pytest.raises(SystemExit) as exit_:  # argparse: the task's choices are listed
        cli.main(base + ["--task", "mnli-mm", "--out", str(tmp_path / "a")])
    assert exit_.value.code == 2 and "invalid choice: 'mnli-mm'" in capsys.readouterr().err
    cases = [(["--task", "rte", "--out", str(tmp_path / "a")], "has no column 'sentence1'"),
             (["--task", "sst2", "--out", str(tmp_path / "a"), "--batch-size", "1000"], "fewer than one batch"),
             (["--task", "sst2", "--out", str(tmp_path / "a"), "--epochs", "0"], "--epochs 0 must be positive"),
             (["--task", "sst2", "--out", str(tmp_path / "a"), "--max-len", "600"],
              "--max-len 600 is longer than the 512 positions"),
             (["--task", "sst2", "--out", str(tmp_path / "a"), "--max-len", "100000"], "use --max-len 512 or less"),
             (["--task", "sst2", "--out", str(tmp_path / "a"), "--labels", "500"],
              "--labels 500 is more than the 461 training examples"),
             (["--task", "sst2", "--out", str(tmp_path / "a"), "--dropout", "1.5"], "--dropout 1.5 must be in")]
    for args, fragment in cases:
        assert cli.main(base + args) == 2
        err = capsys.readouterr().err
        assert err.startswith("jaxbert: error: ") and fragment in err and err.count("\n") == 1, err
    assert not (tmp_path / "a").exists()
    # A second writer of one --out (another process holding it, as a running finetune does) is refused at once.
    import subprocess
    import sys

    (tmp_path / "c").mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import sys; from jaxbert import rundir; "
                               f"rundir.lock(__import__('pathlib').Path({str(tmp_path / 'c')!r})); "
                               "print('held', flush=True); sys.stdin.read()"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert cli.main(base + ["--task", "sst2", "--out", str(tmp_path / "c")]) == 2
        assert "another process is writing" in capsys.readouterr().err
    finally:
        holder.communicate("")
    assert (tmp_path / "c").is_dir() and not any((tmp_path / "c").iterdir())  # the user's empty folder stays
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "notes.txt").write_text("mine")
    assert cli.main(base + ["--task", "sst2", "--out", str(tmp_path / "b")]) == 2
    assert "is not empty" in capsys.readouterr().err and (tmp_path / "b" / "notes.txt").read_text() == "mine"


def test_labels_and_validation_are_balanced_disjoint_draws_shared_by_every_seed():
    labels = np.r_[np.zeros(700, np.int32), np.ones(300, np.int32)]
    data = tasks.TextPairs([f"text {i}" for i in range(1000)], None, labels)
    index = {t: i for i, t in enumerate(data.text_a)}
    rows = lambda d: np.array([index[t] for t in d.text_a])
    train, val = finetune.split_training_set(config.FinetuneConfig(task="sst2", labelled=100, validation=40), data)
    assert (len(train), len(val)) == (100, 40) and not set(rows(train)) & set(rows(val))
    assert np.bincount(train.labels).tolist() == [50, 50] and np.bincount(val.labels).tolist() == [20, 20]
    assert all(data.labels[i] == y for i, y in zip(rows(train), train.labels))
    # The draw belongs to --data-seed: every training seed and both initialisations see the same examples.
    again, _ = finetune.split_training_set(config.FinetuneConfig(task="sst2", labelled=100, validation=40, seed=3),
                                          data)
    other, _ = finetune.split_training_set(config.FinetuneConfig(task="sst2", labelled=100, validation=40,
                                                                 data_seed=1), data)
    assert rows(again).tolist() == rows(train).tolist() and rows(other).tolist() != rows(train).tolist()
    # All labels: the validation slice (at most a tenth) is held out of them, never added back.
    train, val = finetune.split_training_set(config.FinetuneConfig(task="sst2"), data)
    assert (len(train), len(val)) == (900, 100) and not set(rows(train)) & set(rows(val))
    with pytest.raises(JaxbertError, match="need 350 of class 1, but the training set has 280"):
        finetune.split_training_set(config.FinetuneConfig(task="sst2", labelled=700, validation=40), data)


def test_a_non_finite_loss_stops_the_run_and_keeps_the_epoch_before(run_dir, word_task, tmp_path, monkeypatch,
                                                                    capsys):
    """The loss turns NaN at a chosen step (as a too-high learning rate makes it): the run stops with one line
    naming the step and the fix, keeps the last good epoch's model, or leaves nothing if there was none."""
    make_steps = finetune.make_steps

    def poisoned(at):
        def wrapper(*args, **kw):
            train_step, predict_step = make_steps(*args, **kw)
            calls = []

            def step(state, batch, key):
                calls.append(1)
                state, loss = train_step(state, batch, key)
                return state, loss * np.nan if len(calls) >= at else loss
            return step, predict_step
        return wrapper

    base = ["finetune", "--task", "sst2", "--data", str(word_task), "--init", str(run_dir), "--max-len", "16",
            "--epochs", "3"]
    monkeypatch.setattr(finetune, "make_steps", poisoned(at=20))  # 14 steps an epoch: NaN in epoch 2
    assert cli.main(base + ["--out", str(tmp_path / "a")]) == 2
    last = capsys.readouterr().err.splitlines()[-1]  # after the progress bar
    assert last.startswith("jaxbert: error: the fine-tuning loss became nan at step 20 (epoch 2); lower "
                           "--learning-rate") and last.endswith(f"kept in {tmp_path / 'a'}"), last
    rows = [json.loads(line) for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1] and [p.name for p in (tmp_path / "a" / "checkpoints").iterdir()] == ["14"]
    assert len(runs.classify(tmp_path / "a", TEXTS)) == len(TEXTS)  # the kept model works
    monkeypatch.setattr(finetune, "make_steps", poisoned(at=1))
    assert cli.main(base + ["--out", str(tmp_path / "b")]) == 2
    assert capsys.readouterr().err.splitlines()[-1].endswith("nothing was kept") and not (tmp_path / "b").exists()


def test_head_tail_truncation_keeps_a_long_texts_first_quarter_and_its_end(run_dir):
    tok = jaxbert.load(run_dir).tokenizer
    words = "the city river house music game road team war king school film song army church ship".split()
    data = tasks.TextPairs([" ".join(words), "the city"], None, np.array([0, 1], np.int32))
    ids = lambda text: tok.encode(text).ids[1:-1]
    arrays = finetune.encode_texts(tok, data, 10, "head_tail")  # 8 pieces: 2 from the head, 6 from the tail
    first = arrays["input_ids"][0].tolist()
    assert first[1:9] == ids(" ".join(words[:2])) + ids(" ".join(words[-6:]))
    assert first[0] == tok.encode(words[0]).ids[0] and arrays["valid_lens"].tolist() == [10, 4]
    head = finetune.encode_texts(tok, data, 10)
    assert head["input_ids"][0].tolist()[1:9] == ids(" ".join(words[:8]))
    # short texts are the same either way, padding included
    assert arrays["input_ids"][1].tolist() == head["input_ids"][1].tolist()
    assert not arrays["segment_ids"].any()


def test_trimmed_prediction_gives_every_row_its_own_answer_in_order(run_dir):
    """`predict(trim=True)` sorts rows by length and cuts each batch's padding: the outputs (here the encoder's
    `<cls>` vector, layer-normed, so O(1)) are those of full-width batches (padding is masked, so only float
    rounding differs), row for row in the input order."""
    tok = jaxbert.load(run_dir).tokenizer
    words = "the city river house music game road team war king school film song army church ship".split()
    rng = np.random.default_rng(0)
    texts = [" ".join(rng.choice(words, int(rng.integers(1, 60)))) for _ in range(37)]
    data = tasks.TextPairs(texts, None, np.zeros(len(texts), np.int32))
    model = classifier(run_dir)
    arrays = finetune.encode_texts(tok, data, 64)
    assert len(set(arrays["valid_lens"].tolist())) > 20 and arrays["valid_lens"].max() > 32  # two widths at least
    graphdef, params = nnx.split(model, nnx.Param)
    _, step = finetune.make_steps(graphdef, None, predict_fn=lambda m, b: m.bert.encode(
        b["input_ids"], b["segment_ids"], b["valid_lens"])[:, 0])
    full = finetune.predict(step, params, arrays, 8)
    trimmed = finetune.predict(step, params, arrays, 8, trim=True)
    assert full.shape == trimmed.shape == (len(texts), model.bert.pooler.kernel.shape[0])
    # float32 values of O(1), from sums of at most a few hundred terms of O(1) each: 1e-4 is ~100x their rounding
    np.testing.assert_allclose(trimmed, full, atol=1e-4)
    assert np.abs(full - full[::-1]).max() > 1e-2  # rows differ, so the order check above can fail
