"""Training on a tiny config: the loss falls, batches are f(seed, step), and a resumed run is the same run."""

import json
import shutil

import jax
import numpy as np
import optax
import pytest
from flax import nnx

from jaxbert import cli, config, rundir
from jaxbert.data import batches
from jaxbert.errors import JaxbertError
from jaxbert.model.bert import BertForPreTraining
from jaxbert.training import checkpoint, optim, train

from conftest import TINY, plausible_summary


def tiny(*extra):
    return config.override(config.preset("d2l-tiny"), TINY + list(extra))


def rows(run_dir, split):
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["split"] == split]


def test_loss_falls_on_train_and_held_out(wikitext_slice, tmp_path):
    summary = train.run(tiny("train.steps=40", "train.eval_every=20"), tmp_path / "run", data_dir=wikitext_slice)
    tr, ev = rows(tmp_path / "run", "train"), rows(tmp_path / "run", "eval")
    assert tr[-1]["mlm_loss"] < tr[0]["mlm_loss"] - 1.0, (tr[0], tr[-1])
    assert ev[0]["step"] == 0 and ev[-1]["mlm_loss"] < ev[0]["mlm_loss"] - 0.3, ev
    assert summary[0] == f"MLM loss {tr[-1]['mlm_loss']:.3f}, NSP loss {tr[-1]['nsp_loss']:.3f}"
    assert "sentence pairs/sec on [CpuDevice(id=0)]" in summary[1]
    assert (tmp_path / "run" / "loss.png").stat().st_size > 1000


def params_at(run_dir, step):
    cfg = config.Config.load(run_dir / "config.json")
    abstract = nnx.state(nnx.eval_shape(lambda: BertForPreTraining(cfg.model, rngs=nnx.Rngs(0))), nnx.Param)
    params, _ = checkpoint.restore(checkpoint.manager(run_dir), step, abstract)
    return params


def test_resume_continues_exactly(wikitext_slice, tmp_path):
    straight, split = tmp_path / "straight", tmp_path / "split"
    train.run(tiny("train.steps=8"), straight, data_dir=wikitext_slice)
    train.run(tiny("train.steps=4"), split, data_dir=wikitext_slice)
    with open(split / "metrics.jsonl", "a") as f:  # a crash after step 4 left rows of steps never saved
        f.write(json.dumps({"step": 6, "split": "train", "mlm_loss": 0.0, "nsp_loss": 0.0}) + "\n")
    train.run(tiny("train.steps=8"), split, data_dir=wikitext_slice, resume=True)
    assert rundir.latest_step(split) == 8
    a, b = jax.tree.leaves(params_at(straight, 8)), jax.tree.leaves(params_at(split, 8))
    for x, y in zip(a, b, strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-6, atol=1e-7)
    losses = lambda d: [(r["step"], round(r["mlm_loss"], 4)) for r in rows(d, "train")]
    assert losses(straight) == losses(split)  # and the stale row of step 6 is gone


def test_batches_are_a_function_of_seed_and_step():
    n, b = 103, 10
    first_epoch = np.concatenate([batches.batch_indices(n, b, seed=4, step=s) for s in range(10)])
    assert sorted(first_epoch) == sorted(set(first_epoch)) and len(first_epoch) == 100  # no repeats, 3 dropped
    np.testing.assert_array_equal(batches.batch_indices(n, b, 4, 13), batches.batch_indices(n, b, 4, 13))
    assert not np.array_equal(batches.batch_indices(n, b, 4, 3), batches.batch_indices(n, b, 4, 13))  # new epoch order
    assert not np.array_equal(batches.batch_indices(n, b, 4, 3), batches.batch_indices(n, b, 5, 3))


def test_wikitext_examples_use_the_training_vocabulary(wikitext_slice):
    tok, tr, ev = batches.load_wikitext2(wikitext_slice, tiny().data)
    assert len(tr) > len(ev) > 50
    everything = [split.take(np.arange(len(split))) for split in (tr, ev)]
    for ex in everything:
        assert ex["input_ids"].max() < tok.get_vocab_size()
        assert ex["input_ids"].shape[1] == 32
    tok2, tr2, _ = batches.load_wikitext2(wikitext_slice, tiny().data, tok)
    np.testing.assert_array_equal(everything[0]["input_ids"], tr2.take(np.arange(len(tr2)))["input_ids"])  # the same


