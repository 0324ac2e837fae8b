"""One device against eight, and one process against two: the same per-step losses in data-parallel and fully
sharded modes (CPU devices forced by XLA_FLAGS in a subprocess, since JAX fixes its device count at start-up;
processes joined on 127.0.0.1)."""

import json
import os
import socket
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

import jaxbert
from jaxbert import config, rundir
from jaxbert.errors import JaxbertError
from jaxbert.training import sharding, train

from conftest import TINY

STEPS = ["train.steps=6", "train.log_every=1", "train.eval_every=3", "train.checkpoint_every=3"]

# Trains in a process with 8 CPU devices, then prints how the word embeddings and their Adam moments are laid out.
CHILD = """
import json, sys
import jax
from jaxbert import config
from jaxbert.training import train
cfg = config.override(config.preset("d2l-tiny"), json.loads(sys.argv[1]))
train.run(cfg, sys.argv[2], data_dir=sys.argv[3])
from jaxbert.training import optim, sharding
cfg = config.Config.load(sys.argv[2] + "/config.json")  # with the vocabulary size filled in
graphdef, state = train.init_state(cfg, optim.optimizer(cfg.optim, cfg.train.steps))
state = jax.device_put(state, sharding.state_shardings(sharding.make_mesh(cfg.mesh), cfg.mesh.mode, state))
words = state.params["embeddings"]["word_embeddings"]["embedding"][...]
print(json.dumps({"devices": jax.device_count(), "words": [words.shape, words.addressable_shards[0].data.shape]}))
"""


def losses(run_dir):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {(r["split"], r["step"]): (r["mlm_loss"], r["nsp_loss"]) for r in rows}


@pytest.fixture(scope="module")
def one_device(wikitext_slice, tmp_path_factory):
    out = tmp_path_factory.mktemp("one") / "run"
    train.run(config.override(config.preset("d2l-tiny"), TINY + STEPS), out, data_dir=wikitext_slice)
    return losses(out)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["data", "fsdp"])
