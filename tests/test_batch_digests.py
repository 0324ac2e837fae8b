"""The batches of both data sources, pinned by digest: a refactor of the data path must leave them bit-identical.

Each digest covers every field of the first training batches, a later epoch's batch, and the first held-out
batch (names, dtypes, shapes and bytes). They were recorded before the data path was reorganised (issue 14);
a change in any array, its dtype or its order fails here. The prepared digests changed on purpose twice: when
instances.py began drawing from the generator passed in rather than numba's global stream, and when `prepare`
began undoing WikiText's markers (`@-@`, `@,@`, `@.@`, `<unk>`); the book's batches did not.
"""

import hashlib

import numpy as np
import pytest

from jaxbert import config
from jaxbert.data import batches, prepare, tokenization

FIELDS = ("input_ids", "segment_ids", "valid_lens", "masked_positions", "masked_ids", "masked_weights",
          "nsp_labels")


def digest(batches) -> str:
    h = hashlib.sha256()
    for batch in batches:
        assert sorted(batch) == sorted(FIELDS)
        for name in FIELDS:
            a = np.ascontiguousarray(batch[name])
            h.update(f"{name} {a.dtype} {a.shape}".encode())
            h.update(a.tobytes())
    return h.hexdigest()[:16]


def first_batches(train_set, eval_set, batch_size: int) -> list[dict]:
    later = len(train_set) // batch_size + 1  # the second batch of epoch 1
    return ([train_set.batch(step, batch_size) for step in (0, 1, later)]
            + [train_set.batch(1, batch_size, process_index=1, process_count=2)]
            + eval_set.eval_batches(1, batch_size))


def test_the_books_batches_on_wikitext2(wikitext_dir):
    cfg = config.preset("d2l-tiny")
    tok, train_set, eval_set = batches.load(wikitext_dir, cfg.data)
    assert tok.get_vocab_size() == 20256
    assert digest(first_batches(train_set, eval_set, cfg.train.batch_size)) == "8e8cae5ec1d47bc4"


@pytest.fixture(scope="module")
def prepared_wikitext(wikitext_slice, wikitext_dir, tmp_path_factory):
    tok = tokenization.wordpiece_from_vocab(wikitext_dir.parent / "bert-base-uncased" / "vocab.txt")
    out = tmp_path_factory.mktemp("digest") / "prep"
    prepare.prepare([wikitext_slice / "wiki.train.tokens"], out, tok, eval_files=[wikitext_slice / "wiki.valid.tokens"])
    return out


@pytest.mark.parametrize("overrides, expected", [
    ([], "ef75cc0de1dfc5ce"),
    (["data.objective=sop"], "55e86d5e97b2fc20"),
    (["data.objective=mlm"], "528028a870515b40"),
    (["data.whole_word_masking=true"], "ad91dc321c174ffe"),
    (["data.dynamic_masking=true"], "25c18a93e3f61084"),
])
def test_prepared_batches(prepared_wikitext, overrides, expected):
    cfg = config.override(config.preset("bert-tiny"), ["data.max_len=64", *overrides])
    _, train_set, eval_set = batches.load(prepared_wikitext, cfg.data)
    assert digest(first_batches(train_set, eval_set, 64)) == expected
