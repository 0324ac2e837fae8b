"""Extractive question answering on SQuAD v1.1, the data side: reading, windows of tokens, answers, scores.

    examples = squad.read(Path("dev-v1.1.json"))                     # one Example per question
    squad.split_by_article(Path("dev-v1.1.json"), Path("squad-split"))  # train.json, dev.json: 1 article in 4
    feats = squad.features(examples, tok, train=False)               # numpy arrays, one row per window
    predictions = squad.postprocess(examples, feats, start_logits, end_logits)   # {question id: answer text}
    squad.evaluate(examples, predictions)                            # {"exact_match": ..., "f1": ...} in %

A feature is `[CLS] question [SEP] context window [SEP]` (segment 0, then 1 from the window to its [SEP]), padded
to `max_len`. The question keeps its first `max_query_len` tokens; a context longer than the room left is cut
into windows that start `doc_stride` tokens apart, the last one reaching the context's end (Google's
run_squad.py; transformers' `stride` is instead the overlap of two windows). Tokens map to characters through the
tokenizer's offsets, so an answer is always a substring of the original context, never detokenized ids.

The scores are the official SQuAD v1.1 evaluation's definitions, written anew: answers are compared after
lower-casing and removing punctuation, the articles a/an/the and extra whitespace; exact match and token-level
F1 take the best over a question's reference answers, and a question without a prediction scores 0.
"""

import collections
import dataclasses
import json
import re
import string
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from jaxbert.data.tokenization import special_ids
from jaxbert.errors import JaxbertError


@dataclasses.dataclass(frozen=True)
class Example:
    """One question on one context, with its reference answers (texts and their character offsets)."""

    id: str
    question: str
    context: str
    answers: tuple[str, ...]
    answer_starts: tuple[int, ...]


def read(path: Path) -> list[Example]:
    """Every question of a SQuAD v1.1 JSON file, in file order; answers are checked against their offsets."""
    path = Path(path)
    if not path.is_file():
        raise JaxbertError(f"SQuAD file {path} does not exist; pass a SQuAD v1.1 JSON file such as dev-v1.1.json")
    try:
        root = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise JaxbertError(f"cannot read {path} ({e}); give a UTF-8 SQuAD v1.1 JSON file") from None
    except json.JSONDecodeError as e:
        raise JaxbertError(f"{path} is not JSON ({e.msg} at line {e.lineno} column {e.colno}); "
                           "give a SQuAD v1.1 JSON file") from None
    examples, seen = [], {}
    for a, article in enumerate(_field(root, "data", list, path, "the top-level object")):
        for p, paragraph in enumerate(_field(article, "paragraphs", list, path, f"data[{a}]")):
            where = f"data[{a}].paragraphs[{p}]"
            context = _field(paragraph, "context", str, path, where)
            for q, qa in enumerate(_field(paragraph, "qas", list, path, where)):
                example = _example(qa, context, path, f"{where}.qas[{q}]")
                if example.id in seen:
                    raise JaxbertError(f"{path}: question id {example.id!r} occurs twice ({seen[example.id]} and "
                                       f"{where}.qas[{q}]); give every question its own id")
                seen[example.id] = f"{where}.qas[{q}]"
                examples.append(example)
    if not examples:
        raise JaxbertError(f"{path} holds no questions; give a SQuAD v1.1 file with at least one question")
    return examples


def split_by_article(path: Path, out: Path, every: int = 4) -> dict[str, dict[str, int]]:
    """Split one SQuAD v1.1 file into `out/train.json` and `out/dev.json` by article: the `every`-th article in
    file order (the 4th, 8th, ... by default) is held out, every other one trains, so no paragraph is in both.
    Returns articles and questions per part."""
    path, out = Path(path), Path(out)
    read(path)  # every check a fine-tuning run makes, before anything is written
    if every < 2:
        raise JaxbertError(f"--every {every} must be at least 2 (one article in N is held out)")
    if out.exists() and any(out.iterdir()):
        raise JaxbertError(f"{out} is not empty; choose a new --out")
    root = json.loads(path.read_text(encoding="utf-8"))
    articles = root["data"]
    parts = {"train": [a for i, a in enumerate(articles) if i % every != every - 1],
             "dev": [a for i, a in enumerate(articles) if i % every == every - 1]}
    if not parts["dev"]:
        raise JaxbertError(f"{path} holds {len(articles)} article(s), too few to hold one in {every} out; give a "
                           "file with more articles or a smaller --every")
    out.mkdir(parents=True, exist_ok=True)
    counts = {}
    for name, part in parts.items():
        (out / f"{name}.json").write_text(json.dumps({**root, "data": part}, ensure_ascii=False), encoding="utf-8")
        counts[name] = {"articles": len(part), "questions": sum(len(p["qas"]) for a in part for p in a["paragraphs"])}
    return counts


