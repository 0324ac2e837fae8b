"""WordPiece: BERT's own ids from bert-base-uncased's vocab.txt, training, files; the word-level one alike."""

import itertools

import pytest

from jaxbert.data import tokenization
from jaxbert.errors import JaxbertError


@pytest.fixture(scope="module")
def vocab_txt(wikitext_dir):
    path = wikitext_dir.parent / "bert-base-uncased" / "vocab.txt"
    if not path.is_file():
        pytest.fail(f"{path} not found; set JAXBERT_DATA to the shared data folder")
    return path


def test_bert_base_uncased_ids_match_berts_own_tokenizer(vocab_txt, wikitext_dir):
    from transformers.models.bert.tokenization_bert_legacy import BertTokenizerLegacy  # pure-Python reference

    ours = tokenization.wordpiece_from_vocab(vocab_txt)
    reference = BertTokenizerLegacy(str(vocab_txt), do_lower_case=True)
    with open(wikitext_dir / "wiki.train.tokens", encoding="utf-8") as f:
        lines = [line.strip() for line in itertools.islice(f, 6000) if line.strip()][:3000]
    assert len(lines) == 3000
    encoded = ours.encode_batch(lines, add_special_tokens=False)
    for line, enc in zip(lines, encoded):
        assert enc.ids == reference.convert_tokens_to_ids(reference.tokenize(line)), line
    # Accents, case, CJK and punctuation, with the [CLS] A [SEP] B [SEP] template.
    text = "Héllo, WORLD! Naïve café 東京 don't"
    assert ours.encode(text, "second part").ids == reference.encode(text, "second part")
    want = reference(text, "second part", return_token_type_ids=True)["token_type_ids"]
    assert ours.encode(text, "second part").type_ids == want


def test_trained_wordpiece_has_the_specials_first_and_roundtrips(tmp_path):
    texts = [f"the quick brown fox number {i} jumps over the lazy dog again and again" for i in range(300)]
    tok = tokenization.train_wordpiece(texts, vocab_size=120)
    assert [tok.token_to_id(t) for t in tokenization.BERT_SPECIALS] == [0, 1, 2, 3, 4]
    assert tok.get_vocab_size() <= 120
    tokenization.save_vocab(tok, tmp_path / "vocab.txt")
    again = tokenization.wordpiece_from_vocab(tmp_path / "vocab.txt")
    assert again.encode("The QUICK fox", "jumps").ids == tok.encode("The QUICK fox", "jumps").ids
    assert tokenization.fingerprint(tok) == tokenization.fingerprint(tokenization.load_any(_saved(tok, tmp_path)))
    starts = tokenization.word_starts(tok)
    assert all(starts[i] == (not t.startswith("##")) for t, i in tok.get_vocab().items())


def _saved(tok, folder):
    tok.save(str(folder / "tokenizer.json"))
    return folder


def test_vocab_missing_a_special_token_is_refused(tmp_path):
    (tmp_path / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\nhello\n")
    with pytest.raises(JaxbertError, match=r"lacks the special tokens \['\[MASK\]'\]"):
        tokenization.wordpiece_from_vocab(tmp_path / "vocab.txt")
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(JaxbertError, match="is empty"):
        tokenization.load_any(tmp_path / "empty.txt")
    with pytest.raises(JaxbertError, match="does not exist"):
        tokenization.load_any(tmp_path / "nope.json")


def test_word_level_is_behind_the_same_interface():
    tok = tokenization.word_tokenizer(tokenization.build_word_vocab([["a", "b"]], 1))
    ids = tokenization.special_ids(tok)
    assert tok.token_to_id("<cls>") == ids.cls and tokenization.word_starts(tok).all()
