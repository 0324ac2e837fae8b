"""Fine-tuning tasks: the GLUE files in their own layouts, a user's TSV/JSONL, the metrics, and bad files."""

import json

import numpy as np
import pytest

from jaxbert.errors import JaxbertError
from jaxbert.finetuning import tasks


@pytest.fixture(scope="session")
def glue(wikitext_dir):
    return wikitext_dir.parent / "glue"


@pytest.mark.parametrize("name, folder, n, pair, first", [
    ("sst2", "SST-2", 872, False, "it 's a charming and often affecting journey . "),
    ("mrpc", "MRPC", 408, True, "He said the foodservice pie business doesn 't fit the company 's long-term growth "
                                "strategy ."),
    ("rte", "RTE", 277, True, "Dana Reeve, the widow of the actor Christopher Reeve, has died of lung cancer at age "
                              "44, according to the Christopher Reeve Foundation."),
    ("cola", "CoLA", 1043, False, "The sailors rode the breeze clear of the rocks."),
])
def test_glue_dev_sets_read_in_their_layouts(glue, name, folder, n, pair, first):
    data = tasks.get(name).read(glue / folder / "dev.tsv")
    assert len(data) == n == len(data.labels) and (data.text_b is not None) == pair
    assert data.text_a[0] == first
    assert set(data.labels.tolist()) == {0, 1}  # both classes occur in every dev set
    if name == "rte":  # label ids follow the task's label list: entailment 0, not_entailment 1
        line = (glue / folder / "dev.tsv").read_text().splitlines()[1].split("\t")
        assert data.labels[0] == ["entailment", "not_entailment"].index(line[3])
    if name == "mrpc":  # the quality column is the label: 1 = paraphrase
        line = (glue / folder / "dev.tsv").read_text(encoding="utf-8-sig").splitlines()[1].split("\t")
        assert data.labels[0] == int(line[0]) and data.text_b[0] == line[4]


def test_metrics_against_independent_definitions():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 500)
    p = np.where(rng.random(500) < 0.7, y, 1 - y)
    assert tasks.accuracy(p, y) == pytest.approx(np.mean(p == y))
    # Matthews correlation of binary labels is their Pearson correlation.
    assert tasks.matthews(p, y) == pytest.approx(np.corrcoef(p, y)[0, 1])
    assert tasks.matthews(np.ones(5), np.array([0, 1, 0, 1, 1])) == 0.0
    # F1 by hand: tp 2, fp 1, fn 1 -> precision 2/3, recall 2/3.
    assert tasks.f1(np.array([1, 1, 1, 0, 0]), np.array([1, 1, 0, 1, 0])) == pytest.approx(2 / 3)
    assert tasks.f1(np.zeros(3), np.zeros(3)) == 0.0
    assert tasks.get("mrpc").score(np.array([1, 0]), np.array([1, 1])) == {"f1": pytest.approx(2 / 3),
                                                                           "accuracy": 0.5}


def test_a_users_own_files(tmp_path):
    task = tasks.custom(text="premise", text_pair="hypothesis", label="gold",
                        labels=["entailment", "neutral", "contradiction"])
    rows = [{"premise": "a man sleeps", "hypothesis": "a person rests", "gold": "entailment"},
            {"premise": "a dog runs", "hypothesis": "a cat sits", "gold": "contradiction"}]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "d.tsv").write_text("premise\thypothesis\tgold\n" +
                                    "".join(f"{r['premise']}\t{r['hypothesis']}\t{r['gold']}\n" for r in rows))
    for name in ("d.jsonl", "d.tsv"):
        data = task.read(tmp_path / name)
        assert data.text_b == ["a person rests", "a cat sits"] and data.labels.tolist() == [0, 2]


def test_bad_files_say_what_is_wrong(glue, tmp_path):
    sst2 = tasks.get("sst2")
    with pytest.raises(JaxbertError, match="cannot read"):
        sst2.read(tmp_path / "missing.tsv")
    (tmp_path / "empty.tsv").write_text("sentence\tlabel\n")
    with pytest.raises(JaxbertError, match="holds no examples"):
        sst2.read(tmp_path / "empty.tsv")
    (tmp_path / "bad.tsv").write_text("sentence\tlabel\ngood film\t1\nbad film\t2\n")
    with pytest.raises(JaxbertError, match=r"bad.tsv:3: label '2' is not one of sst2's labels"):
        sst2.read(tmp_path / "bad.tsv")
    (tmp_path / "ragged.tsv").write_text("sentence\tlabel\ngood film\t1\textra\n")
    with pytest.raises(JaxbertError, match=r"ragged.tsv:2 has 3 tab-separated fields, the header 2"):
        sst2.read(tmp_path / "ragged.tsv")
    with pytest.raises(JaxbertError, match="has no column 'sentence1'"):
        tasks.get("rte").read(glue / "SST-2" / "dev.tsv")  # the wrong --task for the file
    (tmp_path / "x.jsonl").write_text('{"sentence": "ok", "label": "1"}\n{"sentence": "no label"}\n')
    with pytest.raises(JaxbertError, match=r"x.jsonl:2 has no field 'label'"):
        sst2.read(tmp_path / "x.jsonl")
    with pytest.raises(JaxbertError, match="unknown task 'mnli-mm'"):
        tasks.get("mnli-mm")
