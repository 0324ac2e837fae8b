"""`jaxbert prepare` on corpora written here: formats, manifest, atomic writes, bad input, replay, training."""

import json

import numpy as np
import pytest

from jaxbert import cli, config
from jaxbert.data import batches, prepare, tokenization
from jaxbert.errors import JaxbertError
from jaxbert.training import train

from conftest import TINY, plausible_summary

WORDS = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "theta", "iota", "kappa", "lambda",
         "unbelievable", "restructuring", "counterintuitive", "photosynthesis", "x"]


def documents(n=60, seed=0):
    rng = np.random.default_rng(seed)
    return [[" ".join(rng.choice(WORDS, rng.integers(3, 12))).capitalize() + "."
             for _ in range(rng.integers(1, 8))] for _ in range(n)]


def write_text(path, docs):
    path.write_text("\n\n".join("\n".join(d) for d in docs) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def tok():
    return tokenization.train_wordpiece((s for d in documents(200) for s in d), vocab_size=60)


@pytest.fixture(scope="module")
def prepared(tok, tmp_path_factory):
    root = tmp_path_factory.mktemp("prep")
    corpus_file = write_text(root / "corpus.txt", documents(300))
    prepare.prepare([corpus_file], root / "out", tok, eval_fraction=0.1)
    return root / "out"


def test_prepared_directory_layout_and_counts(prepared, tok):
    m = prepare.read_manifest(prepared)
    assert m["tokenizer_fingerprint"] == tokenization.fingerprint(tok) and m["token_dtype"] == "uint16"
    train_c, eval_c = m["counts"]["train"], m["counts"]["eval"]
    assert train_c["documents"] + eval_c["documents"] == 300 and 10 < eval_c["documents"] < 60
    tokens, lengths, per_doc = prepare.open_split(prepared, "train", m)
    assert len(tokens) == lengths.sum() == train_c["tokens"] and per_doc.sum() == len(lengths)
    assert sorted(p.name for p in prepared.iterdir()) == ["eval", "manifest.json", "tokenizer.json", "train"]


def test_formats_give_the_same_documents(tmp_path, tok):
    docs = documents(20)
    write_text(tmp_path / "a.txt", docs)
    (tmp_path / "a.jsonl").write_text("".join(json.dumps({"text": " ".join(d)}) + "\n" for d in docs))
    (tmp_path / "a.tokens").write_text("".join(f" = Title {i} = \n\n {' '.join(d)} \n\n" for i, d in enumerate(docs)))
    counts = []
    for name in ("a.txt", "a.jsonl", "a.tokens"):
        m = prepare.prepare([tmp_path / name], tmp_path / f"out-{name}", tok, eval_fraction=0.0)
        counts.append((m["counts"]["train"]["documents"], m["counts"]["train"]["sentences"]))
    assert counts[0] == counts[1] == (20, sum(len(d) for d in docs))
    assert counts[2][0] == 20  # WikiText: an article per heading


def test_interrupted_prepare_leaves_nothing(tmp_path, tok, monkeypatch):
    corpus_file = write_text(tmp_path / "c.txt", documents(100))

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(prepare._SplitWriter, "write", interrupted)
    with pytest.raises(KeyboardInterrupt):
        prepare.prepare([corpus_file], tmp_path / "out", tok, chunk_sentences=10)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.txt"]


@pytest.mark.parametrize("content, fragment", [
    (b"Good line.\n\nbad \xff byte.\n", "not valid UTF-8 at byte 16"),
    (b"\n\n  \n", "is empty"),
])
def test_bad_files(tmp_path, tok, content, fragment):
    (tmp_path / "c.txt").write_bytes(content)
    with pytest.raises(JaxbertError, match=fragment):
        prepare.prepare([tmp_path / "c.txt"], tmp_path / "out", tok)
    assert not (tmp_path / "out").exists()


def test_bad_command_lines(tmp_path, capsys, prepared):
    (tmp_path / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\nhello\n")
    write_text(tmp_path / "c.txt", documents(5))
    (tmp_path / "c.jsonl").write_text('{"text": "Fine."}\n{"body": "no text field"}\n')
    cases = [
        (["prepare", "--corpus", str(tmp_path / "*.md"), "--tokenizer", str(prepared), "--out", "x"],
         "matches no file"),
        (["prepare", "--corpus", str(tmp_path / "c.txt"), "--tokenizer", str(tmp_path / "vocab.txt"),
          "--out", str(tmp_path / "o")], "lacks the special tokens ['[SEP]', '[MASK]']"),
        (["prepare", "--corpus", str(tmp_path / "c.jsonl"), "--tokenizer", str(prepared),
          "--out", str(tmp_path / "o")], "byte 18: not a JSON object with a 'text' field"),
        (["prepare", "--corpus", str(tmp_path / "c.txt"), "--tokenizer", str(prepared), "--out", str(prepared)],
         "is not empty; choose a new --out or pass --overwrite"),
    ]
    for argv, fragment in cases:
        assert cli.main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("jaxbert: error: ") and fragment in err and err.count("\n") == 1, err
    assert not (tmp_path / "o").exists()


def sets(prepared, *sets_):
    cfg = config.override(config.preset("bert-tiny"), ["data.max_len=32", *sets_]).data
    return batches.load(prepared, cfg)


def test_prepare_shows_a_progress_bar_on_a_terminal(tmp_path, tok):
    """On a terminal, the documents tokenized so far and the file being read; piped, nothing (tested above)."""
    import fcntl
    import os
    import pty
    import struct
    import subprocess
    import sys
    import termios

    corpus_file = write_text(tmp_path / "corpus.txt", documents(40))
    tok.save(str(tmp_path / "tokenizer.json"))
    parent, child = pty.openpty()
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))  # a terminal 120 columns wide
    proc = subprocess.Popen([sys.executable, "-m", "jaxbert.cli", "prepare", "--corpus", str(corpus_file),
                             "--tokenizer", str(tmp_path / "tokenizer.json"), "--out", str(tmp_path / "out")],
                            stdout=subprocess.DEVNULL, stderr=child)
    os.close(child)
    shown = b""
    while True:
        try:
            chunk = os.read(parent, 4096)
        except OSError:  # EIO: the process closed the terminal
            break
        if not chunk:
            break
        shown += chunk
    os.close(parent)
    assert proc.wait() == 0
    assert "tokenizing: 40 documents" in shown.decode() and "file 1 of 1: corpus.txt" in shown.decode(), shown


