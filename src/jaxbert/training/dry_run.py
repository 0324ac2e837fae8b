"""`jaxbert pretrain --dry-run`: what a run would be, measured on its data, with nothing written."""

import dataclasses
import json
import time

import jax

from jaxbert.config import Config
from jaxbert.data import batches
from jaxbert.training import report
from jaxbert.training.train import PROBE_STEPS, fit_steps, setup, time_steps


def dry_run(cfg: Config, data_dir: str | None = None) -> list[str]:
    """The resolved config, the parameter count and the measured time per step of `cfg` on its data (a few
    throwaway steps), with the time `train.steps` would take or the steps a budget fits."""
    started = time.perf_counter()
    source = batches.locate(data_dir)
    report.stage(f"loading {batches.describe(source)}")
    tok, train_set, eval_set = batches.load(source, cfg.data)
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, vocab_size=tok.get_vocab_size()))
    batches.batch_indices(len(train_set), cfg.train.batch_size, cfg.data.seed, 0)  # fails if the data is too small
    mesh, eval_batches, next_batch, graphdef, state, state_shardings = setup(cfg, train_set, eval_set)
    report.stage(f"compiling, then timing {PROBE_STEPS} steps and an evaluation")
    timing = time_steps(cfg, graphdef, state, next_batch, eval_batches, mesh=mesh, state_shardings=state_shardings)
    params = sum(leaf.size for leaf in jax.tree.leaves(state.params))
    devices = jax.devices()
    lines = [json.dumps(cfg.to_dict(), indent=2),
             f"parameters: {params:,}",
             f"one step: {timing.step_s:.3f} s, {cfg.train.batch_size / timing.step_s:,.0f} examples/s (median of "
             f"{PROBE_STEPS} steps on {len(devices)} {devices[0].platform.upper()} device(s)); compiling "
             f"{timing.compile_s:.1f} s; one evaluation {timing.eval_s:.2f} s"]
    if cfg.train.budget_s:
        steps = fit_steps(cfg, timing, started + cfg.train.budget_s)
        lines.append(f"--budget {cfg.train.budget_s:.0f} s fits about {steps:,} steps")
    else:
        total = timing.compile_s + cfg.train.steps * timing.per_step(cfg.train.eval_every)
        lines.append(f"train.steps={cfg.train.steps:,} would take about {_duration(total)}")
    return lines


def _duration(seconds: float) -> str:
    for unit, size in (("days", 86400), ("hours", 3600), ("minutes", 60)):
        if seconds >= 2 * size:
            return f"{seconds / size:,.1f} {unit}"
    return f"{seconds:.0f} s"
