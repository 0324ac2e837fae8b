"""IMDb as users have it: the archive or its aclImdb/ folder, for fine-tuning (train / test reviews) and as a
pretraining corpus (unlabelled and training reviews, never the test ones)."""

import json
import tarfile

import numpy as np
import pytest

from jaxbert import cli
from jaxbert.data import corpus, imdb
from jaxbert.encode import restore_run
from jaxbert.errors import JaxbertError
from jaxbert.finetuning import tasks

from conftest import DATA_ROOT

WORDS = "the city river house music game road team war king school film song army church ship".split()


def review(rng, cue: str) -> str:
    words = list(rng.choice(WORDS, 8))
    words.insert(int(rng.integers(0, 9)), cue)
    return " ".join(words[:5]) + ". " + " ".join(words[5:]) + ".<br /><br />The end!"


@pytest.fixture(scope="module")
def small_imdb(tmp_path_factory):
    """(aclImdb folder, the same packed as .tar.gz): a review's class is whether 'good' or 'bad' is in it."""
    root = tmp_path_factory.mktemp("imdb")
    rng = np.random.default_rng(0)
    for split, n in (("train", 48), ("test", 12)):
        for label, cue in (("neg", "bad"), ("pos", "good")):
            folder = root / "aclImdb" / split / label
            folder.mkdir(parents=True)
            for i in range(n):
                (folder / f"{i}_{7 if label == 'pos' else 2}.txt").write_text(review(rng, cue))
    (root / "aclImdb" / "train" / "unsup").mkdir()
    for i in range(20):
        (root / "aclImdb" / "train" / "unsup" / f"{i}_0.txt").write_text(f"unlabelled {i}. it was a film.")
    (root / "aclImdb" / "test" / "pos" / "100_10.txt").write_text("test only review.<br />Never pretrained on.")
    with tarfile.open(root / "aclImdb_v1.tar.gz", "w:gz") as archive:
        archive.add(root / "aclImdb", arcname="aclImdb")
    return root / "aclImdb", root / "aclImdb_v1.tar.gz"


def test_the_archive_and_its_folder_read_the_same(small_imdb):
    folder, archive = small_imdb
    parts = (("train", "neg"), ("train", "pos"), ("test", "pos"), ("train", "unsup"))
    a, b, c = imdb.reviews(folder, parts), imdb.reviews(archive, parts), imdb.reviews(folder.parent, parts)
    assert a == b == c and [len(a[p]) for p in parts] == [48, 48, 13, 20]
    assert a["test", "pos"][-1] == "test only review.\nNever pretrained on."  # <br /> is a line break
    assert a["train", "unsup"][:3] == [f"unlabelled {i}. it was a film." for i in range(3)]  # by id: 0, 1, 2
    assert a["train", "unsup"][10] == "unlabelled 10. it was a film."  # numeric, not 0, 1, 10, 11, ...


def test_the_task_reads_train_and_test_and_labels_by_folder(small_imdb):
    train, test = tasks.get("imdb").read_splits(small_imdb[1])
    assert (len(train), len(test)) == (96, 25) and train.text_b is None
    assert tasks.get("imdb").labels == ("neg", "pos") and tasks.get("imdb").reported_split == "test"
    assert all(("good" in t) == bool(y) and ("bad" in t) != bool(y) for t, y in zip(train.text_a, train.labels))
    assert np.bincount(test.labels).tolist() == [12, 13]


def test_pretraining_text_is_unlabelled_and_training_reviews_only(small_imdb, tmp_path):
    folder, archive = small_imdb
    docs = list(corpus.iter_documents(archive))
    assert len(docs) == 20 + 96 and docs[0] == ["unlabelled 0.", "it was a film."]
    assert not any("test only" in s for d in docs for s in d)
    assert docs[20][-1] == "The end!" and all("<br" not in s for d in docs for s in d)
    assert corpus.expand([str(folder)]) == [folder]  # the folder is one corpus
    assert list(corpus.iter_documents(folder)) == docs
    # the CLI: a WordPiece vocabulary and a prepared directory straight from the archive
    assert cli.main(["tokenizer", "train", "--corpus", str(archive), "--vocab-size", "200",
                     "--out", str(tmp_path / "tok")]) == 0
    assert cli.main(["prepare", "--corpus", str(folder), "--tokenizer", str(tmp_path / "tok"),
                     "--out", str(tmp_path / "prep")]) == 0
    counts = json.loads((tmp_path / "prep" / "manifest.json").read_text())["counts"]
    assert counts["train"]["documents"] + counts["eval"]["documents"] == 116


def test_bad_imdb_paths_are_refused(small_imdb, tmp_path):
    with pytest.raises(JaxbertError, match="neither aclImdb_v1.tar.gz nor an aclImdb/ folder"):
        imdb.reviews(tmp_path, (("train", "pos"),))
    (tmp_path / "other.tar.gz").write_bytes(b"not gzip")
    with pytest.raises(JaxbertError, match="not a readable .tar.gz archive"):
        imdb.reviews(tmp_path / "other.tar.gz", (("train", "pos"),))
    with tarfile.open(tmp_path / "part.tar.gz", "w:gz") as archive:
        archive.add(small_imdb[0] / "test", arcname="aclImdb/test")
    with pytest.raises(JaxbertError, match="holds no aclImdb/train/neg/ reviews"):
        tasks.get("imdb").read_splits(tmp_path / "part.tar.gz")