@pytest.mark.parametrize("bad, named", [
    ("optim.learning_rate=1e-3", "optim.learning_rate=0.001 (the run has 0.003)"),
    ("model.hidden_size=64", "model.hidden_size=64 (the run has 32)"),
    ("train.batch_size=8", "train.batch_size=8 (the run has 16)"),
    ("train.seed=1", "train.seed=1 (the run has 0)"),
    ("data.seed=1", "data.seed=1 (the run has 0)"),
    ("data.mask_prob=0.2", "data.mask_prob=0.2 (the run has 0.15)"),
])
def test_resume_refuses_what_shaped_the_steps_taken(wikitext_slice, tmp_path, bad, named):
    train.run(tiny("train.steps=2"), tmp_path / "run", data_dir=wikitext_slice)
    before = (tmp_path / "run" / "config.json").read_text()
    with pytest.raises(JaxbertError, match="^--resume: ") as e:
        train.run(tiny("train.steps=4", bad), tmp_path / "run", data_dir=wikitext_slice, resume=True)
    assert named in str(e.value) and "train.steps" in str(e.value)  # names the field and what may change
    assert (tmp_path / "run" / "config.json").read_text() == before and rundir.latest_step(tmp_path / "run") == 2


def test_resume_refuses_another_preset_and_other_data(wikitext_slice, tmp_path, capsys):
    from jaxbert import cli

    run = tmp_path / "run"
    train.run(tiny("train.steps=2"), run, data_dir=wikitext_slice)
    assert cli.main(["pretrain", "--resume", "--preset", "bert-tiny", "--out", str(run), "--data",
                     str(wikitext_slice), "--set", "train.steps=4"]) == 2
    assert "was made with --preset d2l-tiny, not bert-tiny; drop --preset" in capsys.readouterr().err
    other = tmp_path / "other"
    other.mkdir()
    for name in ("wiki.train.tokens", "wiki.valid.tokens"):  # the same corpus less its last 100 lines
        lines = (wikitext_slice / name).read_text().splitlines(keepends=True)
        (other / name).write_text("".join(lines[:-100]))
    assert cli.main(["pretrain", "--resume", "--out", str(run), "--data", str(other), "--set", "train.steps=4"]) == 2
    err = capsys.readouterr().err
    assert f"{other} is not the data this run was trained on ({wikitext_slice}" in err
    moved = tmp_path / "moved"
    shutil.copytree(wikitext_slice, moved)  # the same files elsewhere are the same data
    assert cli.main(["pretrain", "--resume", "--out", str(run), "--data", str(moved), "--set", "train.steps=3"]) == 0
    assert rundir.latest_step(run) == 3 and config.Config.load(run / "config.json").train.steps == 3


def learning_rates(run_dir):
    return [(r["step"], r["learning_rate"]) for r in rows(run_dir, "train")]


@pytest.mark.slow
def test_resume_keeps_the_learning_rate_of_steps_taken(wikitext_slice, tmp_path):
    # Linear decay to 0 at train.steps: growing train.steps past the warmup would rewrite the steps taken.
    decaying = ("optim.schedule=linear", "optim.warmup_steps=2")
    train.run(tiny("train.steps=4", *decaying), tmp_path / "run", data_dir=wikitext_slice)
    with pytest.raises(JaxbertError, match="would change the learning rate of the 4 steps already taken"):
        train.run(tiny("train.steps=8", *decaying), tmp_path / "run", data_dir=wikitext_slice, resume=True)
    # Still in the warmup (6 of 10 steps), the same growth changes nothing that was taken: it may go on, and
    # every step's learning rate is the one of a run that was given 8 steps from the start.
    warm = ("optim.schedule=linear", "optim.warmup_steps=10")
    train.run(tiny("train.steps=4", *warm), tmp_path / "warm", data_dir=wikitext_slice)
    train.run(tiny("train.steps=8", *warm), tmp_path / "warm", data_dir=wikitext_slice, resume=True)
    train.run(tiny("train.steps=8", *warm), tmp_path / "straight", data_dir=wikitext_slice)
    assert learning_rates(tmp_path / "warm") == learning_rates(tmp_path / "straight")
    expected = [3e-3 * count / 10 for count in (1, 3, 5, 7)]  # warmup, at the updates of steps 2, 4, 6, 8
    assert [lr for _, lr in learning_rates(tmp_path / "straight")] == pytest.approx(expected)


