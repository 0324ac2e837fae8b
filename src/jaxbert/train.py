"""Pretraining: the train state, one pure jitted train step, an eval step, and `run`, a plain loop.

    jaxbert pretrain --preset d2l-tiny --data ../shared/data/wikitext-2 --out runs/d2l-tiny
"""

import dataclasses
import time
from pathlib import Path

import flax.struct
import jax
import jax.numpy as jnp
import optax
from flax import nnx

from jaxbert import checkpoint, data, losses, optim, report, rundir
from jaxbert import tokenizer as tokenizers
from jaxbert.config import Config
from jaxbert.errors import JaxbertError
from jaxbert.model import BertForPreTraining


@flax.struct.dataclass
class TrainState:
    step: jax.Array  # scalar int32: the number of updates applied, and the data position
    params: nnx.State
    opt_state: optax.OptState


def forward(graphdef, params, batch, *, deterministic: bool, with_nsp: bool, rngs: nnx.Rngs | None = None):
    """MLM and NSP metrics of one batch; the model is rebuilt from (graphdef, params) inside the trace."""
    model = nnx.merge(graphdef, params)
    _, mlm_logits, nsp_logits = model(batch["input_ids"], batch["segment_ids"], batch["valid_lens"],
                                      batch["masked_positions"], deterministic=deterministic, rngs=rngs)
    return losses.pretraining_metrics(mlm_logits, nsp_logits, batch, with_nsp=with_nsp)


def make_steps(graphdef, tx: optax.GradientTransformation, dropout_key: jax.Array, *, with_nsp: bool = True):
    """(train_step, eval_step), each jitted once; train_step donates the state it is given."""

    def train_step(state: TrainState, batch) -> tuple[TrainState, dict]:
        key = jax.random.fold_in(dropout_key, state.step)  # a fresh dropout key per step

        def loss_fn(params):
            rngs = nnx.Rngs(dropout=key)  # made inside the differentiated trace, which advances it
            metrics = forward(graphdef, params, batch, deterministic=False, with_nsp=with_nsp, rngs=rngs)
            return metrics["loss"], metrics

        grads, metrics = jax.grad(loss_fn, has_aux=True)(state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics

    def eval_step(params, batch) -> dict:
        return forward(graphdef, params, batch, deterministic=True, with_nsp=with_nsp)

    return jax.jit(train_step, donate_argnums=0), jax.jit(eval_step)


def init_state(cfg: Config, tx: optax.GradientTransformation):
    """(graphdef, state) with freshly initialised parameters."""
    model = BertForPreTraining(cfg.model, rngs=nnx.Rngs(params=cfg.train.seed))
    graphdef, params = nnx.split(model, nnx.Param)
    return graphdef, TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))