def test_finetune_on_imdb_scores_the_test_reviews_once(small_imdb, tiny_run, tmp_path, capsys):
    out = tmp_path / "ft"
    assert cli.main(["finetune", "--task", "imdb", "--data", str(small_imdb[1]), "--init", str(tiny_run),
                     "--out", str(out), "--epochs", "3", "--batch-size", "8", "--max-len", "32",
                     "--learning-rate", "2e-3", "--labels", "40", "--validation", "8"]) == 0
    assert "test accuracy" in capsys.readouterr().out
    settings = json.loads((out / "finetune.json").read_text())
    assert (settings["train_examples"], settings["validation_examples"], settings["labelled"]) == (40, 8, 40)
    assert (settings["max_len"], settings["truncation"]) == (32, "head_tail")  # a flag given; the task's default
    scores = json.loads((out / "scores.json").read_text())
    assert 0 <= scores["test_accuracy"] <= 1 and "val_accuracy" in scores
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert not any(k.startswith("test_") for r in rows for k in r)


def test_a_plain_finetune_gets_the_tasks_defaults_and_help_names_them(capsys):
    imdb = dict(tasks.get("imdb").defaults)
    assert cli.finetune_settings("imdb", {})["max_len"] == imdb["max_len"] == 256
    assert cli.finetune_settings("imdb", {"max_len": 64, "truncation": None})["max_len"] == 64
    assert cli.finetune_settings("imdb", {})["truncation"] == "head_tail"
    assert cli.finetune_settings("squad", {})["max_len"] == cli.finetune_defaults()["max_len"] != 256
    with pytest.raises(SystemExit):
        cli.main(["finetune", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert all(f"imdb: {value}" in text for value in imdb.values()) and len(imdb) == 4
    assert "per-task defaults: imdb: chosen by `jaxbert transfer`" in text


@pytest.mark.skipif(not (DATA_ROOT / "imdb" / "aclImdb.tar.gz").is_file(), reason="needs the shared IMDb archive")
def test_the_real_archive():
    train, test = tasks.get("imdb").read_splits(DATA_ROOT / "imdb" / "aclImdb.tar.gz")
    assert (len(train), len(test)) == (25000, 25000)
    assert np.bincount(train.labels).tolist() == np.bincount(test.labels).tolist() == [12500, 12500]
    assert not any("<br" in t.lower() for t in train.text_a[::50] + test.text_a[::50])


@pytest.mark.slow
def test_the_transfer_report_chooses_on_validation_and_scores_the_reported_split_once(small_imdb, tiny_run, tmp_path,
                                                                                      monkeypatch, capsys):
    """Both arms train on the same examples in the same order and differ in their starting weights only; the
    grid is scored on the validation slice alone; the reported split is scored once per seed and arm."""
    import jax
    from flax import nnx

    from jaxbert.finetuning import finetune

    fits, scored, fit, scorer = [], [], finetune.fit, finetune.scorer

    def recording_fit(cfg, model, train_arrays, *args, **kw):
        fits.append((cfg, {k: v.copy() for k, v in train_arrays.items()},
                     jax.tree.leaves(nnx.state(model.bert, nnx.Param))))
        return fit(cfg, model, train_arrays, *args, **kw)

    def recording_scorer(task, arrays, batch_size):
        inner = scorer(task, arrays, batch_size)

        def score(step, params):
            scored.append(len(arrays["labels"]))
            return inner(step, params)
        return score

    monkeypatch.setattr(finetune, "fit", recording_fit)
    monkeypatch.setattr(finetune, "scorer", recording_scorer)
    out = tmp_path / "report"
    assert cli.main(["transfer", str(tiny_run), "--task", "imdb", "--data", str(small_imdb[1]), "--labels", "16",
                     "all", "--seeds", "2", "--learning-rates", "1e-3", "3e-3", "--epochs", "2", "--max-len", "32",
                     "--batch-size", "8", "--validation", "8", "--out", str(out)]) == 0
    report = json.loads((out / "transfer.json").read_text())
    assert [p["labels"] for p in report["points"]] == [16, 88] and (out / "transfer.png").stat().st_size > 0
    assert "| 16 |" in (out / "transfer.md").read_text() and "| 16 |" in capsys.readouterr().out
    for point in report["points"]:
        for arm in ("pretrained", "random"):
            grid = point[arm]["grid"]
            assert [(g["learning_rate"], g["epochs"]) for g in grid] == [(1e-3, 2), (3e-3, 2)]
            assert point[arm]["choice"] == max(grid, key=lambda g: g["validation"])
            assert len(point[arm]["scores"]) == 2 and all(0 <= s <= 1 for s in point[arm]["scores"])
        assert 0 <= point["tfidf"]["score"] <= 1 and point["tfidf"]["C"] in (0.1, 1.0, 10.0, 100.0)
    # per point: 2 arms x (2 grid fits + 2 seeds); validation scored every epoch, the 25 test reviews 4 times
    assert len(fits) == 2 * 2 * 4
    assert scored.count(25) == 2 * 2 * 2 and set(scored) == {8, 25}
    _, _, run_model, _ = restore_run(tiny_run)
    ours = jax.tree.leaves(nnx.state(run_model, nnx.Param))
    for point in range(2):
        group = fits[8 * point:8 * (point + 1)]  # pretrained arm's four fits, then the random arm's
        assert all(np.array_equal(group[0][1][k], g[1][k]) for g in group for k in group[0][1])  # same examples
        assert all(all(np.array_equal(a, b) for a, b in zip(g[2], ours)) for g in group[:4])
        assert all(not any(np.array_equal(a, b) for a, b in zip(g[2], ours) if a.ndim == 2) for g in group[4:])
