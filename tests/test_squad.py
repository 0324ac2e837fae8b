"""SQuAD v1.1: the reader and its errors, windows of tokens for both tokenizers, answers from logits, the metrics."""

import copy
import json
import math

import numpy as np
import pytest

from jaxbert.data import tokenization
from jaxbert.errors import JaxbertError
from jaxbert.finetuning import squad

from conftest import DATA_ROOT

NORMANDY = ("The Normans were the people who in the 10th and 11th centuries gave their name to Normandy, a region in "
            "France.")
# Punctuation stands apart so that the word-level tokenizer's whitespace words end where the answers do.
HARBOUR = ("The harbour master kept a careful record of every ship that entered the bay . For many years the book "
           "listed only fishing boats , small traders and the occasional ferry from the islands . Then , on the third "
           "morning of a cold spring , seventeen red boats sailed past the old lighthouse and anchored near the quay "
           ". Nobody in the town had seen so many strangers at once , and the record of that day fills four whole "
           "pages of the book .")
SHIPS = "Ships from the north brought salt and wool ."


def qa(qid: str, question: str, context: str, *answers: str) -> dict:
    return {"id": qid, "question": question,
            "answers": [{"text": a, "answer_start": context.index(a)} for a in answers]}


def squad_json() -> dict:
    return {"version": "1.1", "data": [
        {"title": "Normandy", "paragraphs": [{"context": NORMANDY, "qas": [
            qa("q-country", "In what country is Normandy located?", NORMANDY, "France", "a region in France", "France"),
            qa("q-when", "When did the Normans give their name to Normandy?", NORMANDY, "10th and 11th centuries")]}]},
        {"title": "Harbour", "paragraphs": [
            {"context": HARBOUR, "qas": [
                qa("q-boats", "What sailed past the old lighthouse on that spring morning?", HARBOUR,
                   "seventeen red boats"),
                qa("q-master", "Who kept a record of every ship?", HARBOUR, "The harbour master")]},
            {"context": SHIPS, "qas": [qa("q-goods", "What did the ships bring?", SHIPS, "salt and wool")]}]}]}