def run(cfg: Config, run_dir: Path, *, data_dir: str | None = None, resume: bool = False,
        overwrite: bool = False) -> list[str]:
    """Train `cfg` into `run_dir` (or continue the run there); returns the summary lines."""
    run_dir = Path(run_dir)
    source = data.locate(data_dir)  # before touching run_dir: a bad --data changes nothing
    resuming = rundir.claim(run_dir, resume=resume, overwrite=overwrite)
    batch_size = cfg.train.batch_size
    if resuming:
        cfg = _resumed_config(cfg, run_dir)
        tok = tokenizers.load(run_dir / rundir.TOKENIZER)
        _, train_set, eval_set = data.load(source, cfg.data, tok)
        data.batch_indices(len(train_set), batch_size, cfg.data.seed, 0)  # fails early if the set is too small
    else:
        try:  # every check before the first file is written: a refused run leaves no directory behind
            tok, train_set, eval_set = data.load(source, cfg.data)
            data.batch_indices(len(train_set), batch_size, cfg.data.seed, 0)
            if cfg.model.vocab_size not in (0, tok.get_vocab_size()):
                raise JaxbertError(f"model.vocab_size={cfg.model.vocab_size} does not match the data's tokenizer "
                                   f"({tok.get_vocab_size()} tokens); leave model.vocab_size at 0 or prepare "
                                   "the data with a matching tokenizer")
        except BaseException:
            if not any(run_dir.iterdir()):
                run_dir.rmdir()
            raise
        cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, vocab_size=tok.get_vocab_size()))
        tok.save(str(run_dir / rundir.TOKENIZER))
        cfg.save(run_dir / rundir.CONFIG)

    tx = optim.optimizer(cfg.optim, cfg.train.steps)
    graphdef, state = init_state(cfg, tx)
    mngr = checkpoint.manager(run_dir)
    if resuming:
        step = rundir.latest_step(run_dir)
        params, opt_state = checkpoint.restore(mngr, step, state.params, state.opt_state)
        state = TrainState(step=jnp.asarray(step, jnp.int32), params=params, opt_state=opt_state)
    start = int(state.step)
    if start >= cfg.train.steps:
        raise JaxbertError(f"the run in {run_dir} already reached step {start} of train.steps={cfg.train.steps}; "
                           f"pass --set train.steps=N with N > {start} to train further")

    train_step, eval_step = make_steps(graphdef, tx, jax.random.key(cfg.train.seed),
                                       with_nsp=cfg.data.objective != "mlm")
    eval_batches = eval_set.eval_batches(cfg.train.eval_batches, batch_size) if eval_set else []
    rep = report.Reporter(run_dir / rundir.METRICS, run_dir / rundir.PLOT, total_steps=cfg.train.steps,
                          start_step=start, pair_task={"nsp": "NSP", "sop": "SOP"}.get(cfg.data.objective))
    if eval_batches and start == 0:
        rep.eval(0, evaluate(eval_step, state.params, eval_batches))  # the baseline the curves fall from
    sums, interval_start, t0, first = None, start, time.perf_counter(), True
    for step in range(start + 1, cfg.train.steps + 1):
        state, metrics = train_step(state, train_set.batch(step - 1, batch_size, jax.process_index(),
                                                           jax.process_count()))
        sums = metrics if sums is None else jax.tree.map(jnp.add, sums, metrics)  # stays on device
        rep.bar.update()
        if step % cfg.train.log_every == 0 or step == cfg.train.steps:
            n = step - interval_start
            means = {k: float(v) / n for k, v in jax.device_get(sums).items()}  # host-device sync
            rep.train(step, means, n * batch_size / (time.perf_counter() - t0), first_interval=first)
            sums, interval_start, first = None, step, False
        if eval_batches and (step % cfg.train.eval_every == 0 or step == cfg.train.steps):
            rep.eval(step, evaluate(eval_step, state.params, eval_batches))  # host-device sync
        if step % cfg.train.checkpoint_every == 0 or step == cfg.train.steps:
            checkpoint.save(mngr, step, state.params, state.opt_state)
        if sums is None:
            t0 = time.perf_counter()  # time only training steps, not logging, evaluation or checkpoints
    mngr.wait_until_finished()
    rep.plot()
    return rep.summary(jax.devices())


def evaluate(eval_step, params, batches) -> dict:
    """Mean metrics over equally sized held-out batches (dropout off)."""
    results = jax.device_get([eval_step(params, b) for b in batches])
    return {k: sum(float(r[k]) for r in results) / len(results) for k in results[0]}


def _resumed_config(cfg: Config, run_dir: Path) -> Config:
    """The saved config, with only the `train` section taken from the command line (to extend a run)."""
    saved = Config.load(run_dir / rundir.CONFIG)
    changed = [name for name in ("data", "optim") if getattr(saved, name) != getattr(cfg, name)]
    model_changed = dataclasses.replace(saved.model, vocab_size=0) != dataclasses.replace(cfg.model, vocab_size=0)
    if changed or model_changed:
        changed += ["model"] if model_changed else []
        raise JaxbertError(f"--resume: the {', '.join(changed)} config differs from the run's {run_dir / 'config.json'}; "
                           "only train.* may change when resuming")
    return dataclasses.replace(saved, train=cfg.train)
