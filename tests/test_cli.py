"""The command line end to end on a slice of the real WikiText-2, the Python API, and every bad input."""

import json
import math
import re
import subprocess
import sys

import numpy as np
import pytest

import jaxbert
from jaxbert import cli
from jaxbert.errors import JaxbertError

from conftest import plausible_summary

# The d2l-tiny architecture itself (hidden 128), trained briefly on small batches.
QUICK = ["--set", "train.steps=4", "--set", "train.batch_size=32", "--set", "train.log_every=2",
         "--set", "train.eval_every=2", "--set", "train.eval_batches=1"]


def jaxbert_cli(capsys, *args):
    code = cli.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def run_dir(wikitext_slice, tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    assert cli.main(["pretrain", "--preset", "d2l-tiny", "--data", str(wikitext_slice), "--out", str(out),
                     *QUICK]) == 0
    return out


def test_pretrain_writes_a_complete_run(run_dir):
    assert sorted(p.name for p in run_dir.iterdir()) == \
        ["checkpoints", "config.json", "data.json", "loss.png", "metrics.jsonl", "tensorboard", "tokenizer.json"]
    assert (run_dir / "checkpoints" / "4").is_dir()
    assert len(list((run_dir / "tensorboard").glob("events.out.tfevents.*"))) == 1


def test_pretrain_prints_the_books_summary_with_plausible_values(wikitext_slice, tmp_path, capsys):
    code, out, _ = jaxbert_cli(capsys, "pretrain", "--data", wikitext_slice, "--out", tmp_path / "r", *QUICK)
    assert code == 0
    last = out.strip().splitlines()[-2:]
    assert set(plausible_summary(last[0], jaxbert.load(tmp_path / "r").tokenizer.get_vocab_size())) == {"mlm", "nsp"}
    rate = re.fullmatch(r"(\S+) sentence pairs/sec on \[CpuDevice\(id=0\)\]", last[1])
    assert rate and 0 < float(rate[1]) < 1e6, last[1]


def test_pretrain_says_what_it_does_before_training_on_stderr(wikitext_slice, tmp_path, capsys):
    code, out, err = jaxbert_cli(capsys, "pretrain", "--data", wikitext_slice, "--out", tmp_path / "r", *QUICK)
    stages = [line for line in err.splitlines() if STAGE.match(line)]
    assert code == 0 and not any(STAGE.match(line) for line in out.splitlines())
    assert len(stages) == 3, stages
    assert stages[0].endswith(f"] loading {wikitext_slice}")
    assert re.search(r"\] [\d,]+ training examples, a vocabulary of [\d,]+; building the model$", stages[1])
    assert stages[2].endswith("] compiling the train step (the first step pays it), then steps 1 to 4")


def test_dry_run_prints_the_resolved_config_parameters_and_time_per_step_and_writes_nothing(
        wikitext_slice, tmp_path, capsys):
    from jaxbert import config
    from jaxbert.model import sizes

    code, out, err = jaxbert_cli(capsys, "pretrain", "--data", wikitext_slice, "--out", tmp_path / "r", "--dry-run",
                                 *QUICK, "--set", "train.steps=1000")
    assert code == 0 and not (tmp_path / "r").exists(), err
    resolved = config.Config.from_dict(json.loads(out[:out.index("\nparameters: ")]))
    assert resolved.train.steps == 1000 and resolved.train.batch_size == 32 and resolved.preset == "d2l-tiny"
    assert resolved.model.vocab_size > 1000  # the data's tokenizer's, filled in
    params = int(re.search(r"\nparameters: ([\d,]+)\n", out)[1].replace(",", ""))
    assert params == sizes.parameters(resolved.model)  # counted from the model, checked against the closed form
    step_s = float(re.search(r"\none step: ([\d.]+) s, ", out)[1])
    assert 0 < step_s < 60
    assert re.search(r"\ntrain.steps=1,000 would take about [\d.,]+ (s|minutes|hours)\n$", out), out
    budgeted = jaxbert_cli(capsys, "pretrain", "--data", wikitext_slice, "--dry-run", "--budget", "1h", *QUICK)
    assert budgeted[0] == 0 and re.search(r"--budget 3600 s fits about [\d,]+ steps\n$", budgeted[1])


@pytest.mark.parametrize("preset", ["bert-mini", "bert-base"])
def test_googles_presets_need_a_budget_or_a_step_count(preset, wikitext_slice, tmp_path, capsys):
    code, _, err = jaxbert_cli(capsys, "pretrain", "--preset", preset, "--data", wikitext_slice, "--out", tmp_path / "r")
    one_line_error(code, err, f"--preset {preset} trains Google's 1,000,000 steps", "--budget", "train.steps=N")
    assert not (tmp_path / "r").exists()


def test_every_subcommands_help_shows_an_example():
    helps = dict((name, parser.format_help()) for name, parser in cli._subparsers(cli._parser()))
    assert {"pretrain", "prepare", "tokenizer train", "finetune", "export", "presets"} <= set(helps)
    for name, text in helps.items():
        assert "examples:\n" in text, name
        assert f"jaxbert {name}" in text.split("examples:\n", 1)[1].split("\n\n")[0], text


def test_encode_sentence_and_pair(run_dir, capsys):
    code, out, _ = jaxbert_cli(capsys, "encode", run_dir, "a crane is flying")
    assert code == 0
    # 'crane' may be rarer than min_freq in the slice: then the tokenizer shows it as <unk>, as the book would.
    assert re.search(r"tokens: <cls> a (crane|<unk>) is flying <sep>\n", out) and "shape: (1, 6, 128)" in out
    assert re.search(r"\n  2 (crane|<unk>) +\[", out)
    code, out, _ = jaxbert_cli(capsys, "encode", run_dir, "--pair", "a crane driver came", "he just left")
    assert code == 0 and "shape: (1, 10, 128)" in out
    assert re.search(r"tokens: <cls> a \S+ \S+ came <sep> he just left <sep>\n", out)
    code, brief, _ = jaxbert_cli(capsys, "encode", run_dir, "--brief", "--pair", "a crane driver came", "he just left")
    assert code == 0 and brief.splitlines() == out.splitlines()[:2]  # the tokens and the shape, no vectors


def test_python_api_matches_the_chapter(run_dir):
    enc = jaxbert.load(run_dir)
    single = enc.encode(["a", "crane", "is", "flying"])
    pair = enc.encode(["a", "crane", "driver", "came"], ["he", "just", "left"])
    assert single.shape == (1, 6, 128) and pair.shape == (1, 10, 128)
    assert enc.encode("a crane is flying").tolist() == single.tolist()  # a string is split into words
    # Contextual: 'crane' differs between the two contexts; the model is deterministic at inference.
    assert abs(float((single[0, 2] - pair[0, 2]).sum())) > 0
    assert pair.tolist() == enc.encode("a crane driver came", "he just left").tolist()


def test_encode_many_gives_each_text_its_own_encoding(run_dir):
    enc = jaxbert.load(run_dir)
    texts = ["a crane is flying", "he just left", "the city of london is the capital of the united kingdom and "
             "the largest city in the country by far", "a"]
    seconds = ["he just left", "a crane is flying", "it is", "b c"]
    for got, text in zip(enc.encode_many(texts, batch_size=3), texts):  # batches of 3 and 1, padded apart
        want = np.asarray(enc.encode(text))[0]
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)  # another padding width: float noise only
    for got, a, b in zip(enc.encode_many(texts, seconds), texts, seconds):
        np.testing.assert_allclose(got, np.asarray(enc.encode(a, b))[0], rtol=1e-5, atol=1e-5)
    with pytest.raises(JaxbertError, match="one per text"):
        enc.encode_many(texts, seconds[:2])