def _field(obj, key: str, kind: type | tuple[type, ...], path: Path, where: str):
    if not isinstance(obj, dict) or key not in obj:
        raise JaxbertError(f"{path}: {where} has no {key!r}; a SQuAD v1.1 file is {{\"data\": [{{\"paragraphs\": "
                           "[{\"context\", \"qas\": [{\"id\", \"question\", \"answers\": [{\"text\", "
                           "\"answer_start\"}]}]}]}]}")
    if not isinstance(obj[key], kind) or isinstance(obj[key], bool):
        expected = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
        raise JaxbertError(f"{path}: {where}.{key} is a {type(obj[key]).__name__}, not a {expected}; "
                           "fix the file or check that it is SQuAD v1.1")
    return obj[key]


def _example(qa, context: str, path: Path, where: str) -> Example:
    qid = str(_field(qa, "id", (str, int), path, where))
    answers = _field(qa, "answers", list, path, where)
    if not answers:
        raise JaxbertError(f"{path}: question {qid!r} ({where}) has no answers; SQuAD v1.1 needs at least one "
                           "(v2.0's unanswerable questions are not supported)")
    texts, starts = [], []
    for n, answer in enumerate(answers):
        text = _field(answer, "text", str, path, f"{where}.answers[{n}]")
        start = _field(answer, "answer_start", int, path, f"{where}.answers[{n}]")
        found = context[start:start + len(text)] if start >= 0 else ""
        if found != text:
            raise JaxbertError(f"{path}: question {qid!r} ({where}.answers[{n}]) expects {text!r} at answer_start "
                               f"{start} but the context has {found!r} there; fix answer_start or the text")
        texts.append(text)
        starts.append(start)
    return Example(qid, _field(qa, "question", str, path, where), context, tuple(texts), tuple(starts))


def features(examples: list[Example], tok: Tokenizer, *, max_len: int = 384, doc_stride: int = 128,
             max_query_len: int = 64, train: bool) -> dict[str, np.ndarray]:
    """One row per context window: input_ids, segment_ids (N, T), valid_lens, example_index (N,) and offsets
    (N, T, 2), each context token's [start, end) characters in its example's context (-1 elsewhere).

    With `train`, also start_positions and end_positions (N,): the first answer's first and last token in the
    row, or 0 ([CLS]) when the window does not hold the whole answer.
    """
    if max_query_len < 1 or max_len <= max_query_len + 3:
        raise JaxbertError(f"max_len {max_len} leaves no room for a context after a question of max_query_len "
                           f"{max_query_len} and three special tokens; raise max_len or lower max_query_len")
    if doc_stride < 1:
        raise JaxbertError(f"doc_stride {doc_stride} must be at least 1 token; the default is 128")
    tok = Tokenizer.from_str(tok.to_str())  # a copy: a saved tokenizer may carry truncation or padding
    tok.no_truncation()
    tok.no_padding()
    sp = special_ids(tok)
    questions = tok.encode_batch([e.question for e in examples], add_special_tokens=False)
    unique = list(dict.fromkeys(e.context for e in examples))  # SQuAD asks several questions per context
    contexts = dict(zip(unique, tok.encode_batch(unique, add_special_tokens=False)))
    rows = collections.defaultdict(list)
    for i, (example, question) in enumerate(zip(examples, questions)):
        query, context = question.ids[:max_query_len], contexts[example.context]
        offsets = np.asarray(context.offsets, np.int32).reshape(-1, 2)
        first = len(query) + 2  # the row index of the window's first token
        answer = _token_span(offsets, example.answer_starts[0], len(example.answers[0])) if train else None
        for begin, length in _windows(len(context.ids), max_len - first - 1, doc_stride):
            valid = first + length + 1
            ids = np.full(max_len, sp.pad, np.int32)
            ids[:valid] = [sp.cls, *query, sp.sep, *context.ids[begin:begin + length], sp.sep]
            segments = np.zeros(max_len, np.int32)
            segments[first:valid] = 1
            row_offsets = np.full((max_len, 2), -1, np.int32)
            row_offsets[first:first + length] = offsets[begin:begin + length]
            rows["input_ids"].append(ids)
            rows["segment_ids"].append(segments)
            rows["valid_lens"].append(valid)
            rows["example_index"].append(i)
            rows["offsets"].append(row_offsets)
            if train:
                inside = answer is not None and begin <= answer[0] and answer[1] < begin + length
                rows["start_positions"].append(answer[0] - begin + first if inside else 0)
                rows["end_positions"].append(answer[1] - begin + first if inside else 0)
    return {k: np.stack(v) if k in ("input_ids", "segment_ids", "offsets") else np.asarray(v, np.int32)
            for k, v in rows.items()}


