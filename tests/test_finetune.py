"""Fine-tuning: the classifier starts from the run's encoder, learns a task that allows it, keeps the best
epoch, and refuses bad input before writing anything."""

import io
import json
import math

import numpy as np
import pytest

import jaxbert
from jaxbert import cli, finetune


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


def test_the_classifier_starts_from_the_runs_encoder(run_dir):
    ids, segments, lens = jaxbert.load(run_dir)._inputs("a crane driver came", "he just left")
    expected = np.asarray(jaxbert.load(run_dir).encode("a crane driver came", "he just left"))
    _, _, model = finetune.classifier_from_run(run_dir, 2, seed=0)
    got = np.asarray(model.bert.encode(ids, segments, lens))[:, :int(lens[0])]
    np.testing.assert_allclose(got, expected, atol=1e-5)  # eager here, compiled there
    _, _, fresh = finetune.classifier_from_run(run_dir, 2, seed=0, pretrained=False)
    assert not np.allclose(np.asarray(fresh.bert.encode(ids, segments, lens))[:, :int(lens[0])], expected)


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
    assert all(math.isfinite(r["train_loss"]) and 0 <= r["dev_accuracy"] <= 1 for r in rows)
    assert rows[-1]["train_loss"] < rows[0]["train_loss"] and max(r["dev_accuracy"] for r in rows) == 1.0
    best = max(rows, key=lambda r: r["dev_accuracy"])  # the first epoch that reached the best score
    assert sorted(p.name for p in (out / "checkpoints").iterdir())[-1] == str(best["step"])
    settings = json.loads((out / "finetune.json").read_text())
    assert settings["labels"] == ["0", "1"] and settings["init"] == str(run_dir) and not settings["random_init"]
    assert settings["label_names"] == ["negative", "positive"] and not settings["pair"]


TEXTS = ["the city good river house", "bad king school film", "music game road team war",
         "good good", "the bad army church ship song"]


def test_predict_labels_stdin_and_files(finetuned, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("sys.stdin", io.StringIO("\n".join(TEXTS[:2]) + "\n\n"))
    assert cli.main(["predict", str(finetuned)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("\t")[0] for line in lines] == ["positive", "negative"]  # the task learned the cue
    assert [line.split("\t")[2] for line in lines] == TEXTS[:2] and all(float(x.split("\t")[1]) > 0.5 for x in lines)
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

    for model_dir, inputs in ((finetuned, TEXTS), (pair_model, [("the city river", "war king"),
                                                               ("war king", "the city river"),
                                                               ("school film game", "school")])):
        hf_dir = tmp_path / model_dir.parent.name
        assert cli.main(["export", str(model_dir), str(hf_dir)]) == 0
        hf_config = json.loads((hf_dir / "config.json").read_text())
        assert hf_config["architectures"] == ["BertForSequenceClassification"]
        clf = transformers.pipeline("text-classification", model=str(hf_dir))
        theirs = clf([{"text": a, "text_pair": b} if isinstance(a, str) and b else a
                      for a, b in ((x if isinstance(x, tuple) else (x, None)) for x in inputs)])
        ours = finetune.classify(model_dir, inputs)
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
    cases = [(["--task", "mnli-mm", "--out", str(tmp_path / "a")], "unknown task 'mnli-mm'"),
             (["--task", "rte", "--out", str(tmp_path / "a")], "has no column 'sentence1'"),
             (["--task", "sst2", "--out", str(tmp_path / "a"), "--batch-size", "1000"], "fewer than one batch"),
             (["--task", "sst2", "--out", str(tmp_path / "a"), "--epochs", "0"], "--epochs 0 must be positive")]
    for args, fragment in cases:
        assert cli.main(base + args) == 2
        err = capsys.readouterr().err
        assert err.startswith("jaxbert: error: ") and fragment in err and err.count("\n") == 1, err
    assert not (tmp_path / "a").exists()
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "notes.txt").write_text("mine")
    assert cli.main(base + ["--task", "sst2", "--out", str(tmp_path / "b")]) == 2
    assert "is not empty" in capsys.readouterr().err and (tmp_path / "b" / "notes.txt").read_text() == "mine"