def snapshot(folder):
    return {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_refuses_to_overwrite_a_run_unless_asked(run_dir, wikitext_slice, capsys):
    before = snapshot(run_dir)
    code, _, err = jaxbert_cli(capsys, "pretrain", "--data", wikitext_slice, "--out", run_dir, *QUICK)
    assert code == 2 and "already holds a run; pass --resume" in err
    assert snapshot(run_dir) == before


def test_a_second_writer_of_a_run_is_refused_until_the_first_ends(run_dir, wikitext_slice, capsys):
    """Another process holding the run (as a `pretrain --resume` does from its claim to its end): a second
    --resume or --overwrite is refused in one line and changes nothing; once it ends, the run is free again."""
    from jaxbert import rundir

    before = snapshot(run_dir)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from jaxbert import rundir; "
         f"rundir.claim({str(run_dir)!r}, resume=True, overwrite=False); print('held', flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        for flag in ("--resume", "--overwrite"):
            code, _, err = jaxbert_cli(capsys, "pretrain", "--data", wikitext_slice, "--out", run_dir, flag, *QUICK)
            assert code == 2 and f"another process is writing {run_dir}" in err and err.count("\n") == 1, err
        assert snapshot(run_dir) == before
    finally:
        holder.communicate("")  # its stdin closes: it exits, and the lock goes with it
    assert rundir.claim(run_dir, resume=True, overwrite=False) is True
    rundir.release(run_dir)


def test_resume_of_a_finished_run_says_how_to_extend(run_dir, wikitext_slice, capsys):
    before = snapshot(run_dir)
    code, _, err = jaxbert_cli(capsys, "pretrain", "--data", wikitext_slice, "--out", run_dir, "--resume")
    assert code == 2 and "already reached step 4" in err and "train.steps=N" in err
    code, _, err = jaxbert_cli(capsys, "pretrain", "--data", wikitext_slice, "--out", run_dir, "--resume",
                               "--set", "train.steps=2")
    assert code == 2 and "already reached step 4 of train.steps=2" in err
    assert snapshot(run_dir) == before


def test_overwrite_replaces_a_run(wikitext_slice, tmp_path, capsys):
    out = tmp_path / "r"
    assert jaxbert_cli(capsys, "pretrain", "--data", wikitext_slice, "--out", out, *QUICK)[0] == 0
    code, _, _ = jaxbert_cli(capsys, "pretrain", "--data", wikitext_slice, "--out", out, "--overwrite", *QUICK,
                             "--set", "train.steps=2")
    assert code == 0 and sorted(p.name for p in (out / "checkpoints").iterdir()) == ["2"]


def corpus_dir(tmp_path, train, valid=None):
    d = tmp_path / "corpus"
    d.mkdir()
    (d / "wiki.train.tokens").write_text(train)
    (d / "wiki.valid.tokens").write_text(train if valid is None else valid)
    return d


STAGE = re.compile(r"\[\d\d:\d\d:\d\d\] ")  # what the process was doing (report.stage), before the error


def one_line_error(code, err, *fragments):
    assert code == 2
    error = "".join(line for line in err.splitlines(keepends=True) if not STAGE.match(line))
    assert error.count("\n") == 1 and error.startswith("jaxbert: error: ") and "Traceback" not in err, err
    for f in fragments:
        assert f in err, err


@pytest.mark.parametrize("args, fragments", [
    (["--preset", "bert-huge"], ["unknown preset 'bert-huge'"]),
    (["--set", "train.stepz=3"], ["train has no field 'stepz'"]),
    (["--set", "train.steps=many"], ["'many' is not a valid int"]),
    (["--set", "model.num_attention_heads=3"], ["not divisible by model.num_attention_heads=3"]),
    (["--set", "data.max_len=6"], ["no sentence pair of", "fits in data.max_len=6", "raise data.max_len"]),
])
def test_bad_configs(args, fragments, wikitext_slice, tmp_path, capsys):
    code, _, err = jaxbert_cli(capsys, "pretrain", "--data", wikitext_slice, "--out", tmp_path / "r", *args)
    one_line_error(code, err, *fragments)
    assert not (tmp_path / "r").exists()  # nothing was left behind


def test_bad_corpora(tmp_path, capsys):
    out = tmp_path / "r"
    code, _, err = jaxbert_cli(capsys, "pretrain", "--data", tmp_path / "nowhere", "--out", out)
    one_line_error(code, err, "does not exist")
    code, _, err = jaxbert_cli(capsys, "pretrain", "--data", corpus_dir(tmp_path, "\n\n"), "--out", out)
    one_line_error(code, err, "is empty")
    for split in ("train", "valid"):
        (tmp_path / "corpus" / f"wiki.{split}.tokens").write_text(" = Title = \n a single line of words \n")
    code, _, err = jaxbert_cli(capsys, "pretrain", "--data", tmp_path / "corpus", "--out", out)
    one_line_error(code, err, "no line with two or more sentences")
    (tmp_path / "corpus" / "wiki.train.tokens").unlink()
    code, _, err = jaxbert_cli(capsys, "pretrain", "--data", tmp_path / "corpus", "--out", out)
    one_line_error(code, err, "no wiki.train.tokens in")
    assert not out.exists()


def test_too_few_pairs_for_a_batch(tmp_path, capsys):
    d = corpus_dir(tmp_path, " the cat sat . the dog ran . a b c . \n" * 5)
    code, _, err = jaxbert_cli(capsys, "pretrain", "--data", d, "--out", tmp_path / "r",
                               "--set", "data.min_freq=1")
    one_line_error(code, err, "fewer than one batch of 512", "lower train.batch_size")
    assert not (tmp_path / "r").exists()  # so the same command with a smaller batch just works


def test_out_dir_with_other_files_is_left_alone(wikitext_slice, tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("precious")
    code, _, err = jaxbert_cli(capsys, "pretrain", "--data", wikitext_slice, "--out", out, "--overwrite")
    one_line_error(code, err, "is not empty and holds no jaxbert run")
    assert (out / "thesis.tex").read_text() == "precious"


def test_encode_needs_a_run(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("not a run")
    code, _, err = jaxbert_cli(capsys, "encode", tmp_path, "a crane")
    one_line_error(code, err, "is not a jaxbert run directory")
    (tmp_path / "empty").mkdir()
    code, _, err = jaxbert_cli(capsys, "encode", tmp_path / "empty", "a crane")
    one_line_error(code, err, "is empty")


def test_console_script_exits_non_zero_without_traceback(tmp_path):
    script = [sys.executable, "-m", "jaxbert.cli"]
    proc = subprocess.run([*script, "pretrain", "--preset", "nope", "--out", str(tmp_path / "r")],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.strip().startswith("jaxbert: error: unknown preset 'nope'")
    assert "Traceback" not in proc.stderr


def test_fill_mask_prints_the_top_words(run_dir, capsys):
    code, out, _ = jaxbert_cli(capsys, "fill-mask", run_dir, "the <mask> of the city .", "--top-k", "3")
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "tokens: <cls> the <mask> of the city . <sep>" and lines[1] == "mask:"
    guesses = [re.fullmatch(r"  (\d\.\d{4})  (\S+)", line) for line in lines[2:]]
    assert len(guesses) == 3 and all(guesses), lines
    probs = [float(g[1]) for g in guesses]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1
    expected = jaxbert.load(run_dir).fill_mask("the <mask> of the city .", top_k=3)[0]
    assert [g[2] for g in guesses] == [t for t, _ in expected]
    code, _, err = jaxbert_cli(capsys, "fill-mask", run_dir, "the city .")
    one_line_error(code, err, "no <mask> in 'the city .'")


def test_metrics_are_finite_and_plausible(run_dir):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    vocab = jaxbert.load(run_dir).tokenizer.get_vocab_size()
    for r in rows:
        assert all(math.isfinite(v) for v in r.values() if isinstance(v, float)), r
        assert 0 < r["mlm_loss"] < math.log(vocab) + 1 and 0 <= r["mlm_acc"] <= 1, r
    assert {r["split"] for r in rows} == {"train", "eval"} and rows[0]["step"] == 0  # held-out baseline first


def test_importing_the_package_changes_nothing_global():
    """No import-time side effects: no pyplot (which picks and may switch a backend), no JAX config change."""
    code = ("import sys, pkgutil, importlib, jax, jaxbert\n"
            "names = ('jax_enable_x64', 'jax_platforms', 'jax_default_matmul_precision')\n"
            "before = {k: getattr(jax.config, k) for k in names}\n"
            "found = list(pkgutil.walk_packages(jaxbert.__path__, 'jaxbert.'))\n"
            "for m in found: importlib.import_module(m.name)\n"
            "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot imported'\n"
            "assert before == {k: getattr(jax.config, k) for k in before}\n"
            "print(len(found))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert int(out) > 35  # every module, in the subpackages too
