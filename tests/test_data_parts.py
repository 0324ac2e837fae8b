"""`--data` with several prepared directories: a corpus prepared in parts (by different jobs or machines) trains
as the whole would, in one global order, each process reading only its share; mismatched parts are refused."""

import numpy as np
import pytest
from test_prepare import documents, write_text

from jaxbert import cli, config
from jaxbert.data import batches, prepare, tokenization
from jaxbert.errors import JaxbertError

from conftest import TINY, plausible_summary


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    """The same corpus prepared whole and in three parts (one per input file), with one tokenizer."""
    root = tmp_path_factory.mktemp("parts")
    tok = tokenization.train_wordpiece((s for d in documents(200) for s in d), vocab_size=60)
    files = [write_text(root / f"c{i}.txt", documents(80 + 20 * i, seed=i)) for i in range(3)]
    held = write_text(root / "held.txt", documents(40, seed=7))
    prepare.prepare(files, root / "whole", tok, eval_files=[held])
    for i, f in enumerate(files):
        prepare.prepare([f], root / f"part{i}", tok, eval_files=[held] if i == 0 else [], eval_fraction=0.0)
    return root, tok


def loaded(source, *flags):
    cfg = config.override(config.preset("bert-tiny"), ["data.max_len=32", *flags]).data
    return batches.load(batches.locate(source), cfg)


@pytest.mark.parametrize("objective", ["nsp", "mlm"])
def test_parts_give_the_batches_of_the_whole(parts, objective):
    root, _ = parts
    _, whole, whole_eval = loaded(str(root / "whole"), f"data.objective={objective}", "data.dynamic_masking=true")
    _, joint, joint_eval = loaded([str(root / f"part{i}") for i in range(3)], f"data.objective={objective}",
                                  "data.dynamic_masking=true")
    assert len(joint) == len(whole)
    steps = range(0, 2 * len(whole) // 16, 3)  # crosses an epoch
    for step in steps:
        a, b = whole.batch(step, 16), joint.batch(step, 16)
        assert all(np.array_equal(a[f], b[f]) for f in a), step
    for a, b in zip(whole_eval.eval_batches(2, 16), joint_eval.eval_batches(2, 16), strict=True):
        assert all(np.array_equal(a[f], b[f]) for f in a)
    # Each process's share is read on its own and the shares make the global batch.
    shares = [joint.batch(5, 16, p, 4) for p in range(4)]
    assert all(np.array_equal(np.concatenate([s[f] for s in shares]), whole.batch(5, 16)[f]) for f in shares[0])


def test_the_order_of_the_parts_matters_and_is_part_of_the_fingerprint(parts):
    root, _ = parts
    forward = batches.locate([str(root / "part0"), str(root / "part1")])
    backward = batches.locate([str(root / "part1"), str(root / "part0")])
    assert batches.fingerprint(forward) != batches.fingerprint(backward)
    _, a, _ = loaded([str(p) for p in forward])
    _, b, _ = loaded([str(p) for p in backward])
    assert not np.array_equal(a.batch(0, 16)["input_ids"], b.batch(0, 16)["input_ids"])


def test_pretrain_takes_several_data_directories(parts, tmp_path, capsys):
    root, tok = parts
    args = ["pretrain", "--preset", "d2l-tiny", "--out", str(tmp_path / "run"), "--data",
            *(str(root / f"part{i}") for i in range(3))]
    flags = [x for kv in TINY + ["train.steps=4", "data.max_len=64"] for x in ("--set", kv)]
    assert cli.main(args + flags) == 0
    summary = capsys.readouterr().out.strip().splitlines()
    plausible_summary(summary[-2], tok.get_vocab_size())
    assert cli.main(args + flags[:-4] + ["--set", "train.steps=6", "--set", "data.max_len=64", "--resume"]) == 0
    # Resuming with the parts in another order is refused: it would be other batches.
    reordered = ["pretrain", "--preset", "d2l-tiny", "--out", str(tmp_path / "run"), "--data",
                 str(root / "part1"), str(root / "part0"), str(root / "part2")]
    assert cli.main(reordered + flags[:-4] + ["--set", "train.steps=8", "--set", "data.max_len=64",
                                              "--resume"]) == 2
    assert "is not the data this run was trained on" in capsys.readouterr().err


def test_mismatched_parts_are_refused(parts, tmp_path, wikitext_slice):
    root, _ = parts
    other = tokenization.train_wordpiece((s for d in documents(50, seed=9) for s in d), vocab_size=40)
    prepare.prepare([write_text(tmp_path / "c.txt", documents(40))], tmp_path / "other", other)
    with pytest.raises(JaxbertError, match=r"other.*another tokenizer than .*part0.*prepare every part with one"):
        loaded([str(root / "part0"), str(tmp_path / "other")])
    with pytest.raises(JaxbertError, match="must each be a `jaxbert prepare` directory"):
        batches.locate([str(root / "part0"), str(wikitext_slice)])
    with pytest.raises(JaxbertError, match="given twice"):
        batches.locate([str(root / "part0"), str(root / "part0")])