def _token_span(offsets: np.ndarray, start: int, length: int) -> tuple[int, int] | None:
    """The first and last context token overlapping characters [start, start + length), if any."""
    overlapping = np.flatnonzero((offsets[:, 0] < start + length) & (offsets[:, 1] > start))
    return (int(overlapping[0]), int(overlapping[-1])) if overlapping.size else None


def _windows(n: int, room: int, stride: int) -> list[tuple[int, int]]:
    """(first token, length) of each window over n tokens: `stride` apart, the last reaching the end."""
    spans, begin = [], 0
    while True:
        length = min(room, n - begin)
        spans.append((begin, length))
        if begin + length >= n:
            return spans
        begin += min(length, stride)


def postprocess(examples: list[Example], feats: dict[str, np.ndarray], start_logits: np.ndarray,
                end_logits: np.ndarray, *, n_best: int = 20, max_answer_len: int = 30) -> dict[str, str]:
    """Each question's answer: over all its windows, the span with the highest start + end logit.

    Per window, the `n_best` highest start and end logits of context tokens are paired; a span ends at or after
    its start and holds at most `max_answer_len` tokens. A question with no such span gets "".
    """
    start_logits, end_logits = np.asarray(start_logits, np.float32), np.asarray(end_logits, np.float32)
    if start_logits.shape != feats["input_ids"].shape or end_logits.shape != feats["input_ids"].shape:
        raise ValueError(f"logits of shapes {start_logits.shape} and {end_logits.shape} do not match the "
                         f"features' {feats['input_ids'].shape}")
    best: dict[int, tuple[float, str]] = {}
    for f, i in enumerate(feats["example_index"].tolist()):
        offsets = feats["offsets"][f]
        span = _best_span(start_logits[f], end_logits[f], offsets[:, 0] >= 0, n_best, max_answer_len)
        if span is not None and (i not in best or span[0] > best[i][0]):
            best[i] = span[0], examples[i].context[offsets[span[1], 0]:offsets[span[2], 1]]
    return {example.id: best[i][1] if i in best else "" for i, example in enumerate(examples)}


def _best_span(start: np.ndarray, end: np.ndarray, context: np.ndarray, n_best: int,
               max_answer_len: int) -> tuple[float, int, int] | None:
    """(score, first token, last token) of one window's best span, or None when it has none."""
    tokens = np.flatnonzero(context)
    starts = tokens[np.argsort(-start[tokens], kind="stable")[:n_best]]
    ends = tokens[np.argsort(-end[tokens], kind="stable")[:n_best]]
    lengths = ends[None, :] - starts[:, None] + 1
    scores = np.where((lengths >= 1) & (lengths <= max_answer_len), start[starts][:, None] + end[ends][None, :],
                      -np.inf)
    if not np.isfinite(scores).any():
        return None
    s, e = np.unravel_index(np.argmax(scores), scores.shape)
    return float(scores[s, e]), int(starts[s]), int(ends[e])


_PUNCTUATION = set(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
    """Lower case, no punctuation, no articles (a, an, the), single spaces: the official script's order."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, truths: list[str] | tuple[str, ...]) -> float:
    """1.0 when the normalized prediction equals any normalized reference answer, else 0.0."""
    return float(any(normalize_answer(prediction) == normalize_answer(t) for t in truths))


def f1(prediction: str, truths: list[str] | tuple[str, ...]) -> float:
    """The best token-level F1 against any reference: shared tokens counted with multiplicity (0 if none)."""
    return max(_f1(normalize_answer(prediction).split(), normalize_answer(t).split()) for t in truths)


def _f1(predicted: list[str], truth: list[str]) -> float:
    common = sum((collections.Counter(predicted) & collections.Counter(truth)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(truth)
    return 2 * precision * recall / (precision + recall)


def evaluate(examples: list[Example], predictions: dict[str, str]) -> dict[str, float]:
    """Exact match and F1 in percent over every question; an unanswered question scores 0 (as officially)."""
    if not examples:
        raise JaxbertError("no questions to evaluate; read a SQuAD file with at least one question")
    em = sum(exact_match(predictions[e.id], e.answers) for e in examples if e.id in predictions)
    f = sum(f1(predictions[e.id], e.answers) for e in examples if e.id in predictions)
    return {"exact_match": 100.0 * em / len(examples), "f1": 100.0 * f / len(examples)}
