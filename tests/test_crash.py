"""kill -9 at random moments, including while a checkpoint is being written: the run is always recoverable, and
resuming it until it finishes gives the per-step metrics of a run that was never interrupted."""

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from jaxbert import config, rundir
from jaxbert.training import train

from conftest import TINY

SETS = TINY + ["train.steps=24", "train.checkpoint_every=2", "train.log_every=1", "train.eval_every=6"]


def metrics(run_dir) -> list[tuple]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [(r["split"], r["step"], r["mlm_loss"], r.get("nsp_loss"), r["mlm_acc"]) for r in rows]


def logged_step(run_dir) -> int:
    try:
        lines = (run_dir / "metrics.jsonl").read_text().splitlines()
        return json.loads(lines[-1])["step"] if lines else -1
    except (FileNotFoundError, json.JSONDecodeError):  # absent, or its last line half written
        return -1


def checkpoint_in_flight(run_dir) -> bool:
    folder = run_dir / rundir.CHECKPOINTS
    return folder.is_dir() and any(not p.name.isdigit() for p in folder.iterdir())


def start(run_dir, data_dir):
    """The CLI in its own process: with --resume once a checkpoint exists, else from scratch (--overwrite
    replaces what a kill before the first checkpoint left)."""
    resume = run_dir.exists() and rundir.latest_step(run_dir) is not None
    args = [sys.executable, "-m", "jaxbert.cli", "pretrain", "--preset", "d2l-tiny", "--data", str(data_dir),
            "--out", str(run_dir), "--resume" if resume else "--overwrite"]
    args += [a for s in SETS for a in ("--set", s)]
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_kill_9_anywhere_then_resume_gives_the_uninterrupted_run(wikitext_slice, tmp_path):
    straight = tmp_path / "straight"
    train.run(config.override(config.preset("d2l-tiny"), SETS), straight, data_dir=wikitext_slice)

    run, rng, kills = tmp_path / "killed", np.random.default_rng(0), []
    # Each attempt is killed at its own kind of moment: once step k is logged (in training), as soon as a
    # checkpoint's temporary folder appears (mid-write), or a few seconds in (loading data, compiling).
    plans = [("step", 3), ("checkpoint", None), ("step", 11), ("startup", 4.0), ("checkpoint", None), ("step", 20)]
    for kind, arg in plans:
        proc = start(run, wikitext_slice)
        begun = time.monotonic()
        while proc.poll() is None:
            step = logged_step(run)
            if (kind == "step" and step >= arg) or (kind == "checkpoint" and checkpoint_in_flight(run)) or \
                    (kind == "startup" and time.monotonic() - begun > arg):
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                kills.append((kind, step, rundir.latest_step(run)))
                break
            time.sleep(float(rng.uniform(0, 0.002)))
        if proc.returncode == 0:
            break  # it finished before the planned moment: nothing left to interrupt
        assert proc.returncode == -signal.SIGKILL, proc.stderr.read()[-2000:]
    assert any(k[0] == "checkpoint" for k in kills) and len(kills) >= 4, kills

    while True:  # resume until done; every attempt from here on must succeed
        proc = start(run, wikitext_slice)
        _, err = proc.communicate()
        assert proc.returncode == 0, (kills, err[-2000:])
        if rundir.latest_step(run) == 24:
            break
    assert metrics(run) == metrics(straight), kills


@pytest.mark.slow
def test_a_killed_fine_tuning_leaves_nothing_taken_for_a_finished_model(tiny_run, tmp_path):
    """kill -9 of `jaxbert finetune` at moments spread over its life (loading, after its first epochs, while a
    checkpoint is written): `predict` and `export` refuse what it leaves, in one line, until a run finishes; the
    same command into a new --out then finishes with the scores of a run never interrupted."""
    task = tmp_path / "task"
    task.mkdir()
    rng = np.random.default_rng(0)
    words = "the city river house music game road team war king school film".split()
    for split, n in (("train", 256), ("dev", 64)):
        rows = [f"{' '.join(rng.choice(words, 5))} {['bad', 'good'][i % 2]}\t{i % 2}" for i in range(n)]
        (task / f"{split}.tsv").write_text("sentence\tlabel\n" + "\n".join(rows) + "\n")
    (task / "in.txt").write_text("good city\n")

    def finetune(out):
        return [sys.executable, "-m", "jaxbert.cli", "finetune", "--task", "sst2", "--data", str(task), "--init",
                str(tiny_run), "--out", str(out), "--epochs", "6", "--max-len", "16", "--validation", "32"]

    def epochs(out):
        try:
            return len((out / "metrics.jsonl").read_text().splitlines())
        except FileNotFoundError:
            return 0

    killed = []
    for n, (kind, arg) in enumerate([("startup", 3.0), ("epoch", 1), ("checkpoint", None), ("epoch", 4)]):
        out = tmp_path / f"killed-{n}"
        proc = subprocess.Popen(finetune(out), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        begun = time.monotonic()
        while proc.poll() is None:
            if (kind == "startup" and time.monotonic() - begun > arg) or (kind == "epoch" and epochs(out) >= arg) \
                    or (kind == "checkpoint" and checkpoint_in_flight(out)):
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                break
            time.sleep(0.002)
        if proc.returncode == 0:
            continue  # finished before the moment came: a finished model, nothing to check
        assert proc.returncode == -signal.SIGKILL, proc.stderr.read()[-2000:]
        killed.append(kind)
        if not out.exists():
            continue
        for argv in (["predict", str(out), "--file", str(task / "in.txt")], ["export", str(out), str(tmp_path / "hf")]):
            done = subprocess.run([sys.executable, "-m", "jaxbert.cli", *argv], capture_output=True, text=True)
            said = "is empty: nothing was written" if not any(out.iterdir()) else "did not finish"
            assert done.returncode == 2 and said in done.stderr and done.stderr.count("\n") == 1, \
                (kind, done.stderr[-2000:])
            assert not (tmp_path / "hf").exists()
    assert len(killed) >= 3, killed
    scores = []
    for out in (tmp_path / "again", tmp_path / "straight"):
        subprocess.run(finetune(out), check=True, capture_output=True)
        scores.append(json.loads((out / "scores.json").read_text()))
    assert scores[0] == scores[1]