def test_both_heads_can_fit_a_fixed_batch(wikitext_slice):
    """NSP barely moves in a short run on WikiText-2; here both heads show they learn when the task allows."""
    cfg = tiny("model.hidden_dropout_prob=0", "model.attention_probs_dropout_prob=0")
    tok, train_set, _ = batches.load_wikitext2(wikitext_slice, cfg.data)
    cfg = config.override(cfg, [f"model.vocab_size={tok.get_vocab_size()}"])
    tx = optim.optimizer(cfg.optim, 100)
    graphdef, state = train.init_state(cfg, tx)
    train_step, eval_step = train.make_steps(graphdef, tx, jax.random.key(0))
    batch = train_set.take(np.arange(64))
    before = eval_step(state.params, batch)
    for _ in range(40):
        state, _ = train_step(state, batch)
    after = eval_step(state.params, batch)
    assert float(before["nsp_loss"]) > 0.6 and float(after["nsp_loss"]) < 0.1
    assert float(after["mlm_loss"]) < float(before["mlm_loss"]) - 2
    assert float(after["nsp_acc"]) == 1.0


@pytest.mark.slow
def test_budget_fits_the_schedule_to_the_wall_clock(wikitext_slice, tmp_path, capsys):
    run = tmp_path / "run"
    # 60 s: compiling this program (its own schedule) from a cold cache took 24 s on a loaded 2-core machine.
    args = ["pretrain", "--data", str(wikitext_slice), "--out", str(run), "--budget", "60s",
            "--set", "optim.schedule=linear", "--set", "optim.warmup_steps=3"]
    args += [a for s in TINY + ["train.log_every=50", "train.eval_every=200", "train.checkpoint_every=100000"]
             for a in ("--set", s)]
    assert cli.main(args) == 0
    saved = config.Config.load(run / "config.json")
    steps = saved.train.steps
    assert saved.train.budget_s == 60 and steps > train.PROBE_STEPS  # fitted, not the preset's 140
    assert rundir.latest_step(run) == steps  # trained to the fitted step and checkpointed there
    last = rows(run, "train")[-1]
    assert last["step"] == steps
    # The schedule ends at the budget: the last update ran at the decay's final, smallest positive rate.
    # optax computes 3e-3 * (1 - count / decay_steps) in float32: the quotient, near 1, is rounded by up to 2**-24,
    # and the subtraction keeps that absolute error, so the bound is absolute (its relative size grows with the
    # steps a fast CPU fits into the budget: 1e-4 of the expected value at 9,000 steps); twice that, for margin.
    assert last["learning_rate"] == pytest.approx(3e-3 / (steps - 3), rel=0, abs=3e-3 * 2**-23)
    took = float(capsys.readouterr().out.split("the run took ")[1].split(" s")[0])
    assert took < 2 * 60  # the fit counts compiling, steps and evaluations (loose: this machine is shared)
    # A resumed run keeps the steps it was fitted to; --budget there is refused, naming what to do.
    assert cli.main(["pretrain", "--resume", "--out", str(run), "--data", str(wikitext_slice),
                     "--budget", "1m"]) == 2
    assert "drop --budget" in capsys.readouterr().err


def test_a_budget_too_small_to_train_leaves_nothing(wikitext_slice, tmp_path, capsys):
    run = tmp_path / "run"
    args = ["pretrain", "--data", str(wikitext_slice), "--out", str(run), "--budget", "0.01s"]
    assert cli.main(args + [a for s in TINY for a in ("--set", s)]) == 2
    assert "leaves no time to train" in capsys.readouterr().err and not run.exists()
    with pytest.raises(SystemExit):
        cli.main(args[:-1] + ["ten minutes"])


@pytest.mark.parametrize("objective", ["nsp", "sop", "mlm"])
def test_a_wikitext_folder_takes_every_objective_and_masking(objective, wikitext_slice, tmp_path):
    """One lane: the book's folder read as documents (its paragraphs) serves Google's instance policies too, with
    whole-word (one word, one piece here) and dynamic masking."""
    cfg = config.override(tiny(), ["train.steps=4", f"data.objective={objective}", "data.whole_word_masking=true",
                                   "data.dynamic_masking=true"])
    summary = train.run(cfg, tmp_path / "run", data_dir=str(wikitext_slice))
    losses = plausible_summary(summary[0], config.Config.load(tmp_path / "run" / "config.json").model.vocab_size)
    assert set(losses) == {"nsp": {"mlm", "nsp"}, "sop": {"mlm", "sop"}, "mlm": {"mlm"}}[objective]