def test_eight_devices_train_as_one(mode, one_device, wikitext_slice, tmp_path):
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu"}
    sets = TINY + STEPS + [f"mesh.mode={mode}"]
    proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps(sets), str(tmp_path / "run"), str(wikitext_slice)],
                          env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    layout = json.loads(proc.stdout.strip().splitlines()[-1])
    assert layout["devices"] == 8
    (vocab, hidden), shard = layout["words"]
    assert shard == ([vocab, hidden] if mode == "data" else [vocab // 8, hidden] if vocab % 8 == 0
                     else [vocab, hidden // 8]), layout
    eight = losses(tmp_path / "run")
    assert eight.keys() == one_device.keys() and len(eight) == 6 + 3  # every step, and 3 evaluations
    for key in one_device:
        np.testing.assert_allclose(eight[key], one_device[key], rtol=2e-5, err_msg=str(key))
    # Saved from 8 devices, loaded in this 1-device process.
    vectors = np.asarray(jaxbert.load(tmp_path / "run").encode("the game began"))
    assert vectors.shape == (1, 5, 32) and np.isfinite(vectors).all()


def test_fsdp_splits_the_largest_divisible_axis():
    assert sharding._fsdp_spec((30522, 768), 8) == P(None, "data")  # 30522 is not a multiple of 8
    assert sharding._fsdp_spec((1024, 4096), 8) == P(None, "data")
    assert sharding._fsdp_spec((4096, 1024), 8) == P("data", None)
    assert sharding._fsdp_spec((3,), 8) == P() and sharding._fsdp_spec((), 8) == P()


def test_a_batch_the_devices_do_not_divide_is_refused(wikitext_slice, tmp_path):
    cfg = config.override(config.preset("d2l-tiny"), TINY + ["mesh.devices=2"])
    with pytest.raises(JaxbertError, match="mesh.devices=2 but only 1 devices"):
        train.run(cfg, tmp_path / "run", data_dir=wikitext_slice)
    assert not (tmp_path / "run").exists()
    eight = SimpleNamespace(size=8)  # check_batch reads only the mesh's size
    sharding.check_batch(eight, 64, grad_accum_steps=8)
    with pytest.raises(JaxbertError, match="a batch of 12 pairs .* cannot be split evenly over 8 devices"):
        sharding.check_batch(eight, 48, grad_accum_steps=4)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def slurm_port() -> int:
    """A free port that JAX's SLURM detection derives from a job id: 61440 + SLURM_JOB_ID % 4096."""
    for port in np.random.default_rng().permutation(np.arange(61440, 65536))[:200]:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", int(port)))
            except OSError:
                continue
            return int(port)
    pytest.skip("no free port in 61440-65535, the range JAX's SLURM detection uses")


@pytest.mark.slow
@pytest.mark.parametrize("mode, launch", [("data", "explicit"), ("fsdp", "explicit"), ("data", "slurm")])
def test_two_processes_train_as_one(mode, launch, one_device, wikitext_slice, tmp_path):
    """`jaxbert pretrain --coordinator`: two processes with one CPU device each, each building only its half of
    every batch, write one run whose metrics equal the one-process run's. With `--coordinator auto` the group comes
    from a SLURM job's environment, as `srun` sets it."""
    run = tmp_path / "run"
    args = [sys.executable, "-m", "jaxbert.cli", "pretrain", "--preset", "d2l-tiny", "--data", str(wikitext_slice),
            "--out", str(run)]
    args += [a for s in TINY + STEPS + [f"mesh.mode={mode}"] for a in ("--set", s)]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "OMPI_"))} | {"JAX_PLATFORMS": "cpu"}
    if launch == "explicit":
        args += ["--coordinator", f"127.0.0.1:{free_port()}", "--num-processes", "2"]
        per_process = lambda i: (["--process-id", str(i)], env)
    else:
        args += ["--coordinator", "auto"]
        slurm = {"SLURM_JOB_ID": str(slurm_port() - 61440), "SLURM_STEP_NODELIST": "127.0.0.1", "SLURM_NTASKS": "2"}
        per_process = lambda i: ([], env | slurm | {"SLURM_PROCID": str(i), "SLURM_LOCALID": str(i)})
    procs = [subprocess.Popen(args + per_process(i)[0], env=per_process(i)[1], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in (1, 0)]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
        assert "[CpuDevice(id=0), CpuDevice(id=" in out  # the summary names both processes' devices
    two = losses(run)
    assert two.keys() == one_device.keys()
    for key in one_device:
        np.testing.assert_allclose(two[key], one_device[key], rtol=2e-5, err_msg=str(key))
    assert rundir.latest_step(run) == 6


def test_a_process_id_outside_the_group_is_refused(capsys):
    from jaxbert import cli

    assert cli.main(["pretrain", "--out", "unused", "--coordinator", "127.0.0.1:1", "--num-processes", "2",
                     "--process-id", "2"]) == 2
    assert "--process-id 2 must lie in [0, --num-processes 2)" in capsys.readouterr().err


def test_auto_without_a_cluster_and_group_flags_without_a_coordinator_are_refused(capsys, tmp_path):
    from jaxbert import cli

    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "OMPI_"))} | {"JAX_PLATFORMS": "cpu"}
    # A fresh process: jax.distributed must start before anything touches a device, and this one has.
    done = subprocess.run([sys.executable, "-m", "jaxbert.cli", "pretrain", "--out", str(tmp_path / "run"),
                           "--coordinator", "auto", "--set", "train.steps=2"], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2 and "--coordinator auto found no cluster to join" in done.stderr, done.stderr
    assert not (tmp_path / "run").exists()
    assert cli.main(["pretrain", "--out", "unused", "--coordinator", "auto", "--num-processes", "2"]) == 2
    assert "drop --num-processes and --process-id" in capsys.readouterr().err
    assert cli.main(["pretrain", "--out", "unused", "--num-processes", "2", "--set", "train.steps=2"]) == 2
    assert "need --coordinator" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["pretrain", "--out", "unused", "--coordinator", "auto", "--local-device-ids", "0,0"])
    assert "distinct non-negative device ids" in capsys.readouterr().err