def test_rebuilding_step_k_equals_the_kth_batch_of_a_sequential_pass(prepared):
    _, seq, _ = sets(prepared, "data.dynamic_masking=true")
    sequential = [seq.batch(step, 16) for step in range(12)]  # crosses epochs
    _, fresh, _ = sets(prepared, "data.dynamic_masking=true")
    for k in (11, 3, 7):
        assert all(np.array_equal(fresh.batch(k, 16)[f], sequential[k][f]) for f in sequential[k])


def test_process_shares_cover_each_example_once_per_epoch(prepared):
    _, s, _ = sets(prepared)
    per_epoch = len(s) // 16
    for step in range(per_epoch):
        whole = s.batch(step, 16)
        parts = [s.batch(step, 16, p, 4) for p in range(4)]
        for f in whole:
            assert np.array_equal(np.concatenate([p[f] for p in parts]), whole[f])
    rows = np.concatenate([batches.batch_indices(len(s), 16, s.seed, k) for k in range(per_epoch)])
    assert len(rows) == len(set(rows)) == per_epoch * 16


def test_static_and_dynamic_masking(prepared):
    _, static, _ = sets(prepared)
    _, dynamic, _ = sets(prepared, "data.dynamic_masking=true")
    rows = np.arange(8)
    assert np.array_equal(static.take(rows, 0)["input_ids"], static.take(rows, 5)["input_ids"])
    assert not np.array_equal(dynamic.take(rows, 0)["input_ids"], dynamic.take(rows, 5)["input_ids"])