def test_a_diverging_run_stops_at_the_step_with_its_last_good_checkpoint_intact(wikitext_slice, tmp_path, capsys):
    """Step 1 updates at the warmup's first rate (0), so it is finite and checkpointed; step 2's update, at
    1e23, makes step 3's attention scores overflow. The run names step 3, writes nothing after it, and exits 2."""
    run = tmp_path / "run"
    args = ["pretrain", "--data", str(wikitext_slice), "--out", str(run)]
    args += [a for s in TINY + ["train.steps=12", "train.log_every=5", "train.checkpoint_every=2",
                                "train.eval_every=100", "optim.learning_rate=1e30", "optim.warmup_steps=10000000",
                                "optim.clip_norm=0"] for a in ("--set", s)]
    assert cli.main(args) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("jaxbert: error")]
    assert len(err) == 1 and "non-finite at step 3" in err[0] and "last good checkpoint is step 2" in err[0], err
    assert rundir.latest_step(run) == 2
    for leaf in jax.tree.leaves(params_at(run, 2)):
        assert np.isfinite(np.asarray(leaf)).all()
    assert all(r["step"] < 3 for r in rows(run, "train") + rows(run, "eval"))  # no row from the bad steps
    assert "lower optim.learning_rate" in err[0]


@pytest.mark.parametrize("objective", ["d2l", "mlm"])
def test_accumulating_micro_batches_equals_one_large_batch(objective, wikitext_slice):
    """k micro-batches of B/k inside one step give the update and metrics of one batch of B (dropout off, so
    both see the same function), including micro-batches with different numbers of real predictions."""
    cfg = tiny("model.hidden_dropout_prob=0", "model.attention_probs_dropout_prob=0", f"data.objective={objective}")
    tok, train_set, _ = batches.load_wikitext2(wikitext_slice, cfg.data)
    cfg = config.override(cfg, [f"model.vocab_size={tok.get_vocab_size()}"])
    # Plain SGD: accumulation is a matter of gradients, and SGD passes their float32 differences (the micro-
    # batch sums run in another order) on at lr times their size. Adam would divide them by sqrt(v) + eps
    # (eps = 1e-8 in d2l-tiny): a gradient element that is zero in exact arithmetic (an attention key bias)
    # holds rounding noise, which Adam turns into steps of up to lr, differently on each CPU.
    tx = optax.sgd(0.5)
    batch = train_set.take(np.arange(48))
    counts = batch["masked_weights"].reshape(4, 12, -1).sum((1, 2))
    assert len(set(counts.tolist())) > 1, counts  # the shares differ: a plain mean of micro-batches would be off
    results = {}
    for k in (1, 4):
        graphdef, state = train.init_state(cfg, tx)
        step, _ = train.make_steps(graphdef, tx, jax.random.key(0), with_nsp=objective != "mlm", grad_accum_steps=k)
        for _ in range(3):
            state, metrics = step(state, batch)
        results[k] = jax.device_get((state.params, metrics))
    for a, b in zip(jax.tree.leaves(results[1]), jax.tree.leaves(results[4]), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-4, atol=2e-6)
    assert set(results[4][1]) >= {"loss", "mlm_loss", "mlm_acc", "grad_norm"}


def test_grad_accum_steps_must_divide_the_batch():
    with pytest.raises(JaxbertError, match="not divisible by train.grad_accum_steps"):
        tiny("train.grad_accum_steps=3")


def tensorboard_scalars(folder) -> dict[tuple[str, int], float]:
    """Every scalar in the event files of `folder`, read from the TFRecord framing with TensorBoard's protobuf."""
    import struct

    from tensorboardX.proto import event_pb2

    out = {}
    for path in sorted(folder.glob("events.out.tfevents.*")):
        raw, pos = path.read_bytes(), 0
        while pos < len(raw):
            (length,) = struct.unpack("<Q", raw[pos:pos + 8])
            event = event_pb2.Event.FromString(raw[pos + 12:pos + 12 + length])
            pos += 12 + length + 4  # length, its CRC, the record, its CRC
            for value in event.summary.value:
                out[(value.tag, event.step)] = value.simple_value
    return out


def test_tensorboard_holds_what_metrics_jsonl_holds(wikitext_slice, tmp_path):
    run = tmp_path / "run"
    train.run(tiny("train.steps=4"), run, data_dir=wikitext_slice)
    scalars = tensorboard_scalars(run / "tensorboard")
    for split in ("train", "eval"):
        for row in rows(run, split):
            for name in ("mlm_loss", "nsp_loss", "mlm_acc") + (("learning_rate", "grad_norm", "pairs_per_sec")
                                                               if split == "train" else ()):
                assert scalars[(f"{split}/{name}", row["step"])] == pytest.approx(row[name], rel=1e-6), name
    assert {s for (_, s) in scalars} == {0, 2, 4}  # eval at 0 and 4, train at 2 and 4


