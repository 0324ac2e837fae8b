"""Fine-tuning tasks: what each one reads, which labels it has, and how it is scored.

    task = tasks.get("mrpc")
    data = task.read(Path("../shared/data/glue/MRPC/dev.tsv"))    # texts, labels (ids in task.labels order)
    task.score(predictions, data.labels)                          # {"accuracy": ..., "f1": ...}

The GLUE files are read in their own layouts (SST-2 and RTE with a header, MRPC with a byte-order mark and its
quality column first, CoLA without a header); a user's own TSV (with a header) or JSON lines name their text
and label columns. Texts are taken as they are: tabs separate fields and nothing is unquoted, as GLUE's files
need (MRPC's sentences hold bare double quotes).
"""

import dataclasses
import json
from pathlib import Path

import numpy as np

from jaxbert.errors import JaxbertError


@dataclasses.dataclass(frozen=True)
class TextPairs:
    """N examples: first texts, second texts (None for single-sentence tasks) and label ids."""

    text_a: list[str]
    text_b: list[str] | None
    labels: np.ndarray  # (N,) int32

    def __len__(self) -> int:
        return len(self.text_a)


def accuracy(predictions: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(np.asarray(predictions) == np.asarray(labels)))


def f1(predictions: np.ndarray, labels: np.ndarray, positive: int = 1) -> float:
    """F1 of the positive class (GLUE's MRPC metric); 0 when nothing is predicted or labelled positive."""
    p, y = np.asarray(predictions) == positive, np.asarray(labels) == positive
    tp = int(np.sum(p & y))
    return 0.0 if tp == 0 else 2 * tp / (int(p.sum()) + int(y.sum()))


