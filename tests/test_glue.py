"""GLUE-lite end to end on a tiny run: four tasks in GLUE's own layouts, both initialisations, two seeds."""

import json
import math

import jax
import numpy as np
import pytest

import jaxbert
from jaxbert import cli
from jaxbert.config import FinetuneConfig
from jaxbert.finetuning import glue


@pytest.fixture(scope="module")
def run_dir(tiny_run):
    return tiny_run


WORDS = "the city river house music game road team war king school film song army church ship".split()


def _texts(rng, label: int, cue=("bad", "good")) -> str:
    words = list(rng.choice(WORDS, 5))
    words.insert(int(rng.integers(0, 6)), cue[label])
    return " ".join(words)


@pytest.fixture(scope="module")
def glue_dir(run_dir, tmp_path_factory):
    """SST-2, CoLA, MRPC and RTE folders in GLUE's layouts (CoLA without a header, MRPC with a byte-order
    mark and its label first, RTE with named labels); each label is cued by a word the run's vocabulary has."""
    tok = jaxbert.load(run_dir).tokenizer
    assert all(tok.token_to_id(w) is not None for w in WORDS + ["good", "bad"])
    rng, root = np.random.default_rng(0), tmp_path_factory.mktemp("glue-data")
    layouts = {
        "SST-2": ("sentence\tlabel", lambda y: f"{_texts(rng, y)}\t{y}"),
        "CoLA": (None, lambda y: f"gj04\t{y}\t\t{_texts(rng, y)}"),
        "MRPC": ("\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String",
                 lambda y: f"{y}\t1\t2\t{_texts(rng, y)}\t{_texts(rng, 0, ('war', 'war'))}"),
        "RTE": ("index\tsentence1\tsentence2\tlabel",
                lambda y: f"0\t{_texts(rng, 0, ('war', 'war'))}\t{_texts(rng, y)}\t"
                          f"{['entailment', 'not_entailment'][y]}"),
    }
    for folder, (header, line) in layouts.items():
        (root / folder).mkdir()
        for split, n in (("train", 512), ("dev", 64)):
            rows = [line(int(rng.integers(0, 2))) for _ in range(n)]
            (root / folder / f"{split}.tsv").write_text("\n".join(([header] if header else []) + rows) + "\n")
    return root


@pytest.mark.slow
def test_glue_reports_both_initialisations_over_seeds(run_dir, glue_dir, tmp_path, monkeypatch, capsys):
    quick = {name: FinetuneConfig(task=name, max_len=16, epochs=5, learning_rate=3e-3) for name in glue.FOLDERS}
    monkeypatch.setattr(glue, "SETTINGS", quick)
    out = tmp_path / "report"
    assert cli.main(["glue", str(run_dir), "--data", str(glue_dir), "--out", str(out), "--seeds", "2"]) == 0
    report = json.loads((out / "glue.json").read_text())
    assert list(report["tasks"]) == ["sst2", "mrpc", "rte", "cola"] and report["seeds"] == 2
    for name, entry in report["tasks"].items():
        assert entry["metric"] == {"sst2": "accuracy", "mrpc": "f1", "rte": "accuracy", "cola": "matthews"}[name]
        for init in glue.INITS:
            values = [s[entry["metric"]] for s in entry["scores"][init]]
            assert len(values) == 2 and all(math.isfinite(v) and -100 <= v <= 100 for v in values)
            assert entry[init]["mean"] == pytest.approx(np.mean(values), abs=0.01)
            assert entry[init]["sd"] == pytest.approx(np.std(values, ddof=1), abs=0.01)
        # Each task is learnable from one cue word: both initialisations get there within five epochs.
        assert entry["pretrained"]["mean"] > 80 and entry["random"]["mean"] > 80, entry
    table = (out / "glue.md").read_text()
    assert "| SST-2 | accuracy |" in table and "| CoLA | matthews |" in table
    assert table in capsys.readouterr().out
    assert (out / "glue.png").read_bytes()[:4] == b"\x89PNG"
    # The report is not overwritten, and a folder without the GLUE tasks is named before anything trains.
    assert cli.main(["glue", str(run_dir), "--data", str(glue_dir), "--out", str(out), "--seeds", "2"]) == 2
    assert "already holds a GLUE-lite report" in capsys.readouterr().err
    assert cli.main(["glue", str(run_dir), "--data", str(tmp_path), "--out", str(tmp_path / "r2")]) == 2
    assert "must hold the GLUE folders" in capsys.readouterr().err and not (tmp_path / "r2").exists()


def test_glue_starts_the_pretrained_arm_from_the_run_and_the_control_from_fresh_weights(run_dir, glue_dir, tmp_path,
                                                                                      monkeypatch):
    from flax import nnx

    from jaxbert.encode import restore_run
    from jaxbert.finetuning import finetune

    _, _, run_model, _ = restore_run(run_dir)
    ours = jax.tree.leaves(nnx.state(run_model, nnx.Param))
    seen, fit = [], finetune.fit

    def recording_fit(cfg, model, *args, **kw):
        seen.append((cfg.dropout, model.dropout.rate, jax.tree.leaves(nnx.state(model.bert, nnx.Param))))
        return fit(cfg, model, *args, **kw)

    monkeypatch.setattr(finetune, "fit", recording_fit)
    quick = {"sst2": FinetuneConfig(task="sst2", max_len=16, epochs=1, learning_rate=3e-3)}
    glue.run(run_dir, glue_dir, tmp_path / "report", seeds=2, task_names=("sst2",), settings=quick, log=lambda _: 0)
    assert len(seen) == 4  # pretrained seeds 0 and 1, then random init seeds 0 and 1
    for dropout, rate, leaves in seen:
        assert dropout == rate == 0.1  # fine-tuning's dropout, not the run's
    for _, _, leaves in seen[:2]:
        assert all(np.array_equal(a, b) for a, b in zip(leaves, ours, strict=True))
    for _, _, leaves in seen[2:]:
        assert not any(np.array_equal(a, b) for a, b in zip(leaves, ours, strict=True) if a.ndim == 2)
    assert not all(np.array_equal(a, b) for a, b in zip(seen[2][2], seen[3][2]) if a.ndim == 2)  # seeds differ
