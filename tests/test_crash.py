"""kill -9 at random moments, including while a checkpoint is being written: the run is always recoverable, and
resuming it until it finishes gives the per-step metrics of a run that was never interrupted."""

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import TINY
from jaxbert import config, rundir, train

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