def matthews(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Matthews correlation of two binary labelings (CoLA's metric); 0 when either is constant."""
    p, y = np.asarray(predictions) == 1, np.asarray(labels) == 1
    tp, tn = float(np.sum(p & y)), float(np.sum(~p & ~y))
    fp, fn = float(np.sum(p & ~y)), float(np.sum(~p & y))
    denominator = np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return 0.0 if denominator == 0 else float((tp * tn - fp * fn) / denominator)


METRICS = {"accuracy": accuracy, "f1": f1, "matthews": matthews}


@dataclasses.dataclass(frozen=True)
class Task:
    """A classification task over single sentences or sentence pairs.

    `columns` are (text A, text B or None, label): header names, or column numbers for files without a
    header. `metrics` are reported in order; the first decides which checkpoint is best.
    """

    name: str
    labels: tuple[str, ...]  # as written in the files; a label's id is its index
    columns: tuple[str | int, str | int | None, str | int]
    metrics: tuple[str, ...] = ("accuracy",)
    header: bool = True
    names: tuple[str, ...] | None = None  # what a label means, where the files write only a number
    reported_split: str = "dev"  # the split a fine-tuned model is scored on once, at the end
    # Fine-tuning settings that differ from FinetuneConfig's for this task, as (field, value) pairs: a plain
    # `jaxbert finetune --task NAME` gets them, and `--help` lists them (`defaults_why` says where they come from).
    defaults: tuple[tuple[str, object], ...] = ()
    defaults_why: str = ""

    @property
    def label_names(self) -> tuple[str, ...]:
        """How predictions are shown (and named in an exported model's `id2label`)."""
        return self.names or self.labels

    @property
    def pair(self) -> bool:
        return self.columns[1] is not None

    def score(self, predictions: np.ndarray, labels: np.ndarray) -> dict[str, float]:
        return {m: METRICS[m](predictions, labels) for m in self.metrics}

    def read_splits(self, folder: Path) -> tuple[TextPairs, TextPairs]:
        """(training examples, the reported split's) of a folder holding train.tsv and dev.tsv."""
        missing = [name for name in ("train.tsv", "dev.tsv") if not (Path(folder) / name).is_file()]
        if missing:
            raise JaxbertError(f"{folder} holds no {' or '.join(missing)}; --data for --task {self.name} must be a "
                               "folder with the task's train.tsv and dev.tsv (GLUE's layout)")
        return self.read(Path(folder) / "train.tsv"), self.read(Path(folder) / "dev.tsv")

    def read(self, path: Path) -> TextPairs:
        """The examples of a TSV file in this task's layout, or of a `.jsonl` file with the same field names."""
        path = Path(path)
        rows = _read_jsonl(path) if path.suffix == ".jsonl" else _read_tsv(path, self.header)
        if not rows:
            raise JaxbertError(f"{path} holds no examples; give a {self.name} file with one example per line")
        index = {label: i for i, label in enumerate(self.labels)}
        a_col, b_col, label_col = (rows.columns(c, path) if c is not None else None for c in self.columns)
        texts_a, texts_b, labels = [], [] if b_col is not None else None, []
        for line, row in rows.items():
            field = lambda column: _field(row, column, path, line)
            label = field(label_col)
            if label not in index:
                raise JaxbertError(f"{path}:{line}: label {label!r} is not one of {self.name}'s labels "
                                   f"{list(self.labels)}; check --task or the label column")
            texts_a.append(field(a_col))
            if b_col is not None:
                texts_b.append(field(b_col))
            labels.append(index[label])
        return TextPairs(texts_a, texts_b, np.asarray(labels, np.int32))


class _Rows:
    """Rows of a file by line number, each a dict (JSON lines, TSV with a header) or a list (TSV without)."""

    def __init__(self, rows: list[tuple[int, dict | list]], names: list[str] | None):
        self.rows, self.names = rows, names

    def __len__(self) -> int:
        return len(self.rows)

    def items(self):
        return iter(self.rows)

    def columns(self, column: str | int, path: Path) -> str | int:
        """The key of `column` in every row: a name for named rows, a position otherwise."""
        if isinstance(column, int) or self.names is None:
            return column
        if column not in self.names:
            raise JaxbertError(f"{path} has no column {column!r} (it has {self.names}); check --task or the "
                               "file's header")
        return column


def _field(row: dict | list, column: str | int, path: Path, line: int) -> str:
    try:
        return row[column]
    except (KeyError, IndexError):
        raise JaxbertError(f"{path}:{line} has no field {column!r}; every example needs its text and label") from None


def _read_tsv(path: Path, header: bool) -> _Rows:
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()  # -sig: MRPC's header starts with a BOM
    except (OSError, UnicodeDecodeError) as e:
        raise JaxbertError(f"cannot read {path} ({e}); give a UTF-8 TSV file") from None
    names = lines[0].split("\t") if header and lines else None
    rows = []
    for number, line in enumerate(lines[1:] if header else lines, start=2 if header else 1):
        if not line.strip():
            continue
        fields = line.split("\t")
        width = len(names) if names else None
        if width and len(fields) != width:
            raise JaxbertError(f"{path}:{number} has {len(fields)} tab-separated fields, the header {width}; "
                               "fix the line or the file's format")
        rows.append((number, dict(zip(names, fields)) if names else fields))
    if names is None and rows and len({len(fields) for _, fields in rows}) != 1:
        raise JaxbertError(f"{path} has lines with different numbers of tab-separated fields; fix the file")
    return _Rows(rows, names)


def _read_jsonl(path: Path) -> _Rows:
    rows, names = [], set()
    try:
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, start=1):
                if line.strip():
                    row = json.loads(line)
                    rows.append((number, {k: str(v) for k, v in row.items()}))
                    names |= set(row)
    except (OSError, UnicodeDecodeError) as e:
        raise JaxbertError(f"cannot read {path} ({e}); give a UTF-8 JSON lines file") from None
    except json.JSONDecodeError as e:
        raise JaxbertError(f"{path}:{number} is not JSON ({e.msg}); give one JSON object per line") from None
    return _Rows(rows, sorted(names))


@dataclasses.dataclass(frozen=True)
class ReviewsTask(Task):
    """IMDb: `--data` is the archive or its aclImdb/ folder (imdb.py); the test reviews are the reported split."""

    def read_splits(self, folder: Path) -> tuple[TextPairs, TextPairs]:
        from jaxbert.data import imdb

        parts = imdb.reviews(folder, tuple((split, label) for split in ("train", "test") for label in self.labels))

        def split(name: str) -> TextPairs:
            texts = [parts[name, label] for label in self.labels]
            return TextPairs([t for group in texts for t in group], None,
                             np.concatenate([np.full(len(g), i, np.int32) for i, g in enumerate(texts)]))

        return split("train"), split("test")


# The GLUE tasks in their distributed layouts, and generic tasks for a user's own files (header names).
TASKS = {
    "sst2": Task(name="sst2", labels=("0", "1"), columns=("sentence", None, "label"),
                 names=("negative", "positive")),
    "cola": Task(name="cola", labels=("0", "1"), columns=(3, None, 1), metrics=("matthews", "accuracy"),
                 header=False, names=("unacceptable", "acceptable")),
    "mrpc": Task(name="mrpc", labels=("0", "1"), columns=("#1 String", "#2 String", "Quality"),
                 metrics=("f1", "accuracy"), names=("not_equivalent", "equivalent")),
    "rte": Task(name="rte", labels=("entailment", "not_entailment"), columns=("sentence1", "sentence2", "label")),
    # Three-way NLI in GLUE's MNLI label order (entailment 0, neutral 1, contradiction 2).
    "nli": Task(name="nli", labels=("entailment", "neutral", "contradiction"),
                columns=("sentence1", "sentence2", "label")),
}


# Reviews are long (median 233 WordPiece pieces): 256 keeps half of them whole, head_tail the verdicts of the
# rest (docs/transfer.md measures both). The rate and epochs are what `jaxbert transfer` chose for the pretrained
# arm (bert-tiny-cpu, 30 minutes on IMDb's text) at 100 and at 500 labels; the validation slice picks the epoch.
TASKS["imdb"] = ReviewsTask(
    name="imdb", labels=("neg", "pos"), columns=("text", None, "label"), reported_split="test",
    defaults=(("max_len", 256), ("truncation", "head_tail"), ("learning_rate", 1e-3), ("epochs", 8)),
    defaults_why="chosen by `jaxbert transfer` for a bert-tiny-cpu run at 100 and 500 labels (docs/transfer.md); "
                 "lower the rate for larger models")


def get(name: str) -> Task:
    try:
        return TASKS[name]
    except KeyError:
        raise JaxbertError(f"unknown task {name!r}; choose one of: {', '.join(TASKS)}") from None


def custom(*, text: str, text_pair: str | None, label: str, labels: list[str], metrics=("accuracy",)) -> Task:
    """A task over a user's own TSV (with a header) or JSON lines: named columns, labels in id order."""
    if len(set(labels)) != len(labels) or len(labels) < 2:
        raise JaxbertError(f"labels {labels} must be at least two distinct values")
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise JaxbertError(f"unknown metric(s) {unknown}; choose from {list(METRICS)}")
    return Task(name="custom", labels=tuple(labels), columns=(text, text_pair, label), metrics=tuple(metrics))
