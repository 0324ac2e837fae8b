"""Question answering end to end on a tiny run: a SQuAD-format task learned, predicted, and exported to
transformers with the same answers."""

import io
import json

import numpy as np
import pytest

from jaxbert import cli
from jaxbert.finetuning import runs

WORDS = "city river house music game road team war king school film song army church ship".split()


def _example(rng, qid: int) -> dict:
    """Filler words with "very good" among them; the answer is that span, asked about by a question that names
    it, so a tiny model can learn it in seconds (both words are in the run's vocabulary)."""
    words = list(rng.choice(WORDS, 6, replace=False))
    k = int(rng.integers(0, 7))
    words[k:k] = ["very", "good"]
    start = len(" ".join(words[:k])) + (1 if k else 0)
    return {"id": f"q{qid}", "question": "what is very good", "context": " ".join(words),
            "answers": [{"text": "very good", "answer_start": start}]}


@pytest.fixture(scope="module")
def squad_dir(tmp_path_factory):
    rng, folder = np.random.default_rng(0), tmp_path_factory.mktemp("squad")
    for name, n in (("train-v1.1.json", 768), ("dev-v1.1.json", 64)):
        qas = [_example(rng, i) for i in range(n)]
        data = {"version": "1.1", "data": [{"title": "t", "paragraphs": [
            {"context": q["context"], "qas": [{k: v for k, v in q.items() if k != "context"}]} for q in qas]}]}
        (folder / name).write_text(json.dumps(data))
    return folder


@pytest.fixture(scope="module")
def span_model(tiny_run, squad_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("qa") / "ft"
    assert cli.main(["finetune", "--task", "squad", "--data", str(squad_dir), "--init", str(tiny_run),
                     "--out", str(out), "--epochs", "6", "--max-len", "24", "--learning-rate", "3e-3"]) == 0
    return out


def test_squad_is_learned_and_scored_with_em_and_f1(span_model):
    rows = [json.loads(line) for line in (span_model / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == list(range(1, 7))
    assert all(0 <= r["dev_exact_match"] <= r["dev_f1"] <= 100 for r in rows)  # F1 >= EM, no article answers
    assert rows[-1]["train_loss"] < rows[0]["train_loss"] / 2
    assert max(r["dev_exact_match"] for r in rows) >= 90, rows  # chance: 1 in 8 starts times 1 in 8 ends


def test_predict_answers_questions(span_model, monkeypatch, capsys):
    monkeypatch.setattr("sys.stdin", io.StringIO("what is very good\tcity river very good house music\n"
                                                 "what is very good\tvery good king school film song\n"))
    assert cli.main(["predict", str(span_model)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("\t")[0] for line in lines] == ["very good", "very good"]
    assert lines[1].split("\t", 1)[1] == "what is very good\tvery good king school film song"
    monkeypatch.setattr("sys.stdin", io.StringIO("what is very good\n"))
    assert cli.main(["predict", str(span_model)]) == 2
    assert "QUESTION<TAB>CONTEXT" in capsys.readouterr().err


def test_exported_span_model_matches_in_transformers(span_model, tmp_path):
    import torch
    import transformers

    assert cli.main(["export", str(span_model), str(tmp_path / "hf")]) == 0
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["architectures"] == ["BertForQuestionAnswering"]
    tok = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "hf"))
    model = transformers.AutoModelForQuestionAnswering.from_pretrained(str(tmp_path / "hf"))
    question, context = "what is very good", "city river house music very good game road"
    enc = tok(question, context, return_tensors="pt")
    with torch.no_grad():
        out = model(**enc)
    settings, _, ours_tok, ours = runs.restore(span_model)
    ids = np.asarray(enc["input_ids"]), np.asarray(enc["token_type_ids"])
    start, end = ours(ids[0], ids[1], np.asarray(enc["attention_mask"]).sum(-1))
    np.testing.assert_allclose(out.start_logits.numpy(), np.asarray(start), atol=1e-4)
    np.testing.assert_allclose(out.end_logits.numpy(), np.asarray(end), atol=1e-4)
    # transformers 5 has no question-answering pipeline: a user takes the likeliest start and end and decodes.
    start, end = int(out.start_logits.argmax()), int(out.end_logits.argmax())
    theirs = tok.decode(enc["input_ids"][0, start:end + 1])
    assert theirs == runs.answer(span_model, [(question, context)])[0] == "very good"


def test_squad_data_errors_are_one_line(tiny_run, tmp_path, capsys):
    (tmp_path / "data").mkdir()
    base = ["finetune", "--task", "squad", "--init", str(tiny_run), "--out", str(tmp_path / "out")]
    assert cli.main(base + ["--data", str(tmp_path / "data")]) == 2
    assert "holds neither train-v1.1.json nor train.json" in capsys.readouterr().err
    bad = {"data": [{"paragraphs": [{"context": "the city river", "qas": [
        {"id": "x", "question": "what?", "answers": [{"text": "king", "answer_start": 4}]}]}]}]}
    for name in ("train.json", "dev.json"):
        (tmp_path / "data" / name).write_text(json.dumps(bad))
    assert cli.main(base + ["--data", str(tmp_path / "data")]) == 2
    err = capsys.readouterr().err
    assert "'x'" in err and err.count("\n") == 1 and not (tmp_path / "out").exists()
