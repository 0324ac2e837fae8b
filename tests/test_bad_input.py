"""The fine-tuning lane's bad inputs, as a user meets them: one line naming the problem and the fix, exit 2, and no
output directory left behind. docs/finetuning.md's "Bad input" table lists the same cases, each with the words of
its message that this test checks."""

import json
import re
import shutil
from pathlib import Path

import pytest

from jaxbert import cli

DOCS = Path(__file__).parent.parent / "docs" / "finetuning.md"


def sst2_folder(root: Path, train: bytes | str, dev: str = "sentence\tlabel\nfine film\t1\nbad film\t0\n") -> Path:
    folder = root / "task"
    folder.mkdir()
    (folder / "train.tsv").write_bytes(train if isinstance(train, bytes) else train.encode())
    (folder / "dev.tsv").write_text(dev)
    return folder


GOOD = "sentence\tlabel\n" + "".join(f"{w} film\t{i % 2}\n" for i, w in enumerate(["good", "bad"] * 40))


def squad_folder(root: Path, answer_start: int) -> Path:
    folder = root / "squad"
    folder.mkdir()
    data = {"data": [{"title": "t", "paragraphs": [{"context": "the crane driver came", "qas": [
        {"id": "q1", "question": "who came?", "answers": [{"text": "crane driver", "answer_start": answer_start}]}]}]}]}
    for name in ("train.json", "dev.json"):
        (folder / name).write_text(json.dumps(data))
    return folder


def finetune(task: str, data: Path, init: Path, out: Path, *more: str) -> list[str]:
    return ["finetune", "--task", task, "--data", str(data), "--init", str(init), "--out", str(out), *more]


# case id -> (argv from (tmp_path, run, wikitext folder, out), words the one-line error must hold)
CASES = {
    "wrong columns": (lambda t, run, wiki, out: finetune("rte", sst2_folder(t, GOOD), run, out),
                      "has no column 'sentence1'"),
    "label outside the task's set": (
        lambda t, run, wiki, out: finetune("sst2", sst2_folder(t, "sentence\tlabel\ngood film\t1\nbad film\t2\n"),
                                           run, out), "label '2' is not one of sst2's labels"),
    "empty file": (lambda t, run, wiki, out: finetune("sst2", sst2_folder(t, ""), run, out), "holds no examples"),
    "header only": (lambda t, run, wiki, out: finetune("sst2", sst2_folder(t, "sentence\tlabel\n"), run, out),
                    "holds no examples"),
    "not UTF-8": (lambda t, run, wiki, out: finetune("sst2", sst2_folder(t, b"sentence\tlabel\ncaf\xe9 film\t1\n"),
                                                     run, out), "give a UTF-8 TSV file"),
    "SQuAD answer_start off its text": (lambda t, run, wiki, out: finetune("squad", squad_folder(t, 3), run, out),
                                        "but the context has"),
    "a WikiText folder as --data": (lambda t, run, wiki, out: finetune("sst2", wiki, run, out),
                                    "holds no train.tsv"),
    "--init that is not a run": (lambda t, run, wiki, out: finetune("sst2", sst2_folder(t, GOOD), t, out),
                                 "is not a jaxbert run directory"),
    "--init a fine-tuned model": (lambda t, run, wiki, out: finetune("sst2", sst2_folder(t, GOOD), fake_finetuned(
        t, run), out), "is a fine-tuned model"),
    "--out holding a model": (lambda t, run, wiki, out: finetune("sst2", sst2_folder(t, GOOD), run,
                                                                 fake_finetuned(t, run)), "is not empty"),
    "--max-len beyond the positions": (
        lambda t, run, wiki, out: finetune("sst2", sst2_folder(t, GOOD), run, out, "--max-len", "600"),
        "--max-len 600 is longer than the 512 positions"),
    "--max-len far beyond": (
        lambda t, run, wiki, out: finetune("sst2", sst2_folder(t, GOOD), run, out, "--max-len", "100000"),
        "use --max-len 512 or less"),
    "predict on a pretraining run": (lambda t, run, wiki, out: ["predict", str(run), "--file", str(run / "config.json")],
                                     "holds no finetune.json"),
    "export of something that is not a run": (lambda t, run, wiki, out: ["export", str(sst2_folder(t, GOOD)),
                                                                     str(out)], "is not a jaxbert run directory"),
    "predict on an empty directory": (lambda t, run, wiki, out: ["predict", str(empty(t)), "--file",
                                                                 str(run / "config.json")], "is empty"),
    "export of an empty directory": (lambda t, run, wiki, out: ["export", str(empty(t)), str(out)], "is empty"),
}


def empty(tmp_path: Path) -> Path:
    """What a run killed before its first file leaves: its --out, made and empty."""
    (tmp_path / "killed").mkdir()
    return tmp_path / "killed"


def fake_finetuned(tmp_path: Path, run: Path) -> Path:
    """A directory that says it is a fine-tuned model of `run` (its finetune.json), as `jaxbert finetune` writes."""
    folder = tmp_path / "finetuned"
    shutil.copytree(run, folder)
    (folder / "finetune.json").write_text(json.dumps({"task": "sst2", "init": str(run)}))
    return folder


@pytest.mark.parametrize("case", list(CASES))
def test_each_bad_input_is_refused_in_one_line_and_leaves_nothing(case, tiny_run, wikitext_slice, tmp_path, capsys):
    make_argv, words = CASES[case]
    out = tmp_path / "out"
    argv = make_argv(tmp_path, tiny_run, wikitext_slice, out)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("jaxbert: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert words in err, err
    assert not out.exists() and sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_the_docs_table_lists_every_case_with_its_message():
    rows = {m[1]: m[2] for m in re.finditer(r"^\| (.+?) \| .+? \| (.+?) \|$", DOCS.read_text(), re.M)}
    for case, (_, words) in CASES.items():
        assert case in rows, f"docs/finetuning.md has no row for {case!r}"
        assert words in rows[case].replace("`", ""), (case, rows[case])