def test_bfloat16_compute_tracks_float32(wikitext_slice):
    """model.dtype=bfloat16: parameters and optimizer state stay float32, the same batch gives the float32 loss
    to 1%, and 30 training steps follow the float32 curve to within 0.05 nats (MLM) at every step."""
    curves, metrics = {}, {}
    for dtype in ("float32", "bfloat16"):
        cfg = tiny("model.hidden_dropout_prob=0", "model.attention_probs_dropout_prob=0", f"model.dtype={dtype}")
        tok, train_set, _ = batches.load_wikitext2(wikitext_slice, cfg.data)
        cfg = config.override(cfg, [f"model.vocab_size={tok.get_vocab_size()}"])
        tx = optim.optimizer(cfg.optim, 30)
        graphdef, state = train.init_state(cfg, tx)
        train_step, eval_step = train.make_steps(graphdef, tx, jax.random.key(0))
        metrics[dtype] = jax.device_get(eval_step(state.params, train_set.take(np.arange(64))))
        curve = []
        for step in range(30):
            state, m = train_step(state, train_set.batch(step, 16))
            curve.append(float(m["mlm_loss"]))
        curves[dtype] = np.array(curve)
        assert {x.dtype for x in jax.tree.leaves((state.params, state.opt_state)) if x.ndim} == {np.dtype(np.float32)}
    for name in ("mlm_loss", "nsp_loss"):
        assert metrics["bfloat16"][name] == pytest.approx(metrics["float32"][name], rel=0.01), name
    assert np.abs(curves["bfloat16"] - curves["float32"]).max() < 0.05, curves
    assert curves["float32"][-5:].mean() < curves["float32"][:5].mean() - 0.5  # the curves go somewhere


def test_the_newest_checkpoints_are_kept(wikitext_slice, tmp_path):
    train.run(tiny("train.steps=10", "train.checkpoint_every=2", "train.keep_checkpoints=3"), tmp_path / "run",
              data_dir=wikitext_slice)
    assert sorted(int(p.name) for p in (tmp_path / "run" / "checkpoints").iterdir()) == [6, 8, 10]


def test_prng_impl_chooses_dropouts_bits_and_nothing_else(wikitext_slice, tmp_path):
    """rbg draws other dropout bits than threefry (so other losses from step 2, with dropout 0.2), from the same
    initial parameters and batches; an unknown implementation is refused; a resumed run cannot change it."""
    losses = {}
    for impl in ("threefry2x32", "rbg"):
        train.run(tiny("train.steps=3", "train.log_every=1", f"train.prng_impl={impl}"), tmp_path / impl,
                  data_dir=wikitext_slice)
        losses[impl] = [r["mlm_loss"] for r in rows(tmp_path / impl, "train")]
        assert all(np.isfinite(losses[impl]))
    assert losses["threefry2x32"] != losses["rbg"]
    with pytest.raises(JaxbertError, match="train.prng_impl='philox' is not one of threefry2x32, rbg, unsafe_rbg"):
        tiny("train.prng_impl=philox")
    with pytest.raises(JaxbertError, match="train.prng_impl=rbg"):
        train.run(tiny("train.steps=4", "train.prng_impl=rbg"), tmp_path / "threefry2x32", data_dir=wikitext_slice,
                  resume=True)


def test_prefetched_batches_are_the_loops_batches(wikitext_slice, tmp_path):
    """The background thread builds exactly the batches the loop would (from any start step, in order), and a run
    with it logs the same metrics as a run without; an error while building reaches the loop."""
    from jaxbert.data import batches
    from jaxbert.training.feed import Prefetcher

    cfg = tiny()
    _, train_set, _ = batches.load(batches.locate(str(wikitext_slice)), cfg.data)
    with Prefetcher(lambda step: train_set.batch(step, 32), 5, 2) as feed:
        for step in range(5, 40):
            got, want = feed.get(step), train_set.batch(step, 32)
            assert got.keys() == want.keys() and all(np.array_equal(got[k], want[k]) for k in want)
    with Prefetcher(lambda step: 1 // (step - 3), 0, 2) as feed:
        for step in range(3):
            feed.get(step)
        with pytest.raises(ZeroDivisionError):
            feed.get(3)
    for depth in (0, 3):
        train.run(tiny("train.steps=6", "train.log_every=1", f"train.prefetch={depth}"), tmp_path / f"p{depth}",
                  data_dir=wikitext_slice)
    strip = lambda r: {k: v for k, v in r.items() if k != "pairs_per_sec"}  # the only measured field
    assert [strip(r) for r in rows(tmp_path / "p0", "train")] == [strip(r) for r in rows(tmp_path / "p3", "train")]