@pytest.fixture
def squad_file(tmp_path):
    path = tmp_path / "dev-v1.1.json"
    path.write_text(json.dumps(squad_json()), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def bert_tok():
    return tokenization.load_any(DATA_ROOT / "bert-base-uncased" / "vocab.txt")


@pytest.fixture(scope="module")
def word_tok():
    texts = [HARBOUR, SHIPS] + [q["question"] for a in squad_json()["data"] for p in a["paragraphs"] for q in p["qas"]]
    return tokenization.word_tokenizer(tokenization.build_word_vocab([t.lower().split() for t in texts], min_freq=1))


# --- metrics -------------------------------------------------------------------------------------------------------


def test_normalize_answer():
    # lower "the  cat's, hat!" -> no punctuation "the  cats hat" -> no article "   cats hat" -> one space each
    assert squad.normalize_answer("The  Cat's, hat!") == "cats hat"
    assert squad.normalize_answer("An apple a day\tthe theatre") == "apple day theatre"  # articles as whole words


def test_exact_match_and_f1_by_hand():
    assert squad.exact_match("the Cat!", ["a dog", "cat"]) == 1.0
    assert squad.exact_match("cat sat", ["cat"]) == 0.0
    # "cat sat on mat" vs "cat on mat": 3 shared tokens, precision 3/4, recall 3/3, F1 = 2 * 3/4 / (7/4) = 6/7
    assert math.isclose(squad.f1("the cat sat on the mat", ["a cat on a mat"]), 6 / 7)
    # shared tokens counted with multiplicity: "cat cat" vs "cat" shares 1, precision 1/2, recall 1, F1 = 2/3
    assert math.isclose(squad.f1("cat cat", ["cat"]), 2 / 3)
    # the best reference counts: "in france" vs "france" 2/3; vs "region in france" P 1, R 2/3, F1 = 0.8
    assert math.isclose(squad.f1("in France", ["France", "a region in France"]), 0.8)
    assert squad.f1("dog", ["cat"]) == 0.0 and squad.f1("the", ["a"]) == 0.0  # nothing left: 0 as in v1.1


# --- reader --------------------------------------------------------------------------------------------------------


def test_read(squad_file):
    examples = squad.read(squad_file)
    assert [e.id for e in examples] == ["q-country", "q-when", "q-boats", "q-master", "q-goods"]
    country = examples[0]
    assert country.context == NORMANDY and country.question == "In what country is Normandy located?"
    assert country.answers == ("France", "a region in France", "France")
    assert country.answer_starts == (NORMANDY.index("France"), NORMANDY.index("a region"), NORMANDY.index("France"))
    assert examples[4].context == SHIPS and examples[4].answers == ("salt and wool",)


def _broken(edit):
    data = copy.deepcopy(squad_json())
    edit(data)
    return data


@pytest.mark.parametrize("content, fragment", [
    (None, "does not exist"),
    ('{"data": [', "is not JSON"),
    ({"version": "1.1"}, "the top-level object has no 'data'"),
    ({"data": {"paragraphs": []}}, ".data is a dict, not a list"),
    (_broken(lambda d: d["data"][1]["paragraphs"][0].pop("context")), "data[1].paragraphs[0] has no 'context'"),
    (_broken(lambda d: d["data"][1]["paragraphs"][1]["qas"][0].pop("question")),
     "data[1].paragraphs[1].qas[0] has no 'question'"),
    (_broken(lambda d: d["data"][0]["paragraphs"][0]["qas"][1]["answers"][0].pop("answer_start")),
     "data[0].paragraphs[0].qas[1].answers[0] has no 'answer_start'"),
    ({"data": [{"title": "empty", "paragraphs": []}]}, "holds no questions"),
    (_broken(lambda d: d["data"][0]["paragraphs"][0]["qas"][1]["answers"][0].update(answer_start=38)),
     "question 'q-when' (data[0].paragraphs[0].qas[1].answers[0]) expects '10th and 11th centuries' at answer_start "
     "38 but the context has ' 10th and 11th centurie' there"),
    (_broken(lambda d: d["data"][1]["paragraphs"][1]["qas"][0].update(answers=[])), "'q-goods'"),
    (_broken(lambda d: d["data"][1]["paragraphs"][1]["qas"][0].update(id="q-country")),
     "question id 'q-country' occurs twice (data[0].paragraphs[0].qas[0] and data[1].paragraphs[1].qas[0])"),
])
def test_read_errors(tmp_path, content, fragment):
    path = tmp_path / "train-v1.1.json"
    if content is not None:
        path.write_text(content if isinstance(content, str) else json.dumps(content), encoding="utf-8")
    with pytest.raises(JaxbertError) as e:
        squad.read(path)
    assert fragment in str(e.value) and "\n" not in str(e.value)


# --- features ------------------------------------------------------------------------------------------------------


def check_features(examples, feats, tok, *, max_len, doc_stride, max_query_len):
    """Every row's layout against the question and context tokenized on their own; windows and answers."""
    sp = tokenization.special_ids(tok)
    n = len(feats["input_ids"])
    assert {k: (v.shape, v.dtype) for k, v in feats.items()} == {
        **{k: ((n, max_len), np.int32) for k in ("input_ids", "segment_ids")}, "offsets": ((n, max_len, 2), np.int32),
        **{k: ((n,), np.int32) for k in ("valid_lens", "example_index", "start_positions", "end_positions")}}
    assert sorted(set(feats["example_index"].tolist())) == list(range(len(examples)))
    windows = {}
    for f, i in enumerate(feats["example_index"].tolist()):
        example = examples[i]
        query = tok.encode(example.question, add_special_tokens=False).ids[:max_query_len]
        context = tok.encode(example.context, add_special_tokens=False)
        ids, segments, offsets, valid = (feats[k][f] for k in ("input_ids", "segment_ids", "offsets", "valid_lens"))
        first, last = len(query) + 2, valid - 1  # the window is rows [first, last)
        assert ids[0] == sp.cls and ids[1:first - 1].tolist() == query and ids[first - 1] == sp.sep
        assert ids[last] == sp.sep and (ids[valid:] == sp.pad).all()
        assert segments.tolist() == [0] * first + [1] * (valid - first) + [0] * (max_len - valid)
        assert (offsets[:first] == -1).all() and (offsets[last:] == -1).all()
        begin = context.offsets.index(tuple(offsets[first]))
        assert ids[first:last].tolist() == context.ids[begin:begin + last - first]
        assert offsets[first:last].tolist() == [list(o) for o in context.offsets[begin:begin + last - first]]
        windows.setdefault(i, []).append((begin, last - first))
        # the answer: its tokens in a window that holds all of its characters, else [CLS]
        start, end = feats["start_positions"][f], feats["end_positions"][f]
        a, b = example.answer_starts[0], example.answer_starts[0] + len(example.answers[0])
        if offsets[first, 0] <= a and b <= offsets[last - 1, 1]:
            assert first <= start <= end < last
            assert example.context[offsets[start, 0]:offsets[end, 1]] == example.answers[0]
        else:
            assert start == end == 0
    for i, spans in windows.items():  # windows doc_stride apart, each as long as fits, the last reaching the end
        tokens = len(tok.encode(examples[i].context, add_special_tokens=False).ids)
        room = max_len - len(tok.encode(examples[i].question, add_special_tokens=False).ids[:max_query_len]) - 3
        count = 1 + -(-max(tokens - room, 0) // doc_stride)
        assert spans == [(k * doc_stride, min(room, tokens - k * doc_stride)) for k in range(count)]
    return windows


def test_features_wordpiece_windows(squad_file, bert_tok):
    examples = squad.read(squad_file)
    shape = dict(max_len=32, doc_stride=8, max_query_len=8)
    feats = squad.features(examples, bert_tok, train=True, **shape)
    windows = check_features(examples, feats, bert_tok, **shape)
    assert len(windows[2]) >= 4 and len(windows[4]) == 1  # the harbour takes many windows, the ships one
    rows = np.flatnonzero(feats["example_index"] == 2)  # "seventeen red boats": some windows hold it, some do not
    assert 0 < np.count_nonzero(feats["start_positions"][rows]) < len(rows)
    (begin, length), (following, _) = windows[2][:2]
    assert following == begin + 8 and length > 8  # consecutive windows overlap
    question = feats["input_ids"][feats["example_index"] == 1][0]  # cut to 8 tokens ("normans" is norman ##s)
    assert bert_tok.decode(question[1:9].tolist()) == "when did the normans give their name"
    assert question[9] == tokenization.special_ids(bert_tok).sep


def test_features_word_level(squad_file, word_tok):
    examples = squad.read(squad_file)[2:]  # the harbour's questions: whitespace words end where answers do
    shape = dict(max_len=24, doc_stride=5, max_query_len=6)
    feats = squad.features(examples, word_tok, train=True, **shape)
    windows = check_features(examples, feats, word_tok, **shape)
    assert len(windows[0]) > 5 and 0 < np.count_nonzero(feats["start_positions"]) < len(feats["start_positions"])
    assert [word_tok.id_to_token(int(i)) for i in feats["input_ids"][0, [0, 7, -1]]] == ["<cls>", "<sep>", "<sep>"]


def test_features_without_answers_and_bad_sizes(squad_file, bert_tok):
    examples = squad.read(squad_file)
    feats = squad.features(examples, bert_tok, train=False)  # defaults: everything fits one window
    assert "start_positions" not in feats and feats["example_index"].tolist() == [0, 1, 2, 3, 4]
    with pytest.raises(JaxbertError, match="raise max_len or lower max_query_len"):
        squad.features(examples, bert_tok, max_len=67, max_query_len=64, train=True)
    with pytest.raises(JaxbertError, match="doc_stride 0"):
        squad.features(examples, bert_tok, doc_stride=0, train=True)


# --- answers from logits, scored -----------------------------------------------------------------------------------


def peaked_logits(examples, feats, spans: dict[str, tuple[int, int]], seed: int = 0):
    """Small noise, and 10 on the tokens that start and end each question's chosen characters, wherever present."""
    rng = np.random.default_rng(seed)
    start, end = (rng.normal(0, 0.1, feats["input_ids"].shape).astype(np.float32) for _ in range(2))
    for f, i in enumerate(feats["example_index"].tolist()):
        a, b = spans[examples[i].id]
        offsets = feats["offsets"][f]
        start[f, offsets[:, 0] == a] = 10
        end[f, offsets[:, 1] == b] = 10
    return start, end


def char_span(example, text: str) -> tuple[int, int]:
    a = example.context.index(text)
    return a, a + len(text)


def test_postprocess_gold_and_wrong(squad_file, bert_tok):
    examples = squad.read(squad_file)
    feats = squad.features(examples, bert_tok, max_len=32, doc_stride=8, max_query_len=8, train=True)
    gold = {e.id: (e.answer_starts[0], e.answer_starts[0] + len(e.answers[0])) for e in examples}
    predictions = squad.postprocess(examples, feats, *peaked_logits(examples, feats, gold))
    assert predictions == {e.id: e.answers[0] for e in examples}
    assert squad.evaluate(examples, predictions) == {"exact_match": 100.0, "f1": 100.0}

    # the gold logits as a model trained on start/end_positions would give them: the same answers
    start, end = np.zeros((2, *feats["input_ids"].shape), np.float32)
    rows = np.arange(len(start))
    start[rows, feats["start_positions"]], end[rows, feats["end_positions"]] = 5, 5
    assert squad.postprocess(examples, feats, start, end) == predictions

    # two wrong answers: "in France" (F1 0.8 against "a region in France", worked out above) and
    # "red boats sailed" vs "seventeen red boats": 2 shared of 3 and 3 tokens, F1 2/3
    wrong = dict(gold, **{"q-country": char_span(examples[0], "in France"),
                          "q-boats": char_span(examples[2], "red boats sailed")})
    predictions = squad.postprocess(examples, feats, *peaked_logits(examples, feats, wrong))
    assert predictions["q-country"] == "in France" and predictions["q-boats"] == "red boats sailed"
    scores = squad.evaluate(examples, predictions)
    assert math.isclose(scores["exact_match"], 100 * 3 / 5) and math.isclose(scores["f1"], 100 * (3 + 0.8 + 2 / 3) / 5)
    assert squad.evaluate(examples, {}) == {"exact_match": 0.0, "f1": 0.0}  # unanswered questions score 0


def test_postprocess_respects_span_rules(squad_file, bert_tok):
    examples = squad.read(squad_file)
    feats = squad.features(examples, bert_tok, max_len=32, doc_stride=8, max_query_len=8, train=False)
    gold = {e.id: (e.answer_starts[0], e.answer_starts[0] + len(e.answers[0])) for e in examples}
    start, end = peaked_logits(examples, feats, gold)
    short = squad.postprocess(examples, feats, start, end, max_answer_len=2)  # no 3-token answers any more
    assert short["q-boats"] != "seventeen red boats" and len(bert_tok.encode(short["q-boats"]).ids) - 2 <= 2
    assert short["q-country"] == "France"
    # an end peak before the start peak is no span: the answer is elsewhere, never empty
    backwards = dict(gold, **{"q-goods": (examples[4].context.index("wool"), examples[4].context.index("salt") + 4)})
    predictions = squad.postprocess(examples, feats, *peaked_logits(examples, feats, backwards))
    assert predictions["q-goods"] not in ("", "salt and wool")
    # the prediction only ever uses context tokens: question-only peaks are ignored
    start[:, 1], end[:, 1] = 100, 100
    assert squad.postprocess(examples, feats, start, end)["q-when"] == "10th and 11th centuries"


REAL_DEV = DATA_ROOT / "squad" / "dev-v1.1.json"


def test_split_by_article_on_the_real_dev_set(tmp_path, capsys):
    """One article in four (the 4th, 8th, ...) held out, by file order: no paragraph in both parts, every question
    in exactly one, and both parts read as SQuAD files again."""
    from jaxbert import cli

    assert cli.main(["squad-split", str(REAL_DEV), "--out", str(tmp_path / "split")]) == 0
    assert "train.json: 36 articles, 7793 questions" in capsys.readouterr().out
    original = json.loads(REAL_DEV.read_text(encoding="utf-8"))["data"]
    parts = {n: json.loads((tmp_path / "split" / f"{n}.json").read_text(encoding="utf-8"))["data"]
             for n in ("train", "dev")}
    assert [a["title"] for a in parts["dev"]] == [a["title"] for a in original[3::4]]
    assert [a["title"] for a in parts["train"]] == [a["title"] for i, a in enumerate(original) if i % 4 != 3]
    contexts = {n: {p["context"] for a in part for p in a["paragraphs"]} for n, part in parts.items()}
    assert not contexts["train"] & contexts["dev"]
    train, dev = squad.read(tmp_path / "split" / "train.json"), squad.read(tmp_path / "split" / "dev.json")
    assert (len(train), len(dev)) == (7793, 2777) and len(train) + len(dev) == len(squad.read(REAL_DEV)) == 10570
    assert not {e.id for e in train} & {e.id for e in dev}


def test_split_by_article_refusals(tmp_path, capsys):
    from jaxbert import cli

    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "mine.txt").write_text("kept")
    code = cli.main(["squad-split", str(REAL_DEV), "--out", str(tmp_path / "full")])
    assert code == 2 and "is not empty; choose a new --out" in capsys.readouterr().err
    assert [p.name for p in (tmp_path / "full").iterdir()] == ["mine.txt"]
    assert cli.main(["squad-split", str(REAL_DEV), "--out", str(tmp_path / "a"), "--every", "1"]) == 2
    assert "--every 1 must be at least 2" in capsys.readouterr().err and not (tmp_path / "a").exists()
    bad = tmp_path / "bad.json"
    bad.write_text('{"data": [{"paragraphs": [{"context": "abc", "qas": [{"id": "1", "question": "q", '
                   '"answers": [{"text": "b", "answer_start": 0}]}]}]}]}')
    assert cli.main(["squad-split", str(bad), "--out", str(tmp_path / "b")]) == 2
    assert "answer_start" in capsys.readouterr().err and not (tmp_path / "b").exists()


def test_the_scorer_on_real_dev_questions_by_hand():
    """Fixed predictions for real SQuAD v1.1 dev questions, scored by hand with the official v1.1 rules: lower case,
    punctuation, the articles a/an/the and extra whitespace removed; the best over the gold answers; token F1 with
    multiplicity; a question without a prediction scores 0; means over the questions, in %."""
    wanted = {
        "56be4db0acb8001400a502ec": ("the  Denver Broncos!", 1, 1),  # article, punctuation, whitespace
        "56be4db0acb8001400a502ed": ("Carolina", 0, 2 / 3),  # 1 of the 2 gold tokens: P 1, R 1/2
        # gold "Levi's Stadium in the San Francisco Bay Area at Santa Clara, California." has 11 tokens, 7 shared
        # (P 1, R 7/11, F1 7/9); gold "Levi's Stadium" shares 2 of the 7 (F1 4/9): the best is kept
        "56be4db0acb8001400a502ee": ("Levi's Stadium in the San Francisco Bay Area", 0, 7 / 9),
        "56be4e1facb8001400a502f9": ("eight", 1, 1),  # golds '8', 'eight', 'eight': any one counts
        "56be4e1facb8001400a502fa": ("in 1995", 0, 2 / 3),  # P 1/2, R 1
        "56beaa4a3aeaaa14008c91c2": ("Arizona Cardinals", 1, 1),
        "56be4eafacb8001400a50302": ("Miller", 1, 1),  # the third gold answer
        "56be4db0acb8001400a502ef": (None, 0, 0),  # no prediction
    }
    examples = [e for e in squad.read(REAL_DEV) if e.id in wanted]
    assert len(examples) == len(wanted)
    predictions = {i: p for i, (p, _, _) in wanted.items() if p is not None}
    for e in examples:
        text, em, f1 = wanted[e.id]
        if text is not None:
            assert squad.exact_match(text, e.answers) == em and squad.f1(text, e.answers) == pytest.approx(f1), e.id
    scores = squad.evaluate(examples, predictions)
    assert scores["exact_match"] == pytest.approx(100 * 4 / 8)
    assert scores["f1"] == pytest.approx(100 * 55 / 72)  # (4 + 2/3 + 7/9 + 2/3) / 8