def test_whole_words_are_masked_together(prepared, tok):
    _, s, _ = sets(prepared, "data.whole_word_masking=true")
    starts = tokenization.word_starts(tok)
    b = s.take(np.arange(len(s)), 0)
    rows = np.arange(len(s))[:, None]
    original = b["input_ids"].copy()
    original[rows, b["masked_positions"]] = np.where(b["masked_weights"] == 1, b["masked_ids"],
                                                     original[rows, b["masked_positions"]])
    chosen = np.zeros(original.shape, bool)
    chosen[rows, b["masked_positions"]] = b["masked_weights"] == 1
    after_special = np.isin(np.roll(original, 1, axis=1), [tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")])
    # A piece that continues a word (not one cut off by truncation, right after [CLS] or [SEP]).
    continuation = ~starts[original] & ~after_special & (np.arange(original.shape[1])[None] < b["valid_lens"][:, None])
    assert continuation.sum() > 100  # the corpus has words split into pieces
    # A piece after a word start is chosen exactly when the piece before it is.
    prev = np.roll(chosen, 1, axis=1)
    assert np.array_equal(chosen[continuation], prev[continuation])


@pytest.mark.parametrize("objective", ["nsp", "sop", "mlm", "d2l"])
def test_pretrain_each_objective_from_prepared_data(prepared, tok, tmp_path, objective):
    cfg = config.override(config.preset("d2l-tiny"), TINY + ["train.steps=4", f"data.objective={objective}",
                                                            "data.whole_word_masking=true", "data.max_len=64"])
    summary = train.run(cfg, tmp_path / "run", data_dir=str(prepared))
    losses = plausible_summary(summary[0], tok.get_vocab_size())
    pair_losses = {"nsp": {"nsp"}, "sop": {"sop"}, "mlm": set(), "d2l": {"nsp"}}[objective]
    assert set(losses) == {"mlm"} | pair_losses
    assert (tmp_path / "run" / "tokenizer.json").read_text() == (prepared / "tokenizer.json").read_text()


def test_resume_refuses_data_prepared_with_another_tokenizer(prepared, tmp_path):
    cfg = config.override(config.preset("d2l-tiny"), TINY + ["train.steps=2", "data.objective=nsp"])
    train.run(cfg, tmp_path / "run", data_dir=str(prepared))
    other = tokenization.train_wordpiece((s for d in documents(50, seed=9) for s in d), vocab_size=40)
    prepare.prepare([write_text(tmp_path / "c.txt", documents(40))], tmp_path / "other", other)
    with pytest.raises(JaxbertError, match="prepared with another tokenizer"):
        train.run(config.override(cfg, ["train.steps=4"]), tmp_path / "run", data_dir=str(tmp_path / "other"),
                  resume=True)


@pytest.mark.slow
def test_wikitext2_with_berts_vocabulary_trains_each_objective(wikitext_slice, wikitext_dir, tmp_path):
    tok = tokenization.wordpiece_from_vocab(wikitext_dir.parent / "bert-base-uncased" / "vocab.txt")
    prepare.prepare([wikitext_slice / "wiki.train.tokens"], tmp_path / "prep", tok,
                    eval_files=[wikitext_slice / "wiki.valid.tokens"])
    for objective in ("nsp", "sop", "mlm"):
        cfg = config.override(config.preset("bert-tiny"), TINY + ["train.steps=2", f"data.objective={objective}",
                                                                 "model.intermediate_size=128"])
        summary = train.run(cfg, tmp_path / objective, data_dir=str(tmp_path / "prep"))
        plausible_summary(summary[0], 30522)
        assert config.Config.load(tmp_path / objective / "config.json").model.vocab_size == 30522


def test_a_config_that_does_not_fit_the_prepared_data_is_refused(prepared, tmp_path):
    cfg = config.override(config.preset("d2l-tiny"), TINY + ["model.vocab_size=30522", "data.objective=nsp"])
    with pytest.raises(JaxbertError, match="does not match the data's tokenizer"):
        train.run(cfg, tmp_path / "run", data_dir=str(prepared))
    assert not (tmp_path / "run").exists()
