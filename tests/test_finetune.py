"""Fine-tuning: the classifier starts from the run's encoder, learns a task that allows it, keeps the best
epoch, and refuses bad input before writing anything."""

import json
import math

import numpy as np
import pytest

import jaxbert
from conftest import TINY
from jaxbert import cli, config, finetune, train


@pytest.fixture(scope="module")
def run_dir(wikitext_slice, tmp_path_factory):
    out = tmp_path_factory.mktemp("ft") / "run"
    train.run(config.override(config.preset("d2l-tiny"), TINY + ["train.steps=2"]), out, data_dir=wikitext_slice)
    return out


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


def test_finetune_learns_a_task_and_keeps_the_best_epoch(run_dir, word_task, tmp_path, capsys):
    out = tmp_path / "ft"
    code = cli.main(["finetune", "--task", "sst2", "--data", str(word_task), "--init", str(run_dir),
                     "--out", str(out), "--epochs", "5", "--batch-size", "32", "--max-len", "16",
                     "--learning-rate", "2e-3"])
    assert code == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4, 5]
    assert all(math.isfinite(r["train_loss"]) and 0 <= r["dev_accuracy"] <= 1 for r in rows)
    assert rows[-1]["train_loss"] < rows[0]["train_loss"] and max(r["dev_accuracy"] for r in rows) == 1.0
    best = max(rows, key=lambda r: r["dev_accuracy"])  # the first epoch that reached the best score
    assert f"best epoch {best['epoch']}: dev accuracy 1.0000" in capsys.readouterr().out
    assert sorted(p.name for p in (out / "checkpoints").iterdir())[-1] == str(best["step"])
    settings = json.loads((out / "finetune.json").read_text())
    assert settings["labels"] == ["0", "1"] and settings["init"] == str(run_dir) and not settings["random_init"]


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
